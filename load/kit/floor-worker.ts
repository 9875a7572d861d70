import { parentPort, workerData } from 'node:worker_threads'
import { openSession, type SessionSettings } from '../../src/core/onnx-session.js'
import { createNormalizer } from '../../src/core/pixel-normalizer.js'
import type { PreprocessConfig } from '../../src/repository/model-config.js'

/** The floor server's one session (load/kit/floor-server.ts): pixels in, the model's first output and its run time out. */
export interface FloorWorkerInit {
  readonly modelPath: string
  readonly inputName: string
  readonly preprocess: PreprocessConfig
  readonly session: SessionSettings
}
export type FloorWorkerMessage = { type: 'ready' } | { type: 'ran'; logits: Float32Array; runMs: number }

const init = workerData as FloorWorkerInit
const port = parentPort!
const opened = await openSession(init.modelPath, init.session)
const normalize = createNormalizer(init.preprocess)
const { crop } = init.preprocess
const input = new Float32Array(3 * crop * crop)

port.on('message', (pixels: Uint8Array) => {
  normalize(pixels, input, 0)
  const t = performance.now()
  void opened.session.run({ [init.inputName]: new opened.Tensor('float32', input, [1, 3, crop, crop]) }).then((out) => {
    const runMs = performance.now() - t
    const logits = Object.values(out)[0]!.data as Float32Array
    port.postMessage({ type: 'ran', logits, runMs } satisfies FloorWorkerMessage)
  })
})
port.postMessage({ type: 'ready' } satisfies FloorWorkerMessage)
