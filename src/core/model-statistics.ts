import type { Stage } from './classify-service.js'

/**
 * Per model version, the counters of the Open Inference Protocol's statistics extension (Triton's
 * ModelStatistics), accumulated in place. They are fed from the service's event hooks and the
 * doors' outcome counting (src/metrics.ts): each record is a few additions into objects made when
 * the version was tracked, or when a batch size first ran, so the per-request path allocates nothing.
 *
 * Durations are kept in nanoseconds as doubles: exact to the nanosecond up to 2^53 ns (104 days of
 * accumulated time per counter), a few nanoseconds off per addition beyond that.
 */

/** A count and the summed duration of what was counted. */
export class DurationTotal {
  count = 0
  ns = 0

  /** One occurrence that took `ms`. */
  add(ms: number): void {
    this.count++
    this.ns += Math.round(ms * 1e6)
  }

  /** `n` occurrences that each took `ms` (every request of a batch spends the batch's run). */
  addEach(n: number, ms: number): void {
    this.count += n
    this.ns += n * Math.round(ms * 1e6)
  }
}

/** The executions of one batch size. */
export class BatchSizeStatistics {
  /** Batches are packed from images already preprocessed: no input stage runs per batch. */
  readonly computeInput = new DurationTotal()
  readonly computeInfer = new DurationTotal()
  /** Outputs are split into per-image rows by reference; postprocessing is per image, after the batch. */
  readonly computeOutput = new DurationTotal()

  constructor(readonly batchSize: number) {}
}

/**
 * One served version of a model. Requests are counted by the doors (success, fail: one per
 * request as the client sent it, an image of a V1 batch being a request of its own); stages per
 * image (queue, compute_input, compute_output) and per execution (compute_infer, counted once per
 * image it ran, with the execution's whole duration, as Triton charges each request of a batch).
 */
export class ModelVersionStatistics {
  /** Milliseconds since the epoch of the last execution; 0 before the first. */
  lastInference = 0
  /** Images run: the sum of the executions' batch sizes. */
  inferenceCount = 0
  executionCount = 0
  readonly success = new DurationTotal()
  readonly fail = new DurationTotal()
  readonly queue = new DurationTotal()
  readonly computeInput = new DurationTotal()
  readonly computeInfer = new DurationTotal()
  readonly computeOutput = new DurationTotal()
  /** Indexed by batch size; sizes are bounded by the model's max batch size (at most 1024). */
  private readonly bySize: Array<BatchSizeStatistics | undefined> = []

  constructor(
    readonly name: string,
    readonly version: string
  ) {}

  /** One model execution of `size` images that ran for `inferMs`, ending at `nowMs` (epoch). */
  recordExecution(size: number, inferMs: number, nowMs: number): void {
    this.lastInference = nowMs
    this.inferenceCount += size
    this.executionCount++
    this.computeInfer.addEach(size, inferMs)
    const batch = (this.bySize[size] ??= new BatchSizeStatistics(size))
    batch.computeInfer.add(inferMs)
  }

  /** One image finished a per-image stage. */
  recordStage(stage: Stage, ms: number): void {
    if (stage === 'queue') this.queue.add(ms)
    else if (stage === 'preprocess') this.computeInput.add(ms)
    else this.computeOutput.add(ms)
  }

  /** One request answered (`ok`) or refused, `ms` after it arrived (0 when the door cannot tell). */
  recordOutcome(ok: boolean, ms: number): void {
    ;(ok ? this.success : this.fail).add(ms)
  }

  /** The batch sizes that ran, smallest first. */
  batches(): BatchSizeStatistics[] {
    const out: BatchSizeStatistics[] = []
    for (const batch of this.bySize) if (batch !== undefined) out.push(batch)
    return out
  }
}

/**
 * Every tracked model version's statistics. The version a model serves now is its `current` one,
 * which the hooks (that know only the model's name) feed; other tracked versions keep their
 * figures until forgotten.
 */
export class ModelStatistics {
  private readonly byName = new Map<string, Map<string, ModelVersionStatistics>>()
  private readonly currentByName = new Map<string, ModelVersionStatistics>()

  /** Starts (or resumes) counting a version and makes it the one the model's name now feeds. */
  track(name: string, version: string): ModelVersionStatistics {
    const stats = this.counted(name, version)
    this.currentByName.set(name, stats)
    return stats
  }

  /** Drops a version's figures (all of the model's when no version is named). */
  forget(name: string, version?: string): void {
    const versions = this.byName.get(name)
    if (versions === undefined) return
    if (version === undefined) versions.clear()
    else versions.delete(version)
    const current = this.currentByName.get(name)
    if (current !== undefined && !versions.has(current.version)) this.currentByName.delete(name)
    if (versions.size === 0) this.byName.delete(name)
  }

  /** The statistics the model's name feeds now; undefined for a name never tracked. */
  current(name: string): ModelVersionStatistics | undefined {
    return this.currentByName.get(name)
  }

  /**
   * A served version's statistics, started on its first record if it was never tracked (versions
   * served side by side each count their own). For names and versions the core reports, never
   * for what a client sent.
   */
  served(name: string, version: string): ModelVersionStatistics {
    const stats = this.counted(name, version)
    // Counting a version does not make it the one the name feeds, unless the name feeds none yet.
    if (!this.currentByName.has(name)) this.currentByName.set(name, stats)
    return stats
  }

  version(name: string, version: string): ModelVersionStatistics | undefined {
    return this.byName.get(name)?.get(version)
  }

  /** A version's statistics, started if it was never tracked. */
  private counted(name: string, version: string): ModelVersionStatistics {
    let versions = this.byName.get(name)
    if (versions === undefined) this.byName.set(name, (versions = new Map()))
    let stats = versions.get(version)
    if (stats === undefined) versions.set(version, (stats = new ModelVersionStatistics(name, version)))
    return stats
  }
}
