import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import type { BodyBudget, Reservation } from '../body-budget.js'
import { BODY_PACE_GRACE_MS, bodyPace, silentAtItsTurn } from '../body-pace.js'
import type { Settings } from '../config.js'
import { ServiceError } from '../errors.js'
import { invalidFieldCode } from './error-status.js'
import { contentEncodingOf } from './content-encoding.js'
import { multipartBodyLimit } from './multipart-body.js'
import { otherServersRoute } from './other-servers-routes.js'
import { routeMethods } from './route-methods.js'
import { refuseSlowBody } from './server-limits.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * The media types this route reads a body as: exact types, `image/*` for any image type, or
     * `*` for any type or none. Unset: the route takes no body.
     */
    bodyTypes?: readonly string[]
    /** What to send instead, as curl options (`-F image=@photo.jpg`): the fix in a 415 answer. */
    bodyExample?: string
    /**
     * The route inflates a compressed body (`Content-Encoding`, content-encoding.ts); every other
     * route refuses one before reading it.
     */
    inflatesBody?: boolean
  }
}

/**
 * Admission before any body byte is read. fastify parses a body after the onRequest hooks and
 * before validation, so whatever is refused here costs the headers only: the key check runs
 * first (src/http/access.ts), then this hook refuses unknown routes, bodies a route does not
 * take (by media type), multipart boundaries the parser cannot use and declared lengths over the
 * route's limit, and holds the body's share of --body-budget-bytes (waiting in line for it). A
 * refused body is never parsed or held: after the answer its bytes are dropped as they come, up to
 * a bound, then the connection is closed (refused-body.ts).
 */

export const MULTIPART_TYPE = 'multipart/form-data'

/**
 * RFC 2046 §5.1.1: a boundary is 1 to 70 characters. Longer ones are refused before the multipart
 * parser sees them (it throws on boundaries over 252 characters).
 */
const MAX_BOUNDARY_LENGTH = 70

/** The most one read of a connection brings (libuv's buffer): what of a body may arrive with its head. */
const HEAD_READ_BYTES = 64 * 1024

/** Methods fastify never reads a body for; Node discards one if it is sent. */
const BODYLESS_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'TRACE'])

/** The media type of a Content-Type header, lower-cased, without parameters; undefined when absent. */
export function mediaTypeOf(headers: IncomingHttpHeaders): string | undefined {
  const header = headers['content-type']
  if (header === undefined) return undefined
  const semicolon = header.indexOf(';')
  return (semicolon === -1 ? header : header.slice(0, semicolon)).trim().toLowerCase()
}

function hasBody(headers: IncomingHttpHeaders): boolean {
  const length = headers['content-length']
  return headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}

/** What `curl -d` / `--data` sends: a file posted that way is refused, so the answer says so. */
const FORM_TYPE = 'application/x-www-form-urlencoded'

/** The detail of a 415: the type that came, the types the route reads, and what to send. */
function unsupportedType(request: FastifyRequest, bodyTypes: readonly string[], type: string | undefined): string {
  const got = type === undefined ? 'no Content-Type' : `"${type.slice(0, 100)}"${type === FORM_TYPE ? ", what curl's -d/--data sends" : ''}`
  const example = request.routeOptions.config.bodyExample
  return `It reads ${bodyTypes.join(', ')}; got ${got}.${example === undefined ? '' : ` Send, for example: curl ${example}`}`
}

function takes(bodyTypes: readonly string[], type: string | undefined): boolean {
  for (const accepted of bodyTypes) {
    if (accepted === '*') return true
    if (type === undefined) continue
    if (accepted === type || (accepted.endsWith('/*') && type.startsWith(accepted.slice(0, -1)))) return true
  }
  return false
}

/** The boundary parameter of a multipart Content-Type, unquoted; undefined when there is none. */
function boundaryOf(contentType: string): string | undefined {
  const match = /;\s*boundary=(?:"([^"]*)"|([^;\s]*))/i.exec(contentType)
  return match === null ? undefined : (match[1] ?? match[2])
}

/**
 * Refuses a body the route does not take, before it is read; otherwise returns the bytes it may
 * hold: its declared length, or the route's limit for a chunked body.
 */
function admitBody(request: FastifyRequest): number {
  const { headers } = request
  const bodyTypes = request.routeOptions.config.bodyTypes
  const type = mediaTypeOf(headers)
  if (bodyTypes === undefined) throw new ServiceError('UNSUPPORTED_MEDIA_TYPE', 'This route takes no body.')
  if (!takes(bodyTypes, type)) throw new ServiceError('UNSUPPORTED_MEDIA_TYPE', unsupportedType(request, bodyTypes, type))
  const coding = contentEncodingOf(headers)
  // Read whole, it was refused for what it is not (/classify: 415 "gzip (SVGZ?)"; the batch
  // endpoint: 400 "not valid JSON"), after holding the route's limit of the body budget for it.
  if (coding !== undefined && request.routeOptions.config.inflatesBody !== true) {
    throw new ServiceError(
      'UNSUPPORTED_MEDIA_TYPE',
      `This route reads its body uncompressed; got Content-Encoding "${coding.slice(0, 40)}". Send it without Content-Encoding (POST /v2/models/{model}/infer is the route that takes gzip or deflate).`
    )
  }
  let limit = request.routeOptions.bodyLimit
  if (type === MULTIPART_TYPE) {
    const boundary = boundaryOf(headers['content-type'] ?? '')
    if (boundary === undefined || boundary.length === 0 || boundary.length > MAX_BOUNDARY_LENGTH) {
      throw new ServiceError('BAD_MULTIPART', `The Content-Type needs a boundary of 1 to ${MAX_BOUNDARY_LENGTH} characters.`)
    }
    const multipart = request.routeOptions.config.multipart
    if (multipart !== undefined) limit = multipartBodyLimit(multipart)
  }
  const declared = headers['content-length']
  if (declared === undefined) return limit
  const length = Number(declared)
  if (length > limit) throw new ServiceError('BODY_TOO_LARGE', `This route takes at most ${limit} bytes; the Content-Length is ${length}.`)
  // A compressed body may decode to the route's whole limit, whatever its declared length.
  if (coding !== undefined) return limit
  // A malformed length is fastify's to refuse (FST_ERR_CTP_INVALID_CONTENT_LENGTH); it holds nothing meanwhile.
  return Number.isSafeInteger(length) && length > 0 ? length : 0
}

/**
 * How long an upload that finds no room in the body budget waits in its line (its body unread,
 * behind the gRPC messages and uploads that came first) before it is refused 429
 * `BODY_BUDGET_FULL`: long enough for the shares held then to pass their grace and the budget to
 * take back those behind their pace (body-pace.ts), twice over (uploads ahead in line may be
 * granted first and hold their shares for a grace of their own). Refused at once, uploads lost
 * every race to shares announced anew each grace: six gRPC prefixes a second (about 200 bytes a
 * second) kept every /classify at 429 for as long as they were sent, because a newcomer found the
 * shares it could take back already taken by the next announcements, each with a grace of its
 * own. Waiting in line, the upload is ahead of announcements made after it.
 */
export const BUDGET_WAIT_MS = 3 * BODY_PACE_GRACE_MS

/**
 * The upload's share of the budget: at once when it fits and nothing it may not pass waits, else
 * once its turn in the line comes within `waitMs`; refused BODY_BUDGET_FULL when the line is full
 * or the wait ends, CLIENT_CLOSED when the client goes meanwhile, and REQUEST_TIMEOUT when its turn
 * comes after a wait with too little of its body sent (body-pace.ts's silentAtItsTurn).
 */
async function shareOfBudget(
  budget: BodyBudget,
  bytes: number,
  waitMs: number,
  request: IncomingMessage,
  response: ServerResponse
): Promise<Reservation> {
  if (budget.fitsNow(bytes)) return budget.take(bytes)!
  const full = (): ServiceError => new ServiceError('BODY_BUDGET_FULL', undefined, { retryAfterSeconds: 1 })
  const since = performance.now()
  return new Promise((resolve, reject) => {
    const giveUp = (refusal: ServiceError): void => {
      clearTimeout(timer)
      response.off('close', gone)
      wait?.cancel()
      reject(refusal)
    }
    // Gone while waiting: a share taken later would never go back.
    const gone = (): void => giveUp(new ServiceError('CLIENT_CLOSED'))
    const timer = setTimeout(() => giveUp(full()), waitMs)
    response.once('close', gone)
    const granted = (reservation: Reservation): void => {
      clearTimeout(timer)
      response.off('close', gone)
      // Node reads what the client sends into the request's buffer while nothing consumes it, up
      // to its high-water mark: a client sending its body has filled it within a second.
      const waitedMs = performance.now() - since
      const sendable = Math.min(bytes, request.readableHighWaterMark)
      if (!request.complete && silentAtItsTurn(sendable, request.readableLength, waitedMs)) {
        // Given back at once, so the line goes on to the next.
        reservation.release()
        reject(
          new ServiceError(
            'REQUEST_TIMEOUT',
            `(the body announced ${bytes} bytes and sent ${request.readableLength} of them in ${Math.round(waitedMs)} ms waiting for room in --body-budget-bytes)`
          )
        )
        return
      }
      resolve(reservation)
    }
    const wait = budget.acquire(bytes, granted, true)
    if (wait === undefined) giveUp(full())
  })
}

const hintFor = (url: string): string => {
  const here = otherServersRoute(url)
  return here === undefined ? '' : ` ${here}`
}

/**
 * Adds the admission hooks. Register after the API-key hook, so an unauthenticated client learns
 * nothing about routes or bodies, and before the routes, so every route inherits them.
 */
export function admitRequests(app: FastifyInstance, settings: Settings, bodyBudget: BodyBudget): void {
  let closing = false
  const budgetWaitMs = Math.min(BUDGET_WAIT_MS, settings.requestTimeoutMs / 2)
  // A path asked with a method it does not take is 405 with an Allow header (GET /classify), as
  // Triton answers; a path no route takes is 404.
  const methodsOf = routeMethods(app)
  const notFound = (request: FastifyRequest, reply: FastifyReply): ServiceError => {
    const methods = methodsOf(request.url)
    if (methods.length === 0) {
      return new ServiceError('ROUTE_NOT_FOUND', `No route ${request.method} for this path.${hintFor(request.url)}`)
    }
    void reply.header('allow', methods.join(', '))
    const takes = methods.filter((method) => method !== 'HEAD').join(', ')
    return new ServiceError('METHOD_NOT_ALLOWED', `This path takes ${takes}, not ${request.method}.`)
  }
  app.addHook('preClose', async () => {
    closing = true
  })
  app.addHook('onRequest', async (request, reply) => {
    // fastify's own 503 on closing has its own body shape; this one is the registry's, with the
    // Retry-After the service's own SHUTTING_DOWN refusals carry (another replica can take it now).
    if (closing) throw new ServiceError('SHUTTING_DOWN', undefined, { retryAfterSeconds: 1 })
    if (request.is404) throw notFound(request, reply)
    if (!hasBody(request.headers) || BODYLESS_METHODS.has(request.method)) return
    const bytes = admitBody(request)
    const held = await shareOfBudget(bodyBudget, bytes, budgetWaitMs, request.raw, reply.raw)
    // The share is held for bytes still to come: behind their pace (src/body-pace.ts), a request
    // that finds no room takes it. Counted on the connection, where reading them changes nothing
    // (the read that brought the head may have brought up to 64 KiB of the body too), at the pace
    // of the share (a chunked or compressed body holds the route's limit).
    const { raw } = request
    const socket = raw.socket
    const readBefore = socket.bytesRead
    const pace = bodyPace({
      lengthBytes: bytes,
      windowMs: settings.requestTimeoutMs,
      received: () => (raw.complete ? Infinity : socket.bytesRead - readBefore),
      slackBytes: HEAD_READ_BYTES
    })
    held.arriving({ behind: pace.behind, preempt: () => refuseSlowBody(app.server, socket) })
    raw.once('end', held.arrived)
    // 'close' comes once per response, answered or cut off; the body is garbage by then.
    reply.raw.once('close', held.release)
  })
  // ajv's integer check lets a coerced Infinity through (and then skips minimum/maximum), so the
  // coerced query is checked once more, for every route: `1e309` and `Infinity` are refused with
  // the field's own code.
  app.addHook('preHandler', async (request) => {
    const query = request.query as Record<string, unknown> | null
    if (query === null || typeof query !== 'object') return
    for (const name in query) {
      const value = query[name]
      if (typeof value === 'number' && !Number.isFinite(value))
        throw new ServiceError(invalidFieldCode(name), `Query parameter ${name} must be a finite number.`)
    }
  })
}
