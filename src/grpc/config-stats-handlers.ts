import type { ClassifyService } from '../core/classify-service.js'
import type { ModelStatistics } from '../core/model-statistics.js'
import { modelConfig, type TritonModelConfig } from '../open-inference/model-config.js'
import { modelStatistics, type ModelStatisticsResponse } from '../open-inference/model-statistics.js'

/**
 * ModelConfig and ModelStatistics (Triton's extensions to the protocol). The answers are the
 * protocol layer's objects as they are: their field names, enum names and nesting are those of the
 * messages in inference.proto, which protobufjs encodes from plain objects.
 */

/**
 * ModelConfigRequest and ModelStatisticsRequest, as proto-loader decodes them (defaults filled):
 * an unset name or version arrives as '', which the protocol layer reads as none.
 */
export interface ModelRefRequest {
  readonly name: string
  readonly version: string
}

export function modelConfigReply(service: ClassifyService, request: ModelRefRequest): { config: TritonModelConfig } {
  return { config: modelConfig(service, request.name, request.version) }
}

/** An empty name asks for every served model, an empty version for every served version of the model. */
export function modelStatisticsReply(
  service: ClassifyService,
  statistics: ModelStatistics | undefined,
  request: ModelRefRequest
): ModelStatisticsResponse {
  return modelStatistics(service, statistics, request.name, request.version)
}
