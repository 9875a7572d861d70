import type { FastifyInstance } from 'fastify'
import type { ServiceMetrics } from '../../metrics.js'

/** GET /metrics: the Prometheus text exposition of the service's own registry. */
export function metricsRoutes(app: FastifyInstance, metrics: ServiceMetrics): void {
  app.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics',
        description:
          'Requests and failures by model and reason, inferences vs executions (mean batch size), batch sizes, stage durations, queue depth, and the process metrics.',
        response: {
          200: { description: 'Prometheus text exposition format 0.0.4', content: { 'text/plain': { schema: { type: 'string' } } } }
        }
      }
    },
    async (_request, reply) => {
      const { contentType, body } = await metrics.exposition()
      return reply.type(contentType).send(body)
    }
  )
}
