import type { ClassifyService, ServedModel } from '../core/classify-service.js'
import { ModelVersionStatistics, type DurationTotal, type ModelStatistics } from '../core/model-statistics.js'
import { resolveModel } from './metadata.js'

/**
 * The statistics extension: per served model version, Triton's ModelStatistics message, as both
 * doors answer it (REST: its JSON form with 64-bit counts as JSON numbers, as Triton writes it;
 * gRPC: ModelStatisticsResponse). See src/core/model-statistics.ts for what each counter counts.
 */

export interface StatisticDuration {
  readonly count: number
  readonly ns: number
}

export interface InferStatistics {
  readonly success: StatisticDuration
  readonly fail: StatisticDuration
  readonly queue: StatisticDuration
  readonly compute_input: StatisticDuration
  readonly compute_infer: StatisticDuration
  readonly compute_output: StatisticDuration
  /** No response cache: always zero. */
  readonly cache_hit: StatisticDuration
  readonly cache_miss: StatisticDuration
}

export interface InferBatchStatistics {
  readonly batch_size: number
  readonly compute_input: StatisticDuration
  readonly compute_infer: StatisticDuration
  readonly compute_output: StatisticDuration
}

export interface ModelStatisticsMessage {
  readonly name: string
  readonly version: string
  /** Milliseconds since the epoch; 0 before the first inference. */
  readonly last_inference: number
  readonly inference_count: number
  readonly execution_count: number
  readonly inference_stats: InferStatistics
  readonly batch_stats: readonly InferBatchStatistics[]
}

export interface ModelStatisticsResponse {
  readonly model_stats: readonly ModelStatisticsMessage[]
}

const ZERO: StatisticDuration = Object.freeze({ count: 0, ns: 0 })

function duration(total: DurationTotal): StatisticDuration {
  return { count: total.count, ns: total.ns }
}

function message(stats: ModelVersionStatistics): ModelStatisticsMessage {
  return {
    name: stats.name,
    version: stats.version,
    last_inference: stats.lastInference,
    inference_count: stats.inferenceCount,
    execution_count: stats.executionCount,
    inference_stats: {
      success: duration(stats.success),
      fail: duration(stats.fail),
      queue: duration(stats.queue),
      compute_input: duration(stats.computeInput),
      compute_infer: duration(stats.computeInfer),
      compute_output: duration(stats.computeOutput),
      cache_hit: ZERO,
      cache_miss: ZERO
    },
    batch_stats: stats.batches().map((batch) => ({
      batch_size: batch.batchSize,
      compute_input: duration(batch.computeInput),
      compute_infer: duration(batch.computeInfer),
      compute_output: duration(batch.computeOutput)
    }))
  }
}

/** Every served version of the model, newest first; MODEL_NOT_FOUND / MODEL_NOT_READY when it serves none. */
function servedVersions(service: ClassifyService, name: string): ServedModel[] {
  const versions = service.modelVersions(name)
  return versions.length > 0 ? versions : [service.model(name)]
}

/**
 * As Triton answers: every served version of every model (no name), every served version of one
 * model (no version), or one version; MODEL_NOT_FOUND / MODEL_NOT_READY for a model or version not
 * served. A served version with no statistics yet (or a door without them) answers zeros.
 */
export function modelStatistics(
  service: ClassifyService,
  statistics: ModelStatistics | undefined,
  name?: string,
  version?: string
): ModelStatisticsResponse {
  const models =
    name === undefined || name === ''
      ? service.servedModels()
      : version === undefined || version === ''
        ? servedVersions(service, name)
        : [resolveModel(service, name, version)]
  return {
    model_stats: models.map(({ info }) =>
      message(statistics?.version(info.name, info.version) ?? new ModelVersionStatistics(info.name, info.version))
    )
  }
}
