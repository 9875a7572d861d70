import {
  ServerInterceptingCall,
  type Responder,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type ServerMethodDefinition
} from '@grpc/grpc-js'
import type { Logger } from 'pino'
import { isAuthorized } from '../api-key.js'
import { ServiceError } from '../errors.js'
import type { ServiceMetrics } from '../metrics.js'
import { cancellationOf, libraryStatusError, statusOf } from './error-status.js'
import { http2StreamOf, MessageMeter, type MessageShares } from './message-meter.js'
import type { BodyBudget } from '../body-budget.js'
import { CallBursts } from './call-bursts.js'
import type { ConnectionCalls } from './connection-calls.js'
import type { IdleStreams, StreamActivity } from './idle-streams.js'
import { floodWarning } from '../flood-warning.js'

/**
 * Admission for every call of the gRPC door, before its message is read: the API key is checked
 * on the call's metadata, and a call without it is answered UNAUTHENTICATED while its message is
 * still unread (grpc-js reads a unary call's message only once the metadata has passed), so a
 * keyless 16 MB message costs no decode and no buffer.
 *
 * A call's messages are then held in the door's receive budget (receive-budget.ts) from the moment
 * each one's length arrives until it is answered, and timed (message-meter.ts): messages held stay
 * within the body budget however many calls send at once. A streamed request goes to the handler
 * with its share, which the handler gives back once it has answered it.
 *
 * Calls are counted twice: open at once (`--max-grpc-calls`), and begun in one turn of the event
 * loop (the same number, one more and its connection is told to go away: call-bursts.ts). A call
 * over the first, once its key has passed, takes the place of the ModelStreamInfer stream idle
 * longest (idle-streams.ts), else is refused TOO_MANY_CALLS; a health or metadata call first takes
 * one of RESERVED_CALLS places of its own, so probes are answered whatever streams hold the rest.
 *
 * It also makes every status the call ends with carry a registry code, grpc-js's own included,
 * and accounts for calls that end before their message reaches the handler (refused here, over the
 * receive limit, past their deadline, or hung up by the client): the handler cannot see those.
 */

/**
 * Places for unary health and metadata calls (ServerLive, ServerReady, ModelReady, Check, the
 * metadata RPCs) once --max-grpc-calls are open: each is answered at once, or ends within
 * --request-timeout-ms when its message does not come (message-meter.ts).
 */
export const RESERVED_CALLS = 64

/** Who may call an RPC: `inference` needs the key; `health` with --auth-health; `metrics` with --auth-metrics; `open` never. */
export type RpcAccess = 'inference' | 'health' | 'metrics' | 'open'

export interface AdmissionPolicy {
  readonly apiKey: string | undefined
  readonly authHealth: boolean
  readonly authMetrics: boolean
  /** By RPC name; an RPC not listed needs the key. */
  readonly access: Readonly<Record<string, RpcAccess>>
  /** The RPC whose outcomes are counted in request_success/failure_total. */
  readonly countedRpc: string
  /** Calls open at once, over every connection; one more is refused TOO_MANY_CALLS. */
  readonly maxCalls: number
  /** Told of each call's beginning and end, to know the connections that hold none. */
  readonly connections?: ConnectionCalls
  /** Told of each ModelStreamInfer stream's requests and answers, to end those idle. */
  readonly idleStreams?: IdleStreams
  readonly log: Logger
  readonly metrics: ServiceMetrics | undefined
  /**
   * The budget an RPC's calls hold their messages in, the most one may be, and how long it may take
   * to come in; a stream's messages are handed to its handler with their shares in `shares`.
   */
  readonly receive: {
    readonly budgetOf: (rpc: string) => BodyBudget
    readonly limitBytes: number
    readonly readTimeoutMs: number
    readonly shares: MessageShares
  }
}

/**
 * grpc-js's intercepting call, whose startRead and message writes' completions (not part of its
 * Responder) go through `read` and `sending` first.
 */
class GatedReadCall extends ServerInterceptingCall {
  constructor(
    next: ServerInterceptingCallInterface,
    private readonly read: (next: () => void) => void,
    private readonly sending: (written: () => void) => () => void,
    responder: Responder
  ) {
    super(next, responder)
  }

  override startRead(): void {
    this.read(() => super.startRead())
  }

  override sendMessage(message: unknown, written: () => void): void {
    super.sendMessage(message, this.sending(written))
  }
}

let unmeteredLogged = false
/** grpc-js no longer shows the meter a call's HTTP/2 stream: said once, loudly, as messages then go unbounded. */
function unmetered(log: Logger): void {
  if (unmeteredLogged) return
  unmeteredLogged = true
  log.error('grpc-js hides the HTTP/2 stream of a call: gRPC messages are not held within --body-budget-bytes, nor timed')
}

function rpcName(method: ServerMethodDefinition<unknown, unknown>): string {
  return method.path.slice(method.path.lastIndexOf('/') + 1)
}

/** Unary health and metadata RPCs, which may take a reserved place. */
function takesReservedPlace(policy: AdmissionPolicy, method: ServerMethodDefinition<unknown, unknown>, rpc: string): boolean {
  const access = policy.access[rpc]
  return !method.requestStream && !method.responseStream && (access === 'health' || access === 'open')
}

function needsKey(policy: AdmissionPolicy, rpc: string): boolean {
  if (policy.apiKey === undefined) return false
  const access = policy.access[rpc] ?? 'inference'
  return access === 'inference' || (access === 'health' && policy.authHealth) || (access === 'metrics' && policy.authMetrics)
}

/**
 * The door's one interceptor; it must be the first (innermost) of the server's interceptors, as it
 * answers on the call grpc-js itself writes to.
 */
export function admissionInterceptor(policy: AdmissionPolicy): ServerInterceptor {
  /** Calls begun and not yet over (answered or cancelled): each costs some 14 KB of grpc-js and HTTP/2 state, even idle. */
  let openCalls = 0
  /** Calls in the reserved places (RESERVED_CALLS), over those. */
  let reservedCalls = 0
  const refusedOverTheCap = floodWarning(
    policy.log,
    { code: 'TOO_MANY_CALLS', maxCalls: policy.maxCalls },
    'gRPC calls refused: --max-grpc-calls are open'
  )
  const bursts = new CallBursts(
    policy.maxCalls,
    floodWarning(
      policy.log,
      { code: 'CALL_BURST', maxCalls: policy.maxCalls },
      'gRPC connections told to go away (GOAWAY ENHANCE_YOUR_CALM): --max-grpc-calls calls began in one turn of the event loop'
    )
  )
  return (method, call) => {
    const rpc = rpcName(method)
    let open = openCalls < policy.maxCalls
    let inReserve = false
    if (open) openCalls++
    const over = (): void => {
      if (!open) return
      open = false
      if (inReserve) reservedCalls--
      else openCalls--
    }
    /** A call over the cap whose key has passed: a reserved place, or the place of the stream idle longest. */
    const admitOverCap = (): boolean => {
      if (reservedCalls < RESERVED_CALLS && takesReservedPlace(policy, method, rpc)) {
        reservedCalls++
        inReserve = true
      } else if (openCalls < policy.maxCalls || policy.idleStreams?.reclaimOldest() === true) {
        // The stream's end gave its place back at once.
        openCalls++
      } else {
        return false
      }
      open = true
      return true
    }
    /** A ModelStreamInfer stream's requests and answers, once it is admitted. */
    let activity: StreamActivity | undefined
    /** The message reached the handler, which from then on logs and counts the outcome itself (internal failures aside). */
    let delivered = false
    let answered = false
    const refuse = (refusal: ServiceError): void => {
      report(refusal, true)
      call.sendStatus(statusOf(refusal))
    }
    // Every message is held in the call's budget from the moment its length arrives (message-meter.ts).
    const http2Stream = http2StreamOf(call)
    if (http2Stream !== undefined) bursts.begin(http2Stream)
    const callEnded = policy.connections?.callBegan(http2Stream?.session)
    const meter =
      http2Stream &&
      new MessageMeter(http2Stream, {
        budget: policy.receive.budgetOf(rpc),
        limitBytes: policy.receive.limitBytes,
        readTimeoutMs: policy.receive.readTimeoutMs,
        stream: method.requestStream,
        refuse
      })
    if (meter === undefined) unmetered(policy.log)

    /** `ours`: refused here (the key, the budget, a timer), logged whenever it comes; grpc-js's statuses once the handler has the message are the handler's to log, a stream's aside (they end all its requests). */
    const report = (se: ServiceError, ours = false): void => {
      if (se.kind === 'internal') policy.log.error({ rpc, code: se.code, detail: se.detail }, 'gRPC call failed')
      else if (se.code === 'TOO_MANY_CALLS') refusedOverTheCap()
      // The door logs these as idle-streams.ts ends them, at most once per 10 s: a flood of newcomers ends as many.
      else if (se.code === 'STREAM_IDLE') return
      else if (ours || !delivered || method.requestStream) policy.log.info({ rpc, code: se.code }, 'gRPC call refused')
      if (!delivered && rpc === policy.countedRpc) policy.metrics?.recordRequest(undefined, se)
    }

    // grpc-js sends its own statuses (receive limit, deadline timer, decompression) by calling
    // sendStatus on this very object, not through the interceptor chain: wrapping the method here
    // is the one place every status of the call passes.
    const send = call.sendStatus.bind(call)
    call.sendStatus = (status) => {
      // The call is over: its shares go back, a wait is given up.
      meter?.close()
      over()
      callEnded?.()
      activity?.closed()
      if (answered) return send(status)
      answered = true
      const se = libraryStatusError(status)
      if (se === undefined) return send(status)
      report(se)
      send(statusOf(se))
    }

    const gatedRead = (nextRead: () => void): void => {
      if (answered) return
      if (meter === undefined) nextRead()
      else meter.gateRead(nextRead)
    }

    const sending = (written: () => void): (() => void) => {
      activity?.answered()
      return meter === undefined ? written : meter.sending(written)
    }

    return new GatedReadCall(call, gatedRead, sending, {
      start(next) {
        next({
          onReceiveMetadata(metadata, nextMetadata) {
            if (needsKey(policy, rpc) && !isAuthorized(metadata.getMap(), policy.apiKey!))
              return refuse(new ServiceError('UNAUTHENTICATED'))
            if (!open && !admitOverCap()) return refuse(new ServiceError('TOO_MANY_CALLS', undefined, { retryAfterSeconds: 1 }))
            // Every request of a stream of requests has one answer (ModelStreamInfer): one read and
            // not yet answered is in flight. A unary call is idle the same way until its message is
            // read: one that sends nothing held its place until --request-timeout-ms, renewed at will
            // (attacker, round 7). Health's Watch streams answers to one request and has its own cap.
            if (method.requestStream === method.responseStream)
              activity = policy.idleStreams?.track(http2Stream, refuse, !method.requestStream)
            nextMetadata(metadata)
          },
          onReceiveMessage(message, nextMessage) {
            // The door defers decoding: the message is still its wire bytes. A unary call's share is
            // held until the call ends; a streamed request's goes to the handler, to give back once answered.
            if (Buffer.isBuffer(message)) {
              const share = meter?.deliver(message)
              if (share !== undefined && method.requestStream) policy.receive.shares.set(message, share)
            }
            delivered = true
            activity?.requestRead()
            nextMessage(message)
          },
          onReceiveHalfClose(nextHalfClose) {
            meter?.halfClosed()
            // A stream of requests may hold none: closing it at once is the client's to do.
            if (delivered || method.requestStream) {
              nextHalfClose()
              return
            }
            // The call ended without its message. A client that hangs up (RST_STREAM) ends the
            // stream's readable side too, and grpc-js hears of the cancellation a few ticks later,
            // always before the next setImmediate: only a call still unanswered then is the
            // client's malformed call rather than its hang-up.
            setImmediate(() => {
              if (!answered) refuse(new ServiceError('BAD_REQUEST', 'The call ended without its request message.'))
            })
          },
          onCancel() {
            meter?.close()
            over()
            callEnded?.()
            activity?.closed()
            // grpc-js signals cancel after every call; only a call nobody answered was the client's hang-up.
            if (!answered) {
              answered = true
              report(cancellationOf(call))
            }
          }
        })
      }
    })
  }
}
