import type { FastifyHttpOptions } from 'fastify'
import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import type { Settings } from '../config.js'
import { ServiceError } from '../errors.js'
import { errorBodyFor, httpStatusOf, noteRequestTimeout, v2ErrorBody } from './error-status.js'
import { isDiscardingRefusedBody } from './refused-body.js'
import { V2_JSON_CONTENT_TYPE } from './v2-content-type.js'

/**
 * What one connection may cost before any route runs: how long its headers and its whole request
 * may take, how long it may idle between requests, how many there may be, and how long a path
 * parameter may be. Connection-level refusals (timeouts, malformed HTTP) are written on the socket
 * in the door's error shape, since no request object exists or the one in flight cannot answer.
 */

/** Longest path parameter the router matches: a model name (128 characters) even partly percent-encoded. */
export const MAX_PARAM_LENGTH = 256

/** How often Node looks for expired requests: a tenth of the shorter timeout, from 100 ms to 1 s. */
function timeoutCheckIntervalMs(settings: Settings): number {
  return Math.min(1000, Math.max(100, Math.floor(settings.headersTimeoutMs / 10)))
}

/** Node's default maxHeaderSize: a request whose headers are larger fails with HPE_HEADER_OVERFLOW. */
const MAX_HEADER_BYTES = 16 * 1024

/** The fastify options that bound a connection; the router's own errors go through `frameworkErrors`. */
export function connectionOptions(settings: Settings, log: Logger): FastifyHttpOptions<Server> {
  return {
    requestTimeout: settings.requestTimeoutMs,
    keepAliveTimeout: settings.keepAliveTimeoutMs,
    http: {
      headersTimeout: settings.headersTimeoutMs,
      connectionsCheckingInterval: timeoutCheckIntervalMs(settings),
      maxHeaderSize: MAX_HEADER_BYTES
    },
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    clientErrorHandler: (err, socket) => answerConnectionError(err, socket, log)
  }
}

/** Connections whose body fell behind the pace (src/body-pace.ts) and lost its share: refused as Node refuses a request over --request-timeout-ms. */
const slowBodies = new WeakSet<object>()

/**
 * Refuses the request on `socket` whose body fell behind the pace and whose share of the body
 * budget another request took: 408 REQUEST_TIMEOUT written on the socket and the connection
 * closed, the path and counting of Node's own request timeout.
 */
export function refuseSlowBody(server: Server, socket: Socket): void {
  slowBodies.add(socket)
  server.emit('clientError', Object.assign(new Error('The body arrived too slowly.'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' }), socket)
}

/**
 * Node's clientError: a request that took longer than --headers-timeout-ms / --request-timeout-ms
 * or whose body fell behind the pace that finishes it in time and lost its share of the body budget
 * (408 REQUEST_TIMEOUT), or that is not valid HTTP (400 BAD_REQUEST). The answer is written on the socket only where nothing of
 * another answer has been, and the connection is then closed.
 */
function answerConnectionError(err: NodeJS.ErrnoException, socket: Socket, log: Logger): void {
  // A client gone: nothing to answer, and a request it left unfinished is counted and logged as
  // CLIENT_CLOSED by the route (HPE_INVALID_EOF_STATE: the connection ended mid-request).
  if (err.code === 'ECONNRESET' || err.code === 'HPE_INVALID_EOF_STATE' || socket.destroyed) {
    if (!socket.destroyed) socket.destroy()
    return
  }
  // Its request was answered already; what timed out is the refused body being dropped.
  if (isDiscardingRefusedBody(socket)) {
    socket.destroy()
    return
  }
  const timedOut = err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
  if (timedOut) noteRequestTimeout(socket)
  const se = timedOut
    ? new ServiceError(
        'REQUEST_TIMEOUT',
        slowBodies.has(socket)
          ? '(its body arrived more slowly than --request-timeout-ms allows while holding its share of --body-budget-bytes)'
          : undefined
      )
    : new ServiceError(
        'BAD_REQUEST',
        err.code === 'HPE_HEADER_OVERFLOW'
          ? `The request headers are over ${MAX_HEADER_BYTES} bytes.`
          : 'The request is not valid HTTP/1.1.'
      )
  // Node's own handler looks at the response in flight the same way: a request whose body timed
  // out has one, and it tells the path (for the /v2 shape) and whether bytes of it were written.
  const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage ?? undefined
  log.info({ code: se.code, cause: err.code, url: inFlight?.req?.url }, 'connection refused')
  if (socket.writable && inFlight?.headersSent !== true) {
    const { status, type, body } = answerOutsideRoutes(se, inFlight?.req?.url)
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: ${type}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
    )
  }
  socket.destroy()
}

/**
 * Requests one connection may have unanswered at once. Node's HTTP server hands every pipelined
 * request to the routes as soon as it is parsed, answering them in order: 100,000 pipelined GETs
 * (4.3 MB) on one connection held the event loop 5–7 s, and 200 pipelined photo POSTs ran at once,
 * past --max-connections' share. Clients that pipeline at all keep a few in flight.
 */
export const MAX_PIPELINED_REQUESTS = 32

const pendingOnSocket = Symbol('pendingOnSocket')
type CountedSocket = Socket & { [pendingOnSocket]?: number }
const socketOfResponse = Symbol('socketOfResponse')
type CountedResponse = ServerResponse & { [socketOfResponse]?: CountedSocket }

function responseClosed(this: CountedResponse): void {
  const socket = this[socketOfResponse]
  if (socket !== undefined) socket[pendingOnSocket] = (socket[pendingOnSocket] ?? 1) - 1
}

/** Closes a connection with more than MAX_PIPELINED_REQUESTS unanswered requests, logged at warn (at most once per 10 s). */
export function capPipelining(server: Server, warn: () => void): void {
  server.on('request', (request: IncomingMessage, response: CountedResponse) => {
    const socket = request.socket as CountedSocket
    const pending = (socket[pendingOnSocket] ?? 0) + 1
    socket[pendingOnSocket] = pending
    response[socketOfResponse] = socket
    response.once('close', responseClosed)
    if (pending > MAX_PIPELINED_REQUESTS) {
      warn()
      socket.destroy()
    }
  })
}

/** A refusal answered outside any route: its status, and its body in the shape and type of the path (/v2 or not). */
function answerOutsideRoutes(se: ServiceError, url: string | undefined): { status: number; type: string; body: string } {
  const status = httpStatusOf(se.kind)
  const shape = errorBodyFor(url)
  return {
    status,
    type: shape === v2ErrorBody ? V2_JSON_CONTENT_TYPE : 'application/json; charset=utf-8',
    body: JSON.stringify(shape(se, status))
  }
}

/**
 * An `Expect` header other than `100-continue` (which Node meets itself): 417 `EXPECTATION_FAILED`
 * in the door's error shape, the connection then closed, its body never read. Without a listener
 * Node answered a bare 417 with no body and no registry code (attacker, round 6).
 */
export function refuseExpectations(server: Server, log: Logger): void {
  server.on('checkExpectation', (request: IncomingMessage, response: ServerResponse) => {
    const se = new ServiceError('EXPECTATION_FAILED')
    log.info({ code: se.code, method: request.method, url: request.url }, 'request refused')
    const { status, type, body } = answerOutsideRoutes(se, request.url)
    response.shouldKeepAlive = false
    response.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) })
    response.end(body)
  })
}
