import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { describe, expect, it } from 'vitest'
import { syntheticModelRepository } from '../helpers/models.js'

/**
 * The README's first command as a process supervisor runs it: `npm start`, then SIGTERM to the npm
 * process itself. Regression: npm used to die of the signal and leave the server running,
 * re-parented to PID 1.
 */

interface Started {
  npm: ReturnType<typeof spawn>
  url: string
  serverPid: number
  exited: Promise<[number | null, NodeJS.Signals | null]>
}

async function npmStart(repository: string): Promise<Started> {
  const npm = spawn(
    'npm',
    ['start', '--', '--model-repository', repository, '--provider', 'cpu', '--host', '127.0.0.1', '--port', '0', '--grpc-port', '0'],
    {
      env: { ...process.env, LOG_LEVEL: 'info', DRAIN_GRACE_MS: '0' },
      stdio: ['ignore', 'pipe', 'pipe']
    }
  )
  const exited = once(npm, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
  let stderr = ''
  npm.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  // Up once it logs "gRPC listening", the last start-up line: only then does it handle SIGTERM.
  let http: { url: string; serverPid: number } | undefined
  const started = await new Promise<{ url: string; serverPid: number }>((resolve, reject) => {
    createInterface({ input: npm.stdout! }).on('line', (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>
        if (entry.msg === 'HTTP listening') http = { url: String(entry.address), serverPid: Number(entry.pid) }
        if (entry.msg === 'gRPC listening' && http !== undefined) resolve(http)
      } catch {
        // npm's own lines
      }
    })
    void exited.then(([code]) => reject(new Error(`npm start exited (${code}) before listening: ${stderr}`)))
  })
  return { npm, exited, ...started }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe('npm start', () => {
  it('SIGTERM to the npm process reaches the server, which drains and exits 0; npm exits with its code and nothing is left behind', async () => {
    const repository = await syntheticModelRepository()
    // The first start may compile; the second (nothing changed) must not.
    const first = await npmStart(repository)
    first.npm.kill('SIGTERM')
    expect(await first.exited).toEqual([0, null])
    expect(alive(first.serverPid)).toBe(false)

    const second = await npmStart(repository)
    const live = await fetch(`${second.url}/health/live`)
    expect(live.status).toBe(200)
    expect(second.serverPid).toBeGreaterThan(0)
    second.npm.kill('SIGTERM')
    expect(await second.exited).toEqual([0, null])
    expect(alive(second.serverPid)).toBe(false)
    await expect(fetch(`${second.url}/health/live`)).rejects.toThrow()
  })
})
