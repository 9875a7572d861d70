import { EventEmitter } from 'node:events'
import type { Worker } from 'node:worker_threads'
import { ServiceError, echoed } from '../errors.js'
import { checkModelSignature, type ModelEntry, type ModelShape } from '../repository/repository.js'
import { siblingModule, startModuleWorker } from './module-worker.js'
import { ItemKind, type ReadyMessage, type RunRequest, type WorkerInit, type WorkerMessage } from './worker-messages.js'
import type { SessionSettings } from './onnx-session.js'
import { runPlan, type RunPlan } from './run-sizes.js'

/**
 * Worker threads that own the ONNX Runtime sessions of one model, one per slot. The batcher in
 * front has a runner per slot and never more batches in flight than slots, so `run` normally finds
 * its slot's worker idle; while a worker is being replaced after a crash, its slot's runs wait in a
 * small FIFO. A slot keeps its run size across replacements (fixed shapes on CUDA, run-sizes.ts).
 */

const WORKER_MODULE = siblingModule(import.meta.url, 'inference-worker')

export interface BatchOutput {
  /** Float32 [batch, classes]. */
  readonly output: Float32Array
  readonly prepareMs: number
  readonly inferMs: number
  /** When the session's run began, on this thread's performance.now() clock. */
  readonly runStartedAt: number
}

/** Characters of ONNX Runtime's message a refused image's answer repeats. */
const RUN_FAILURE_CHARS = 300

/**
 * The largest batch input kept for reuse: 64 images of 224×224 pixels (9.6 MB) are; larger
 * batches (float32 tensors, bigger crops) allocate theirs, so what a burst leaves held is bounded
 * (two per session).
 */
export const SPARE_INPUT_MAX_BYTES = 16 * 2 ** 20

interface Pending {
  resolve(out: BatchOutput): void
  reject(err: Error): void
}

class SessionWorker {
  readonly worker: Worker
  busy: Pending | undefined
  busyId = -1

  constructor(
    init: WorkerInit,
    readonly slot: number
  ) {
    this.worker = startModuleWorker(WORKER_MODULE, { workerData: init })
  }
}

interface Waiting {
  readonly kinds: Uint8Array
  readonly data: ArrayBuffer
  readonly pending: Pending
}

export interface ModelSessionsEvents {
  /** A worker died and is being replaced; carries the reason. */
  crash: [reason: string]
  /** ONNX Runtime refused to run a batch (its images are answered INFERENCE_FAILED); carries its message. */
  runFailed: [reason: string]
  /** A worker came up: which provider it got, and why CUDA was not used (if so). */
  ready: [info: ReadyMessage]
}

export class ModelSessions extends EventEmitter<ModelSessionsEvents> {
  readonly entry: ModelEntry
  shape: ModelShape | undefined
  provider: 'cuda' | 'cpu' | undefined
  /** Set by `start`, from the model's shape and the provider its sessions got: what each slot runs. */
  plan: RunPlan | undefined
  private readonly init: WorkerInit
  /** The worker serving each slot; undefined while it starts or is being replaced. */
  private readonly workers: Array<SessionWorker | undefined>
  /** Per slot, runs waiting for its worker. */
  private readonly waiting: Waiting[][]
  private nextId = 0
  private closing = false
  /** Input buffers the workers handed back after their runs, for the next batches (inputBuffer). */
  private readonly spareInputs: ArrayBuffer[] = []

  constructor(entry: ModelEntry, settings: SessionSettings & { sessions: number }) {
    super()
    this.entry = entry
    this.init = {
      modelPath: entry.modelPath,
      input: entry.config.input,
      outputName: entry.config.output.name,
      preprocess: entry.config.preprocess,
      maxBatchSize: entry.config.batching.maxBatchSize,
      provider: settings.provider,
      cudaDeviceId: settings.cudaDeviceId,
      threads: settings.threads
    }
    this.sessionCount = settings.sessions
    this.workers = new Array<SessionWorker | undefined>(settings.sessions).fill(undefined)
    this.waiting = Array.from({ length: settings.sessions }, () => [])
  }

  readonly sessionCount: number

  /** Opens every session, checks the model's signature against its config, warms up every batch size it will run. */
  async start(): Promise<void> {
    const started = await Promise.allSettled(Array.from({ length: this.sessionCount }, (_, slot) => this.spawn(slot)))
    const failed = started.find((r) => r.status === 'rejected')
    if (failed !== undefined) {
      await this.close()
      throw (failed as PromiseRejectedResult).reason
    }
    const { batching } = this.entry.config
    try {
      this.plan = runPlan(this.shape!.maxBatchSize, this.provider ?? 'cpu', this.sessionCount, batching)
    } catch (err) {
      await this.close()
      throw new Error(`${this.entry.name}: ${(err as Error).message}`)
    }
    await Promise.all(this.plan.warmUp.map((sizes, slot) => this.warmUp(slot, sizes)))
  }

  /**
   * Runs one batch on the session of `slot` (the batcher's runner), at most that slot's capacity
   * (`plan.capacities`). `data` is transferred to the worker.
   */
  run(kinds: Uint8Array, data: ArrayBuffer, slot = 0): Promise<BatchOutput> {
    return new Promise((resolve, reject) => {
      const pending = { resolve, reject }
      if (this.closing) return reject(new ServiceError('SHUTTING_DOWN'))
      const w = this.workers[slot]
      if (w === undefined || w.busy !== undefined) this.waiting[slot]!.push({ kinds, data, pending })
      else this.dispatch(w, kinds, data, pending)
    })
  }

  /**
   * A buffer of at least `bytes` for a batch's input: one a worker handed back after its run when
   * one is big enough, else a new one (not zero-filled: the caller writes every byte it sends). A
   * batch's input used to be a new 150 kB to 38 MB buffer per run, allocated, faulted in and
   * collected as external memory on the main thread, beside each request's body.
   */
  inputBuffer(bytes: number): ArrayBuffer {
    for (let i = 0; i < this.spareInputs.length; i++) {
      const spare = this.spareInputs[i]!
      if (spare.byteLength < bytes) continue
      this.spareInputs.splice(i, 1)
      return spare
    }
    return Buffer.allocUnsafeSlow(bytes).buffer as ArrayBuffer
  }

  /** Keeps a handed-back input for the next batch: at most two per session, none over SPARE_INPUT_MAX_BYTES. */
  private recycle(input: ArrayBuffer): void {
    if (input.byteLength > SPARE_INPUT_MAX_BYTES) return
    if (this.spareInputs.length >= 2 * this.sessionCount) this.spareInputs.shift()
    this.spareInputs.push(input)
  }

  /** Runs a zero batch of each size on one slot's session, one after the other, so no real request pays a first run of that size. */
  private async warmUp(slot: number, sizes: readonly number[]): Promise<void> {
    const { crop } = this.init.preprocess
    for (const batch of sizes) {
      await this.run(new Uint8Array(batch).fill(ItemKind.PIXELS), new ArrayBuffer(batch * crop * crop * 3), slot)
    }
  }

  private dispatch(w: SessionWorker, kinds: Uint8Array, data: ArrayBuffer, pending: Pending): void {
    const id = this.nextId++
    w.busy = pending
    w.busyId = id
    const runSize = this.plan?.runSize(kinds.length, w.slot) ?? kinds.length
    const req: RunRequest = { type: 'run', id, kinds, data, runSize }
    w.worker.postMessage(req, [data])
  }

  private spawn(slot: number): Promise<void> {
    const w = new SessionWorker(this.init, slot)
    return new Promise<void>((resolve, reject) => {
      let up = false
      w.worker.on('message', (msg: WorkerMessage) => {
        switch (msg.type) {
          case 'ready':
            try {
              this.shape = checkModelSignature(this.entry, msg.signature)
            } catch (err) {
              void w.worker.terminate()
              reject(err as Error)
              return
            }
            up = true
            this.provider = msg.provider
            this.workers[slot] = w
            this.emit('ready', msg)
            this.pump(w)
            resolve()
            break
          case 'load-failed':
            void w.worker.terminate()
            reject(new Error(`${this.entry.modelPath}: ONNX Runtime could not load the model: ${msg.message}`))
            break
          case 'result':
          case 'run-failed':
            this.settle(w, msg)
            break
        }
      })
      w.worker.on('error', (err) => {
        if (!up) reject(err)
      })
      w.worker.on('exit', (code) => {
        if (!up) {
          reject(new Error(`${this.entry.modelPath}: the inference worker exited (code ${code}) while loading the model`))
          return
        }
        this.onWorkerExit(w, code)
      })
    })
  }

  private settle(w: SessionWorker, msg: Extract<WorkerMessage, { type: 'result' | 'run-failed' }>): void {
    const pending = w.busy
    if (pending === undefined || msg.id !== w.busyId) return
    w.busy = undefined
    if (msg.type === 'result') {
      this.recycle(msg.input)
      pending.resolve({
        output: new Float32Array(msg.output),
        prepareMs: msg.prepareMs,
        inferMs: msg.inferMs,
        runStartedAt: msg.runStartedAt - performance.timeOrigin
      })
    } else {
      // Logged once for the batch, at error (the door logs each image's refusal at info); the client
      // is told ONNX Runtime's reason too, as Triton answers a backend's error.
      this.emit('runFailed', msg.message)
      pending.reject(
        new ServiceError('INFERENCE_FAILED', `(ONNX Runtime: ${echoed(msg.message, RUN_FAILURE_CHARS)})`, {
          retryAfterSeconds: 1,
          cause: new Error(msg.message)
        })
      )
    }
    this.pump(w)
  }

  private pump(w: SessionWorker): void {
    const next = this.waiting[w.slot]!.shift()
    if (next !== undefined) this.dispatch(w, next.kinds, next.data, next.pending)
  }

  /** A worker that dies takes its batch with it: that batch fails fast, and a new worker takes its place. */
  private onWorkerExit(w: SessionWorker, code: number): void {
    if (this.workers[w.slot] === w) this.workers[w.slot] = undefined
    const pending = w.busy
    w.busy = undefined
    if (this.closing) {
      pending?.reject(new ServiceError('SHUTTING_DOWN'))
      return
    }
    pending?.reject(new ServiceError('INFERENCE_FAILED', `The worker exited with code ${code}.`))
    this.emit('crash', `inference worker for ${this.entry.name} exited with code ${code}`)
    this.spawn(w.slot).catch((err: unknown) => this.emit('crash', `replacement worker failed to start: ${(err as Error).message}`))
  }

  /** The worker threads currently serving. */
  get threads(): readonly Worker[] {
    return this.workers.flatMap((w) => (w === undefined ? [] : [w.worker]))
  }

  /**
   * Fault injection for tests: the next idle worker fails with an uncaught error before it takes
   * its next batch, so that batch is lost with it.
   */
  injectWorkerFailure(): void {
    this.workers.find((w) => w !== undefined && w.busy === undefined)?.worker.postMessage({ type: 'fail' })
  }

  async close(): Promise<void> {
    this.closing = true
    for (const queue of this.waiting) for (const { pending } of queue.splice(0)) pending.reject(new ServiceError('SHUTTING_DOWN'))
    const workers = this.workers.flatMap((w) => (w === undefined ? [] : [w]))
    this.workers.fill(undefined)
    await Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            w.worker.once('exit', () => resolve())
            w.worker.postMessage({ type: 'close' })
            setTimeout(() => void w.worker.terminate(), 5_000).unref()
          })
      )
    )
  }
}
