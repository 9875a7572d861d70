import { readFile } from 'node:fs/promises'
import { afterAll, describe, expect, it } from 'vitest'
import { chooseDefaultModel } from '../src/repository/default-model.js'
import { removeVariantRepositories, variantRepository } from './helpers/model-variants.js'
import { startTestServer } from './helpers/server.js'

/**
 * The synthetic model is a placeholder. Regression: after importing a real model, a request that
 * named no model still went to the synthetic resnet50.
 */

describe('choosing the default model', () => {
  const synthetic = (name: string) => ({ name, synthetic: true })
  const real = (name: string) => ({ name, synthetic: false })

  it('the only real model wins over the synthetic resnet50', () => {
    expect(chooseDefaultModel([synthetic('resnet50'), real('resnet50-tv')], undefined).name).toBe('resnet50-tv')
  })

  it('--default-model always wins', () => {
    expect(chooseDefaultModel([synthetic('resnet50'), real('resnet50-tv')], 'resnet50').name).toBe('resnet50')
  })

  it('several real models: resnet50 if it is one of them, else the first in name order, and the reason says how to choose', () => {
    const many = chooseDefaultModel([real('zoo-101'), real('tv-152'), synthetic('resnet50')], undefined)
    expect(many.name).toBe('tv-152')
    expect(many.reason).toMatch(/--default-model/)
    expect(chooseDefaultModel([real('a'), real('resnet50')], undefined).name).toBe('resnet50')
  })

  it('only synthetic models: resnet50 if loaded, else the first in name order; none: undefined', () => {
    expect(chooseDefaultModel([synthetic('b'), synthetic('resnet50')], undefined).name).toBe('resnet50')
    expect(chooseDefaultModel([synthetic('b'), synthetic('a')], undefined).name).toBe('a')
    expect(chooseDefaultModel([], undefined).name).toBeUndefined()
  })
})

describe('the default model in a running server', () => {
  afterAll(removeVariantRepositories)

  it('a plain /classify answers from the real model once one is in the repository, and /models says so', async () => {
    const repository = await variantRepository({ resnet50: {}, 'resnet50-tv': { real: true } })
    const server = await startTestServer(repository)
    try {
      const models = (await (await fetch(`${server.url}/models`)).json()) as { models: Array<{ name: string; default: boolean }> }
      expect(models.models.filter((m) => m.default).map((m) => m.name)).toEqual(['resnet50-tv'])
      const photo = await readFile('test/fixtures/photos/chelsea.jpg')
      const res = await fetch(`${server.url}/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: photo })
      const body = (await res.json()) as { model: string; synthetic: boolean }
      expect(res.status).toBe(200)
      expect(body).toMatchObject({ model: 'resnet50-tv', synthetic: false })
    } finally {
      await server.close()
    }
  })

  it('--default-model naming no model stops start-up with the names that exist', async () => {
    const repository = await variantRepository({ resnet50: {} })
    await expect(startTestServer(repository, ['--default-model', 'resnet-tv'])).rejects.toThrow(/holds no model "resnet-tv" \(--default-model\)\. Fix: Name one of: resnet50\./)
  })
})
