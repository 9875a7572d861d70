import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { ServiceMetrics } from '../metrics.js'
import { httpServiceError } from './error-status.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * How requests to this route are counted in request_success/failure_total:
     * 'request': one outcome per request, recorded by the hooks below;
     * 'items': the handler records one outcome per item, the hooks only a refusal of the whole request.
     * Unset: not counted (health, docs, metrics, listings).
     */
    countRequests?: 'request' | 'items'
  }
}

/** The version a /v2/models/{m}/versions/{v}/… route names; undefined elsewhere. */
function requestedVersion(request: FastifyRequest): string | undefined {
  const params = request.params as { version?: unknown } | undefined
  return typeof params?.version === 'string' ? params.version : undefined
}

function requestedModel(request: FastifyRequest): string | undefined {
  const params = request.params as { model?: unknown } | undefined
  if (typeof params?.model === 'string') return params.model
  const query = request.query as { model?: unknown } | undefined
  return typeof query?.model === 'string' ? query.model : undefined
}

/**
 * Counts the outcome of every request to a route that declares `countRequests`, through
 * ServiceMetrics.recordRequest. Call before the routes are registered, so their hooks include these.
 */
export function countRequests(app: FastifyInstance, metrics: ServiceMetrics): void {
  // Failures are counted in onError, which sees the thrown error (the reply only has the status);
  // it also runs for parser and validation errors and for clients gone before the answer.
  app.addHook('onError', async (request, reply, error) => {
    if (request.routeOptions.config.countRequests !== undefined)
      metrics.recordRequest(requestedModel(request), httpServiceError(error, request), reply.elapsedTime, requestedVersion(request))
  })
  app.addHook('onResponse', async (request, reply) => {
    if (reply.statusCode < 400 && request.routeOptions.config.countRequests === 'request')
      metrics.recordRequest(requestedModel(request), 'success', reply.elapsedTime, requestedVersion(request))
  })
}
