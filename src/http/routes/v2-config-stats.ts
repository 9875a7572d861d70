import { Type, type TSchema } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import type { ClassifyService } from '../../core/classify-service.js'
import type { ModelStatistics } from '../../core/model-statistics.js'
import { modelConfig } from '../../open-inference/model-config.js'
import { modelStatistics } from '../../open-inference/model-statistics.js'
import { sendError, v2ErrorBody } from '../error-status.js'
import { V2_ERROR_RESPONSES } from '../schemas.js'

/**
 * The Open Inference Protocol's model configuration and statistics extensions over REST, as
 * Triton answers them: `/v2/models/{m}[/versions/{v}]/config` and `/v2/models[/{m}[/versions/{v}]]/stats`.
 * Register with `{ prefix: '/v2' }`, beside the other /v2 routes; errors take the /v2 shape.
 */

export interface V2ConfigStatsOptions {
  readonly service: ClassifyService
  readonly statistics: ModelStatistics
}

const Dims = Type.Array(Type.Integer())
const DataType = Type.String({ description: 'TYPE_FP32 or TYPE_UINT8' })

const ModelConfigSchema = Type.Object(
  {
    name: Type.String(),
    platform: Type.String(),
    backend: Type.String(),
    version_policy: Type.Object(
      {
        latest: Type.Optional(Type.Object({ num_versions: Type.Integer() })),
        all: Type.Optional(Type.Object({})),
        specific: Type.Optional(Type.Object({ versions: Type.Array(Type.Integer()) }))
      },
      { description: 'One of latest, all, specific: which version folders are served' }
    ),
    max_batch_size: Type.Integer({ description: 'The largest batch one model execution runs.' }),
    input: Type.Array(
      Type.Object({
        name: Type.String(),
        data_type: DataType,
        format: Type.String({ description: 'FORMAT_NCHW or FORMAT_NHWC' }),
        dims: Dims
      })
    ),
    output: Type.Array(Type.Object({ name: Type.String(), data_type: DataType, dims: Dims, label_filename: Type.String() })),
    dynamic_batching: Type.Object({
      preferred_batch_size: Type.Array(Type.Integer(), { description: 'The sizes batches are padded to, when padding is on.' }),
      max_queue_delay_microseconds: Type.Integer(),
      default_queue_policy: Type.Object({ max_queue_size: Type.Integer() })
    }),
    instance_group: Type.Array(
      Type.Object({
        name: Type.String(),
        kind: Type.String({ description: 'KIND_GPU or KIND_CPU' }),
        count: Type.Integer({ description: 'Sessions (worker threads) running the model.' }),
        gpus: Type.Array(Type.Integer())
      })
    ),
    default_model_filename: Type.String(),
    parameters: Type.Record(Type.String(), Type.Object({ string_value: Type.String() }), {
      description: 'The preprocessing applied to encoded images (preprocess.*) and the output kind, as config.json names them.'
    })
  },
  { description: "Triton's ModelConfig (model_config.proto) in its JSON form" }
)

const Duration = Type.Object({ count: Type.Integer(), ns: Type.Integer() })

const ModelStatisticsSchema = Type.Object({
  name: Type.String(),
  version: Type.String(),
  last_inference: Type.Integer({ description: 'Milliseconds since the epoch; 0 before the first inference.' }),
  inference_count: Type.Integer({ description: 'Images run.' }),
  execution_count: Type.Integer({ description: 'Model executions (batches).' }),
  inference_stats: Type.Object({
    success: Duration,
    fail: Duration,
    queue: Duration,
    compute_input: Duration,
    compute_infer: Duration,
    compute_output: Duration,
    cache_hit: Duration,
    cache_miss: Duration
  }),
  batch_stats: Type.Array(
    Type.Object({ batch_size: Type.Integer(), compute_input: Duration, compute_infer: Duration, compute_output: Duration })
  )
})

const StatisticsSchema = Type.Object(
  { model_stats: Type.Array(ModelStatisticsSchema) },
  { description: "Triton's ModelStatisticsResponse in its JSON form" }
)

const ModelName = Type.String({ minLength: 1, maxLength: 128 })
const ModelParams = Type.Object({ model: ModelName })
const VersionParams = Type.Object({ model: ModelName, version: Type.String({ minLength: 1, maxLength: 128 }) })

interface ModelRouteParams {
  model: string
  version?: string
}

function withVersions(path: string, summary: string): Array<{ url: string; summary: string; params: TSchema }> {
  return [
    { url: `/models/:model${path}`, summary, params: ModelParams },
    { url: `/models/:model/versions/:version${path}`, summary: `${summary} (a named version)`, params: VersionParams }
  ]
}

export async function v2ConfigStatsRoutes(app: FastifyInstance, { service, statistics }: V2ConfigStatsOptions): Promise<void> {
  app.setErrorHandler((err, request, reply) => {
    sendError(request, reply, err, v2ErrorBody)
  })

  for (const { url, summary, params } of withVersions('/config', 'V2 model configuration (Triton ModelConfig)')) {
    app.get(url, { schema: { summary, params, response: { 200: ModelConfigSchema, ...V2_ERROR_RESPONSES } } }, async (request) => {
      const { model, version } = request.params as ModelRouteParams
      return modelConfig(service, model, version)
    })
  }
  app.get(
    '/models/stats',
    { schema: { summary: 'V2 statistics of every served model', response: { 200: StatisticsSchema, ...V2_ERROR_RESPONSES } } },
    async () => modelStatistics(service, statistics)
  )
  for (const { url, summary, params } of withVersions('/stats', 'V2 model statistics')) {
    app.get(url, { schema: { summary, params, response: { 200: StatisticsSchema, ...V2_ERROR_RESPONSES } } }, async (request) => {
      const { model, version } = request.params as ModelRouteParams
      return modelStatistics(service, statistics, model, version)
    })
  }
}
