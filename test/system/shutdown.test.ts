import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'node:http'
import { describe, expect, it } from 'vitest'
import { photoPaths, readPhoto } from '../helpers/photos.js'
import { startServerProcess, startSyntheticServerProcess } from '../helpers/process.js'
import { grpcTestClient, type GrpcCallError } from '../helpers/grpc.js'
import { status } from '@grpc/grpc-js'
import { waitFor } from '../helpers/versioned-models.js'

describe('graceful shutdown', () => {
  it('SIGTERM during traffic answers every accepted request and exits 0', async () => {
    const server = await startSyntheticServerProcess(['--drain-timeout-ms', '60000'])
    const photos = await Promise.all(
      photoPaths()
        .slice(0, 12)
        .map((p) => readFile(p))
    )
    const requests = photos.map((body) =>
      fetch(`${server.url}/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body }).then(async (r) => ({
        status: r.status,
        body: (await r.json()) as { predictions?: unknown[] }
      }))
    )
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

  it('SIGTERM closes the trace file being written: a whole JSON array of every traced request', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rs-trace-shutdown-'))
    const file = join(dir, 'trace.json')
    const server = await startSyntheticServerProcess(['--trace-file', file, '--trace-level', 'TIMESTAMPS', '--trace-rate', '1'])
    const data = [(await readPhoto('chelsea')).toString('base64')]
    for (const id of ['a', 'b']) {
      const res = await fetch(`${server.url}/v2/models/resnet50/infer`, {
        method: 'POST',
        body: JSON.stringify({ id, inputs: [{ name: 'input', datatype: 'BYTES', shape: [1], data }] })
      })
      expect(res.status).toBe(200)
    }
    server.child.kill('SIGTERM')
    expect(await server.exited).toBe(0)
    const traces = JSON.parse(await readFile(file, 'utf8')) as Array<{ request_id?: string }>
    expect(traces.flatMap((t) => t.request_id ?? [])).toEqual(['a', 'b'])
    await rm(dir, { recursive: true })
  })

  it('a bad setting stops start-up with the fix in the message and exit code 2', async () => {
    const err = await startServerProcess(['--provider', 'tpu']).catch((e: unknown) => e as Error)
    expect((err as Error).message).toMatch(/exited \(2\)/)
    expect((err as Error).message).toMatch(/--provider=tpu \(flag --provider, env PROVIDER\).*use one of: auto, cuda, cpu/)
  })
})

/** Images waiting in the batcher queue, read from the server's own metrics. */
async function pendingImages(url: string): Promise<number> {
  const body = await (await fetch(`${url}/metrics`)).text()
  const line = body.split('\n').find((l) => l.startsWith('resnet_serve_pending_requests{model="resnet50"} '))
  return line === undefined ? 0 : Number(line.split(' ').pop())
}

type Outcome = { status: number } | { error: string }

/** One request on its own connection, so a refused connection is told apart from a dropped answer. */
function classifyOnce(url: string, photo: Buffer): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = request(`${url}/classify`, { method: 'POST', agent: false, headers: { 'content-type': 'image/jpeg' } }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode! }))
    })
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }))
    req.end(photo)
  })
}

describe('SIGTERM under load', () => {
  it('at the drain timeout, images still queued are refused SHUTTING_DOWN on both doors alike, running batches are answered, and it exits 0', async () => {
    const server = await startSyntheticServerProcess(['--drain-timeout-ms', '200'])
    const grpc = grpcTestClient(`127.0.0.1:${String(server.logs.find((l) => l.msg === 'gRPC listening')?.port)}`)
    const photo = await readPhoto('chelsea')
    // The two doors' requests sent in turn, so both are spread through the queue.
    const http: Array<Promise<number | string>> = []
    const calls: Array<Promise<string>> = []
    for (let i = 0; i < 64; i++) {
      http.push(
        fetch(`${server.url}/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: photo }).then(
          (r) => r.status,
          () => 'no answer'
        )
      )
      calls.push(
        grpc
          .call('ModelInfer', {
            model_name: 'resnet50',
            inputs: [{ name: 'input', datatype: 'BYTES', shape: [1], contents: { bytes_contents: [photo] } }]
          })
          .then(
            () => 'OK',
            (err: GrpcCallError) => status[err.code]
          )
      )
    }
    // The signal once most images wait in the queue (not after a fixed time, which a fast machine
    // outruns): far more work than one CPU session does in the 200 ms drain timeout.
    await waitFor('64 images queued', async () => (await pendingImages(server.url)) >= 64, 20_000)
    server.child.kill('SIGTERM')
    const [statuses, codes] = await Promise.all([Promise.all(http), Promise.all(calls)])
    grpc.close()
    expect(await server.exited).toBe(0)
    expect(statuses.filter((s) => s !== 200 && s !== 503)).toEqual([])
    expect(statuses).toContain(503)
    // gRPC calls were cancelled (CANCELLED) at the timeout while HTTP requests ran on.
    expect(codes.filter((c) => c !== 'OK' && c !== 'UNAVAILABLE')).toEqual([])
    expect(codes).toContain('UNAVAILABLE')
    expect(server.logs.some((l) => l.msg === 'drain timeout passed; refusing work still queued')).toBe(true)
  })

  it('answers every accepted request (result or 503) and exits 0 within the drain timeout', async () => {
    const drainTimeoutMs = 20_000
    const server = await startSyntheticServerProcess(['--drain-timeout-ms', String(drainTimeoutMs)])
    const photo = await readPhoto('chelsea')
    const outcomes: Outcome[] = []
    let stopped = false
    // Eight clients, each sending one request after another until the port refuses them.
    const clients = Array.from({ length: 8 }, async () => {
      while (!stopped) {
        const outcome = await classifyOnce(server.url, photo)
        outcomes.push(outcome)
        if ('error' in outcome) return
      }
    })
    await new Promise((r) => setTimeout(r, 1_500))
    const signalledAt = performance.now()
    server.child.kill('SIGTERM')
    const code = await server.exited
    const exitMs = performance.now() - signalledAt
    stopped = true
    await Promise.all(clients)

    expect(code).toBe(0)
    expect(exitMs).toBeLessThan(drainTimeoutMs)
    const answered = outcomes.filter((o): o is { status: number } => 'status' in o)
    expect(answered.filter((o) => o.status === 200).length).toBeGreaterThan(0)
    expect(answered.filter((o) => o.status !== 200 && o.status !== 503)).toEqual([])
    // Only connections the closing port refused went unanswered. A connection still in the kernel's
    // backlog when the listening socket closes is reset (ECONNRESET) before the server ever read it;
    // requests the server had accepted are pinned strictly by the test above (all 200).
    expect(outcomes.filter((o) => 'error' in o && o.error !== 'ECONNREFUSED' && o.error !== 'ECONNRESET')).toEqual([])
  })
})
