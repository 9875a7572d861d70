import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { progress } from './progress.js'

/** The service under load, in a process of its own: started on free ports, its CPU time read from /proc. */

/** Which build of the service a load run starts: the TypeScript sources (tsx) or the compiled dist/ (the GPU host has no tsx). */
export type ServerEntry = 'tsx' | 'dist'

export interface BenchServer {
  readonly url: string
  /** host:port of the gRPC door, when the service logged one. */
  readonly grpcAddress: string | undefined
  readonly pid: number
  /** False once the process has exited, for whatever reason. */
  readonly running: boolean
  /** User + system CPU seconds the server process (all its threads) has used so far. */
  cpuSeconds(): Promise<number>
  /** The same for its main thread alone (the event loop: what caps the doors whatever runs the model). */
  mainThreadCpuSeconds(): Promise<number>
  stop(): Promise<void>
}

const CLOCK_TICKS_PER_SECOND = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  } catch {
    return 100
  }
})()

/**
 * utime + stime of a Linux process from /proc/<pid>/stat (fields 14 and 15, after the command name),
 * or of one of its threads from /proc/<pid>/task/<tid>/stat (the main thread's tid is the pid).
 */
export async function processCpuSeconds(pid: number, tid?: number): Promise<number> {
  const stat = await readFile(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // fields[0] is field 3 (state), so utime (14) and stime (15) are at 11 and 12.
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND
}

function grpcAddressOf(entry: Record<string, unknown>): string | undefined {
  if (typeof entry.msg !== 'string' || !/grpc/i.test(entry.msg)) return undefined
  if (typeof entry.address === 'string') return entry.address.replace(/^(0\.0\.0\.0|\[::\])/, '127.0.0.1')
  if (typeof entry.port === 'number') return `127.0.0.1:${entry.port}`
  return undefined
}

export interface BenchServerOptions {
  readonly entry?: ServerEntry
  readonly env?: Record<string, string>
  /** Another source tree of the service (a past commit, for A/B runs); paths in `args` must then be absolute. */
  readonly cwd?: string
  /** A cgroup's `cgroup.procs`: the process joins it before Node starts, so every thread it makes is counted there (load/kit/pod.ts). */
  readonly cgroupProcs?: string
  /** Another program that starts like the service and logs "HTTP listening" (load/kit/floor-server), from the repository root without extension. */
  readonly program?: string
}

/**
 * Starts the service in its own process on free ports and waits for "HTTP listening" (and the
 * gRPC door's line when it logs one first). The pid is the Node process itself, so its CPU time
 * includes the inference worker threads and sharp's threads.
 */
export async function startBenchServer(args: string[], options: BenchServerOptions = {}): Promise<BenchServer> {
  const { entry = 'tsx', env = {}, cwd, cgroupProcs, program = 'src/main' } = options
  const main = entry === 'tsx' ? ['--import', 'tsx', `${program}.ts`] : [`dist/${program}.js`]
  const node = [process.execPath, ...main, '--host', '127.0.0.1', '--port', '0', '--grpc-port', '0', '--log-level', 'info', ...args]
  // The shell writes its own pid into the cgroup, then becomes Node (exec): same pid, already inside.
  const [command, ...commandArgs] =
    cgroupProcs === undefined ? node : ['/bin/sh', '-c', 'echo $$ > "$0" && exec "$@"', cgroupProcs, ...node]
  const child: ChildProcess = spawn(command!, commandArgs, {
    // No readiness grace on SIGTERM: nothing routes to a bench server, so it stops at once.
    env: { ...process.env, DRAIN_GRACE_MS: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(cwd === undefined ? {} : { cwd })
  })
  const exited = once(child, 'exit')
  const pid = child.pid!
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  // The last lines the server wrote, shown if it dies under load (otherwise a run only says "fetch failed").
  const tail: string[] = []
  let stopping = false
  let running = true
  void exited.then(([code, signal]) => {
    running = false
    if (stopping) return
    const last = [...tail, ...stderr.split('\n').slice(-20)].filter((l) => l !== '').join('\n')
    progress(`server ${pid} exited (code ${String(code)}, signal ${String(signal)}) while in use; its last lines:\n${last}`)
  })
  let grpcAddress: string | undefined
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      tail.push(line.slice(0, 2000))
      if (tail.length > 20) tail.shift()
      let logged: Record<string, unknown>
      try {
        logged = JSON.parse(line) as Record<string, unknown>
      } catch {
        return
      }
      grpcAddress ??= grpcAddressOf(logged)
      if (logged.msg === 'HTTP listening') resolve(String(logged.address))
    })
    void exited.then(([code]) => reject(new Error(`server exited (${String(code)}) before listening: ${stderr}`)))
  })
  return {
    url,
    get grpcAddress() {
      return grpcAddress
    },
    pid,
    get running() {
      return running
    },
    cpuSeconds: () => processCpuSeconds(pid),
    mainThreadCpuSeconds: () => processCpuSeconds(pid, pid),
    async stop() {
      stopping = true
      child.kill('SIGTERM')
      await exited
    }
  }
}
