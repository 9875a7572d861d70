import type { ModelConfig } from '../repository/model-config.js'
import type { ModelSignature } from '../repository/repository.js'
import type { Provider } from '../config.js'

/**
 * Messages between the inference pool (main thread) and an inference worker. One worker owns one
 * ONNX Runtime session; it runs one batch at a time.
 */

export interface WorkerInit {
  readonly modelPath: string
  readonly input: ModelConfig['input']
  readonly outputName: string
  readonly preprocess: ModelConfig['preprocess']
  /** Upper bound of a batch; the worker sizes its reusable input buffer from it. */
  readonly maxBatchSize: number
  readonly provider: Provider
  readonly cudaDeviceId: number
  readonly threads: number
}

/**
 * How an item's bytes are laid out in a batch's `data`:
 * - PIXELS: crop×crop×3 uint8, RGB, HWC, straight from the decoder; the worker normalises it
 *   (or, for a uint8 NHWC model, feeds it as is).
 * - TENSOR: one image already in the model's input format (float32 CHW or uint8 HWC).
 */
export const ItemKind = { PIXELS: 0, TENSOR: 1 } as const
export type ItemKind = (typeof ItemKind)[keyof typeof ItemKind]

export interface RunRequest {
  readonly type: 'run'
  readonly id: number
  /** One entry per item, in batch order. */
  readonly kinds: Uint8Array
  /** Items back to back, each in its kind's layout. Transferred, not copied. */
  readonly data: ArrayBuffer
  /**
   * The batch size the session runs: `kinds.length`, or more when the batch is padded with zero
   * images to a size the session has already run (on CUDA each new input shape costs a slow first run).
   */
  readonly runSize: number
}

export interface ReadyMessage {
  readonly type: 'ready'
  readonly signature: ModelSignature
  readonly provider: 'cuda' | 'cpu'
  /** Why CUDA was not used when the setting was `auto`. */
  readonly fallbackReason?: string
  readonly loadMs: number
}

export interface LoadFailedMessage {
  readonly type: 'load-failed'
  readonly message: string
}

export interface RunResult {
  readonly type: 'result'
  readonly id: number
  /** Float32 [batch, classes], transferred. */
  readonly output: ArrayBuffer
  /** The request's `data`, handed back (transferred) for the next batch's input. */
  readonly input: ArrayBuffer
  /** Time spent normalising pixels into the input buffer. */
  readonly prepareMs: number
  readonly inferMs: number
  /** When the session's run began, in epoch milliseconds (performance.timeOrigin + now: comparable across threads). */
  readonly runStartedAt: number
}

export interface RunFailed {
  readonly type: 'run-failed'
  readonly id: number
  readonly message: string
}

export type WorkerMessage = ReadyMessage | LoadFailedMessage | RunResult | RunFailed
