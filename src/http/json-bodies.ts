import type { FastifyInstance } from 'fastify'
import type { ServiceError } from '../errors.js'
import { sendError, v2ErrorBody } from './error-status.js'

/**
 * For the /v2 routes whose small bodies are JSON settings or parameters (the repository, logging):
 * clients send them under any content type, or none, or empty. Every body is read as text of at
 * most `bodyLimit` bytes and parsed as JSON (blank: null); `invalid` is the refusal of text that is
 * not JSON. Errors are answered in the /v2 shape. Call inside the routes' own plugin.
 */
export function jsonBodiesOfAnyType(app: FastifyInstance, bodyLimit: number, invalid: () => ServiceError): void {
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'string', bodyLimit }, (_request, body, done) => {
    const text = (body as string).trim()
    if (text === '') return done(null, null)
    try {
      done(null, JSON.parse(text) as unknown)
    } catch {
      done(invalid(), undefined)
    }
  })
  app.setErrorHandler((err, request, reply) => {
    sendError(request, reply, err, v2ErrorBody)
  })
}
