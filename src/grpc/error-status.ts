import { Metadata, status, type StatusObject } from '@grpc/grpc-js'
import { ERRORS, ServiceError, type ErrorKind } from '../errors.js'

/** The name of a gRPC status code, as grpc-js's `status` enum spells it. */
export type GrpcStatusName = keyof typeof status

/** The one place an error kind becomes a gRPC status (docs/operations.md lists the result per code). */
export function grpcStatusName(kind: ErrorKind): GrpcStatusName {
  switch (kind) {
    case 'invalid_argument':
    case 'unsupported_media_type':
    case 'expectation_failed':
      return 'INVALID_ARGUMENT'
    case 'unauthenticated':
      return 'UNAUTHENTICATED'
    case 'not_found':
      return 'NOT_FOUND'
    case 'method_not_allowed':
    case 'not_implemented':
      return 'UNIMPLEMENTED'
    case 'payload_too_large':
    case 'resource_exhausted':
      return 'RESOURCE_EXHAUSTED'
    case 'cancelled':
      return 'CANCELLED'
    case 'unavailable':
      return 'UNAVAILABLE'
    case 'deadline_exceeded':
    case 'request_timeout':
      return 'DEADLINE_EXCEEDED'
    case 'internal':
      return 'INTERNAL'
  }
}

export function grpcStatusOf(kind: ErrorKind): status {
  return status[grpcStatusName(kind)]
}

/** A call's status as the door answers it: the registry code leads the details; Retry-After rides in the trailers. */
export function statusOf(se: ServiceError): Pick<StatusObject, 'code' | 'details' | 'metadata'> {
  const metadata = new Metadata()
  if (se.retryAfterSeconds !== undefined) metadata.set('retry-after', String(se.retryAfterSeconds))
  return { code: grpcStatusOf(se.kind), details: `${se.code}: ${se.message}`, metadata }
}

const REGISTRY_DETAILS = /^([A-Z_]+): /

/** Whether the details were written by statusOf (they start with a registry code). */
function carriesRegistryCode(details: string): boolean {
  const code = REGISTRY_DETAILS.exec(details)?.[1]
  return code !== undefined && Object.hasOwn(ERRORS, code)
}

/** Both reasons a call is cancelled, made once: cancellations come by the thousand in a rapid-reset flood. */
const CALL_CANCELLED = new ServiceError('CLIENT_CLOSED')
const DEADLINE_PASSED = new ServiceError('DEADLINE_EXCEEDED', '(The call was cancelled at its deadline.)')

/**
 * How long before the server's reckoning of a deadline a cancellation still counts as the deadline:
 * grpc-timeout is relative, so the client's deadline falls before the server's by the time its
 * headers took to arrive and be read, and its client cancels the call then.
 */
const DEADLINE_SLACK_MS = 50

/**
 * Why a call was cancelled: its deadline, once it has passed (the client's timer and grpc-js's own
 * both end the call as a cancellation), else its client hanging up.
 */
export function cancellationOf(call: { getDeadline(): Date | number }): ServiceError {
  const deadline = call.getDeadline()
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline
  return Number.isFinite(deadlineMs) && Date.now() >= deadlineMs - DEADLINE_SLACK_MS ? DEADLINE_PASSED : CALL_CANCELLED
}

/**
 * grpc-js answers some calls itself, before or around the handler: a message over the receive
 * limit, a deadline that passes, a grpc-timeout header it cannot read, a message that does not
 * decompress, a unary call with no message or two. Each such status → the registry error that
 * says the same (its own words kept as the detail); undefined for OK and for statuses the door
 * wrote itself. Whatever grpc-js may add later and this does not know is INTERNAL.
 */
export function libraryStatusError(s: Pick<StatusObject, 'code' | 'details'>): ServiceError | undefined {
  const details = s.details ?? ''
  if (s.code === status.OK || carriesRegistryCode(details)) return undefined
  const said = `(${details})`
  switch (s.code) {
    case status.DEADLINE_EXCEEDED:
      return new ServiceError('DEADLINE_EXCEEDED', said)
    case status.CANCELLED:
      return new ServiceError('CLIENT_CLOSED', said)
    case status.RESOURCE_EXHAUSTED:
      if (/^Received message/.test(details)) return new ServiceError('BODY_TOO_LARGE', said)
      break
    case status.INTERNAL:
      if (/grpc-timeout/.test(details)) return new ServiceError('INVALID_DEADLINE', said)
      if (/^(Failed to decompress|Error deserializing request)/.test(details)) return new ServiceError('BAD_REQUEST', said)
      break
    case status.UNIMPLEMENTED:
      if (/unsupported encoding|request message/.test(details)) return new ServiceError('BAD_REQUEST', said)
      break
  }
  return new ServiceError('INTERNAL', said)
}
