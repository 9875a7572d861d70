import type { FastifyInstance } from 'fastify'

/**
 * JSON answers under /v2 are sent as `application/json`, without fastify's `; charset=utf-8`:
 * the KServe Python SDK reads an error's `error` field only when the content type is exactly that,
 * and JSON's charset is UTF-8 by definition anyway (RFC 8259 §8.1), so the parameter says nothing.
 */

export const V2_JSON_CONTENT_TYPE = 'application/json'

const V2_PATH = /^\/v2(?:[/?#]|$)/

export function isV2Url(url: string | undefined): boolean {
  return url !== undefined && V2_PATH.test(url)
}

/** Adds the hook at the root, so it also covers /v2 answers given outside the V2 routes (router refusals, admission). */
export function plainJsonOnV2(app: FastifyInstance): void {
  app.addHook('onSend', (request, reply, payload, done) => {
    if (isV2Url(request.url)) {
      const type = reply.getHeader('content-type')
      if (typeof type === 'string' && type.startsWith('application/json')) void reply.header('content-type', V2_JSON_CONTENT_TYPE)
    }
    done(null, payload)
  })
}
