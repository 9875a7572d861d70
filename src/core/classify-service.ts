import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import { defaultThreadsPerSession, type Settings } from '../config.js'
import { ServiceError, echoed } from '../errors.js'
import { listModelFolders, RepositoryError, type ModelEntry } from '../repository/repository.js'
import type { ModelConfig } from '../repository/model-config.js'
import { Batcher, type BatchResult } from './batcher.js'
import { DecodeBudget, slotAdmission } from './decode-budget.js'
import { ItemKind } from './worker-messages.js'
import { ModelSessions } from './model-sessions.js'
import { ModelTable, type ModelIndexEntry, type ModelOverride } from './model-table.js'
import { cudaProviderLibrary } from './onnx-session.js'
import { DEFAULT_TOPK, firstNonFinite, predictions, type Prediction } from './postprocess.js'
import { ImagePreprocessor } from './preprocess.js'
import { Tracer, type BatchRun, type CoreTrace } from '../trace/tracer.js'

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
  /** Set when the request is traced (Triton's trace extension): each image's queue entry and model run are marked on it. */
  readonly trace?: CoreTrace
}

export interface Timings {
  readonly queueMs: number
  readonly preprocessMs: number
  readonly inferenceMs: number
  readonly postprocessMs: number
  readonly totalMs: number
}

/** A model named by the request (undefined: the default model), or a version already looked up. */
export type ModelRef = string | undefined | ServedModel

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

/** The decode admission every model's preprocessor shares. */
interface DecodeAdmission {
  readonly budget: DecodeBudget
  readonly headerReads: DecodeBudget
}

/**
 * Header reads that may wait for a slot (then DECODE_QUEUE_FULL): each is an image already held
 * under the body budget, so this bounds only the list; every image of a 64-image request waits here.
 */
const HEADER_READS_QUEUED = 4096

interface BatchItem {
  readonly kind: ItemKind
  readonly bytes: Uint8Array
}

interface ItemOutput {
  readonly scores: Float32Array
  readonly inferMs: number
  /** The model execution it was part of, shared by the batch's items. */
  readonly run: BatchRun
}

/** The per-image stages timed in the core; inference is timed per execution (onBatch). */
export type Stage = 'queue' | 'preprocess' | 'postprocess'

/** Hooks for metrics. Called on the hot path: they must be cheap and must not throw. */
export interface ServiceEvents {
  /**
   * One model execution: how many images it held and how long the run took. `version`: the served
   * version that ran it (statistics count per version; metrics per model).
   */
  onBatch?(model: string, size: number, inferMs: number, version?: string): void
  /** One image finished a stage (every door: image and tensor inputs, classify and raw scores). */
  onStage?(model: string, stage: Stage, ms: number, version?: string): void
}

/** A model's sessions (config.json's `instances`, else --sessions-per-model) and each one's intra-op threads. */
export function sessionsOf(
  config: Pick<ModelConfig, 'instances'>,
  settings: Pick<Settings, 'sessionsPerModel' | 'threadsPerSession' | 'threadsPerSessionGiven' | 'cores'>
): { sessions: number; threads: number } {
  const sessions = config.instances ?? settings.sessionsPerModel
  return {
    sessions,
    threads: settings.threadsPerSessionGiven ? settings.threadsPerSession : defaultThreadsPerSession(sessions, settings.cores)
  }
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
  /**
   * Requests between their lookup of this version and their answer. A version replaced by a reload
   * or unloaded (ModelTable) closes only when this is back to 0; `onIdle` is then called.
   */
  leases = 0
  onIdle: (() => void) | undefined = undefined
  /** Its batcher is closed: a request that still holds it goes to the model's current version. */
  closed = false
  /** Images admitted to a decode for this model and not yet in its batcher's queue. */
  private decoding = 0

  /** Its own lines (a verbose log's line for each model execution) name the model and version. */
  private readonly log: Logger

  constructor(
    entry: ModelEntry,
    sessions: ModelSessions,
    settings: Settings,
    events: ServiceEvents,
    decoding: DecodeAdmission,
    log: Logger
  ) {
    const shape = sessions.shape!
    this.entry = entry
    this.log = log.child({ model: entry.name, version: entry.version })
    this.info = Object.freeze({ name: entry.name, version: entry.version, synthetic: entry.config.synthetic })
    this.sessions = sessions
    this.numClasses = shape.numClasses
    const { crop } = entry.config.preprocess
    this.tensorItemBytes = entry.config.input.datatype === 'float32' ? 3 * crop * crop * 4 : 3 * crop * crop
    this.preprocessor = new ImagePreprocessor(entry.config.preprocess, {
      maxInputPixels: settings.maxInputPixels,
      maxJpegScans: settings.maxJpegScans,
      decodeTimeoutSeconds: settings.decodeTimeoutSeconds,
      budget: decoding.budget,
      headerReads: decoding.headerReads
    })
    this.batcher = new Batcher<BatchItem, ItemOutput>({
      policy: { ...entry.config.batching, maxBatchSize: shape.maxBatchSize },
      runners: sessions.sessionCount,
      runnerCapacities: sessions.plan!.capacities,
      execute: (items, runner) => this.execute(items, runner)
    })
    this.events = events
  }

  readonly events: ServiceEvents

  /** Packs a batch into one transferable buffer and splits the answer back into per-item rows. */
  private async execute(items: BatchItem[], runner: number): Promise<ItemOutput[]> {
    const startedAt = performance.now()
    let total = 0
    for (const item of items) total += item.bytes.byteLength
    // Transferred to the worker, which reads the first `total` bytes and hands the buffer back.
    const buffer = this.sessions.inputBuffer(total)
    const data = new Uint8Array(buffer, 0, total)
    const kinds = new Uint8Array(items.length)
    let offset = 0
    for (let i = 0; i < items.length; i++) {
      const item = items[i]!
      kinds[i] = item.kind
      data.set(item.bytes, offset)
      offset += item.bytes.byteLength
    }
    const { output, inferMs, runStartedAt } = await this.sessions.run(kinds, buffer, runner)
    const run: BatchRun = { startedAt, inputEndAt: runStartedAt, outputStartAt: runStartedAt + inferMs, endedAt: performance.now() }
    this.events.onBatch?.(this.entry.name, items.length, inferMs, this.info.version)
    this.log.trace({ batchSize: items.length, runner, inferMs }, 'model executed')
    const width = this.numClasses
    // The output's shape was checked when the model loaded, but a graph may still answer other
    // sizes at run time (a batch dimension it ignores): rows read past its end would be empty.
    if (output.length !== items.length * width) {
      throw new ServiceError(
        'MODEL_OUTPUT_INVALID',
        `${this.entry.name} answered ${output.length} values for ${items.length} images of ${width} classes.`
      )
    }
    const out: ItemOutput[] = new Array(items.length)
    for (let i = 0; i < items.length; i++) out[i] = { scores: output.subarray(i * width, (i + 1) * width), inferMs, run }
    return out
  }

  submit(item: BatchItem, options: RequestOptions): Promise<BatchResult<ItemOutput>> {
    return this.batcher.submit(item, options)
  }

  /**
   * Decodes and preprocesses an image that the queue has room for, counting it against that room
   * while it decodes: a full queue refuses an image before its decode, as Triton refuses at enqueue
   * (decoded first, 2142 refusals under overload took a median 246 ms each, and the images the
   * queue did take waited behind them for the cores).
   */
  async preprocess(image: Uint8Array, options: RequestOptions): Promise<Uint8Array> {
    const full = this.batcher.refusalFor(this.decoding)
    if (full !== undefined) throw full
    this.decoding++
    try {
      return await this.preprocessor.decode(image, options)
    } finally {
      this.decoding--
    }
  }
}

export class ClassifyService {
  /** The served models and versions, and how they change (load, reload, unload, poll). */
  private readonly table: ModelTable
  private readonly modelListeners: Array<() => void> = []
  private closing = false
  /** Set by beginDrain(): not ready (load balancers stop routing here) while still serving. */
  private draining = false
  /** Triton's trace extension: which inference requests are traced, and where their traces go. */
  readonly tracer: Tracer

  private constructor(
    readonly settings: Settings,
    private readonly log: Logger,
    events: ServiceEvents,
    /** Admission for every model's image decodes (slots, estimated bytes, queue). */
    readonly decodeBudget: DecodeBudget,
    /** Admission for every model's header reads (slots, queue), before a decode can be priced. */
    readonly headerReads: DecodeBudget
  ) {
    this.tracer = new Tracer(
      {
        file: settings.traceFile,
        start: {
          level: settings.traceLevel,
          rate: settings.traceRate,
          count: settings.traceCount,
          logFrequency: settings.traceLogFrequency
        }
      },
      log
    )
    this.table = new ModelTable(
      settings,
      log,
      (entry) => this.openModel(entry, events),
      () => {
        for (const listener of this.modelListeners) listener()
      }
    )
  }

  /**
   * Opens the models the control mode loads at start (none and poll: every folder; explicit: the
   * --load-model ones), checks each against its config and warms it up. Throws RepositoryError
   * (with the fix) unless partial start is allowed.
   */
  static async start(settings: Settings, log: Logger, events: ServiceEvents = {}): Promise<ClassifyService> {
    const folders = await listModelFolders(settings.modelRepository)
    const mode = settings.modelControlMode
    if (folders.length === 0 && mode === 'none') {
      throw new RepositoryError(
        '',
        settings.modelRepository,
        'holds no model folders.',
        'Add one with `npm run model:add`, build the synthetic default with `npm run model:build`, or start without turning --build-default-model off (BUILD_DEFAULT_MODEL=false, --no-build-default-model).'
      )
    }
    const named = settings.defaultModel
    if (named !== undefined && mode === 'none' && !folders.includes(named)) {
      throw new RepositoryError(
        named,
        settings.modelRepository,
        `holds no model "${named}" (--default-model).`,
        `Name one of: ${folders.join(', ')}.`
      )
    }
    const atStart = mode !== 'explicit' ? folders : settings.loadModels.includes('*') ? folders : settings.loadModels
    const absent = atStart.filter((name) => !folders.includes(name))
    if (absent.length > 0) {
      throw new RepositoryError(
        absent[0]!,
        settings.modelRepository,
        `holds no model "${absent[0]}" (--load-model).`,
        `Name folders of the repository: ${folders.join(', ') || 'it is empty'}.`
      )
    }
    if (settings.provider === 'auto') {
      const cuda = cudaProviderLibrary()
      if (!cuda.installed)
        log.info({ provider: 'cpu', missing: cuda.path }, 'execution provider: CPU (the CUDA provider library is not installed)')
    }
    // One budget for every model: decodes share the cores and the memory whichever model they feed.
    const decodeBudget = new DecodeBudget({
      maxConcurrent: settings.decodeConcurrency,
      budgetBytes: settings.decodeBudgetBytes,
      maxQueued: settings.decodeQueueSize
    })
    // Header reads are quick for real files and bounded by the structure walks for the rest; they
    // take slots of their own, so that a queue of them never fills the decode queue.
    const headerReads = slotAdmission(settings.decodeConcurrency, HEADER_READS_QUEUED)
    const service = new ClassifyService(settings, log, events, decodeBudget, headerReads)
    await service.table.loadAtStart(atStart)
    if (mode === 'poll') service.table.startPolling()
    return service
  }

  /** One version's sessions, opened, checked against its config and warmed up. */
  private async openModel(entry: ModelEntry, events: ServiceEvents): Promise<ServedModel> {
    const { settings, log } = this
    const sessions = new ModelSessions(entry, {
      provider: settings.provider,
      cudaDeviceId: settings.cudaDeviceId,
      ...sessionsOf(entry.config, settings)
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
    sessions.on('runFailed', (reason) => log.error({ model: entry.name, reason }, 'inference run failed'))
    const t0 = performance.now()
    await sessions.start()
    const served = new ServedModel(entry, sessions, settings, events, { budget: this.decodeBudget, headerReads: this.headerReads }, log)
    log.info(
      {
        model: entry.name,
        version: entry.version,
        synthetic: entry.config.synthetic,
        provider: sessions.provider,
        maxBatchSize: sessions.shape!.maxBatchSize,
        runSizes: sessions.plan!.fixedShapes ? { fixedShapes: sessions.plan!.capacities } : { warmedUp: sessions.plan!.warmUp[0] },
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
    return served
  }

  /** The model a request that names none goes to, decided once (ModelTable.defaultModel); it may be unloaded. */
  get defaultModel(): string | undefined {
    return this.table.defaultModel
  }

  /** The served model of that name (its newest version, or the named one); MODEL_NOT_FOUND / MODEL_NOT_READY otherwise. */
  model(name: string | undefined, version?: string): ServedModel {
    if (name !== undefined) return this.table.find(name, version)
    const key = this.defaultModel
    if (key === undefined) {
      const load =
        this.settings.modelControlMode === 'explicit'
          ? 'load one with POST /v2/repository/models/{name}/load'
          : 'copy a model folder into the model repository (--model-repository; npm run model:add writes one)'
      throw new ServiceError('MODEL_NOT_FOUND', `No model has loaded yet, so there is no default model: ${load}.`)
    }
    return this.table.find(key, version, true)
  }

  /** Every served version of a model, newest first. */
  modelVersions(name: string): ServedModel[] {
    return this.table.versions(name)
  }

  /** Every served version of every model. */
  servedModels(): ServedModel[] {
    return this.table.served()
  }

  modelNames(): string[] {
    return this.table.names()
  }

  isModelReady(name: string, version?: string): boolean {
    return !this.closing && this.table.isReady(name, version)
  }

  /** Calls `listener` after every change of the served models (load, reload, unload). */
  onModelsChanged(listener: () => void): void {
    this.modelListeners.push(listener)
  }

  /**
   * Repository API: loads or reloads a model (explicit mode only). Resolves once the new versions
   * serve; a model that fails to load keeps serving what it served before. `override`: the load
   * request's configuration, for this load only (the next load reads the folder's again).
   */
  async loadModel(name: string, override?: ModelOverride): Promise<void> {
    this.checkModelControl()
    if (!(await listModelFolders(this.settings.modelRepository)).includes(name)) {
      throw new ServiceError(
        'MODEL_NOT_FOUND',
        `The repository has no folder "${echoed(name)}" (the repository index lists the models it has).`
      )
    }
    try {
      await this.table.load(name, { wantedOnFailure: false, override })
    } catch (err) {
      if (err instanceof ServiceError) throw err
      throw new ServiceError('MODEL_LOAD_FAILED', `"${name}": ${(err as Error).message}`, { cause: err })
    }
  }

  /** Repository API: stops serving a model (explicit mode only); resolves once its requests finished and its sessions closed. */
  async unloadModel(name: string): Promise<void> {
    this.checkModelControl()
    await this.checkModelName(name)
    await this.table.unload(name)
  }

  /**
   * A model the server serves or whose folder the repository has (one that may be loaded later);
   * MODEL_NOT_FOUND otherwise. Unloads and settings kept per model (tracing) take only these names.
   */
  async checkModelName(name: string): Promise<void> {
    if (this.table.versions(name).length > 0) return
    if ((await listModelFolders(this.settings.modelRepository)).includes(name)) return
    throw new ServiceError('MODEL_NOT_FOUND', `No model "${echoed(name)}" is loaded or in the repository.`)
  }

  /** Repository API: every model folder and served model with its state (`readyOnly`: the READY ones). */
  repositoryIndex(readyOnly: boolean): Promise<ModelIndexEntry[]> {
    return this.table.index(readyOnly)
  }

  private checkModelControl(): void {
    if (this.closing) throw new ServiceError('SHUTTING_DOWN', undefined, { retryAfterSeconds: 1 })
    const mode = this.settings.modelControlMode
    if (mode !== 'explicit') {
      throw new ServiceError(
        'MODEL_CONTROL_DISABLED',
        mode === 'poll' ? '(polling is enabled: the repository folder decides).' : '(--model-control-mode is none).'
      )
    }
  }

  /**
   * A request's hold on a version from lookup to answer (see ServedModel.leases). A version that
   * closed while its caller held it across an await is replaced by the model's current one.
   */
  private lease(model: ServedModel): ServedModel {
    const held = model.closed ? this.table.find(model.entry.name) : model
    held.leases++
    return held
  }

  private release(model: ServedModel): void {
    if (--model.leases === 0) model.onIdle?.()
  }

  /**
   * Ready when not shutting down and every model that should serve does. As in Triton, a server
   * whose models failed to load (kept by --allow-partial-start) is not ready: a replica that lacks
   * a model must not take traffic meant for a whole one. Its other models still answer.
   */
  get ready(): boolean {
    return !this.draining && !this.closing && this.table.ready
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

  /** `model`: a name (undefined: the default model), or a version already looked up (ServedModel). */
  async classify(
    model: ModelRef,
    image: Uint8Array,
    requestedTopk: number | undefined,
    options: RequestOptions = {}
  ): Promise<Classification> {
    const served = this.lease(this.resolve(model))
    try {
      const topk = this.topkFor(served, requestedTopk)
      const { scores, batchSize, timings } = await this.inferImage(served, image, options)
      const t0 = performance.now()
      const preds = this.predictions(served, scores, topk)
      const postprocessMs = performance.now() - t0
      return {
        ...served.info,
        predictions: preds,
        batchSize,
        timings: { ...timings, postprocessMs, totalMs: timings.totalMs + postprocessMs }
      }
    } finally {
      this.release(served)
    }
  }

  private resolve(model: ModelRef): ServedModel {
    return typeof model === 'object' ? model : this.model(model)
  }

  /**
   * The predictions to answer: the request's topk, which must be 1 ≤ topk ≤ min(--max-topk, the
   * model's classes) (else INVALID_TOPK), or, when it asks for none, DEFAULT_TOPK within that limit.
   */
  topkFor(model: ServedModel, topk: number | undefined): number {
    const limit = Math.min(this.settings.maxTopk, model.numClasses)
    if (topk === undefined) return Math.min(DEFAULT_TOPK, limit)
    if (!Number.isInteger(topk) || topk < 1 || topk > limit) {
      throw new ServiceError('INVALID_TOPK', `Got ${String(topk)}; the maximum is ${limit}.`)
    }
    return topk
  }

  /** The k best classes of a model's output row, with labels and probabilities. */
  predictions(model: ServedModel, scores: Float32Array, topk: number): Prediction[] {
    const t0 = performance.now()
    const preds = predictions(scores, model.entry.labels, topk, model.entry.config.output.kind === 'probabilities')
    model.events.onStage?.(model.entry.name, 'postprocess', performance.now() - t0, model.info.version)
    return preds
  }

  /** Decodes and preprocesses an encoded image, runs it through the model's batcher: the raw output row. */
  async inferImage(modelRef: ModelRef, image: Uint8Array, options: RequestOptions = {}): Promise<ScoresResult> {
    const t0 = performance.now()
    const model = this.lease(this.resolve(modelRef))
    try {
      if (this.closing) throw new ServiceError('SHUTTING_DOWN', undefined, { retryAfterSeconds: 1 })
      const pixels = await model.preprocess(image, options)
      const preprocessMs = performance.now() - t0
      model.events.onStage?.(model.entry.name, 'preprocess', preprocessMs, model.info.version)
      return await this.runItem(model, { kind: ItemKind.PIXELS, bytes: pixels }, options, t0, preprocessMs)
    } finally {
      this.release(model)
    }
  }

  /** Decodes and preprocesses an image: the crop×crop×3 RGB pixels the model's batcher would receive. */
  async preprocess(modelName: string | undefined, image: Uint8Array): Promise<Buffer> {
    return this.model(modelName).preprocessor.decode(image)
  }

  /**
   * Runs one already-preprocessed image (the model's input format: float32 CHW, or uint8 HWC)
   * through the same batcher as everyone else, returning the raw output row.
   */
  async inferTensor(modelRef: ModelRef, tensor: Uint8Array, options: RequestOptions = {}): Promise<ScoresResult> {
    const t0 = performance.now()
    const model = this.lease(this.resolve(modelRef))
    try {
      if (tensor.byteLength !== model.tensorItemBytes) {
        throw new ServiceError(
          'BAD_REQUEST',
          `One image tensor for ${model.entry.name} is ${model.tensorItemBytes} bytes; got ${tensor.byteLength}.`
        )
      }
      if (this.closing) throw new ServiceError('SHUTTING_DOWN', undefined, { retryAfterSeconds: 1 })
      return await this.runItem(model, { kind: ItemKind.TENSOR, bytes: tensor }, options, t0, 0)
    } finally {
      this.release(model)
    }
  }

  /** One item through the model's batcher: its raw output row, timed from `t0`, when the request reached the core. */
  private async runItem(
    model: ServedModel,
    item: BatchItem,
    options: RequestOptions,
    t0: number,
    preprocessMs: number
  ): Promise<ScoresResult> {
    const queuedAt = options.trace === undefined ? 0 : performance.now()
    const { output, queueMs, batchSize } = await model.submit(item, options)
    options.trace?.ran(queuedAt, output.run)
    // Per image, so that one input that makes the network overflow fails its own request only.
    const bad = firstNonFinite(output.scores)
    if (bad !== -1) {
      throw new ServiceError('MODEL_OUTPUT_INVALID', `${model.entry.name} answered ${output.scores[bad]} for class ${bad} of this image.`)
    }
    const totalMs = performance.now() - t0
    model.events.onStage?.(model.entry.name, 'queue', queueMs, model.info.version)
    return {
      ...model.info,
      scores: output.scores,
      batchSize,
      timings: { queueMs, preprocessMs, inferenceMs: output.inferMs, postprocessMs: 0, totalMs }
    }
  }

  /**
   * The drain timeout has passed: every model stops taking work and refuses what is still queued
   * (SHUTTING_DOWN, on both doors alike); batches already running finish and are answered.
   */
  abandonQueued(): void {
    for (const model of this.table.served()) model.batcher.abandonQueued()
  }

  /** Stops taking work, lets what was accepted finish (up to the drain timeout), closes the sessions. */
  async close(drainTimeoutMs = this.settings.drainTimeoutMs): Promise<void> {
    if (this.closing) return
    this.closing = true
    await this.table.close(drainTimeoutMs)
    await this.tracer.close()
  }
}
