import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { ServiceMetrics } from '../../metrics.js'
import { toServiceError } from '../error-status.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The service's metrics; doors registered on this app call `metrics.recordRequest`. */
    readonly metrics: ServiceMetrics
  }
  interface FastifyContextConfig {
    /**
     * How requests to this route are counted in request_success/failure_total:
     * 'request': one outcome per request, recorded by the hooks below;
     * 'items': the handler records one outcome per item, the hooks only a refusal of the whole request.
     * Unset: not counted (health, docs, metrics).
     */
    countRequests?: 'request' | 'items'
  }
}

/**
 * Routes that count as one classification per request but were written before the route config
 * above existed; they get 'request' counting by URL.
 */
const COUNTED_BY_URL: ReadonlySet<string> = new Set(['/classify'])

function countingOf(request: FastifyRequest): 'request' | 'items' | undefined {
  const config = request.routeOptions.config
  return config.countRequests ?? (request.routeOptions.url !== undefined && COUNTED_BY_URL.has(request.routeOptions.url) ? 'request' : undefined)
}

function requestedModel(request: FastifyRequest): string | undefined {
  const params = request.params as { model?: unknown } | undefined
  if (typeof params?.model === 'string') return params.model
  const query = request.query as { model?: unknown } | undefined
  return typeof query?.model === 'string' ? query.model : undefined
}

/**
 * Decorates the app with `metrics` and counts request outcomes for the inference routes. Call
 * before the routes are registered, so their hooks include these.
 */
export function requestCounting(app: FastifyInstance, metrics: ServiceMetrics): void {
  app.decorate('metrics', metrics)
  // Failures are counted in onError, which sees the thrown error's code (the reply only has the
  // status); it also runs for parser and validation errors and for clients gone before the answer.
  app.addHook('onError', async (request, _reply, error) => {
    if (countingOf(request) !== undefined) metrics.recordRequest(requestedModel(request), toServiceError(error, request).code)
  })
  app.addHook('onResponse', async (request, reply) => {
    if (reply.statusCode < 400 && countingOf(request) === 'request') metrics.recordRequest(requestedModel(request), 'success')
  })
}

/** GET /metrics: the Prometheus text exposition of the service's own registry. */
export function metricsRoutes(app: FastifyInstance, metrics: ServiceMetrics): void {
  app.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics',
        description: 'Requests and failures by model and reason, inferences vs executions (mean batch size), batch sizes, stage durations, queue depth, and the process metrics.',
        response: { 200: { description: 'Prometheus text exposition format 0.0.4', content: { 'text/plain': { schema: { type: 'string' } } } } }
      }
    },
    async (_request, reply) => {
      const { contentType, body } = await metrics.exposition()
      return reply.type(contentType).send(body)
    }
  )
}
