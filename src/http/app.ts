import cors from '@fastify/cors'
import multipart from '@fastify/multipart'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import { STATUS_CODES } from 'node:http'
import type { Logger } from 'pino'
import type { Settings } from '../config.js'
import type { ClassifyService } from '../core/classify-service.js'
import type { ServiceMetrics } from '../metrics.js'
import { requireApiKey } from './access.js'
import { demoPageRoutes } from './demo-page.js'
import { sendError } from './error-status.js'
import { registerOpenApi } from './openapi.js'
import { batchRoutes } from './routes/batch.js'
import { classifyRoutes } from './routes/classify.js'
import { healthRoutes } from './routes/health.js'
import { metricsRoutes, requestCounting } from './routes/metrics.js'
import { modelsRoutes } from './routes/models.js'
import { v2Routes } from './routes/v2.js'

/**
 * Builds the HTTP door over the core service, without listening, so tests use it on port 0 or via
 * inject(). main.ts owns the process (listen, signals, shutdown).
 */
export async function buildApp(service: ClassifyService, settings: Settings, logger: Logger, metrics: ServiceMetrics): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    bodyLimit: settings.bodyLimitBytes,
    // One line per request is written by the routes themselves, with model, batch size and timings.
    logController: new LogController({ disableRequestLogging: true }),
    requestIdHeader: 'x-request-id',
    return503OnClosing: true,
    ajv: { customOptions: { coerceTypes: true, removeAdditional: false, useDefaults: true } }
  })

  // Before any route: swagger and the request counters see only routes added after them.
  await registerOpenApi(app)
  requestCounting(app, metrics)
  requireApiKey(app, settings)
  // No CORS headers at all unless --cors-origins names the browser origins that may call.
  if (settings.corsOrigins !== undefined) {
    await app.register(cors, {
      origin: settings.corsOrigins.includes('*') ? '*' : [...settings.corsOrigins],
      methods: ['GET', 'POST'],
      allowedHeaders: ['content-type', 'authorization', 'x-api-key', 'x-deadline-ms', 'x-request-id'],
      exposedHeaders: ['retry-after', 'x-request-id'],
      maxAge: 600
    })
  }
  await app.register(multipart, {
    limits: { fileSize: settings.bodyLimitBytes, files: 1, fields: 8, parts: 10, fieldSize: 1024, headerPairs: 100 }
  })
  // Raw image bodies: the decoder decides what the bytes are; the content type only routes them here.
  for (const type of [/^image\//, 'application/octet-stream']) {
    app.addContentTypeParser(type, { parseAs: 'buffer', bodyLimit: settings.bodyLimitBytes }, (_req, body, done) => {
      done(null, body)
    })
  }

  app.setErrorHandler((err, request, reply) => {
    sendError(request, reply, err, (se, status) => ({ statusCode: status, code: se.code, error: STATUS_CODES[status] ?? 'Error', message: se.message }))
  })
  // Once close() has begun the server stops listening; answers still in flight then ask the client to
  // close its keep-alive connection, or close() would wait on idle sockets until the drain timeout.
  app.addHook('onSend', async (_request, reply) => {
    if (!app.server.listening) void reply.header('connection', 'close')
  })
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ statusCode: 404, code: 'BAD_REQUEST', error: 'Not Found', message: `No route ${request.method} ${request.url.split('?')[0]}.` })
  })

  healthRoutes(app, service)
  classifyRoutes(app, service)
  batchRoutes(app, service, metrics)
  metricsRoutes(app, metrics)
  modelsRoutes(app, service)
  demoPageRoutes(app)
  // Open Inference Protocol (KServe V2): its own body parsing and its own error body, under /v2 only.
  await app.register(v2Routes, { prefix: '/v2', service, settings })
  return app
}
