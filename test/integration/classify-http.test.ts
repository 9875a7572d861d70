import { readFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { photoPaths } from '../helpers/photos.js'
import { syntheticModelRepository } from '../helpers/models.js'
import { startTestServer, type TestServer } from '../helpers/server.js'

/** POST /classify on a real server (port 0) with the synthetic ResNet-50, real photos, real workers. */

interface Answer {
  model: string
  synthetic: boolean
  warning?: string
  predictions: Array<{ index: number; label: string; probability: number }>
  batchSize: number
  timings: Record<string, number>
}

let server: TestServer
let photos: Buffer[]
const batches: number[] = []

beforeAll(async () => {
  server = await startTestServer(await syntheticModelRepository(), ['--max-topk', '50'], { onBatch: (_m, size) => batches.push(size) })
  photos = await Promise.all(
    photoPaths()
      .slice(0, 16)
      .map((p) => readFile(p))
  )
  expect(photos.length).toBe(16)
})
afterAll(async () => {
  await server?.close()
})

async function classify(image: Buffer, query = ''): Promise<{ status: number; body: Answer }> {
  const res = await fetch(`${server.url}/classify${query}`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: image })
  return { status: res.status, body: (await res.json()) as Answer }
}

describe('POST /classify', () => {
  it('answers one photo with top-5, timings, and the synthetic warning', async () => {
    const { status, body } = await classify(photos[0]!)
    expect(status).toBe(200)
    expect(body.model).toBe('resnet50')
    expect(body.synthetic).toBe(true)
    expect(body.warning).toMatch(/synthetic/)
    expect(body.predictions).toHaveLength(5)
    const probs = body.predictions.map((p) => p.probability)
    expect([...probs].sort((a, b) => b - a)).toEqual(probs)
    expect(body.predictions[0]!.label.length).toBeGreaterThan(0)
    for (const k of ['queueMs', 'preprocessMs', 'inferenceMs', 'postprocessMs', 'totalMs'])
      expect(body.timings[k]).toBeGreaterThanOrEqual(0)
    expect(body.timings.totalMs).toBeGreaterThanOrEqual(body.timings.inferenceMs!)
  })

  it('accepts multipart/form-data with an "image" field', async () => {
    const form = new FormData()
    form.append('image', new Blob([photos[1]!], { type: 'image/jpeg' }), 'photo.jpg')
    const res = await fetch(`${server.url}/classify?topk=3`, { method: 'POST', body: form })
    const body = (await res.json()) as Answer
    expect(res.status).toBe(200)
    expect(body.predictions).toHaveLength(3)
    const raw = await classify(photos[1]!, '?topk=3')
    expect(body.predictions.map((p) => p.index)).toEqual(raw.body.predictions.map((p) => p.index))
  })

  it('16 different photos at once run in batches larger than one, each answer equal to the photo sent alone', async () => {
    const alone: Answer[] = []
    for (const photo of photos) alone.push((await classify(photo)).body)
    for (const a of alone) expect(a.batchSize).toBe(1)

    batches.length = 0
    const together = await Promise.all(photos.map((p) => classify(p)))
    expect(Math.max(...together.map((t) => t.body.batchSize))).toBeGreaterThan(1)
    expect(Math.max(...batches)).toBeGreaterThan(1)
    expect(batches.reduce((a, b) => a + b, 0)).toBe(16)
    together.forEach(({ status, body }, i) => {
      expect(status).toBe(200)
      const ref = alone[i]!
      expect(body.predictions.map((p) => p.index)).toEqual(ref.predictions.map((p) => p.index))
      body.predictions.forEach((p, j) => expect(Math.abs(p.probability - ref.predictions[j]!.probability)).toBeLessThan(1e-5))
    })
    // The photos must actually differ in their answers, or the comparison above proves nothing.
    expect(new Set(alone.map((a) => a.predictions.map((p) => p.index).join())).size).toBeGreaterThan(8)
  })
})
