import { performance } from 'node:perf_hooks'
import { parentPort, workerData } from 'node:worker_threads'
import { openSession, readSignature } from './onnx-session.js'
import { createNormalizer } from './pixel-normalizer.js'
import { ItemKind, type RunRequest, type WorkerInit, type WorkerMessage } from './worker-messages.js'
import type { InferenceSession, Tensor as OrtTensor } from 'onnxruntime-node'

/**
 * One worker thread owns one ONNX Runtime session. `session.run` blocks the thread it runs on for
 * the whole batch, which is why it lives here and not on the event loop. Batches arrive one at a
 * time (the pool never sends a second before the first answered).
 */

const init = workerData as WorkerInit
const port = parentPort
if (port === null) throw new Error('inference-worker must run in a worker thread')

function post(message: WorkerMessage, transfer: ArrayBuffer[] = []): void {
  port!.postMessage(message, transfer)
}

const { crop } = init.preprocess
const pixelBytes = crop * crop * 3
const floatInput = init.input.datatype === 'float32'
const itemElements = 3 * crop * crop
/** Reused across batches: sized once for the largest batch, viewed per batch. */
const floatBuffer = floatInput ? new Float32Array(init.maxBatchSize * itemElements) : undefined
/** uint8 input padded to a larger run size: made on first use. */
let paddedPixels: Uint8Array | undefined
const normalize = createNormalizer(init.preprocess, init.input.layout)
const dims = (n: number): number[] => (init.input.layout === 'NCHW' ? [n, 3, crop, crop] : [n, crop, crop, 3])

let session: InferenceSession
let Tensor: typeof OrtTensor

async function start(): Promise<void> {
  const t0 = performance.now()
  try {
    const opened = await openSession(init.modelPath, init)
    session = opened.session
    Tensor = opened.Tensor
    post({
      type: 'ready',
      signature: readSignature(session),
      provider: opened.provider,
      ...(opened.fallbackReason === undefined ? {} : { fallbackReason: opened.fallbackReason }),
      loadMs: performance.now() - t0
    })
  } catch (err) {
    post({ type: 'load-failed', message: (err as Error).message })
  }
}

function inputTensor(req: RunRequest): OrtTensor {
  const n = req.kinds.length
  const size = req.runSize
  if (size < n) throw new Error(`a batch of ${n} images was sent to a session that runs ${size}`)
  if (!floatInput) {
    // uint8 NHWC models take the decoder's pixels as they are: PIXELS and TENSOR share one layout.
    const pixels = new Uint8Array(req.data, 0, n * pixelBytes)
    if (size === n) return new Tensor('uint8', pixels, dims(n))
    paddedPixels ??= new Uint8Array(init.maxBatchSize * pixelBytes)
    paddedPixels.set(pixels)
    paddedPixels.fill(0, n * pixelBytes, size * pixelBytes)
    return new Tensor('uint8', paddedPixels.subarray(0, size * pixelBytes), dims(size))
  }
  const target = floatBuffer!
  let byteOffset = 0
  for (let i = 0; i < n; i++) {
    if (req.kinds[i] === ItemKind.PIXELS) {
      normalize(new Uint8Array(req.data, byteOffset, pixelBytes), target, i * itemElements)
      byteOffset += pixelBytes
    } else {
      target.set(new Float32Array(req.data, byteOffset, itemElements), i * itemElements)
      byteOffset += itemElements * 4
    }
  }
  if (size > n) target.fill(0, n * itemElements, size * itemElements)
  return new Tensor('float32', target.subarray(0, size * itemElements), dims(size))
}

async function run(req: RunRequest): Promise<void> {
  try {
    const t0 = performance.now()
    const input = inputTensor(req)
    const t1 = performance.now()
    const results = await session.run({ [init.input.name]: input }, [init.outputName])
    const t2 = performance.now()
    const all = results[init.outputName]!.data as Float32Array
    // Rows of padding images are dropped. The binding hands back a fresh array per run; copy only
    // if what is sent is a view into something larger.
    const data = req.runSize === req.kinds.length ? all : all.subarray(0, (all.length / req.runSize) * req.kinds.length)
    const output = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? (data.buffer as ArrayBuffer) : data.slice().buffer
    // The run is over: nothing reads the input any more, so its buffer goes back for reuse.
    post(
      {
        type: 'result',
        id: req.id,
        output,
        input: req.data,
        prepareMs: t1 - t0,
        inferMs: t2 - t1,
        runStartedAt: performance.timeOrigin + t1
      },
      [output, req.data]
    )
  } catch (err) {
    post({ type: 'run-failed', id: req.id, message: (err as Error).message })
  }
}

port.on('message', (req: RunRequest | { type: 'close' } | { type: 'fail' }) => {
  if (req.type === 'run') void run(req)
  else if (req.type === 'close') void session?.release().finally(() => port.close())
  // Fault injection for tests: an uncaught error, as a bug in this thread would raise. (Terminating
  // the thread from outside while session.run is in native code aborts the whole process inside
  // onnxruntime-node, so tests cannot kill a worker that way.)
  else if (req.type === 'fail') throw new Error('inference worker failure injected by a test')
})

void start()
