import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { photoPaths } from './helpers/photos.js'
import { syntheticModelRepository } from './helpers/models.js'
import { startServerProcess } from './helpers/process.js'

describe('graceful shutdown', () => {
  it('SIGTERM during traffic answers every accepted request and exits 0', async () => {
    const server = await startServerProcess(['--model-repository', await syntheticModelRepository(), '--provider', 'cpu', '--drain-timeout-ms', '60000'])
    const photos = await Promise.all(photoPaths().slice(0, 12).map((p) => readFile(p)))
    const requests = photos.map((body) => fetch(`${server.url}/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body }).then(async (r) => ({ status: r.status, body: (await r.json()) as { predictions?: unknown[] } })))
    // Let the requests arrive (and the first batch start) before the signal.
    await new Promise((r) => setTimeout(r, 300))
    server.child.kill('SIGTERM')
    const answers = await Promise.all(requests)
    expect(answers.map((a) => a.status)).toEqual(answers.map(() => 200))
    for (const a of answers) expect(a.body.predictions).toHaveLength(5)
    expect(await server.exited).toBe(0)
    expect(server.logs.some((l) => l.msg === 'stopped')).toBe(true)
    // After the signal the port no longer accepts work.
    await expect(fetch(`${server.url}/health/live`)).rejects.toThrow()
  })

  it('a bad setting stops start-up with the fix in the message and exit code 2', async () => {
    const err = await startServerProcess(['--provider', 'tpu']).catch((e: unknown) => e as Error)
    expect((err as Error).message).toMatch(/exited \(2\)/)
    expect((err as Error).message).toMatch(/--provider=tpu \(flag --provider, env PROVIDER\).*use one of: auto, cuda, cpu/)
  })
})
