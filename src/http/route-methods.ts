import FindMyWay, { type HTTPMethod } from 'find-my-way'
import type { FastifyInstance } from 'fastify'

/**
 * The methods a path takes, for answering a known path asked with another method 405 with an
 * Allow header, as Triton does, instead of 404. fastify's own router looks routes up by their
 * pattern only (`hasRoute`), so a second router holds the same method and URL pairs, with no
 * handlers, from the onRoute hook: it is consulted only for requests fastify found no route for.
 * Catch-all routes (`*`, such as the CORS preflight's OPTIONS) say nothing about a path and are left out.
 */
export function routeMethods(app: FastifyInstance): (url: string) => string[] {
  const router = FindMyWay()
  const added = new Set<string>()
  app.addHook('onRoute', (route) => {
    if (route.url === '*' || route.url === '/*') return
    for (const method of [route.method].flat()) {
      const upper = method.toUpperCase() as HTTPMethod
      const key = `${upper} ${route.url}`
      if (added.has(key)) continue
      added.add(key)
      router.on(upper, route.url, () => {})
    }
  })
  return (url) => {
    const path = url.split('?', 1)[0]!
    return app.supportedMethods.filter((method) => router.find(method as HTTPMethod, path) !== null)
  }
}
