import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { isAuthorized } from '../api-key.js'
import type { Settings } from '../config.js'
import { ServiceError } from '../errors.js'
import { BATCH_ROUTE } from './routes/batch.js'

/**
 * Which routes need the API key, decided from the matched route's URL pattern so that routes in
 * other plugins (the /v2 Open Inference Protocol routes) are covered without knowing about this
 * file. Inference always needs it; health and metrics only with --auth-health / --auth-metrics;
 * model listings, the demo page, the OpenAPI docs and CORS preflights never do.
 */
export type RouteAccess = 'inference' | 'health' | 'metrics' | 'open'

const INFERENCE_ROUTES: ReadonlySet<string> = new Set(['/classify', BATCH_ROUTE])

export function routeAccess(routeUrl: string | undefined): RouteAccess {
  if (routeUrl === undefined) return 'open'
  if (INFERENCE_ROUTES.has(routeUrl) || (routeUrl.startsWith('/v2/models/') && routeUrl.endsWith('/infer'))) return 'inference'
  // Loading and unloading models changes the server: as protected as inference, and so is the index.
  if (routeUrl.startsWith('/v2/repository/')) return 'inference'
  // So does changing the log or trace settings (Triton's logging and trace extensions).
  if (routeUrl === '/v2/logging' || routeUrl.endsWith('/trace/setting')) return 'inference'
  if (routeUrl.startsWith('/health/') || routeUrl.startsWith('/v2/health/')) return 'health'
  // Statistics tell what /metrics tells.
  if (routeUrl === '/metrics' || (routeUrl.startsWith('/v2/models') && routeUrl.endsWith('/stats'))) return 'metrics'
  return 'open'
}

/**
 * With --api-key set, adds the onRequest hook that refuses unauthenticated calls to protected
 * routes with 401 UNAUTHENTICATED and `WWW-Authenticate: Bearer`. Register it before any route
 * plugin, so encapsulated plugins inherit it.
 */
export function requireApiKey(app: FastifyInstance, settings: Settings): void {
  const key = settings.apiKey
  if (key === undefined) return
  const protectedAccess: ReadonlySet<RouteAccess> = new Set<RouteAccess>([
    'inference',
    ...(settings.authHealth ? (['health'] as const) : []),
    ...(settings.authMetrics ? (['metrics'] as const) : [])
  ])
  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    if (!protectedAccess.has(routeAccess(request.routeOptions.url))) return
    if (isAuthorized(request.headers, key)) return
    void reply.header('www-authenticate', 'Bearer')
    throw new ServiceError('UNAUTHENTICATED')
  })
}
