import type { ServerUnaryCall, ServerWritableStream, UntypedServiceImplementation, sendUnaryData } from '@grpc/grpc-js'
import { ServiceError, echoed, toServiceError } from '../errors.js'
import { statusOf } from './error-status.js'

/**
 * grpc.health.v1.Health (health.proto) on the gRPC door, as Triton serves it: what Kubernetes'
 * `grpc:` probes, grpc_health_probe and client-side health checking call. The server as a whole
 * (service "") and the inference service by name are SERVING while the server is ready, the same
 * readiness as ServerReady and /health/ready (models loaded and warmed up, no drain begun);
 * NOT_SERVING otherwise. Check answers once; Watch answers at once and again on every change, until
 * the client leaves or the door closes.
 */

export const HEALTH_SERVICE_NAME = 'grpc.health.v1.Health'

type ServingStatus = 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN'

interface HealthCheckRequest {
  service: string
}

interface HealthCheckResponse {
  status: ServingStatus
}

/** How often open Watch calls look at readiness again: one timer for all of them, only while there are any. */
export const WATCH_POLL_MS = 1000

/**
 * Watch calls open at once. A Watch lasts as long as its client wants and needs no key (as
 * ServerReady), so without a bound of its own a client could hold every call --max-grpc-calls
 * allows and shut keyed clients out; probes call Check, and a channel's health checking holds one.
 */
export const MAX_WATCHES = 128

export interface HealthOptions {
  /** Service names answered besides "" (the server). */
  readonly services: readonly string[]
  readonly ready: () => boolean
  /** The request's bytes decoded, or a ServiceError (too large, not a HealthCheckRequest). */
  readonly decode: (rpc: 'Check' | 'Watch', bytes: Buffer) => HealthCheckRequest
}

export interface HealthService {
  readonly handlers: UntypedServiceImplementation
  /** The door is closing: every Watch call ends (OK), so none holds the drain. */
  close(): void
}

interface Watcher {
  readonly call: ServerWritableStream<Buffer, HealthCheckResponse>
  readonly service: string
  last: ServingStatus | undefined
}

export function healthService(options: HealthOptions): HealthService {
  const known = new Set(['', ...options.services])
  const servingStatus = (service: string): ServingStatus => {
    if (!known.has(service)) return 'SERVICE_UNKNOWN'
    return options.ready() ? 'SERVING' : 'NOT_SERVING'
  }
  const watchers = new Set<Watcher>()
  let timer: NodeJS.Timeout | undefined

  const send = (watcher: Watcher): void => {
    const status = servingStatus(watcher.service)
    if (status === watcher.last) return
    watcher.last = status
    watcher.call.write({ status })
  }
  const forget = (watcher: Watcher): void => {
    watchers.delete(watcher)
    if (watchers.size === 0 && timer !== undefined) {
      clearInterval(timer)
      timer = undefined
    }
  }

  const handlers: UntypedServiceImplementation = {
    Check: (call: ServerUnaryCall<Buffer, HealthCheckResponse>, callback: sendUnaryData<HealthCheckResponse>): void => {
      let service: string
      try {
        service = options.decode('Check', call.request).service
      } catch (err) {
        callback(statusOf(toServiceError(err)))
        return
      }
      const status = servingStatus(service)
      if (status === 'SERVICE_UNKNOWN') {
        const names = ['""', ...options.services].join(', ')
        callback(statusOf(new ServiceError('ROUTE_NOT_FOUND', `(health: no service "${echoed(service)}"; the services are ${names}).`)))
        return
      }
      callback(null, { status })
    },
    Watch: (call: ServerWritableStream<Buffer, HealthCheckResponse>): void => {
      let service: string
      try {
        service = options.decode('Watch', call.request).service
      } catch (err) {
        call.emit('error', statusOf(toServiceError(err)))
        return
      }
      if (watchers.size >= MAX_WATCHES) {
        call.emit(
          'error',
          statusOf(new ServiceError('TOO_MANY_CALLS', `(health Watch: at most ${MAX_WATCHES} open at once; probes call Check).`))
        )
        return
      }
      const watcher: Watcher = { call, service, last: undefined }
      watchers.add(watcher)
      call.once('cancelled', () => forget(watcher))
      call.once('finish', () => forget(watcher))
      send(watcher)
      timer ??= setInterval(() => {
        for (const w of watchers) send(w)
      }, WATCH_POLL_MS).unref()
    }
  }

  return {
    handlers,
    close: () => {
      for (const watcher of [...watchers]) {
        forget(watcher)
        watcher.call.end()
      }
    }
  }
}
