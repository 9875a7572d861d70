import { request } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readPhoto } from '../helpers/photos.js'
import { removeVariantRepositories, variantRepository } from '../helpers/model-variants.js'
import { startTestServer, type TestServer } from '../helpers/server.js'

/**
 * Overload answers fast and precisely: a full queue is 429 with Retry-After, a passed deadline is
 * 504, and an image whose client hung up while it was queued is never run. One session per model,
 * batches of one, so the queue is easy to fill.
 */

let server: TestServer
let photo: Buffer
/** Images each model has executed (the service's onBatch hook). */
const executed = new Map<string, number>()
/** Calls that run when an image has been preprocessed, just before it joins its model's queue. */
const onQueued: Array<() => void> = []
/** Images each model has decoded and preprocessed. */
const preprocessed = new Map<string, number>()

beforeAll(async () => {
  const repository = await variantRepository({
    resnet50: { batching: { maxBatchSize: 1, maxQueueDelayMs: 0, maxQueueSize: 64 } },
    'small-queue': { batching: { maxBatchSize: 1, maxQueueDelayMs: 0, maxQueueSize: 2 } }
  })
  server = await startTestServer(repository, ['--sessions-per-model', '1', '--threads-per-session', '1'], {
    onBatch: (model, size) => executed.set(model, (executed.get(model) ?? 0) + size),
    onStage: (model, stage) => {
      if (stage !== 'preprocess') return
      preprocessed.set(model, (preprocessed.get(model) ?? 0) + 1)
      for (const f of onQueued) f()
    }
  })
  photo = await readPhoto('chelsea')
})
afterAll(async () => {
  await server?.close()
  await removeVariantRepositories()
})

interface Answer {
  status: number
  retryAfter: string | null
  code: string | undefined
}

async function classify(model: string, init: { headers?: Record<string, string> } = {}): Promise<Answer> {
  const res = await fetch(`${server.url}/classify?model=${model}`, {
    method: 'POST',
    body: photo,
    ...init,
    headers: { 'content-type': 'image/jpeg', ...init.headers }
  })
  const body = (await res.json()) as { code?: string }
  return { status: res.status, retryAfter: res.headers.get('retry-after'), code: body.code }
}

/** Resolves once `count` more images have been preprocessed (each is then queued at once). */
function queued(count: number): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0
    const f = (): void => {
      if (++seen < count) return
      onQueued.splice(onQueued.indexOf(f), 1)
      resolve()
    }
    onQueued.push(f)
  })
}

describe('overload', () => {
  it('a full queue answers 429 QUEUE_FULL with Retry-After before decoding the image; the others are classified', async () => {
    const decodedBefore = preprocessed.get('small-queue') ?? 0
    const answers = await Promise.all(Array.from({ length: 16 }, () => classify('small-queue')))
    // Only the images the queue took were decoded (every image was, refused ones included).
    expect((preprocessed.get('small-queue') ?? 0) - decodedBefore).toBe(answers.filter((a) => a.status === 200).length)
    const full = answers.filter((a) => a.status === 429)
    expect(full.length).toBeGreaterThan(0)
    for (const a of full) {
      expect(a.code).toBe('QUEUE_FULL')
      expect(Number(a.retryAfter)).toBeGreaterThanOrEqual(1)
    }
    expect(answers.filter((a) => a.status !== 429).map((a) => a.status)).toEqual(answers.filter((a) => a.status !== 429).map(() => 200))
    // The queue drains, and a request after the burst is served.
    expect((await classify('small-queue')).status).toBe(200)
  })

  it('a deadline that passes while queued answers 504 DEADLINE_EXCEEDED', async () => {
    const ahead = Array.from({ length: 4 }, () => classify('resnet50'))
    await queued(4)
    const late = await classify('resnet50', { headers: { 'x-deadline-ms': '20' } })
    await Promise.all(ahead)
    expect(late.status).toBe(504)
    expect(late.code).toBe('DEADLINE_EXCEEDED')
  })

  it('a client that disconnects while queued: its image is never run', async () => {
    const before = executed.get('resnet50') ?? 0
    const ahead = Array.from({ length: 4 }, () => classify('resnet50'))
    await queued(4)
    // Its own connection, which the client destroys: the server sees the socket close.
    const victim = request(`${server.url}/classify?model=resnet50`, {
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'image/jpeg' }
    })
    const victimGone = new Promise((resolve) => victim.on('error', resolve).on('close', resolve))
    victim.end(photo)
    // Four images of ~100 ms each are ahead of it: it is still queued when the client goes.
    await queued(1)
    victim.destroy()
    await victimGone
    const answers = await Promise.all(ahead)
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200])
    await new Promise((r) => setTimeout(r, 200))
    expect((executed.get('resnet50') ?? 0) - before).toBe(4)
    expect(server.service.model('resnet50').batcher.pending).toBe(0)
  })
})
