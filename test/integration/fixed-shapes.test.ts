import { readFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ModelSessions } from '../../src/core/model-sessions.js'
import { loadModelFolder } from '../../src/repository/repository.js'
import { removeVariantRepositories, variantRepository } from '../helpers/model-variants.js'
import { photoPaths } from '../helpers/photos.js'
import { startTestServer, type TestServer } from '../helpers/server.js'

/**
 * Fixed shapes (the CUDA default, asked for here on the CPU so it runs without a GPU): each
 * session runs one batch size and pads every batch to it. The synthetic ResNet-50 with sessions of
 * 2 and 4 images behind a real server: requests of 1–4 images, alone and together, answer exactly
 * what the same images answer one at a time, so a batch that reached a session too small for it,
 * or padding that leaked into the answers, would show; the model's config says the two sizes.
 */

const MODEL = 'fixed'
let server: TestServer
let photos: Buffer[]

interface V2Answer {
  outputs: Array<{ name: string; shape: number[]; data: string[] }>
}

async function classify(images: Buffer[]): Promise<string[][]> {
  const res = await fetch(`${server.url}/v2/models/${MODEL}/infer`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      inputs: [{ name: 'input', datatype: 'BYTES', shape: [images.length], data: images.map((b) => b.toString('base64')) }],
      outputs: [{ name: 'logits', parameters: { classification: 3 } }]
    })
  })
  expect(res.status).toBe(200)
  const body = (await res.json()) as V2Answer
  const { data } = body.outputs[0]!
  return Array.from({ length: images.length }, (_, i) => data.slice(i * 3, i * 3 + 3))
}

beforeAll(async () => {
  const root = await variantRepository({ [MODEL]: { batching: { maxBatchSize: 4, padTo: [2], fixedShapes: true } } })
  server = await startTestServer(root, ['--sessions-per-model', '2'])
  photos = await Promise.all(
    photoPaths()
      .slice(0, 4)
      .map((p) => readFile(p))
  )
})

afterAll(async () => {
  await server?.close()
  await removeVariantRepositories()
})

describe('fixed shapes: one batch size per session', () => {
  it('the sessions run 2 and 4 images, and the model config says so', async () => {
    expect(server.service.model(MODEL).sessions.plan!.capacities).toEqual([2, 4])
    const res = await fetch(`${server.url}/v2/models/${MODEL}/config`)
    const config = (await res.json()) as { dynamic_batching: { preferred_batch_size: number[] }; instance_group: Array<{ count: number }> }
    expect(config.dynamic_batching.preferred_batch_size).toEqual([2, 4])
    expect(config.instance_group[0]!.count).toBe(2)
  })

  it('batches of 1 to 4 images, alone and side by side, answer what each image answers alone', async () => {
    const alone = await Promise.all(photos.map(async (p) => (await classify([p]))[0]!))
    for (const n of [1, 2, 3, 4]) expect(await classify(photos.slice(0, n))).toEqual(alone.slice(0, n))
    // Side by side: both sessions busy at once, batches of every size in between.
    const together = await Promise.all([
      classify(photos.slice(0, 3)),
      classify([photos[3]!]),
      classify(photos.slice(1, 3)),
      classify(photos)
    ])
    expect(together).toEqual([alone.slice(0, 3), [alone[3]], alone.slice(1, 3), alone])
  })

  it('more sizes than sessions stops the model from loading, saying what to change', async () => {
    const root = await variantRepository({ many: { batching: { maxBatchSize: 4, padTo: [1, 2], fixedShapes: true } } })
    const sessions = new ModelSessions(await loadModelFolder(root, 'many'), { provider: 'cpu', cudaDeviceId: 0, threads: 1, sessions: 2 })
    await expect(sessions.start()).rejects.toThrow(
      /^many: with batching\.fixedShapes each session runs one batch size, and 1, 2, 4 .* need 3 sessions where the model has 2: raise --sessions-per-model to 3/
    )
    expect(sessions.threads).toHaveLength(0)
  })
})
