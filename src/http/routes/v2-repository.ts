import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import type { ClassifyService } from '../../core/classify-service.js'
import { ServiceError } from '../../errors.js'
import { loadModel, repositoryIndex, unloadModel } from '../../open-inference/repository.js'
import { jsonBodiesOfAnyType } from '../json-bodies.js'
import { V2_ERROR_RESPONSES } from '../schemas.js'

/**
 * The model repository extension over REST, as Triton answers it: `POST /v2/repository/index`,
 * `POST /v2/repository/models/{m}/load` and `.../unload`. Register with `{ prefix: '/v2' }`.
 * Behind the API key when one is set (src/http/access.ts); load and unload only with
 * --model-control-mode explicit. Load answers once the model serves; unload once it has drained.
 */

export interface V2RepositoryOptions {
  readonly service: ClassifyService
}

/** The bodies are a flag or a few parameters: a small limit, whatever the body limit is. */
const BODY_LIMIT_BYTES = 64 * 1024

const Empty = Type.String({ maxLength: 0, description: 'Empty body: 200 means done.' })

const IndexRequest = Type.Union([
  Type.Null(),
  Type.Object({
    ready: Type.Optional(Type.Boolean({ description: 'true: only the models (versions) that are ready' })),
    repository_name: Type.Optional(Type.String({ description: 'Accepted; there is one repository' }))
  })
])

const IndexResponse = Type.Array(
  Type.Object({
    name: Type.String(),
    version: Type.Optional(Type.String({ description: 'Absent for an entry about the whole model' })),
    state: Type.String({ description: 'READY, UNAVAILABLE, LOADING or UNLOADING' }),
    reason: Type.String({ description: 'Why it is in that state ("unloaded", a load failure); empty when READY' })
  })
)

const ControlRequest = Type.Union([
  Type.Null(),
  Type.Object({
    parameters: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), {
        description:
          "unload_dependents is accepted and ignored; config (load): Triton's model configuration for this load, as JSON text (or the object), read as docs/api.md says; file: overrides are refused"
      })
    )
  })
])

const ModelParams = Type.Object({ model: Type.String({ minLength: 1, maxLength: 128 }) })

interface ControlBody {
  parameters?: Record<string, unknown>
}

function parametersOf(body: unknown): Record<string, unknown> {
  return (body as ControlBody | null)?.parameters ?? {}
}

export async function v2RepositoryRoutes(app: FastifyInstance, { service }: V2RepositoryOptions): Promise<void> {
  // Clients send these bodies as JSON under various content types, or send none at all.
  jsonBodiesOfAnyType(app, BODY_LIMIT_BYTES, () => new ServiceError('BAD_REQUEST', 'The body is not valid JSON.'))

  const config = { bodyTypes: ['*'] }
  app.post(
    '/repository/index',
    {
      bodyLimit: BODY_LIMIT_BYTES,
      config,
      schema: {
        summary: 'V2 repository index: every model folder and served version, with its state',
        body: IndexRequest,
        response: { 200: IndexResponse, ...V2_ERROR_RESPONSES }
      }
    },
    async (request) => repositoryIndex(service, (request.body as { ready?: boolean } | null)?.ready === true)
  )
  app.post(
    '/repository/models/:model/load',
    {
      bodyLimit: BODY_LIMIT_BYTES,
      config,
      schema: {
        summary: 'V2 repository: load or reload a model (--model-control-mode explicit)',
        params: ModelParams,
        body: ControlRequest,
        response: { 200: Empty, ...V2_ERROR_RESPONSES }
      }
    },
    async (request, reply) => {
      const { model } = request.params as { model: string }
      await loadModel(service, model, parametersOf(request.body))
      request.log.info({ model, versions: service.modelVersions(model).map((m) => m.info.version) }, 'model loaded on request')
      return reply.code(200).send('')
    }
  )
  app.post(
    '/repository/models/:model/unload',
    {
      bodyLimit: BODY_LIMIT_BYTES,
      config,
      schema: {
        summary: 'V2 repository: unload a model, once its requests have finished (--model-control-mode explicit)',
        params: ModelParams,
        body: ControlRequest,
        response: { 200: Empty, ...V2_ERROR_RESPONSES }
      }
    },
    async (request, reply) => {
      const { model } = request.params as { model: string }
      await unloadModel(service, model, parametersOf(request.body))
      request.log.info({ model }, 'model unloaded on request')
      return reply.code(200).send('')
    }
  )
}
