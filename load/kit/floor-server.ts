import { once } from 'node:events'
import { parseArgs } from 'node:util'
import Fastify from 'fastify'
import { defaultThreadsPerSession } from '../../src/config.js'
import { siblingModule, startModuleWorker } from '../../src/core/module-worker.js'
import { ImagePreprocessor } from '../../src/core/preprocess.js'
import { loadModelFolder } from '../../src/repository/repository.js'
import type { FloorWorkerInit, FloorWorkerMessage } from './floor-worker.js'

/**
 * The least a Node service of this design can be: one fastify route that reads a JPEG body,
 * decodes it with the service's own preprocessing, hands the pixels to one worker thread holding
 * the model's ONNX Runtime session and answers the top class with the same `timings` fields as
 * /classify. No batcher, admission, hooks, metrics, logging or labels: what `load:overhead` sets
 * /classify's concurrency-1 latency beside, to tell the service's own cost from the stack's on
 * the machine at hand. Started like the service by startBenchServer (it logs "HTTP listening");
 * one request at a time only.
 *
 *   node --import tsx load/kit/floor-server.ts --model-repository DIR --model NAME [--host H --port P]
 */

const { values } = parseArgs({
  strict: false,
  options: {
    'model-repository': { type: 'string' },
    model: { type: 'string', default: 'resnet50' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' }
  }
})
const entry = await loadModelFolder(String(values['model-repository']), String(values.model))
const { preprocess } = entry.config
const preprocessor = new ImagePreprocessor(preprocess, { maxInputPixels: 50_000_000 })
const init: FloorWorkerInit = {
  modelPath: entry.modelPath,
  inputName: entry.config.input.name,
  preprocess,
  session: { provider: 'cpu', cudaDeviceId: 0, threads: defaultThreadsPerSession(1) }
}
const worker = startModuleWorker(siblingModule(import.meta.url, 'floor-worker'), { workerData: init })
await once(worker, 'message')

const app = Fastify({ bodyLimit: 64 * 1024 * 1024 })
app.addContentTypeParser('image/jpeg', { parseAs: 'buffer' }, (_req, body, done) => done(null, body))
app.post('/classify', async (request) => {
  const t0 = performance.now()
  const pixels = await preprocessor.decode(request.body as Buffer)
  const t1 = performance.now()
  worker.postMessage(pixels)
  const [answer] = (await once(worker, 'message')) as [Extract<FloorWorkerMessage, { type: 'ran' }>]
  let top = 0
  for (let i = 1; i < answer.logits.length; i++) if (answer.logits[i]! > answer.logits[top]!) top = i
  const totalMs = performance.now() - t0
  return { index: top, timings: { queueMs: 0, preprocessMs: t1 - t0, inferenceMs: answer.runMs, postprocessMs: 0, totalMs } }
})
const address = await app.listen({ host: String(values.host), port: Number(values.port) })
console.log(JSON.stringify({ msg: 'HTTP listening', address }))
