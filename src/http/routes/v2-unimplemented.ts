import type { FastifyInstance } from 'fastify'
import {
  extensionNotImplemented,
  UNIMPLEMENTED_ROUTES,
  type UnimplementedExtension
} from '../../open-inference/unimplemented-extensions.js'
import { sendError, v2ErrorBody } from '../error-status.js'
import { V2_ERROR_RESPONSES } from '../schemas.js'

/**
 * Triton's shared-memory routes (and logging's, for a logger without settings), each answered 501
 * NOT_IMPLEMENTED with what to do instead (open-inference/unimplemented-extensions.ts). Register
 * with `{ prefix: '/v2' }`.
 */

export interface V2UnimplementedOptions {
  /** Extensions of the list that this server answers after all (logging, with a logger from createLogger). */
  readonly implemented?: readonly UnimplementedExtension[]
}

/** Their bodies are a few fields of JSON; they are read and dropped. */
const BODY_LIMIT_BYTES = 64 * 1024

export async function v2UnimplementedRoutes(app: FastifyInstance, { implemented = [] }: V2UnimplementedOptions): Promise<void> {
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: BODY_LIMIT_BYTES }, (_request, _body, done) => done(null, null))
  app.setErrorHandler((err, request, reply) => {
    sendError(request, reply, err, v2ErrorBody)
  })
  for (const { method, url, extension } of UNIMPLEMENTED_ROUTES) {
    if (implemented.includes(extension)) continue
    app.route({
      method,
      url,
      bodyLimit: BODY_LIMIT_BYTES,
      config: method === 'POST' ? { bodyTypes: ['*'] } : {},
      // Not part of the API: left out of the OpenAPI document, which lists what answers.
      schema: {
        hide: true,
        summary: `Triton's ${extension.replaceAll('_', ' ')} extension: not implemented (501)`,
        response: V2_ERROR_RESPONSES
      },
      handler: async () => {
        throw extensionNotImplemented(extension)
      }
    })
  }
}
