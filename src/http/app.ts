import cors from '@fastify/cors'
import multipart from '@fastify/multipart'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { Settings } from '../config.js'
import type { ClassifyService } from '../core/classify-service.js'
import { ServiceError } from '../errors.js'
import type { ServiceMetrics } from '../metrics.js'
import { requireApiKey } from './access.js'
import { bodyBudgetOf, type BodyBudget } from '../body-budget.js'
import { admitRequests } from './admission.js'
import { demoPageRoutes } from './demo-page.js'
import { errorBodyFor, schemaErrorFormatter, sendError } from './error-status.js'
import { jsonCostRefusal } from './json-cost.js'
import { ParseLane } from './parse-lane.js'
import { HeaderParsePool } from './header-parse-pool.js'
import { registerOpenApi } from './openapi.js'
import { countRequests } from './request-counting.js'
import { DEADLINE_HEADER } from './request-input.js'
import { batchRoutes } from './routes/batch.js'
import { classifyRoutes } from './routes/classify.js'
import { healthRoutes } from './routes/health.js'
import { metricsRoutes } from './routes/metrics.js'
import { modelsRoutes } from './routes/models.js'
import { v2Routes } from './routes/v2.js'
import { v2ConfigStatsRoutes } from './routes/v2-config-stats.js'
import { v2LoggingRoutes } from './routes/v2-logging.js'
import { v2TraceRoutes } from './routes/v2-trace.js'
import { v2RepositoryRoutes } from './routes/v2-repository.js'
import { v2UnimplementedRoutes } from './routes/v2-unimplemented.js'
import { capConnections } from '../connection-cap.js'
import { floodWarning } from '../flood-warning.js'
import { MAX_PIPELINED_REQUESTS, capPipelining, connectionOptions, refuseExpectations } from './server-limits.js'
import { plainJsonOnV2 } from './v2-content-type.js'
import { closeSilentConnectionsOnClose } from './silent-connections.js'
import { logSettingsOf } from '../log-settings.js'

/**
 * Builds the HTTP door over the core service, without listening, so tests use it on port 0 or via
 * inject(). main.ts owns the process (listen, signals, shutdown), and shares `bodyBudget` with the
 * gRPC door (a door of its own by default).
 */
/**
 * Every answer, refusals included, carries its request id (the client's x-request-id, or the one
 * the door made): the id the log lines carry, so a client can quote it.
 */
async function echoRequestId(request: FastifyRequest, reply: FastifyReply): Promise<void> {
  reply.header('x-request-id', request.id)
}

/** The characters of a request's URL a verbose log line keeps. */
const MAX_LOGGED_URL = 512

export async function buildApp(
  service: ClassifyService,
  settings: Settings,
  logger: Logger,
  metrics: ServiceMetrics,
  bodyBudget: BodyBudget = bodyBudgetOf(settings)
): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    bodyLimit: settings.bodyLimitBytes,
    // One line per request is written by the routes themselves, with model, batch size and timings.
    logController: new LogController({ disableRequestLogging: true }),
    requestIdHeader: 'x-request-id',
    // The admission hook answers SHUTTING_DOWN itself, in the registry's shape.
    return503OnClosing: false,
    ...connectionOptions(settings, logger),
    // The router's own refusals (a path that is not valid percent-encoding, a parameter too long).
    frameworkErrors: (err, request, reply) => {
      sendError(request, reply, err, errorBodyFor(request.url))
    },
    // verbose: a refusal carries the schema it broke, so an unknown field is answered with the known ones.
    ajv: { customOptions: { coerceTypes: true, removeAdditional: false, useDefaults: true, verbose: true } },
    schemaErrorFormatter: schemaErrorFormatter(settings.maxTopk)
  })
  capConnections(app.server, settings.maxConnections, logger, '--max-connections')
  refuseExpectations(app.server, logger)
  capPipelining(
    app.server,
    floodWarning(logger, { maxPipelined: MAX_PIPELINED_REQUESTS }, 'connection closed: too many pipelined requests unanswered')
  )

  // Before any route: swagger and the request counters see only routes added after them.
  await registerOpenApi(app)
  countRequests(app, metrics)
  // A verbose log (log_verbose_level 1, pino's debug) gets a line for each request answered; at 0 none is built.
  const logSettings = logSettingsOf(logger)
  app.addHook('onResponse', (request, reply, done) => {
    if (logSettings !== undefined && logSettings.verboseLevel === 0) return done()
    request.log.debug(
      { method: request.method, url: request.url.slice(0, MAX_LOGGED_URL), statusCode: reply.statusCode, ms: reply.elapsedTime },
      'request answered'
    )
    done()
  })
  app.addHook('onRequest', echoRequestId)
  requireApiKey(app, settings)
  admitRequests(app, settings, bodyBudget)
  // No CORS headers at all unless --cors-origins names the browser origins that may call.
  if (settings.corsOrigins !== undefined) {
    await app.register(cors, {
      origin: settings.corsOrigins.includes('*') ? '*' : [...settings.corsOrigins],
      methods: ['GET', 'POST'],
      // The V2 binary extension's length header and compressed bodies, so a page can send what tritonclient sends.
      allowedHeaders: [
        'content-type',
        'authorization',
        'x-api-key',
        DEADLINE_HEADER,
        'x-request-id',
        'inference-header-content-length',
        'content-encoding'
      ],
      exposedHeaders: ['retry-after', 'x-request-id', 'inference-header-content-length'],
      maxAge: 600
    })
  }
  // Each route passes its own limits (src/http/multipart-body.ts); these hold for any other reader.
  await app.register(multipart, {
    limits: { fileSize: settings.bodyLimitBytes, files: 1, fields: 8, parts: 10, fieldSize: 1024, headerPairs: 100 }
  })
  // JSON (the batch endpoint) is scanned for its nesting and values before it is parsed: parsing
  // 16 MB of `[` builds millions of arrays (json-cost.ts). Prototype poisoning is refused as
  // fastify's own parser does.
  const parseJson = app.getDefaultJsonParser('error', 'error')
  // Large bodies parsed one per turn of the event loop (parse-lane.ts); /v2 parses its own in workers.
  const parseLane = new ParseLane()
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    const bytes = body as Buffer
    void parseLane.run(bytes.byteLength, () => {
      const refusal = jsonCostRefusal(bytes, bytes.byteLength)
      if (refusal !== undefined) {
        done(new ServiceError('BAD_REQUEST', refusal), undefined)
        return
      }
      parseJson(request, bytes.toString('utf8'), done)
    })
  })
  // Raw image bodies: the decoder decides what the bytes are; the content type only routes them here.
  for (const type of [/^image\//, 'application/octet-stream']) {
    app.addContentTypeParser(type, { parseAs: 'buffer', bodyLimit: settings.bodyLimitBytes }, (_req, body, done) => {
      done(null, body)
    })
  }

  // The door's shape, except on the paths of other protocols that have one (KServe V1's 404s).
  app.setErrorHandler((err, request, reply) => {
    sendError(request, reply, err, errorBodyFor(request.url))
  })
  // From the drain on, answers ask the client to close its keep-alive connection: during the grace
  // period its next request then opens a new connection, which a load balancer sends to a replica
  // that stays; once close() has begun, close() would otherwise wait on idle sockets.
  app.addHook('onSend', async (_request, reply) => {
    if (service.isDraining || !app.server.listening) void reply.header('connection', 'close')
  })
  closeSilentConnectionsOnClose(app)
  plainJsonOnV2(app)
  // Unknown routes are refused by the admission hook before their body is read; this is the fallback.
  app.setNotFoundHandler(async (request) => {
    throw new ServiceError('ROUTE_NOT_FOUND', `No route ${request.method} for this path.`)
  })

  healthRoutes(app, service)
  classifyRoutes(app, service)
  batchRoutes(app, service, metrics)
  metricsRoutes(app, metrics)
  modelsRoutes(app, service)
  demoPageRoutes(app)
  // Open Inference Protocol (KServe V2): its own body parsing and its own error body, under /v2 only.
  // JSON tensors parsed in worker threads: up to four, leaving a core to the event loop.
  const headerParser = new HeaderParsePool(Math.max(1, Math.min(4, settings.cores - 1)), logger)
  app.addHook('onClose', async () => headerParser.close())
  await app.register(v2Routes, { prefix: '/v2', service, settings, headerParser })
  await app.register(v2ConfigStatsRoutes, { prefix: '/v2', service, statistics: metrics.statistics })
  await app.register(v2RepositoryRoutes, { prefix: '/v2', service })
  // The logging extension acts on the logger main.ts made (createLogger); another logger has no settings to change.
  if (logSettings !== undefined) await app.register(v2LoggingRoutes, { prefix: '/v2', logSettings })
  await app.register(v2TraceRoutes, { prefix: '/v2', service })
  await app.register(v2UnimplementedRoutes, { prefix: '/v2', implemented: logSettings === undefined ? [] : ['logging'] })
  return app
}
