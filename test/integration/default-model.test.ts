import { readFile } from 'node:fs/promises'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { afterAll, describe, expect, it } from 'vitest'
import { loadSettings } from '../../src/config.js'
import { ClassifyService } from '../../src/core/classify-service.js'
import { removeVariantRepositories, variantRepository } from '../helpers/model-variants.js'
import { startTestServer } from '../helpers/server.js'

/**
 * The synthetic model is a placeholder. Regression: after importing a real model, a request that
 * named no model still went to the synthetic resnet50.
 */

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

  it('the start-up log names the default once, after every model has loaded (it named the synthetic one, then the real one)', async () => {
    const repository = await variantRepository({ resnet50: {}, 'resnet50-tv': { real: true } })
    const lines: Array<{ msg: string; model?: string; why?: string }> = []
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as (typeof lines)[number])
        done()
      }
    })
    const settings = loadSettings(['--model-repository', repository, '--provider', 'cpu'], {})
    const service = await ClassifyService.start(settings, pino({ level: 'info' }, sink))
    try {
      const told = lines.filter((l) => l.msg === 'default model (requests that name none)')
      expect(told).toEqual([expect.objectContaining({ model: 'resnet50-tv', why: 'the only model with real (not synthetic) weights' })])
    } finally {
      await service.close()
    }
  })

  it('--default-model naming no model stops start-up with the names that exist', async () => {
    const repository = await variantRepository({ resnet50: {} })
    await expect(startTestServer(repository, ['--default-model', 'resnet-tv'])).rejects.toThrow(
      /holds no model "resnet-tv" \(--default-model\)\. Fix: Name one of: resnet50\./
    )
  })
})
