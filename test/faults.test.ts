import { request } from 'node:http'
import { afterAll, describe, expect, it } from 'vitest'
import { syntheticModelRepository } from './helpers/models.js'
import { removeVariantRepositories, variantRepository } from './helpers/model-variants.js'
import { readPhoto } from './helpers/photos.js'
import { startServerProcess } from './helpers/process.js'
import { startTestServer } from './helpers/server.js'

/** Faults: a dying inference worker, SIGTERM under load, a model that cannot be loaded. */

afterAll(async () => {
  await removeVariantRepositories()
})

async function classify(url: string, photo: Buffer, model?: string): Promise<{ status: number; code: string | undefined; predictions: unknown[] | undefined }> {
  const res = await fetch(`${url}/classify${model === undefined ? '' : `?model=${model}`}`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: photo })
  const body = (await res.json()) as { code?: string; predictions?: unknown[] }
  return { status: res.status, code: body.code, predictions: body.predictions }
}

describe('a worker that dies', () => {
  it('fails only its batch, fast, with 503 INFERENCE_FAILED; a new worker serves the next requests', async () => {
    // Batches of four that wait up to 3 s to fill: the fourth image starts the batch, and the
    // worker is told to fail just before it, so that batch is the one lost.
    const repository = await variantRepository({ resnet50: { batching: { maxBatchSize: 4, maxQueueDelayMs: 3_000, maxQueueSize: 64 } } })
    let preprocessed = 0
    let failNextBatch = false
    const server = await startTestServer(repository, ['--sessions-per-model', '1'], {
      onStage: (model, stage) => {
        if (stage !== 'preprocess' || !failNextBatch || ++preprocessed < 4) return
        failNextBatch = false
        server.service.model(model).sessions.injectWorkerFailure()
      }
    })
    try {
      const photo = await readPhoto('chelsea')
      const threadBefore = server.service.model('resnet50').sessions.threads[0]
      failNextBatch = true
      const t0 = performance.now()
      const lost = await Promise.all(Array.from({ length: 4 }, () => classify(server.url, photo)))
      const failedAfterMs = performance.now() - t0
      expect(lost.map((a) => [a.status, a.code])).toEqual(Array.from({ length: 4 }, () => [503, 'INFERENCE_FAILED']))
      expect(failedAfterMs).toBeLessThan(2_000)
      // The next batch waits for the replacement worker, then runs.
      const later = await Promise.all(Array.from({ length: 4 }, () => classify(server.url, photo)))
      expect(later.map((a) => a.status)).toEqual([200, 200, 200, 200])
      expect(server.service.model('resnet50').sessions.threads).toHaveLength(1)
      expect(server.service.model('resnet50').sessions.threads[0]).not.toBe(threadBefore)
      expect((await fetch(`${server.url}/health/ready`)).status).toBe(200)
    } finally {
      await server.close()
    }
  })
})

describe('--allow-partial-start', () => {
  it('serves the loadable models; the broken one answers 503 MODEL_NOT_READY and the server is not ready', async () => {
    const repository = await variantRepository({ resnet50: {}, broken: { broken: true } })
    const server = await startTestServer(repository, ['--allow-partial-start'])
    try {
      const photo = await readPhoto('chelsea')
      const ready = await fetch(`${server.url}/health/ready`)
      expect(ready.status).toBe(503)
      expect(await ready.json()).toEqual({ status: 'not ready', models: [{ name: 'broken', ready: false }, { name: 'resnet50', ready: true }] })
      const broken = await classify(server.url, photo, 'broken')
      expect([broken.status, broken.code]).toEqual([503, 'MODEL_NOT_READY'])
      const batch = await fetch(`${server.url}/v1/models/broken:classify`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ instances: [{ b64: photo.toString('base64') }] }) })
      expect(batch.status).toBe(503)
      expect(((await batch.json()) as { code: string }).code).toBe('MODEL_NOT_READY')
      const good = await classify(server.url, photo)
      expect(good.status).toBe(200)
      expect(good.predictions).toHaveLength(5)
      const models = (await (await fetch(`${server.url}/models`)).json()) as { models: Array<{ name: string; ready: boolean }> }
      expect(models.models.map((m) => [m.name, m.ready])).toEqual([['broken', false], ['resnet50', true]])
    } finally {
      await server.close()
    }
  })

  it('without it, the broken model stops start-up', async () => {
    const repository = await variantRepository({ resnet50: {}, broken: { broken: true } })
    await expect(startTestServer(repository)).rejects.toThrow(/broken[/\\]model\.onnx: is not an ONNX model/)
  })
})

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
  it('answers every accepted request (result or 503) and exits 0 within the drain timeout', async () => {
    const drainTimeoutMs = 20_000
    const server = await startServerProcess(['--model-repository', await syntheticModelRepository(), '--provider', 'cpu', '--drain-timeout-ms', String(drainTimeoutMs)])
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
    // requests the server had accepted are pinned strictly by test/shutdown.test.ts (all 200).
    expect(outcomes.filter((o) => 'error' in o && o.error !== 'ECONNREFUSED' && o.error !== 'ECONNRESET')).toEqual([])
  })
})
