import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import type { ClassifyService } from '../../core/classify-service.js'

const Health = Type.Object({
  status: Type.String(),
  models: Type.Optional(Type.Array(Type.Object({ name: Type.String(), ready: Type.Boolean() })))
})

/** Liveness: the process answers. Readiness: models loaded, warmed up, not draining. */
export function healthRoutes(app: FastifyInstance, service: ClassifyService): void {
  app.get('/health/live', { schema: { summary: 'Liveness probe', response: { 200: Health } } }, async () => ({ status: 'live' }))
  app.get('/health/ready', { schema: { summary: 'Readiness probe', response: { 200: Health, 503: Health } } }, async (_request, reply) => {
    const models = service.modelNames().map((name) => ({ name, ready: service.isModelReady(name) }))
    if (!service.ready) reply.code(503)
    return { status: service.ready ? 'ready' : 'not ready', models }
  })
}
