import { once } from 'node:events'
import type { Worker } from 'node:worker_threads'
import { defaultThreadsPerSession, type Provider } from '../../src/config.js'
import { siblingModule, startModuleWorker } from '../../src/core/module-worker.js'
import type { SessionSettings } from '../../src/core/onnx-session.js'
import type { ModelConfig } from '../../src/repository/model-config.js'
import { median } from './stats.js'

/**
 * The yardstick every load scenario is divided by: the model's ONNX Runtime session(s) fed ready
 * tensors in a loop, no server, no decoding, on the same machine in the same run. Each session runs
 * in its own worker thread, as in the service, so sessions in flight really overlap.
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

export interface RawWorkerInit {
  readonly modelPath: string
  readonly session: SessionSettings
  readonly inputName: string
  readonly datatype: ModelConfig['input']['datatype']
  readonly layout: ModelConfig['input']['layout']
  readonly crop: number
}
export type RawWorkerRequest =
  { type: 'prepare'; batch: number } | { type: 'measure'; seconds: number } | { type: 'run'; batch: number } | { type: 'close' }
export type RawWorkerMessage =
  | { type: 'ready'; provider: 'cuda' | 'cpu' }
  | { type: 'prepared' }
  | { type: 'measured'; times: number[]; elapsedMs: number }
  | { type: 'ran'; ms: number }
  | { type: 'closed' }
  | { type: 'failed'; message: string }

const WORKER_MODULE = siblingModule(import.meta.url, 'raw-session-worker')

/**
 * Sends one request and waits for the worker's answer; a failure or an exit rejects. Both listeners
 * go when it returns: a pool asked between every load level would otherwise pile up 'error'
 * listeners on each worker (MaxListenersExceededWarning).
 */
async function ask(worker: Worker, req: RawWorkerRequest | undefined, expect: RawWorkerMessage['type']): Promise<RawWorkerMessage> {
  if (req !== undefined) worker.postMessage(req)
  const done = new AbortController()
  const answered = once(worker, 'message', { signal: done.signal })
  const failed = once(worker, 'error', { signal: done.signal }).then(([err]) => Promise.reject(err as Error))
  // The loser rejects with an AbortError once `done` aborts; nobody waits for it.
  answered.catch(() => undefined)
  failed.catch(() => undefined)
  let msg: RawWorkerMessage
  try {
    ;[msg] = (await Promise.race([answered, failed])) as [RawWorkerMessage]
  } finally {
    done.abort()
  }
  if (msg.type === 'failed') throw new Error(`raw session: ${msg.message}`)
  if (msg.type !== expect) throw new Error(`raw session: expected ${expect}, got ${msg.type}`)
  return msg
}

/**
 * Raw sessions kept open (one worker thread each) so a figure can be taken again between load
 * levels: each level is then divided by the raw figure measured just before it, not minutes earlier.
 */
export class RawSessionPool {
  /** Set when a request failed: the workers are left to finish on their own, none is asked again. */
  private failed = false

  private constructor(
    private readonly workers: Worker[],
    readonly inFlight: number
  ) {}

  static async open(
    modelPath: string,
    config: ModelConfig,
    options: Omit<RawSessionOptions, 'batches' | 'seconds'>
  ): Promise<RawSessionPool> {
    const inFlight = options.inFlight ?? 1
    const threads = options.threads ?? defaultThreadsPerSession(inFlight)
    const init: RawWorkerInit = {
      modelPath,
      session: { provider: options.provider, cudaDeviceId: 0, threads },
      inputName: config.input.name,
      datatype: config.input.datatype,
      layout: config.input.layout,
      crop: config.preprocess.crop
    }
    const workers = Array.from({ length: inFlight }, () => startModuleWorker(WORKER_MODULE, { workerData: init }))
    // An error while an ask waits rejects that ask; one between asks must not end the load process.
    for (const w of workers) w.on('error', () => undefined)
    const pool = new RawSessionPool(workers, inFlight)
    await pool.all(undefined, 'ready')
    return pool
  }

  /** All sessions run `batch`-image batches back to back for `seconds`; images/s of them together. */
  async measure(batch: number, seconds: number): Promise<RawSessionFigure> {
    await this.all({ type: 'prepare', batch }, 'prepared')
    const results = (await this.all({ type: 'measure', seconds }, 'measured')) as Array<Extract<RawWorkerMessage, { type: 'measured' }>>
    const times = results.flatMap((r) => r.times)
    const elapsed = Math.max(...results.map((r) => r.elapsedMs)) / 1000
    return { batch, inFlight: this.inFlight, imagesPerSecond: (times.length * batch) / elapsed, medianMs: median(times) }
  }

  /**
   * Every session runs one `batch`-image batch (prepared on first use of that size): a step of a
   * caller's own loop. Resolves with the slowest session's run time in ms, as its worker timed it.
   */
  async runOnce(batch: number): Promise<number> {
    const ran = (await this.all({ type: 'run', batch }, 'ran')) as Array<Extract<RawWorkerMessage, { type: 'ran' }>>
    return Math.max(...ran.map((r) => r.ms))
  }

  async close(): Promise<void> {
    if (!this.failed) await this.all({ type: 'close' }, 'closed')
  }

  private all(req: RawWorkerRequest | undefined, expect: RawWorkerMessage['type']): Promise<RawWorkerMessage[]> {
    return Promise.all(this.workers.map((w) => ask(w, req, expect))).catch((err: unknown) => {
      // Terminating a thread inside a native run can abort the process: let them finish on their own.
      this.failed = true
      for (const w of this.workers) w.unref()
      throw err
    })
  }
}

export async function measureRawSession(modelPath: string, config: ModelConfig, options: RawSessionOptions): Promise<RawSessionFigure[]> {
  const pool = await RawSessionPool.open(modelPath, config, options)
  const figures: RawSessionFigure[] = []
  for (const batch of options.batches) figures.push(await pool.measure(batch, options.seconds))
  await pool.close()
  return figures
}
