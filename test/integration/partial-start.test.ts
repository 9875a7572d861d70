import { afterAll, describe, expect, it } from 'vitest'
import { removeVariantRepositories, variantRepository } from '../helpers/model-variants.js'
import { readPhoto } from '../helpers/photos.js'
import { classifyJpeg, startTestServer } from '../helpers/server.js'

/** A model that cannot be loaded: refused at start-up, or (--allow-partial-start) served around. */

afterAll(async () => {
  await removeVariantRepositories()
})

describe('--allow-partial-start', () => {
  it('serves the loadable models; the broken one answers 503 MODEL_NOT_READY and the server is not ready', async () => {
    const repository = await variantRepository({ resnet50: {}, broken: { broken: true } })
    const server = await startTestServer(repository, ['--allow-partial-start'])
    try {
      const photo = await readPhoto('chelsea')
      const ready = await fetch(`${server.url}/health/ready`)
      expect(ready.status).toBe(503)
      expect(await ready.json()).toEqual({
        status: 'not ready',
        models: [
          { name: 'broken', ready: false },
          { name: 'resnet50', ready: true }
        ]
      })
      const broken = await classifyJpeg(server.url, photo, 'broken')
      expect([broken.status, broken.code]).toEqual([503, 'MODEL_NOT_READY'])
      const batch = await fetch(`${server.url}/v1/models/broken:classify`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ instances: [{ b64: photo.toString('base64') }] })
      })
      expect(batch.status).toBe(503)
      expect(((await batch.json()) as { code: string }).code).toBe('MODEL_NOT_READY')
      const good = await classifyJpeg(server.url, photo)
      expect(good.status).toBe(200)
      expect(good.predictions).toHaveLength(5)
      const models = (await (await fetch(`${server.url}/models`)).json()) as { models: Array<{ name: string; ready: boolean }> }
      expect(models.models.map((m) => [m.name, m.ready])).toEqual([
        ['broken', false],
        ['resnet50', true]
      ])
    } finally {
      await server.close()
    }
  })

  it('without it, the broken model stops start-up', async () => {
    const repository = await variantRepository({ resnet50: {}, broken: { broken: true } })
    await expect(startTestServer(repository)).rejects.toThrow(/broken[/\\]model\.onnx: is not an ONNX model/)
  })
})
