import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { syntheticModelRepository } from './models.js'

export interface ServerProcess {
  readonly child: ChildProcess
  readonly url: string
  readonly logs: Array<Record<string, unknown>>
  /** Resolves with the exit code. */
  readonly exited: Promise<number | null>
  /** What the process wrote to stderr so far. */
  stderr(): string
}

/**
 * Runs the real entry point (src/main.ts under tsx) and waits until it has started: its "gRPC
 * listening" line, the last of start-up. Only from then on does it handle SIGTERM; a signal that
 * came right after "HTTP listening" could kill it with the default action (regression: a flaky
 * exit by signal instead of code 0 when the machine was busy).
 */
export async function startServerProcess(
  args: string[],
  env: Record<string, string> = {},
  /** Run as this user (the test runs as root): what another user may not read, it may not. */
  user?: { readonly uid: number; readonly gid: number }
): Promise<ServerProcess> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'src/main.ts', '--host', '127.0.0.1', '--port', '0', '--grpc-port', '0', ...args],
    {
      // No grace period before the drain unless a test asks for one (--drain-grace-ms wins over the variable).
      env: { ...process.env, LOG_LEVEL: 'info', DRAIN_GRACE_MS: '0', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      ...user
    }
  )
  const exited = once(child, 'exit').then(([code]) => code as number | null)
  const logs: Array<Record<string, unknown>> = []
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  let httpAddress: string | undefined
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>
        logs.push(entry)
        if (entry.msg === 'HTTP listening') httpAddress = String(entry.address)
        if (entry.msg === 'gRPC listening' && httpAddress !== undefined) resolve(httpAddress)
      } catch {
        // not a log line
      }
    })
    void exited.then((code) => reject(new Error(`server exited (${code}) before listening: ${stderr}`)))
  })
  return { child, url, logs, exited, stderr: () => stderr }
}

/** startServerProcess on the synthetic ResNet-50 (test/helpers/models.ts), on the CPU, with `flags` besides. */
export async function startSyntheticServerProcess(flags: readonly string[] = [], env: Record<string, string> = {}): Promise<ServerProcess> {
  return startServerProcess(['--model-repository', await syntheticModelRepository(), '--provider', 'cpu', ...flags], env)
}
