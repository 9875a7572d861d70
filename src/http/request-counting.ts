import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ServerResponse } from 'node:http'
import type { ServiceMetrics } from '../metrics.js'
import { connectionGone, httpServiceError } from './error-status.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Its outcome has been counted: a request is counted once, by the first hook that knows it. */
    outcomeCounted: boolean
  }

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

const countedReply = Symbol('countedReply')
type CountedResponse = ServerResponse & { [countedReply]?: FastifyReply }

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
  app.decorateRequest('outcomeCounted', false)
  // Failures are counted in onError, which sees the thrown error (the reply only has the status);
  // it also runs for parser and validation errors and for clients gone before the answer.
  app.addHook('onError', async (request, reply, error) => {
    if (request.routeOptions.config.countRequests === undefined || request.outcomeCounted) return
    request.outcomeCounted = true
    metrics.recordRequest(requestedModel(request), httpServiceError(error, request), reply.elapsedTime, requestedVersion(request))
  })
  app.addHook('onResponse', async (request, reply) => {
    if (reply.statusCode >= 400 || request.routeOptions.config.countRequests !== 'request' || request.outcomeCounted) return
    request.outcomeCounted = true
    metrics.recordRequest(requestedModel(request), 'success', reply.elapsedTime, requestedVersion(request))
  })
  // A client that hangs up before its answer is written never gets one, so onResponse never runs
  // (the response cannot finish), and when its batch was already running no error is thrown either:
  // the response's close, unfinished, counts it as the client gone (CLIENT_CLOSED, or REQUEST_TIMEOUT
  // when this door cut it off), once. One listener for the app; the response carries its reply.
  function responseClosed(this: CountedResponse): void {
    const reply = this[countedReply]
    if (reply === undefined || this.writableFinished || reply.request.outcomeCounted) return
    const { request } = reply
    request.outcomeCounted = true
    metrics.recordRequest(requestedModel(request), connectionGone(request), reply.elapsedTime, requestedVersion(request))
  }
  app.addHook('onRequest', async (request, reply) => {
    if (request.routeOptions.config.countRequests !== 'request') return
    const raw = reply.raw as CountedResponse
    raw[countedReply] = reply
    raw.once('close', responseClosed)
  })
}
