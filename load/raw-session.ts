import { availableParallelism } from 'node:os'
import type { Provider } from '../src/config.js'
import { openSession, type OpenedSession } from '../src/core/onnx-session.js'
import type { ModelConfig } from '../src/repository/model-config.js'
import { median } from './bench-kit.js'

/**
 * The yardstick every load scenario is divided by: the model's ONNX Runtime session(s) fed ready
 * tensors in a loop, no server, no decoding, on the same machine in the same run.
 */

export interface RawSessionFigure {
  readonly batch: number
  /** Sessions running a batch at the same time (the service's --sessions-per-model). */
  readonly inFlight: number
  readonly imagesPerSecond: number
  /** Median time of one run of one session. */
  readonly medianMs: number
}

export interface RawSessionOptions {
  readonly provider: Provider
  readonly batches: readonly number[]
  readonly seconds: number
  readonly inFlight?: number
  /** Intra-op threads per session; default as the service: the cores divided among the sessions. */
  readonly threads?: number
}

function inputTensor(opened: OpenedSession, input: ModelConfig['input'], crop: number, batch: number): InstanceType<OpenedSession['Tensor']> {
  const size = batch * 3 * crop * crop
  const dims = input.layout === 'NCHW' ? [batch, 3, crop, crop] : [batch, crop, crop, 3]
  return input.datatype === 'uint8' ? new opened.Tensor('uint8', new Uint8Array(size).fill(128), dims) : new opened.Tensor('float32', new Float32Array(size).fill(0.1), dims)
}

export async function measureRawSession(modelPath: string, config: ModelConfig, options: RawSessionOptions): Promise<RawSessionFigure[]> {
  const inFlight = options.inFlight ?? 1
  const threads = options.threads ?? Math.max(1, Math.floor(availableParallelism() / inFlight))
  const sessions: OpenedSession[] = []
  for (let i = 0; i < inFlight; i++) sessions.push(await openSession(modelPath, { provider: options.provider, cudaDeviceId: 0, threads }))
  const figures: RawSessionFigure[] = []
  try {
    for (const batch of options.batches) {
      const feeds = sessions.map((s) => ({ [config.input.name]: inputTensor(s, config.input, config.preprocess.crop, batch) }))
      await Promise.all(sessions.map((s, i) => s.session.run(feeds[i]!))) // warm-up: first runs allocate
      const times: number[] = []
      const t0 = performance.now()
      await Promise.all(
        sessions.map(async (s, i) => {
          while (performance.now() - t0 < options.seconds * 1000 || times.length < 3) {
            const t = performance.now()
            await s.session.run(feeds[i]!)
            times.push(performance.now() - t)
          }
        })
      )
      const elapsed = (performance.now() - t0) / 1000
      figures.push({ batch, inFlight, imagesPerSecond: (times.length * batch) / elapsed, medianMs: median(times) })
    }
  } finally {
    for (const s of sessions) await s.session.release()
  }
  return figures
}
