import { createHash, timingSafeEqual } from 'node:crypto'

/**
 * The API key check both doors share. HTTP passes `request.headers`; gRPC passes
 * `call.metadata.getMap()` (metadata keys are lower-case, as HTTP/2 header names are). A request is
 * authorised when it carries the key as `authorization: Bearer <key>` or as `x-api-key: <key>`.
 *
 * Both sides are hashed with SHA-256 before `timingSafeEqual`, so the comparison takes the same
 * time whatever the presented value's length or how much of it matches.
 */

const BEARER = /^Bearer[ \t]+(\S+)[ \t]*$/i

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest()
}

/** The one value a header holds; repeated headers and binary metadata do not carry a key. */
function single(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined
}

/** The key the request presents, if any: the bearer token wins over x-api-key. */
export function presentedKey(headers: Readonly<Record<string, unknown>>): string | undefined {
  const authorization = single(headers.authorization)
  const bearer = authorization === undefined ? undefined : BEARER.exec(authorization)?.[1]
  return bearer ?? single(headers['x-api-key'])
}

/** True when the headers (or gRPC metadata map) carry `key`; compared in constant time. */
export function isAuthorized(headers: Readonly<Record<string, unknown>>, key: string): boolean {
  const presented = presentedKey(headers)
  if (presented === undefined) return false
  return timingSafeEqual(digest(presented), digest(key))
}
