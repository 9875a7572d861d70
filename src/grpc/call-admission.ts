import { ServerInterceptingCall, type ServerInterceptor, type ServerMethodDefinition } from '@grpc/grpc-js'
import type { Logger } from 'pino'
import { isAuthorized } from '../api-key.js'
import { ServiceError } from '../errors.js'
import type { ServiceMetrics } from '../metrics.js'
import { libraryStatusError, statusOf } from './error-status.js'

/**
 * Admission for every call of the gRPC door, before its message is read: the API key is checked
 * on the call's metadata, and a call without it is answered UNAUTHENTICATED while its message is
 * still unread (grpc-js reads a unary call's message only once the metadata has passed), so a
 * keyless 16 MB message costs no decode and no buffer.
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

    const report = (se: ServiceError): void => {
      if (se.kind === 'internal') policy.log.error({ rpc, code: se.code, detail: se.detail }, 'gRPC call failed')
      else if (!delivered) policy.log.info({ rpc, code: se.code }, 'gRPC call refused')
      if (!delivered && rpc === policy.countedRpc) policy.metrics?.recordRequest(undefined, se)
    }

    // grpc-js sends its own statuses (receive limit, deadline timer, decompression) by calling
    // sendStatus on this very object, not through the interceptor chain: wrapping the method here
    // is the one place every status of the call passes.
    const send = call.sendStatus.bind(call)
    call.sendStatus = (status) => {
      if (answered) return send(status)
      answered = true
      const se = libraryStatusError(status)
      if (se === undefined) return send(status)
      report(se)
      send(statusOf(se))
    }

    return new ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, nextMetadata) {
            if (needsKey(policy, rpc) && !isAuthorized(metadata.getMap(), policy.apiKey!)) {
              const refusal = new ServiceError('UNAUTHENTICATED')
              report(refusal)
              call.sendStatus(statusOf(refusal))
              return
            }
            nextMetadata(metadata)
          },
          onReceiveMessage(message, nextMessage) {
            delivered = true
            nextMessage(message)
          },
          onReceiveHalfClose(nextHalfClose) {
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
              if (answered) return
              const refusal = new ServiceError('BAD_REQUEST', 'The call ended without its request message.')
              report(refusal)
              call.sendStatus(statusOf(refusal))
            })
          },
          onCancel() {
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
