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
import type { ReceiveBudget, Reservation } from './receive-budget.js'
import { streamMeter, type MessageShares } from './stream-meter.js'

/**
 * Admission for every call of the gRPC door, before its message is read: the API key is checked
 * on the call's metadata, and a call without it is answered UNAUTHENTICATED while its message is
 * still unread (grpc-js reads a unary call's message only once the metadata has passed), so a
 * keyless 16 MB message costs no decode and no buffer.
 *
 * A unary call then reads its message only once the door's receive budget (receive-budget.ts) has
 * room for it, holds its share until it is answered, and must have its message in within
 * `readTimeoutMs`: messages held stay within the body budget however many calls send at once.
 * A stream's messages are held one by one from their first bytes instead (stream-meter.ts), and
 * handed to the handler with their shares, which it gives back as it answers each.
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
  readonly log: Logger
  readonly metrics: ServiceMetrics | undefined
  /**
   * The budget an RPC's calls hold their messages in, the most one may be, and how long it may take
   * to come in; a stream's messages are handed to its handler with their shares in `shares`.
   */
  readonly receive: {
    readonly budgetOf: (rpc: string) => ReceiveBudget
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
/** grpc-js no longer shows the meter a call's HTTP/2 stream: said once, loudly, as streams then go unbounded. */
function unmeteredStream(log: Logger): void {
  if (unmeteredLogged) return
  unmeteredLogged = true
  log.error('grpc-js hides the HTTP/2 stream of a call: ModelStreamInfer messages are not held within --body-budget-bytes')
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
  return (method, call) => {
    const rpc = rpcName(method)
    /** The message reached the handler, which from then on logs and counts the outcome itself (internal failures aside). */
    let delivered = false
    let answered = false
    const refuse = (refusal: ServiceError): void => {
      report(refusal)
      call.sendStatus(statusOf(refusal))
    }
    // A stream's messages are held one by one as their bytes arrive (stream-meter.ts); a unary call's below.
    const meter = method.requestStream
      ? streamMeter(call, {
          budget: policy.receive.budgetOf(rpc),
          limitBytes: policy.receive.limitBytes,
          readTimeoutMs: policy.receive.readTimeoutMs,
          refuse
        })
      : undefined
    if (method.requestStream && meter === undefined) unmeteredStream(policy.log)
    /** The call's share of the receive budget: a whole receive limit while it reads, its message's size once that is in. */
    let reservation: Reservation | undefined
    let waiting: { cancel(): void } | undefined
    let readTimer: NodeJS.Timeout | undefined
    /** The call is over: its share goes back, a wait is given up. */
    const giveBack = (): void => {
      clearTimeout(readTimer)
      readTimer = undefined
      waiting?.cancel()
      waiting = undefined
      reservation?.release()
      reservation = undefined
      meter?.close()
    }

    const report = (se: ServiceError): void => {
      if (se.kind === 'internal') policy.log.error({ rpc, code: se.code, detail: se.detail }, 'gRPC call failed')
      // A stream's own refusals come after its requests were delivered, and end all of them: logged too.
      else if (!delivered || method.requestStream) policy.log.info({ rpc, code: se.code }, 'gRPC call refused')
      if (!delivered && rpc === policy.countedRpc) policy.metrics?.recordRequest(undefined, se)
    }

    // grpc-js sends its own statuses (receive limit, deadline timer, decompression) by calling
    // sendStatus on this very object, not through the interceptor chain: wrapping the method here
    // is the one place every status of the call passes.
    const send = call.sendStatus.bind(call)
    call.sendStatus = (status) => {
      giveBack()
      if (answered) return send(status)
      answered = true
      const se = libraryStatusError(status)
      if (se === undefined) return send(status)
      report(se)
      send(statusOf(se))
    }

    /** What a unary call's read must wait for (its message only) and how long it may then take. */
    const gatedRead = (nextRead: () => void): void => {
      if (method.requestStream) return meter === undefined ? nextRead() : meter.gateRead(nextRead)
      if (answered) return
      const timedRead = (): void => {
        readTimer = setTimeout(
          () => refuse(new ServiceError('REQUEST_TIMEOUT', '(the gRPC message: the call ends)')),
          policy.receive.readTimeoutMs
        )
        nextRead()
      }
      // After the message only the half-close is left to read: it reserves nothing more.
      if (reservation !== undefined) return timedRead()
      let granted = false
      const ticket = policy.receive.budgetOf(rpc).acquire(policy.receive.limitBytes, (share) => {
        granted = true
        waiting = undefined
        if (answered) return share.release()
        reservation = share
        timedRead()
      })
      if (ticket === undefined) {
        refuse(new ServiceError('BODY_BUDGET_FULL', undefined, { retryAfterSeconds: 1 }))
      } else if (!granted) {
        waiting = ticket
      }
    }

    return new GatedReadCall(call, gatedRead, meter && ((written) => meter.sending(written)), {
      start(next) {
        next({
          onReceiveMetadata(metadata, nextMetadata) {
            if (needsKey(policy, rpc) && !isAuthorized(metadata.getMap(), policy.apiKey!))
              return refuse(new ServiceError('UNAUTHENTICATED'))
            nextMetadata(metadata)
          },
          onReceiveMessage(message, nextMessage) {
            clearTimeout(readTimer)
            // The door defers decoding: the message is still its wire bytes.
            if (Buffer.isBuffer(message)) {
              reservation?.resize(message.byteLength)
              const share = meter?.deliver(message)
              if (share !== undefined) policy.receive.shares.set(message, share)
            }
            delivered = true
            nextMessage(message)
          },
          onReceiveHalfClose(nextHalfClose) {
            clearTimeout(readTimer)
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
            giveBack()
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
