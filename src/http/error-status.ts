import type { FastifyReply, FastifyRequest } from 'fastify'
import { ServiceError, isServiceError, type ErrorCode, type ErrorKind } from '../errors.js'

/** The one place an error kind becomes an HTTP status. */
export function httpStatusOf(kind: ErrorKind): number {
  switch (kind) {
    case 'invalid_argument':
      return 400
    case 'unauthenticated':
      return 401
    case 'not_found':
      return 404
    case 'payload_too_large':
      return 413
    case 'unsupported_media_type':
      return 415
    case 'resource_exhausted':
      return 429
    case 'cancelled':
      return 499
    case 'unavailable':
      return 503
    case 'deadline_exceeded':
      return 504
    case 'internal':
      return 500
  }
}

/** fastify and plugin error codes → our registry. Anything else unknown is INTERNAL. */
const FASTIFY_CODES: Readonly<Record<string, ErrorCode>> = {
  FST_ERR_CTP_EMPTY_JSON_BODY: 'EMPTY_BODY',
  FST_ERR_CTP_BODY_TOO_LARGE: 'BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'BAD_REQUEST',
  FST_ERR_CTP_INVALID_JSON_BODY: 'BAD_REQUEST',
  FST_ERR_CTP_EMPTY_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_REQ_FILE_TOO_LARGE: 'BODY_TOO_LARGE',
  FST_PARTS_LIMIT: 'BAD_MULTIPART',
  FST_FILES_LIMIT: 'BAD_MULTIPART',
  FST_FIELDS_LIMIT: 'BAD_MULTIPART',
  FST_PROTO_VIOLATION: 'BAD_MULTIPART',
  FST_INVALID_MULTIPART_CONTENT_TYPE: 'BAD_MULTIPART',
  FST_ERR_NOT_FOUND: 'BAD_REQUEST'
}

interface FastifyLikeError {
  code?: string
  statusCode?: number
  message?: string
  validation?: Array<{ instancePath?: string; params?: Record<string, unknown> }>
  validationContext?: string
}

/** Any thrown value → a ServiceError with a stable code; never leaks a stack or a path. */
export function toServiceError(err: unknown): ServiceError {
  if (isServiceError(err)) return err
  const e = (err ?? {}) as FastifyLikeError
  if (e.validation !== undefined) {
    const where = e.validation.map((v) => `${e.validationContext ?? ''}${v.instancePath ?? ''}`).join(' ')
    if (/topk/.test(where)) return new ServiceError('INVALID_TOPK')
    if (/deadline/.test(where)) return new ServiceError('INVALID_DEADLINE')
    return new ServiceError('BAD_REQUEST', e.message)
  }
  const mapped = e.code === undefined ? undefined : FASTIFY_CODES[e.code]
  if (mapped !== undefined) return new ServiceError(mapped)
  // Busboy (multipart) reports malformed bodies as plain Errors; the request, not the server, is at fault.
  if (typeof e.message === 'string' && /multipart|boundary|Unexpected end of form|Malformed part header/i.test(e.message)) {
    return new ServiceError('BAD_MULTIPART')
  }
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) return new ServiceError('BAD_REQUEST')
  return new ServiceError('INTERNAL', undefined, { cause: err })
}

/**
 * Answers a failed request: logs it (unexpected failures at error, refusals at info), sets
 * Retry-After when the error carries one, and sends the body its door's protocol wants.
 */
export function sendError(request: FastifyRequest, reply: FastifyReply, err: unknown, body: (se: ServiceError, status: number) => unknown): void {
  const se = toServiceError(err)
  const status = httpStatusOf(se.kind)
  if (status >= 500 && se.code !== 'SHUTTING_DOWN' && se.code !== 'INFERENCE_FAILED') request.log.error({ err }, 'request failed')
  else request.log.info({ code: se.code, status }, 'request refused')
  if (se.retryAfterSeconds !== undefined) void reply.header('retry-after', String(se.retryAfterSeconds))
  void reply.code(status).send(body(se, status))
}
