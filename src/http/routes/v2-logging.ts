import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { ServiceError } from '../../errors.js'
import type { LogSettings } from '../../log-settings.js'
import { jsonBodiesOfAnyType } from '../json-bodies.js'
import { V2_ERROR_RESPONSES } from '../schemas.js'

/**
 * Triton's logging extension over REST: `GET /v2/logging` answers the log settings, `POST
 * /v2/logging` changes the ones its JSON object names and answers all of them (tritonclient's
 * get_log_settings / update_log_settings). Register with `{ prefix: '/v2' }`; behind the API key
 * when one is set (src/http/access.ts).
 */

export interface V2LoggingOptions {
  readonly logSettings: LogSettings
}

/** A few settings: a small limit, whatever the body limit is. */
const BODY_LIMIT_BYTES = 16 * 1024

const LogSettingsBody = Type.Object(
  {
    log_file: Type.String({ description: 'Where the log goes: "" (stdout); cannot be changed over the network' }),
    log_info: Type.Boolean({ description: 'Info lines (pino level info)' }),
    log_warning: Type.Boolean({ description: 'Warning lines (pino level warn)' }),
    log_error: Type.Boolean({ description: 'Error lines (pino level error)' }),
    log_verbose_level: Type.Integer({
      minimum: 0,
      description:
        '0: no verbose lines; 1: a line per HTTP request and gRPC call (debug); 2 and above: also a line per model execution (trace)'
    }),
    log_format: Type.String({ description: '"default" (time in epoch milliseconds) or "ISO8601" (time as an ISO 8601 string)' })
  },
  { additionalProperties: false }
)

const LogSettingsRequest = Type.Unknown({
  description:
    'A JSON object of the settings to change, named as answered; a null value leaves its setting as it is. Empty: only reads them.'
})

export async function v2LoggingRoutes(app: FastifyInstance, { logSettings }: V2LoggingOptions): Promise<void> {
  // tritonclient sends the settings as JSON without a content type; an empty POST only reads them.
  jsonBodiesOfAnyType(app, BODY_LIMIT_BYTES, () => new ServiceError('INVALID_LOG_SETTING', '(the body is not valid JSON)'))
  const response = { 200: LogSettingsBody, ...V2_ERROR_RESPONSES }
  app.get('/logging', { schema: { summary: "Triton's logging extension: the log settings", response } }, async () => logSettings.view)
  app.post(
    '/logging',
    {
      bodyLimit: BODY_LIMIT_BYTES,
      config: { bodyTypes: ['*'] },
      schema: { summary: "Triton's logging extension: change log settings, answered with all of them", body: LogSettingsRequest, response }
    },
    async (request) => {
      const body = request.body
      // No body (none sent, or only whitespace): a read.
      if (body === null || body === undefined) return logSettings.view
      if (typeof body !== 'object' || Array.isArray(body)) {
        throw new ServiceError('INVALID_LOG_SETTING', '(the body must be a JSON object of settings, as GET /v2/logging answers them)')
      }
      const before = logSettings.view
      const after = logSettings.update(body as Record<string, unknown>)
      request.log.info({ before, after }, 'log settings changed on request')
      return after
    }
  )
}
