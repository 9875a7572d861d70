import { status } from '@grpc/grpc-js'
import { ServiceError, isServiceError, type ErrorKind } from '../errors.js'

/** The name of a gRPC status code, as grpc-js's `status` enum spells it. */
export type GrpcStatusName = keyof typeof status

/** The one place an error kind becomes a gRPC status (docs/operations.md lists the result per code). */
export function grpcStatusName(kind: ErrorKind): GrpcStatusName {
  switch (kind) {
    case 'invalid_argument':
    case 'unsupported_media_type':
      return 'INVALID_ARGUMENT'
    case 'unauthenticated':
      return 'UNAUTHENTICATED'
    case 'not_found':
      return 'NOT_FOUND'
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

/** Any thrown value → a ServiceError with a stable code; never leaks a stack or a path. */
export function toServiceError(err: unknown): ServiceError {
  return isServiceError(err) ? err : new ServiceError('INTERNAL', undefined, { cause: err })
}
