import type { FastifyReply, FastifyRequest, FastifySchemaValidationError } from 'fastify'
import { STATUS_CODES, type IncomingMessage } from 'node:http'
import { ServiceError, isServiceError, toServiceError, type ErrorCode, type ErrorKind } from '../errors.js'
import { discardRefusedBody } from './refused-body.js'
import { isKServeV1Path } from './other-servers-routes.js'
import { V2_JSON_CONTENT_TYPE, isV2Url } from './v2-content-type.js'

/** The one place an error kind becomes an HTTP status. */
export function httpStatusOf(kind: ErrorKind): number {
  switch (kind) {
    case 'invalid_argument':
      return 400
    case 'unauthenticated':
      return 401
    case 'not_found':
      return 404
    case 'method_not_allowed':
      return 405
    case 'request_timeout':
      return 408
    case 'expectation_failed':
      return 417
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
    case 'not_implemented':
      return 501
  }
}

/** An error answer's body for a refused request, given its error and HTTP status. */
export type ErrorBodyShape = (se: ServiceError, status: number) => unknown

/** The door's own shape: `{ statusCode, code, error, message }`. */
export const errorBody: ErrorBodyShape = (se, status) => ({
  statusCode: status,
  code: se.code,
  error: STATUS_CODES[status] ?? 'Error',
  message: se.message
})

/**
 * The Open Inference Protocol's shape, on /v2: `{ error: "<CODE>: <message>" }`; also KServe V1's,
 * so the 404s of its paths (other-servers-routes.ts) take it.
 */
export const v2ErrorBody: ErrorBodyShape = (se) => ({ error: `${se.code}: ${se.message}` })

/**
 * The shape for an answer outside the /v2 routes (URL, parser and connection errors, the router's
 * 404s): chosen from the path, as the routes' own error handlers would have chosen it.
 */
export function errorBodyFor(url: string | undefined): ErrorBodyShape {
  return isV2Url(url) || isKServeV1Path(url) ? v2ErrorBody : errorBody
}

/** fastify, router and plugin error codes → our registry (with a detail where the code alone is vague). */
const FASTIFY_CODES: Readonly<Record<string, ErrorCode | readonly [ErrorCode, string]>> = {
  FST_ERR_CTP_EMPTY_JSON_BODY: 'EMPTY_BODY',
  FST_ERR_CTP_BODY_TOO_LARGE: 'BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: ['BAD_REQUEST', 'The Content-Length header does not match the body.'],
  FST_ERR_CTP_INVALID_JSON_BODY: ['BAD_REQUEST', 'The body is not valid JSON.'],
  FST_ERR_CTP_EMPTY_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_ROUTE_MISSING_CONTENT_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_NOT_FOUND: 'ROUTE_NOT_FOUND',
  // The router refuses these before any route runs; the message must not echo the URL back.
  FST_ERR_BAD_URL: ['BAD_REQUEST', 'The path is not valid percent-encoding.'],
  FST_ERR_MAX_PARAM_LENGTH: ['BAD_REQUEST', 'A path parameter (a model name or version) is too long.'],
  FST_REQ_FILE_TOO_LARGE: 'BODY_TOO_LARGE',
  FST_PARTS_LIMIT: ['BAD_MULTIPART', 'The body has more parts than this route reads.'],
  FST_FILES_LIMIT: [
    'BAD_MULTIPART',
    'The body has more files than this route reads (/classify: 1; the batch endpoint: --max-batch-items).'
  ],
  FST_FIELDS_LIMIT: ['BAD_MULTIPART', 'The body has more text fields than this route reads.'],
  FST_PROTO_VIOLATION: 'BAD_MULTIPART',
  FST_INVALID_MULTIPART_CONTENT_TYPE: 'BAD_MULTIPART',
  FST_INVALID_JSON_FIELD_ERROR: 'BAD_MULTIPART'
}

/**
 * Request fields whose invalid value has a code of its own, wherever the field is read (query or
 * JSON body); any other invalid field is BAD_REQUEST.
 */
const FIELD_CODES: Readonly<Record<string, ErrorCode>> = { topk: 'INVALID_TOPK', deadline_ms: 'INVALID_DEADLINE' }

/** The code an invalid value of this request field is refused with; BAD_REQUEST for most fields. */
export function invalidFieldCode(field: string | undefined): ErrorCode {
  return field !== undefined && Object.hasOwn(FIELD_CODES, field) ? FIELD_CODES[field]! : 'BAD_REQUEST'
}

interface FastifyLikeError {
  code?: string
  statusCode?: number
  message?: string
  validation?: Array<{ instancePath?: string }>
}

/** Connections this door cut off for taking too long to send their request (see server-limits.ts). */
const timedOutSockets = new WeakSet<object>()

export function noteRequestTimeout(socket: object): void {
  timedOutSockets.add(socket)
}

/**
 * Whether the request's body stopped arriving because the connection went: the client hung up
 * (or this door cut it off) before its last byte. Errors that follow are the client's doing.
 */
export function bodyCutOff(raw: IncomingMessage): boolean {
  return raw.destroyed && !raw.complete
}

/**
 * Node's "aborted" (ECONNRESET) on a request whose connection closed before it was read to its end
 * or answered: its client went away, though its body had all arrived (a multipart parser still
 * reading it). It was logged INTERNAL at error.
 */
function abortedByClient(err: unknown, raw: IncomingMessage): boolean {
  return raw.destroyed && (err as { code?: unknown } | null)?.code === 'ECONNRESET'
}

/**
 * fastify's schemaErrorFormatter: fastify's own wording, except that a refused topk (0, abc, over
 * the maximum) names the maximum; that text becomes INVALID_TOPK's detail (validationError).
 */
export function schemaErrorFormatter(maxTopk: number): (errors: FastifySchemaValidationError[], dataVar: string) => Error {
  return (errors, dataVar) => {
    const topk = errors.find((e) => e.instancePath.split('/')[1] === 'topk')
    if (topk !== undefined) {
      // ajv runs verbose: the error carries the value as coerced (a query's "0" and a body's null are both 0).
      const got = JSON.stringify((topk as { data?: unknown }).data) ?? 'nothing'
      return new Error(`It was read as ${got.slice(0, 32)}; the maximum is ${maxTopk} (--max-topk; at most the model's classes).`)
    }
    return new Error(errors.map((e) => unknownFieldText(e, dataVar) ?? schemaRuleText(e, dataVar)).join(', '))
  }
}

/** What a JSON value is, as a refusal names it. */
function kindOf(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return `an array of ${value.length}`
  return typeof value === 'object' ? 'an object' : typeof value === 'string' ? 'a string' : `a ${typeof value}`
}

/**
 * A broken schema rule said as a sentence with what came (ajv runs verbose, so the error carries
 * the value): `{"inputs": []}` read "body/inputs must NOT have fewer than 1 items" and `{"inputs":
 * {}}` "body/inputs must be array" (client review). Rules not listed keep ajv's words.
 */
function schemaRuleText(error: FastifySchemaValidationError, dataVar: string): string {
  const where = `${dataVar}${error.instancePath}`
  const params = error.params as { limit?: number; type?: string; missingProperty?: string; allowedValues?: unknown[] }
  const data = (error as { data?: unknown }).data
  switch (error.keyword) {
    case 'minItems':
      return `${where} needs at least ${params.limit} item${params.limit === 1 ? '' : 's'}; it has ${Array.isArray(data) ? data.length : 0}`
    case 'maxItems':
      return `${where} takes at most ${params.limit} items; it has ${Array.isArray(data) ? data.length : 'more'}`
    case 'type':
      return `${where} must be ${/^[aeiou]/.test(params.type ?? '') ? 'an' : 'a'} ${params.type}; it is ${kindOf(data)}`
    case 'required':
      return `${where} lacks the field "${params.missingProperty}"`
    case 'enum':
      return `${where} must be one of ${(params.allowedValues ?? []).map((v) => JSON.stringify(v)).join(', ')}`
    default:
      return `${where} ${error.message ?? ''}`
  }
}

/**
 * An unknown query parameter or body field, said with its name and the ones the route takes (ajv's
 * own text, "querystring must NOT have additional properties", named neither: `?top_k=3` was a
 * puzzle). The name is repeated only when it looks like one.
 */
function unknownFieldText(error: FastifySchemaValidationError, dataVar: string): string | undefined {
  if (error.keyword !== 'additionalProperties') return undefined
  const name = String((error.params as { additionalProperty?: unknown }).additionalProperty ?? '')
  const parent = (error as { parentSchema?: { properties?: Record<string, unknown> } }).parentSchema
  const known = Object.keys(parent?.properties ?? {})
  const where = dataVar === 'querystring' ? 'The query' : `${dataVar}${error.instancePath}`
  const what = dataVar === 'querystring' ? 'parameter' : 'field'
  const shown = /^[A-Za-z0-9_.-]{1,64}$/.test(name) ? ` "${name}"` : ''
  const squash = (n: string): string => n.replace(/[-_]/g, '').toLowerCase()
  const meant = known.find((k) => squash(k) === squash(name))
  return (
    `${where} has an unknown ${what}${shown}` +
    (known.length === 0 ? '' : `; it takes ${known.join(', ')}`) +
    (meant === undefined || shown === '' ? '' : ` (did you mean ${meant}?)`)
  )
}

/**
 * A schema refusal: the code of the first field that has one (`/topk`, `/deadline_ms`), else
 * BAD_REQUEST. A topk refusal keeps schemaErrorFormatter's text, which names the maximum.
 */
function validationError(validation: ReadonlyArray<{ instancePath?: string }>, message: string | undefined): ServiceError {
  for (const v of validation) {
    const code = invalidFieldCode(v.instancePath?.split('/')[1])
    if (code === 'INVALID_TOPK') return new ServiceError(code, message)
    if (code !== 'BAD_REQUEST') return new ServiceError(code)
  }
  return new ServiceError('BAD_REQUEST', message)
}

/** A request whose connection went away: CLIENT_CLOSED, or REQUEST_TIMEOUT when this door cut a slow client off. */
export function connectionGone(request: FastifyRequest): ServiceError {
  return new ServiceError(timedOutSockets.has(request.raw.socket) ? 'REQUEST_TIMEOUT' : 'CLIENT_CLOSED')
}

/**
 * The HTTP door's adapter to toServiceError: fastify's and its plugins' errors by their code, schema
 * refusals by the field, and, given the request, an error caused by its connection going away is
 * CLIENT_CLOSED (or REQUEST_TIMEOUT when this door cut a slow client off), not INTERNAL, whatever
 * the parser made of the missing bytes. Never leaks a stack or a path.
 */
export function httpServiceError(err: unknown, request?: FastifyRequest): ServiceError {
  if (isServiceError(err)) return err
  if (request !== undefined && (bodyCutOff(request.raw) || abortedByClient(err, request.raw))) return connectionGone(request)
  const e = (err ?? {}) as FastifyLikeError
  if (e.validation !== undefined) return validationError(e.validation, e.message)
  const mapped = e.code === undefined ? undefined : FASTIFY_CODES[e.code]
  if (typeof mapped === 'string') return new ServiceError(mapped)
  if (mapped !== undefined) return new ServiceError(mapped[0], mapped[1])
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) return new ServiceError('BAD_REQUEST')
  return toServiceError(err)
}

/**
 * 5xx codes that are the expected outcome of a client's choice or of shutting down, logged at info
 * like refusals: only failures nobody asked for are logged at error.
 */
const EXPECTED_5XX: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'SHUTTING_DOWN',
  'INFERENCE_FAILED',
  'DEADLINE_EXCEEDED',
  'NOT_IMPLEMENTED'
])

/**
 * Answers a failed request: logs it (unexpected failures at error, refusals at info), sets
 * Retry-After when the error carries one, and sends the body its door's protocol wants. The rest of
 * a body that has not fully arrived is read and dropped, within bounds (see refused-body.ts), so
 * that a client still sending sees the answer.
 */
export function sendError(request: FastifyRequest, reply: FastifyReply, err: unknown, body: ErrorBodyShape): void {
  const se = httpServiceError(err, request)
  const status = httpStatusOf(se.kind)
  if (status >= 500 && !EXPECTED_5XX.has(se.code)) request.log.error({ err }, 'request failed')
  else request.log.info({ code: se.code, status }, 'request refused')
  if (se.retryAfterSeconds !== undefined) void reply.header('retry-after', String(se.retryAfterSeconds))
  if (!request.raw.complete) discardRefusedBody(request.raw)
  void reply.code(status)
  // Exactly application/json on /v2 (v2-content-type.ts), also where no route's hooks run (the
  // router's refusals): fastify appends a charset to JSON it serialises, so this is sent as bytes.
  if (body === v2ErrorBody) void reply.header('content-type', V2_JSON_CONTENT_TYPE).send(Buffer.from(JSON.stringify(body(se, status))))
  else void reply.send(body(se, status))
}
