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
import { libraryStatusError, statusOf } from './error-status.js'
import { http2StreamOf, MessageMeter, type MessageShares } from './message-meter.js'
import type { BodyBudget } from '../body-budget.js'
import { CallBursts } from './call-bursts.js'
import type { ConnectionCalls } from './connection-calls.js'
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
 * Calls are counted twice: open at once (`--max-grpc-calls`, one more refused TOO_MANY_CALLS), and
 * begun in one turn of the event loop (the same number, one more and its connection is told to go
 * away: call-bursts.ts).
 *
 * It also makes every status the call ends with carry a registry code, grpc-js's own included,
 * and accounts for calls that end before their message reaches the handler (refused here, over the
 * receive limit, past their deadline, or hung up by the client): the handler cannot see those.
 */

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
    private readonly sending: ((written: () => void) => () => void) | undefined,
    responder: Responder
  ) {
    super(next, responder)
  }

  override startRead(): void {
    this.read(() => super.startRead())
  }

  override sendMessage(message: unknown, written: () => void): void {
    super.sendMessage(message, this.sending === undefined ? written : this.sending(written))
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
    const overCap = openCalls >= policy.maxCalls
    let open = !overCap
    if (open) openCalls++
    const over = (): void => {
      if (!open) return
      open = false
      openCalls--
    }
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

    return new GatedReadCall(call, gatedRead, meter && ((written) => meter.sending(written)), {
      start(next) {
        next({
          onReceiveMetadata(metadata, nextMetadata) {
            if (needsKey(policy, rpc) && !isAuthorized(metadata.getMap(), policy.apiKey!))
              return refuse(new ServiceError('UNAUTHENTICATED'))
            if (overCap) return refuse(new ServiceError('TOO_MANY_CALLS', undefined, { retryAfterSeconds: 1 }))
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
            // grpc-js signals cancel after every call; only a call nobody answered was the client's hang-up.
            if (!answered) {
              answered = true
              report(new ServiceError('CLIENT_CLOSED'))
            }
          }
        })
      }
    })
  }
}
