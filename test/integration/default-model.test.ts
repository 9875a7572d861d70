import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { afterAll, describe, expect, it } from 'vitest'
import { loadSettings } from '../../src/config.js'
import { ClassifyService } from '../../src/core/classify-service.js'
import { removeVariantRepositories, variantRepository } from '../helpers/model-variants.js'
import { readPhoto } from '../helpers/photos.js'
import { startTestServer, type TestServer } from '../helpers/server.js'
import { removeTempDirs } from '../helpers/tiny-model.js'
import { tinyRepository, waitFor, writeTinyModelFolder } from '../helpers/versioned-models.js'

/**
 * The synthetic model is a placeholder. Regression: after importing a real model, a request that
 * named no model still went to the synthetic resnet50.
 */

/** A /classify that names no model: the status, and the model that answered or the refusal. */
async function classifyPlain(server: TestServer): Promise<{ status: number; model?: string; code?: string; message?: string }> {
  const res = await fetch(`${server.url}/classify?topk=1`, {
    method: 'POST',
    headers: { 'content-type': 'image/jpeg' },
    body: await readPhoto('clock')
  })
  const body = (await res.json()) as { model?: string; code?: string; message?: string }
  return { status: res.status, model: body.model, code: body.code, message: body.message }
}

describe('the default model in a running server', () => {
  afterAll(async () => {
    await removeVariantRepositories()
    await removeTempDirs()
  })

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

  it("regression: poll mode, the default model's folder removed: a plain request is refused naming it (it was answered by another model), and served again once the folder is back", async () => {
    const repository = await tinyRepository({ resnet50: {}, small: {} })
    const server = await startTestServer(repository, ['--model-control-mode', 'poll', '--repository-poll-secs', '1'])
    try {
      expect(await classifyPlain(server)).toMatchObject({ status: 200, model: 'resnet50' })
      await rm(join(repository, 'resnet50'), { recursive: true })
      await waitFor('the unload', async () => (await classifyPlain(server)).status !== 200)
      const refused = await classifyPlain(server)
      expect(refused).toMatchObject({ status: 404, code: 'MODEL_NOT_FOUND' })
      expect(refused.message).toMatch(/The default model "resnet50" .*is not loaded.*Loaded models: small\./)
      expect(await classifyPlain(server), 'still refused at the next look').toMatchObject({ status: 404 })

      await writeTinyModelFolder(repository, 'resnet50')
      await waitFor('the reload', async () => (await classifyPlain(server)).status === 200)
      expect(await classifyPlain(server)).toMatchObject({ status: 200, model: 'resnet50' })
    } finally {
      await server.close()
    }
  })

  it('explicit mode: unloading the default model refuses plain requests the same way; loading it again serves them', async () => {
    const repository = await tinyRepository({ resnet50: {}, small: {} })
    const server = await startTestServer(repository, ['--model-control-mode', 'explicit', '--load-model', '*'])
    const repositoryCall = (model: string, action: string): Promise<Response> =>
      fetch(`${server.url}/v2/repository/models/${model}/${action}`, { method: 'POST' })
    try {
      expect(await classifyPlain(server)).toMatchObject({ status: 200, model: 'resnet50' })
      expect((await repositoryCall('resnet50', 'unload')).status).toBe(200)
      const refused = await classifyPlain(server)
      expect(refused).toMatchObject({ status: 404, code: 'MODEL_NOT_FOUND' })
      expect(refused.message).toMatch(/The default model "resnet50" /)
      expect((await repositoryCall('resnet50', 'load')).status).toBe(200)
      expect(await classifyPlain(server)).toMatchObject({ status: 200, model: 'resnet50' })
    } finally {
      await server.close()
    }
  })

  it('explicit mode with nothing loaded at start: the first model to load becomes the default, and stays it', async () => {
    const repository = await tinyRepository({ alpha: {}, resnet50: {} })
    const server = await startTestServer(repository, ['--model-control-mode', 'explicit'])
    try {
      expect(await classifyPlain(server)).toMatchObject({ status: 404, code: 'MODEL_NOT_FOUND' })
      expect((await fetch(`${server.url}/v2/repository/models/alpha/load`, { method: 'POST' })).status).toBe(200)
      expect((await fetch(`${server.url}/v2/repository/models/resnet50/load`, { method: 'POST' })).status).toBe(200)
      expect(await classifyPlain(server)).toMatchObject({ status: 200, model: 'alpha' })
    } finally {
      await server.close()
    }
  })
})
