import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadSettings } from '../../src/config.js'
import { ClassifyService } from '../../src/core/classify-service.js'
import { buildApp } from '../../src/http/app.js'
import { ServiceMetrics } from '../../src/metrics.js'
import { importModel } from '../../src/model-tools/import-model.js'
import type { ModelConfig } from '../../src/repository/model-config.js'
import { readPhoto } from '../helpers/photos.js'
import { CLASSES, removeTempDirs, tempDir, writeTinyModel, zeroImage, type TinyModel } from '../helpers/tiny-model.js'

/**
 * Models that load and validate but misbehave at run time, as exports people bring sometimes do:
 * one that answers the first row only, whatever the batch; one whose output is NaN for some
 * images; one that ONNX Runtime refuses to run at some batch sizes. Each image is answered with a
 * registry code saying so, never a 200 with empty predictions or an unserialisable NaN, and the
 * server logs the cause at error once.
 */

interface LogLine {
  readonly level: number
  readonly msg: string
  readonly model?: string
  readonly reason?: string
}

const logs: LogLine[] = []
let url: string
let close: () => Promise<void>

const MODELS: Record<string, Omit<TinyModel, 'inputs'>> = {
  rows: { firstRowOnly: true },
  nan: { sqrt: true },
  throws: { addRows: 4 }
}

beforeAll(async () => {
  const work = await tempDir('rs-faults-src-')
  const repository = await tempDir('rs-faults-repo-')
  for (const [name, model] of Object.entries(MODELS)) {
    const source = await writeTinyModel(join(work, `${name}.onnx`), { ...model, inputs: ['input'] })
    const { dir } = await importModel({ source, name, preset: 'torchvision', repository })
    // A queue delay, so that requests sent together run as one batch.
    const configPath = join(dir, 'config.json')
    const config = JSON.parse(await readFile(configPath, 'utf8')) as ModelConfig
    await writeFile(configPath, JSON.stringify({ ...config, batching: { ...config.batching, maxBatchSize: 4, maxQueueDelayMs: 200 } }))
  }
  const settings = loadSettings(['--model-repository', repository, '--port', '0', '--provider', 'cpu', '--sessions-per-model', '1'], {})
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') logs.push(JSON.parse(line) as LogLine)
      done()
    }
  })
  const log = pino({ level: 'info' }, sink)
  const metrics = new ServiceMetrics()
  const service = await ClassifyService.start(settings, log, metrics.events)
  const app = await buildApp(service, settings, log, metrics)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  url = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`
  close = async () => {
    await app.close()
    await service.close()
  }
}, 120_000)

afterAll(async () => {
  await close?.()
  await removeTempDirs()
})

/** A V2 request of FP32 images sent as binary data; the answer's status and body text. */
async function infer(model: string, images: readonly Uint8Array[]): Promise<{ status: number; text: string; retryAfter: string | null }> {
  const header = Buffer.from(
    JSON.stringify({
      inputs: [
        {
          name: 'input',
          datatype: 'FP32',
          shape: [images.length, 3, 224, 224],
          parameters: { binary_data_size: images.length * 3 * 224 * 224 * 4 }
        }
      ]
    })
  )
  const res = await fetch(`${url}/v2/models/${model}/infer`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(header.length) },
    body: Buffer.concat([header, ...images])
  })
  return { status: res.status, text: await res.text(), retryAfter: res.headers.get('retry-after') }
}

/** An FP32 image whose pooled channels are not all zero, so that some of the tiny model's scores are negative. */
function mixedImage(): Uint8Array {
  // Its first channel all 1, the others 0: its scores are the first row of weights, of both signs.
  const tensor = new Float32Array(3 * 224 * 224).fill(1, 0, 224 * 224)
  return new Uint8Array(tensor.buffer)
}

const errorLines = (model: string, msg: string): LogLine[] => logs.filter((l) => l.level === 50 && l.model === model && l.msg === msg)

describe('a model that misbehaves at run time', () => {
  it('answering one row for a batch of four: every image is 500 MODEL_OUTPUT_INVALID saying so (it was 200 with empty predictions)', async () => {
    const single = await infer('rows', [zeroImage()])
    expect(single.status).toBe(200)
    const four = await infer('rows', [zeroImage(), zeroImage(), zeroImage(), zeroImage()])
    expect(four.status).toBe(500)
    expect(four.text).toMatch(new RegExp(`MODEL_OUTPUT_INVALID: .*rows answered ${CLASSES} values for 4 images of ${CLASSES} classes`))
  })

  it('answering NaN for one image of a batch: that image fails, the other in its batch is answered (it was a 500 from the serialiser)', async () => {
    const [finite, notFinite] = await Promise.all([infer('nan', [zeroImage()]), infer('nan', [mixedImage()])])
    expect(finite.status).toBe(200)
    expect(notFinite.status).toBe(500)
    expect(notFinite.text).toMatch(/MODEL_OUTPUT_INVALID: .*nan answered NaN for class \d+ of this image/)
    const photo = await fetch(`${url}/classify?model=nan`, {
      method: 'POST',
      headers: { 'content-type': 'image/jpeg' },
      body: await readPhoto('chelsea.jpg')
    })
    expect(photo.status).toBe(500)
    expect(((await photo.json()) as { code: string }).code).toBe('MODEL_OUTPUT_INVALID')
    expect(logs.some((l) => l.level === 50 && /cannot be converted/.test(JSON.stringify(l)))).toBe(false)
  })

  it('refused by ONNX Runtime at some batch sizes: 503 INFERENCE_FAILED with its reason and Retry-After, the cause logged at error once per batch', async () => {
    // Warmed up at its largest batch, 4, which it runs.
    expect((await infer('throws', [zeroImage(), zeroImage(), zeroImage(), zeroImage()])).status).toBe(200)
    const before = errorLines('throws', 'inference run failed').length
    const refused = await infer('throws', [zeroImage(), zeroImage()])
    expect(refused.status).toBe(503)
    expect(refused.text).toMatch(/INFERENCE_FAILED: .*\(ONNX Runtime: .*\)/)
    expect(refused.retryAfter).toBe('1')
    const lines = errorLines('throws', 'inference run failed').slice(before)
    expect(lines).toHaveLength(1)
    expect(lines[0]!.reason).toMatch(/Add/)
  })
})
