import { request } from 'node:http'
import sharp from 'sharp'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { syntheticModelRepository } from '../helpers/models.js'
import { readPhoto } from '../helpers/photos.js'
import { startTestServer, type TestServer } from '../helpers/server.js'

/**
 * The decode budget through the real HTTP door, service and model: large transparent PNGs (a few
 * KB on the wire, tens of MB decoded) sent together beyond the budget are decoded one at a time or
 * refused with 429 DECODE_QUEUE_FULL and Retry-After, per image on the batch endpoint too; never a
 * 5xx or a crash, and ordinary photos are still answered meanwhile. Memory itself is measured by
 * load/robustness/decode-memory.ts, not asserted here.
 */

const MiB = 2 ** 20
/** Two slots, 128 MiB: one large decode at a time (the other slot is the small lane), one may wait. */
const FLAGS = ['--decode-concurrency', '2', '--decode-budget-bytes', String(128 * MiB), '--decode-queue-size', '1']
const SIDE = 4000

let server: TestServer
let rgba: Buffer
let photo: Buffer

interface Answer {
  code?: string
  predictions?: Array<{ error?: { code: string }; predictions?: unknown[] }>
}

async function classify(image: Buffer): Promise<{ status: number; retryAfter: string | null; body: Answer }> {
  const res = await fetch(`${server.url}/classify`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: image })
  return { status: res.status, retryAfter: res.headers.get('retry-after'), body: (await res.json()) as Answer }
}

/**
 * A POST /classify on its own connection (no keep-alive pool) that can hang up: the socket is
 * destroyed, as a client that goes away does.
 */
function upload(image: Buffer): { hangUp(): void; outcome: Promise<number | 'hung up'> } {
  const req = request(`${server.url}/classify`, {
    method: 'POST',
    agent: false,
    headers: { 'content-type': 'image/png', 'content-length': image.length }
  })
  const outcome = new Promise<number | 'hung up'>((resolve) => {
    req.on('response', (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', () => resolve('hung up'))
  })
  req.end(image)
  return { hangUp: () => req.destroy(), outcome }
}

/** Polls a condition of the server's state; generous, since decodes run at the machine's pace. */
async function until(condition: () => boolean, timeoutMs = 60_000): Promise<void> {
  const t0 = Date.now()
  while (!condition()) {
    if (Date.now() - t0 > timeoutMs) throw new Error('condition not reached')
    await new Promise((r) => setTimeout(r, 5))
  }
}

beforeAll(async () => {
  server = await startTestServer(await syntheticModelRepository(), FLAGS)
  // 4000×4000 RGBA: ~64 MiB of decode cost (its full-size RGB copy), so a large decode.
  rgba = await sharp({ create: { width: SIDE, height: SIDE, channels: 4, background: { r: 30, g: 140, b: 90, alpha: 0.5 } } })
    .png()
    .toBuffer()
  photo = await readPhoto('chelsea')
})
afterAll(async () => {
  await server?.close()
})

describe('decode budget, end to end', () => {
  it('regression: concurrent large RGBA PNGs beyond the budget are queued or refused 429 DECODE_QUEUE_FULL with Retry-After, never a 5xx', async () => {
    expect(rgba.length).toBeLessThan(1 * MiB)
    const burst = Array.from({ length: 10 }, () => classify(rgba))
    // An ordinary photo sent in the middle of the burst goes through the small lane.
    const during = await classify(photo)
    const answers = await Promise.all(burst)
    expect(during.status).toBe(200)
    for (const a of answers) {
      expect([200, 429]).toContain(a.status)
      if (a.status === 429) {
        expect(a.body.code).toBe('DECODE_QUEUE_FULL')
        expect(Number(a.retryAfter)).toBeGreaterThanOrEqual(1)
      }
    }
    // One decoding and one waiting at most: ten sent together cannot all be admitted.
    expect(answers.filter((a) => a.status === 429).length).toBeGreaterThan(0)
    expect(answers.filter((a) => a.status === 200).length).toBeGreaterThan(0)
  })

  it('the batch endpoint takes each image through the same budget: refused images get DECODE_QUEUE_FULL in their slots', async () => {
    const b64 = rgba.toString('base64')
    const res = await fetch(`${server.url}/v1/models/resnet50:classify`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ instances: Array.from({ length: 8 }, () => ({ b64 })), topk: 1 })
    })
    expect(res.status).toBe(200)
    const slots = ((await res.json()) as Answer).predictions!
    expect(slots).toHaveLength(8)
    const refused = slots.filter((s) => s.error !== undefined)
    for (const s of refused) expect(s.error?.code).toBe('DECODE_QUEUE_FULL')
    expect(refused.length).toBeGreaterThan(0)
    expect(refused.length).toBeLessThan(8)
  })

  it('regression: an image whose client hung up while it waited leaves the decode queue undecoded (abandoned decodes once delayed a photo to 50 s)', async () => {
    const budget = server.service.decodeBudget
    const startedBefore = budget.started
    const clients = [upload(rgba), upload(rgba)]
    // The first decodes (one large decode at a time), the second waits; then both clients go.
    await until(() => budget.queued === 1)
    for (const c of clients) c.hangUp()
    expect(await Promise.all(clients.map((c) => c.outcome))).toEqual(['hung up', 'hung up'])
    await until(() => budget.queued === 0 && budget.running === 0)
    // The running decode could not be stopped; the waiting one never started.
    expect(budget.started - startedBefore).toBe(1)
    expect((await classify(photo)).status).toBe(200)
  })

  it('then the budget is all given back and the server answers as before', async () => {
    const budget = server.service.decodeBudget
    expect([budget.running, budget.queued, budget.bytesInFlight]).toEqual([0, 0, 0])
    const after = await classify(photo)
    expect(after.status).toBe(200)
    expect((await fetch(`${server.url}/health/ready`)).status).toBe(200)
    // A large image alone is decoded: nothing was left holding the budget.
    expect((await classify(rgba)).status).toBe(200)
  })
})
