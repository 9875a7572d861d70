import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import type { ClassifyService } from '../../core/classify-service.js'
import { ServiceError } from '../../errors.js'
import { traceSettingsChange } from '../../trace/trace-setting-request.js'
import { jsonBodiesOfAnyType } from '../json-bodies.js'
import { V2_ERROR_RESPONSES } from '../schemas.js'

/**
 * Triton's trace extension over REST: `GET /v2/trace/setting` answers the global trace settings,
 * `GET /v2/models/{model}/trace/setting` those a model's requests follow; a POST to either changes
 * the settings its JSON object names and answers all of them (tritonclient's get_trace_settings /
 * update_trace_settings, with or without model_name). Register with `{ prefix: '/v2' }`; behind the
 * API key when one is set (src/http/access.ts).
 */

export interface V2TraceOptions {
  readonly service: ClassifyService
}

/** A few settings: a small limit, whatever the body limit is. */
const BODY_LIMIT_BYTES = 16 * 1024

const TraceSettingsBody = Type.Object(
  {
    trace_file: Type.String({
      description: 'Where traces are written (--trace-file); "" when to the log. Cannot be changed over the network'
    }),
    trace_level: Type.Array(Type.String(), { description: '["OFF"] or ["TIMESTAMPS"]' }),
    trace_rate: Type.String({ description: 'One request traced in every this many' }),
    trace_count: Type.String({ description: 'Traces still to be taken; "-1": no limit' }),
    log_frequency: Type.String({ description: 'Traces per trace file; "0": one file, closed when the server stops' }),
    trace_mode: Type.String({ description: '"triton" (the JSON trace format)' })
  },
  { additionalProperties: false }
)

const TraceSettingsRequest = Type.Unknown({
  description:
    'A JSON object of the settings to change, named and typed as answered (numbers may be JSON integers); null: the global value again (for a model) or the value at start (globally). No setting: only reads them.'
})

const ModelParams = Type.Object({ model: Type.String() })

export async function v2TraceRoutes(app: FastifyInstance, { service }: V2TraceOptions): Promise<void> {
  const { tracer } = service
  // tritonclient sends the settings as JSON without a content type; an empty POST only reads them.
  jsonBodiesOfAnyType(app, BODY_LIMIT_BYTES, () => new ServiceError('INVALID_TRACE_SETTING', '(the body is not valid JSON)'))
  const response = { 200: TraceSettingsBody, ...V2_ERROR_RESPONSES }
  const post = { bodyLimit: BODY_LIMIT_BYTES, config: { bodyTypes: ['*'] } }

  app.get('/trace/setting', { schema: { summary: "Triton's trace extension: the global trace settings", response } }, async () =>
    tracer.settings.view()
  )
  app.post(
    '/trace/setting',
    { ...post, schema: { summary: "Triton's trace extension: change the global trace settings", body: TraceSettingsRequest, response } },
    async (request) => {
      // No body: a read (an empty object changes nothing either).
      if (request.body === null || request.body === undefined) return tracer.settings.view()
      const after = tracer.settings.update(traceSettingsChange(request.body))
      request.log.info({ after }, 'trace settings changed on request')
      return after
    }
  )
  app.get(
    '/models/:model/trace/setting',
    { schema: { summary: "Triton's trace extension: the trace settings a model's requests follow", params: ModelParams, response } },
    async (request) => {
      const { model } = request.params as { model: string }
      await service.checkModelName(model)
      return tracer.settings.view(model)
    }
  )
  app.post(
    '/models/:model/trace/setting',
    {
      ...post,
      schema: {
        summary: "Triton's trace extension: change a model's own trace settings",
        params: ModelParams,
        body: TraceSettingsRequest,
        response
      }
    },
    async (request) => {
      const { model } = request.params as { model: string }
      await service.checkModelName(model)
      if (request.body === null || request.body === undefined) return tracer.settings.view(model)
      const after = tracer.settings.update(traceSettingsChange(request.body), model)
      request.log.info({ model, after }, 'trace settings changed on request')
      return after
    }
  )
}
