/**
 * Every error the service can answer with, declared once. The code is API: clients match on it,
 * docs/operations.md lists it, and a test checks the two agree. HTTP and gRPC each map a `kind`
 * to their status in exactly one function (src/http/error-status.ts, src/grpc/error-status.ts),
 * and each turns any thrown value into a ServiceError through `toServiceError` below.
 */

export type ErrorKind =
  | 'invalid_argument'
  | 'not_found'
  | 'method_not_allowed'
  | 'expectation_failed'
  | 'not_implemented'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'unauthenticated'
  | 'resource_exhausted'
  | 'deadline_exceeded'
  | 'request_timeout'
  | 'cancelled'
  | 'unavailable'
  | 'internal'

interface ErrorSpec {
  readonly kind: ErrorKind
  readonly message: string
}

export const ERRORS = {
  EMPTY_BODY: { kind: 'invalid_argument', message: 'The request carries no image bytes.' },
  NOT_AN_IMAGE: { kind: 'invalid_argument', message: 'The bytes are not an image format the server can decode.' },
  UNSUPPORTED_MEDIA_TYPE: {
    kind: 'unsupported_media_type',
    message: 'This route does not read a body of this content type.'
  },
  UNSUPPORTED_IMAGE_FORMAT: {
    kind: 'unsupported_media_type',
    message: 'This image format is not accepted (accepted: JPEG, PNG, WebP, GIF, TIFF, AVIF).'
  },
  CORRUPT_IMAGE: { kind: 'invalid_argument', message: 'The image is truncated or corrupt and cannot be decoded.' },
  IMAGE_TOO_LARGE: { kind: 'payload_too_large', message: 'The image has more pixels than the server accepts.' },
  IMAGE_ASPECT_RATIO: {
    kind: 'invalid_argument',
    message: 'The image is too elongated to classify (its long side is more than 32 times its short side).'
  },
  IMAGE_TOO_COMPLEX: {
    kind: 'invalid_argument',
    message:
      'The image costs more to decode than the server allows: its structure is over one of the limits in docs/operations.md ("Limits"; the detail names it), or its decode ran over --decode-timeout-seconds.'
  },

  BODY_TOO_LARGE: { kind: 'payload_too_large', message: 'The request body is larger than the server accepts.' },
  BAD_MULTIPART: {
    kind: 'invalid_argument',
    message: 'The multipart body is malformed, or its files or fields are not the ones this route reads.'
  },
  BAD_REQUEST: { kind: 'invalid_argument', message: 'The request is invalid.' },
  TOO_MANY_ITEMS: {
    kind: 'invalid_argument',
    message: 'The request carries more images than one request may (setting --max-batch-items).'
  },
  INVALID_BASE64: { kind: 'invalid_argument', message: 'The image is not valid base64 (standard or URL-safe alphabet).' },
  INVALID_TOPK: { kind: 'invalid_argument', message: 'topk must be an integer from 1 to the maximum.' },
  INVALID_DEADLINE: {
    kind: 'invalid_argument',
    message: 'The deadline must be a whole number of milliseconds from 1 to 3600000 (one hour).'
  },
  INVALID_LOG_SETTING: {
    kind: 'invalid_argument',
    message: 'The log settings cannot be applied; none was changed.'
  },
  INVALID_TRACE_SETTING: {
    kind: 'invalid_argument',
    message: 'The trace settings cannot be applied; none was changed.'
  },
  UNAUTHENTICATED: {
    kind: 'unauthenticated',
    message: 'This route needs the API key: send "Authorization: Bearer <key>" or "x-api-key: <key>".'
  },
  MODEL_NOT_FOUND: { kind: 'not_found', message: 'No such model or version.' },
  MODEL_CONTROL_DISABLED: {
    kind: 'invalid_argument',
    message: 'Explicit model load / unload is not allowed: start the server with --model-control-mode explicit.'
  },
  MODEL_LOAD_FAILED: {
    kind: 'invalid_argument',
    message: 'The model failed to load; the versions it served before (if any) still serve. The reason follows.'
  },
  ROUTE_NOT_FOUND: { kind: 'not_found', message: 'No route answers this method and path; the API is listed at /docs.' },
  METHOD_NOT_ALLOWED: {
    kind: 'method_not_allowed',
    message: 'This path does not take this method; the Allow header lists the ones it takes.'
  },
  EXPECTATION_FAILED: {
    kind: 'expectation_failed',
    message: 'This server meets no Expect header but "Expect: 100-continue"; send the request without it.'
  },
  NOT_IMPLEMENTED: {
    kind: 'not_implemented',
    message: 'This server does not implement that Triton extension (GET /v2 lists the ones it does).'
  },
  REQUEST_TIMEOUT: {
    kind: 'request_timeout',
    message: 'The request was not received in time (its headers within --headers-timeout-ms, all of it within --request-timeout-ms).'
  },
  ANSWERS_NOT_READ: {
    kind: 'request_timeout',
    message: 'The client took no answer for --request-timeout-ms; the call is reset.'
  },
  MODEL_NOT_READY: { kind: 'unavailable', message: 'The model is loaded but not ready to serve.' },
  QUEUE_FULL: { kind: 'resource_exhausted', message: "The model's queue is full; retry after the Retry-After delay." },
  BODY_BUDGET_FULL: {
    kind: 'resource_exhausted',
    message: 'The server holds as many request bodies as it may at once (setting --body-budget-bytes); retry after the Retry-After delay.'
  },
  TOO_MANY_CALLS: {
    kind: 'resource_exhausted',
    message: 'The server has as many gRPC calls open as it may (setting --max-grpc-calls); retry, or reuse a stream.'
  },
  CALL_BURST: {
    kind: 'resource_exhausted',
    message:
      'More gRPC calls began in one turn of the event loop than --max-grpc-calls: the connection is told to go away (GOAWAY ENHANCE_YOUR_CALM); reconnect.'
  },
  STREAM_IDLE: {
    kind: 'unavailable',
    message:
      'The call had no request in flight (a ModelStreamInfer stream between requests, or a call whose message had not begun): it was idle for --grpc-stream-idle-timeout-ms, or the server, at --max-grpc-calls or --max-grpc-connections, ended it to let another client in. Send the request again on a new call or stream.'
  },
  DECODE_QUEUE_FULL: {
    kind: 'resource_exhausted',
    message: 'Too many images are waiting to be decoded; retry after the Retry-After delay.'
  },
  DEADLINE_EXCEEDED: { kind: 'deadline_exceeded', message: 'The request deadline passed before the image ran.' },
  CLIENT_CLOSED: { kind: 'cancelled', message: 'The client went away before the image ran.' },
  SHUTTING_DOWN: { kind: 'unavailable', message: 'The server is shutting down and takes no new work.' },
  INFERENCE_FAILED: { kind: 'unavailable', message: 'The inference worker failed while running this batch; retry.' },
  MODEL_OUTPUT_INVALID: {
    kind: 'internal',
    message: "The model's output does not hold what its configuration says (one finite row of its classes per image)."
  },
  INTERNAL: { kind: 'internal', message: 'An unexpected error happened on the server.' }
} as const satisfies Record<string, ErrorSpec>

export type ErrorCode = keyof typeof ERRORS

/** An error meant for the client: its code and message are stable, `detail` adds the specifics. */
export class ServiceError extends Error {
  readonly code: ErrorCode
  readonly kind: ErrorKind
  readonly detail: string | undefined
  /** Seconds a client should wait before retrying (QUEUE_FULL, SHUTTING_DOWN). */
  readonly retryAfterSeconds: number | undefined

  constructor(code: ErrorCode, detail?: string, options?: { retryAfterSeconds?: number; cause?: unknown }) {
    const spec = ERRORS[code]
    super(detail === undefined ? spec.message : `${spec.message} ${detail}`, { cause: options?.cause })
    this.name = 'ServiceError'
    this.code = code
    this.kind = spec.kind
    this.detail = detail
    this.retryAfterSeconds = options?.retryAfterSeconds
  }
}

/** Characters of a client's own text (a tensor name, a datatype) an error message repeats. */
const ECHO_CHARS = 64

/**
 * A client's text as an error message repeats it: at most ECHO_CHARS characters, then how long it
 * was. A refusal costs in proportion to the rule broken, not to what the client sent: a 20 MB name
 * was answered with a 20 MB message.
 */
export function echoed(text: string, chars = ECHO_CHARS): string {
  if (text.length <= chars) return text
  // A cut inside a surrogate pair would leave half a character, which strict JSON readers refuse.
  const end = /[\uD800-\uDBFF]/.test(text.charAt(chars - 1)) ? chars - 1 : chars
  return `${text.slice(0, end)}… (${text.length} characters)`
}

/**
 * Why work whose abort signal fired is refused: the door's reason when it gave a DEADLINE_EXCEEDED
 * (a gRPC call cancelled at its deadline), else CLIENT_CLOSED (the client went). Before, every
 * call that reached its deadline while queued was counted as its client hanging up.
 */
export function abortCode(signal: AbortSignal): 'CLIENT_CLOSED' | 'DEADLINE_EXCEEDED' {
  const reason: unknown = signal.reason
  return reason instanceof ServiceError && reason.code === 'DEADLINE_EXCEEDED' ? 'DEADLINE_EXCEEDED' : 'CLIENT_CLOSED'
}

export function isServiceError(err: unknown): err is ServiceError {
  return err instanceof ServiceError
}

/**
 * Any thrown value → a ServiceError with a stable code: a ServiceError as it is, anything else
 * INTERNAL (the original kept as the cause, for the log; never in the answer). Each door's adapter
 * first recognises its own library's errors (fastify's codes, a client that hung up), then calls this.
 */
export function toServiceError(err: unknown): ServiceError {
  return isServiceError(err) ? err : new ServiceError('INTERNAL', undefined, { cause: err })
}
