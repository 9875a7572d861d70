import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { ClassifyService, ServedModel, ServiceEvents, Stage } from './core/classify-service.js'
import { ModelStatistics, type ModelVersionStatistics } from './core/model-statistics.js'
import type { ServiceError } from './errors.js'

/**
 * Every metric the service exports, in one place, on its own registry (never prom-client's global
 * one, so several servers in one process, as in tests, keep their counts apart).
 *
 * Requests and model runs are counted apart (Triton's nv_inference_count vs
 * nv_inference_exec_count): `inferences / executions` is the mean batch size.
 */

/** How one request ended: answered, or refused with this error (its code becomes the reason label). */
export type RequestOutcome = 'success' | ServiceError

/** The label for requests that name no loaded model; client-chosen names never become labels. */
export const UNKNOWN_MODEL_LABEL = '(unknown)'

export const METRIC_PREFIX = 'resnet_serve_'

/** Seconds, from half a millisecond (a warm queue) to ten seconds (a saturated CPU). */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const BATCH_SIZE_BUCKETS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128]

export class ServiceMetrics {
  readonly registry = new Registry()
  /** Pass to ClassifyService.start: the core reports model runs and stage times through these. */
  readonly events: Required<ServiceEvents>
  /** The statistics extension's counters (Triton's ModelStatistics), fed by the same hooks as the metrics. */
  readonly statistics = new ModelStatistics()

  private readonly requestSuccess: Counter<'model'>
  private readonly requestFailure: Counter<'model' | 'reason'>
  private readonly requestDuration: Histogram<'model'>
  private readonly inferences: Counter<'model'>
  private readonly executions: Counter<'model'>
  private readonly batchSize: Histogram<'model'>
  private readonly stageDurations: Readonly<Record<Stage | 'inference', Histogram<'model'>>>
  private served: readonly ServedModel[] = []
  private readonly knownModels = new Set<string>()
  private defaultModel: string | undefined

  constructor(options: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry]
    const durationHistogram = (what: string, help: string): Histogram<'model'> =>
      new Histogram({
        name: `${METRIC_PREFIX}${what}_duration_seconds`,
        help,
        labelNames: ['model'],
        buckets: DURATION_BUCKETS,
        registers
      })
    this.requestSuccess = new Counter({
      name: `${METRIC_PREFIX}request_success_total`,
      help: 'Requests answered, by model. A batch request counts once per image it carries.',
      labelNames: ['model'],
      registers
    })
    this.requestFailure = new Counter({
      name: `${METRIC_PREFIX}request_failure_total`,
      help: 'Requests refused, by model and reason (the error code, see docs/operations.md). A batch request counts once per failed image, or once when refused as a whole.',
      labelNames: ['model', 'reason'],
      registers
    })
    this.requestDuration = durationHistogram(
      'request',
      'Per answered request: from its arrival to its answer, as the door measures it (Triton nv_inference_request_duration_us). A batch request counts once per image, each with the whole request time.'
    )
    this.inferences = new Counter({
      name: `${METRIC_PREFIX}inferences_total`,
      help: 'Images run through a model (Triton nv_inference_count). Divided by executions: the mean batch size.',
      labelNames: ['model'],
      registers
    })
    this.executions = new Counter({
      name: `${METRIC_PREFIX}executions_total`,
      help: 'Model executions, each running one batch of images (Triton nv_inference_exec_count).',
      labelNames: ['model'],
      registers
    })
    this.batchSize = new Histogram({
      name: `${METRIC_PREFIX}batch_size`,
      help: 'Images per model execution.',
      labelNames: ['model'],
      buckets: BATCH_SIZE_BUCKETS,
      registers
    })
    this.stageDurations = {
      queue: durationHistogram('queue', 'Per image: from joining the batcher queue to the start of the model execution that ran it.'),
      preprocess: durationHistogram('preprocess', 'Per image: decode, resize and crop to the model input (sharp).'),
      inference: durationHistogram('inference', 'Per model execution (not per image): the ONNX Runtime run of one batch.'),
      postprocess: durationHistogram('postprocess', 'Per image: softmax, top-k and labels.')
    }
    const pending = new Gauge({
      name: `${METRIC_PREFIX}pending_requests`,
      help: 'Images queued in the batcher, not yet running, by model (read at scrape time).',
      labelNames: ['model'],
      registers,
      collect: () => {
        // An unloaded model's series goes with it rather than keep its last reading.
        pending.reset()
        for (const model of this.served) pending.set({ model: model.entry.name }, model.batcher.pending)
      }
    })
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry })

    // Bound once: the core calls these on every execution and image, so no per-call allocation.
    this.events = {
      onBatch: (model, size, inferMs, version) => {
        this.executions.inc({ model })
        this.inferences.inc({ model }, size)
        this.batchSize.observe({ model }, size)
        this.stageDurations.inference.observe({ model }, inferMs / 1000)
        this.reportedStatistics(model, version)?.recordExecution(size, inferMs, Date.now())
      },
      onStage: (model, stage, ms, version) => {
        this.stageDurations[stage].observe({ model }, ms / 1000)
        this.reportedStatistics(model, version)?.recordStage(stage, ms)
      }
    }
  }

  /** The statistics a core report feeds: the version it names, else the one the model's name feeds now. */
  private reportedStatistics(model: string, version: string | undefined): ModelVersionStatistics | undefined {
    return version === undefined ? this.statistics.current(model) : this.statistics.served(model, version)
  }

  /**
   * Starts reading the service's queues at scrape time and learns which model names are real, so
   * recordRequest never turns a client-chosen name into a label. Call once, after start; loads,
   * reloads and unloads (the repository API, poll mode) make it read the models again.
   */
  observe(service: ClassifyService): void {
    this.readModels(service)
    service.onModelsChanged(() => this.readModels(service))
  }

  private readModels(service: ClassifyService): void {
    const served: ServedModel[] = []
    for (const name of service.modelNames()) {
      // Models that failed to load (--allow-partial-start) have no batcher; they still get labels.
      if (service.isModelReady(name)) served.push(service.model(name))
    }
    for (const model of served) this.statistics.track(model.info.name, model.info.version)
    this.served = served
    // Names stay known once loaded: a request answered while its model unloads is counted under it,
    // not "(unknown)". They come from the repository's folders, never from a client.
    for (const name of service.modelNames()) this.knownModels.add(name)
    this.defaultModel = service.defaultModel
  }

  /**
   * Counts how one request ended: the one way every door counts, once per request it answers (an
   * image of a V1 batch counts as a request of its own). The HTTP door calls it from its hooks
   * (src/http/request-counting.ts) and once per batch image, the gRPC door from ModelInfer and,
   * for calls that end before the handler, from its admission interceptor. A failure is the
   * ServiceError the door answered with, so the reason is the code the client saw. `model` as the
   * client named it, undefined for the default model; `elapsedMs` from the request's arrival to its
   * answer (undefined where the door cannot tell); `version` as the client named it or the answer
   * gave it, undefined for the model's current one.
   */
  recordRequest(model: string | undefined, outcome: RequestOutcome, elapsedMs?: number, version?: string): void {
    const label = this.modelLabel(model)
    if (outcome === 'success') {
      this.requestSuccess.inc({ model: label })
      if (elapsedMs !== undefined) this.requestDuration.observe({ model: label }, elapsedMs / 1000)
    } else this.requestFailure.inc({ model: label, reason: outcome.code })
    const name = model ?? this.defaultModel
    if (name === undefined) return
    // Only versions counted already have statistics: a name or version a client made up finds none.
    const stats = version === undefined || version === '' ? this.statistics.current(name) : this.statistics.version(name, version)
    stats?.recordOutcome(outcome === 'success', elapsedMs ?? 0)
  }

  /** The Prometheus text exposition of every metric. */
  async exposition(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() }
  }

  private modelLabel(model: string | undefined): string {
    const name = model ?? this.defaultModel
    return name !== undefined && this.knownModels.has(name) ? name : UNKNOWN_MODEL_LABEL
  }
}
