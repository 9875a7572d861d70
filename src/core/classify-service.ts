import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import type { Settings } from '../config.js'
import { ServiceError } from '../errors.js'
import { chooseDefaultModel } from '../repository/default-model.js'
import { loadRepository, RepositoryError, type ModelEntry } from '../repository/repository.js'
import { Batcher, type BatchResult } from './batcher.js'
import { DecodeBudget } from './decode-budget.js'
import { ItemKind } from './worker-messages.js'
import { ModelSessions } from './model-sessions.js'
import { cudaProviderLibrary } from './onnx-session.js'
import { predictions, type Prediction } from './postprocess.js'
import { ImagePreprocessor } from './preprocess.js'

/**
 * The one API both doors (HTTP, gRPC) call. Nothing here knows about fastify or grpc: callers pass
 * bytes or tensors and get answers or ServiceErrors.
 *
 *   bytes → ImagePreprocessor (sharp, libuv pool) → Batcher (per model) → ModelSessions (workers)
 *         → softmax/top-k + labels
 */

export interface RequestOptions {
  /** Absolute deadline on performance.now()'s clock. */
  readonly deadlineAt?: number
  /** Aborted when the client goes away; a queued image is then dropped. */
  readonly signal?: AbortSignal
  /** The batcher's priority level, 1 the highest; absent or 0: the model's default (see batcher.ts). */
  readonly priority?: number
}

export interface Timings {
  readonly queueMs: number
  readonly preprocessMs: number
  readonly inferenceMs: number
  readonly postprocessMs: number
  readonly totalMs: number
}

export interface ModelInfo {
  readonly name: string
  readonly version: string
  readonly synthetic: boolean
}

export interface Classification extends ModelInfo {
  readonly predictions: Prediction[]
  readonly batchSize: number
  readonly timings: Timings
}

export interface ScoresResult extends ModelInfo {
  /** The model's raw output row for this image (logits or probabilities, per output.kind). */
  readonly scores: Float32Array
  readonly batchSize: number
  readonly timings: Timings
}

interface BatchItem {
  readonly kind: ItemKind
  readonly bytes: Uint8Array
}

interface ItemOutput {
  readonly scores: Float32Array
  readonly inferMs: number
}

/** The per-image stages timed in the core; inference is timed per execution (onBatch). */
export type Stage = 'queue' | 'preprocess' | 'postprocess'

/** Hooks for metrics. Called on the hot path: they must be cheap and must not throw. */
export interface ServiceEvents {
  /** One model execution: how many images it held and how long the run took. */
  onBatch?(model: string, size: number, inferMs: number): void
  /** One image finished a stage (every door: image and tensor inputs, classify and raw scores). */
  onStage?(model: string, stage: Stage, ms: number): void
}

/** A model as served: its sessions, its batcher, its preprocessing. */
export class ServedModel {
  readonly entry: ModelEntry
  readonly info: ModelInfo
  readonly sessions: ModelSessions
  readonly preprocessor: ImagePreprocessor
  readonly batcher: Batcher<BatchItem, ItemOutput>
  readonly numClasses: number
  /** Bytes of one preprocessed tensor item in the model's input format. */
  readonly tensorItemBytes: number

  constructor(entry: ModelEntry, sessions: ModelSessions, settings: Settings, events: ServiceEvents, decodeBudget: DecodeBudget) {
    const shape = sessions.shape!
    this.entry = entry
    this.info = Object.freeze({ name: entry.name, version: entry.config.version, synthetic: entry.config.synthetic })
    this.sessions = sessions
    this.numClasses = shape.numClasses
    const { crop } = entry.config.preprocess
    this.tensorItemBytes = entry.config.input.datatype === 'float32' ? 3 * crop * crop * 4 : 3 * crop * crop
    this.preprocessor = new ImagePreprocessor(entry.config.preprocess, {
      maxInputPixels: settings.maxInputPixels,
      maxJpegScans: settings.maxJpegScans,
      decodeTimeoutSeconds: settings.decodeTimeoutSeconds,
      budget: decodeBudget
    })
    this.batcher = new Batcher<BatchItem, ItemOutput>({
      policy: { ...entry.config.batching, maxBatchSize: shape.maxBatchSize },
      runners: sessions.sessionCount,
      execute: (items) => this.execute(items)
    })
    this.events = events
  }

  readonly events: ServiceEvents

  /** Packs a batch into one transferable buffer and splits the answer back into per-item rows. */
  private async execute(items: BatchItem[]): Promise<ItemOutput[]> {
    let total = 0
    for (const item of items) total += item.bytes.byteLength
    const data = new Uint8Array(total)
    const kinds = new Uint8Array(items.length)
    let offset = 0
    for (let i = 0; i < items.length; i++) {
      const item = items[i]!
      kinds[i] = item.kind
      data.set(item.bytes, offset)
      offset += item.bytes.byteLength
    }
    const { output, inferMs } = await this.sessions.run(kinds, data.buffer)
    this.events.onBatch?.(this.entry.name, items.length, inferMs)
    const width = this.numClasses
    const out: ItemOutput[] = new Array(items.length)
    for (let i = 0; i < items.length; i++) out[i] = { scores: output.subarray(i * width, (i + 1) * width), inferMs }
    return out
  }

  submit(item: BatchItem, options: RequestOptions): Promise<BatchResult<ItemOutput>> {
    return this.batcher.submit(item, options)
  }
}

export class ClassifyService {
  private readonly models = new Map<string, ServedModel>()
  /** Models that failed to load under --allow-partial-start: known by name, never ready. */
  private readonly failed = new Map<string, string>()
  private closing = false
  /** Set by beginDrain(): not ready (load balancers stop routing here) while still serving. */
  private draining = false
  readonly defaultModel: string | undefined

  private constructor(
    readonly settings: Settings,
    private readonly log: Logger,
    served: ServedModel[],
    failed: Map<string, string>,
    /** Admission for every model's image decodes (slots, estimated bytes, queue). */
    readonly decodeBudget: DecodeBudget
  ) {
    for (const m of served) this.models.set(m.entry.name, m)
    this.failed = failed
    const choice = chooseDefaultModel(
      served.map((m) => ({ name: m.entry.name, synthetic: m.entry.config.synthetic })),
      settings.defaultModel
    )
    this.defaultModel = choice.name
    if (choice.name !== undefined) log.info({ model: choice.name, why: choice.reason }, 'default model (requests that name none)')
  }

  /**
   * Loads the repository, opens every model's sessions, checks each against its config and warms it
   * up. Throws RepositoryError (with the fix) unless partial start is allowed.
   */
  static async start(settings: Settings, log: Logger, events: ServiceEvents = {}): Promise<ClassifyService> {
    const { models, failures } = await loadRepository(settings.modelRepository)
    const failed = new Map<string, string>()
    const fail = (err: RepositoryError | Error, name: string): void => {
      if (!settings.allowPartialStart) throw err
      log.error({ model: name, err: err.message }, 'model failed to load; serving the others (--allow-partial-start)')
      failed.set(name, err.message)
    }
    for (const f of failures) fail(f, f.model)
    if (models.length === 0 && failures.length === 0) {
      throw new RepositoryError(
        '',
        settings.modelRepository,
        'holds no model folders.',
        'Add one with `npm run model:add`, build the synthetic default with `npm run model:build`, or start with --build-default-model true.'
      )
    }
    const named = settings.defaultModel
    if (named !== undefined && !models.some((m) => m.name === named) && !failures.some((f) => f.model === named)) {
      const known = [...models.map((m) => m.name), ...failures.map((f) => f.model)].sort().join(', ')
      throw new RepositoryError(named, settings.modelRepository, `holds no model "${named}" (--default-model).`, `Name one of: ${known}.`)
    }
    if (settings.provider === 'auto') {
      const cuda = cudaProviderLibrary()
      if (!cuda.installed)
        log.info({ provider: 'cpu', missing: cuda.path }, 'execution provider: CPU (the CUDA provider library is not installed)')
    }
    const served: ServedModel[] = []
    // One budget for every model: decodes share the cores and the memory whichever model they feed.
    const decodeBudget = new DecodeBudget({
      maxConcurrent: settings.decodeConcurrency,
      budgetBytes: settings.decodeBudgetBytes,
      maxQueued: settings.decodeQueueSize
    })
    try {
      for (const entry of models) {
        const sessions = new ModelSessions(entry, {
          provider: settings.provider,
          cudaDeviceId: settings.cudaDeviceId,
          threads: settings.threadsPerSession,
          sessions: settings.sessionsPerModel
        })
        sessions.on('ready', (info) => {
          if (info.fallbackReason !== undefined) {
            log.warn(
              { model: entry.name, reason: info.fallbackReason },
              '!!! CUDA execution provider unavailable: running on the CPU instead !!!'
            )
          }
          log.info({ model: entry.name, provider: info.provider, loadMs: Math.round(info.loadMs) }, 'inference session open')
        })
        sessions.on('crash', (reason) => log.error({ model: entry.name, reason }, 'inference worker crashed; replacing it'))
        const t0 = performance.now()
        try {
          await sessions.start()
        } catch (err) {
          fail(err as Error, entry.name)
          continue
        }
        served.push(new ServedModel(entry, sessions, settings, events, decodeBudget))
        log.info(
          {
            model: entry.name,
            version: entry.config.version,
            synthetic: entry.config.synthetic,
            provider: sessions.provider,
            maxBatchSize: sessions.shape!.maxBatchSize,
            warmedUpBatchSizes: sessions.sizes!.warmUp,
            readyMs: Math.round(performance.now() - t0)
          },
          'model ready'
        )
        if (entry.config.synthetic) {
          log.warn(
            { model: entry.name },
            `!!! ${entry.name} has SYNTHETIC weights (seeded random, not trained): its labels mean nothing. See README "Serving real models". !!!`
          )
        }
      }
    } catch (err) {
      await Promise.all(served.map((m) => m.sessions.close()))
      throw err
    }
    return new ClassifyService(settings, log, served, failed, decodeBudget)
  }

  /** The served model of that name; MODEL_NOT_FOUND / MODEL_NOT_READY otherwise. */
  model(name: string | undefined): ServedModel {
    const key = name ?? this.defaultModel
    const m = key === undefined ? undefined : this.models.get(key)
    if (m !== undefined) return m
    if (key !== undefined && this.failed.has(key)) throw new ServiceError('MODEL_NOT_READY', `Model "${key}" failed to load.`)
    throw new ServiceError('MODEL_NOT_FOUND', key === undefined ? undefined : `Loaded models: ${this.modelNames().join(', ')}.`)
  }

  modelNames(): string[] {
    return [...this.models.keys(), ...this.failed.keys()].sort()
  }

  isModelReady(name: string): boolean {
    return !this.closing && this.models.has(name)
  }

  /**
   * Ready when not shutting down and every model in the repository serves. As in Triton, a server
   * whose models failed to load (kept by --allow-partial-start) is not ready: a replica that lacks
   * a model must not take traffic meant for a whole one. Its other models still answer.
   */
  get ready(): boolean {
    return !this.draining && !this.closing && this.models.size > 0 && this.failed.size === 0
  }

  /**
   * The first step of a shutdown: readiness turns false so that load balancers take this replica
   * out, while requests (new ones too) are still served as usual until close().
   */
  beginDrain(): void {
    this.draining = true
  }

  /** Whether a shutdown has begun (beginDrain or close): answers should ask clients to reconnect elsewhere. */
  get isDraining(): boolean {
    return this.draining || this.closing
  }

  async classify(modelName: string | undefined, image: Uint8Array, topk: number, options: RequestOptions = {}): Promise<Classification> {
    const model = this.model(modelName)
    this.checkTopk(model, topk)
    const { scores, batchSize, timings } = await this.inferImage(model.entry.name, image, options)
    const t0 = performance.now()
    const preds = this.predictions(model, scores, topk)
    const postprocessMs = performance.now() - t0
    return {
      ...model.info,
      predictions: preds,
      batchSize,
      timings: { ...timings, postprocessMs, totalMs: timings.totalMs + postprocessMs }
    }
  }

  /** Throws INVALID_TOPK unless 1 ≤ topk ≤ min(--max-topk, the model's classes). */
  checkTopk(model: ServedModel, topk: number): void {
    const limit = Math.min(this.settings.maxTopk, model.numClasses)
    if (!Number.isInteger(topk) || topk < 1 || topk > limit) {
      throw new ServiceError('INVALID_TOPK', `Got ${String(topk)}; the maximum is ${limit}.`)
    }
  }

  /** The k best classes of a model's output row, with labels and probabilities. */
  predictions(model: ServedModel, scores: Float32Array, topk: number): Prediction[] {
    const t0 = performance.now()
    const preds = predictions(scores, model.entry.labels, topk, model.entry.config.output.kind === 'probabilities')
    model.events.onStage?.(model.entry.name, 'postprocess', performance.now() - t0)
    return preds
  }

  /** Decodes and preprocesses an encoded image, runs it through the model's batcher: the raw output row. */
  async inferImage(modelName: string | undefined, image: Uint8Array, options: RequestOptions = {}): Promise<ScoresResult> {
    const t0 = performance.now()
    const model = this.model(modelName)
    if (this.closing) throw new ServiceError('SHUTTING_DOWN', undefined, { retryAfterSeconds: 1 })
    const pixels = await model.preprocessor.decode(image, options)
    const preprocessMs = performance.now() - t0
    model.events.onStage?.(model.entry.name, 'preprocess', preprocessMs)
    return this.runItem(model, { kind: ItemKind.PIXELS, bytes: pixels }, options, t0, preprocessMs)
  }

  /** Decodes and preprocesses an image: the crop×crop×3 RGB pixels the model's batcher would receive. */
  async preprocess(modelName: string | undefined, image: Uint8Array): Promise<Buffer> {
    return this.model(modelName).preprocessor.decode(image)
  }

  /**
   * Runs one already-preprocessed image (the model's input format: float32 CHW, or uint8 HWC)
   * through the same batcher as everyone else, returning the raw output row.
   */
  async inferTensor(modelName: string | undefined, tensor: Uint8Array, options: RequestOptions = {}): Promise<ScoresResult> {
    const t0 = performance.now()
    const model = this.model(modelName)
    if (tensor.byteLength !== model.tensorItemBytes) {
      throw new ServiceError(
        'BAD_REQUEST',
        `One image tensor for ${model.entry.name} is ${model.tensorItemBytes} bytes; got ${tensor.byteLength}.`
      )
    }
    if (this.closing) throw new ServiceError('SHUTTING_DOWN', undefined, { retryAfterSeconds: 1 })
    return this.runItem(model, { kind: ItemKind.TENSOR, bytes: tensor }, options, t0, 0)
  }

  /** One item through the model's batcher: its raw output row, timed from `t0`, when the request reached the core. */
  private async runItem(
    model: ServedModel,
    item: BatchItem,
    options: RequestOptions,
    t0: number,
    preprocessMs: number
  ): Promise<ScoresResult> {
    const { output, queueMs, batchSize } = await model.submit(item, options)
    const totalMs = performance.now() - t0
    model.events.onStage?.(model.entry.name, 'queue', queueMs)
    return {
      ...model.info,
      scores: output.scores,
      batchSize,
      timings: { queueMs, preprocessMs, inferenceMs: output.inferMs, postprocessMs: 0, totalMs }
    }
  }

  /** Stops taking work, lets what was accepted finish (up to the drain timeout), closes the sessions. */
  async close(drainTimeoutMs = this.settings.drainTimeoutMs): Promise<void> {
    if (this.closing) return
    this.closing = true
    const served = [...this.models.values()]
    for (const m of served) m.batcher.close()
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), drainTimeoutMs)
    })
    const outcome = await Promise.race([Promise.all(served.map((m) => m.batcher.drained())), timedOut])
    clearTimeout(timer)
    if (outcome === 'timeout') this.log.warn({ drainTimeoutMs }, 'drain timeout passed; closing sessions with work still queued')
    await Promise.all(served.map((m) => m.sessions.close()))
  }
}
