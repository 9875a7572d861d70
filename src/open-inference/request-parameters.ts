import { performance } from 'node:perf_hooks'
import type { RequestOptions } from '../core/classify-service.js'
import { ServiceError, echoed } from '../errors.js'

/**
 * Triton's request parameters that change how a request is scheduled, read the same way from both
 * doors (REST `parameters`, gRPC `parameters` map):
 * - `timeout`: microseconds the request may take from now; it becomes the request's deadline when
 *   sooner than the one it already has (x-deadline-ms, the gRPC call's deadline). 0: no timeout.
 *   Passed, the request ends DEADLINE_EXCEEDED as any deadline does.
 * - `priority`: the batcher's priority level, 1 the highest; 0 the model's default level. A model
 *   without priority levels accepts it and ignores it, as Triton does.
 * Other parameters are left to whoever reads them.
 */

export const TIMEOUT_PARAMETER = 'timeout'
export const PRIORITY_PARAMETER = 'priority'

/** A whole number ≥ 0 exactly as a double holds it (int64 and uint64 values arrive as numbers). */
function wholeNumber(parameters: Readonly<Record<string, unknown>>, name: string, unit: string): number | undefined {
  const value = parameters[name]
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new ServiceError('BAD_REQUEST', `The request parameter "${name}" must be a whole number ≥ 0 (${unit}).`)
  }
  return value
}

/**
 * The request options with the parameters' timeout and priority applied; `options` itself is not
 * changed. Throws BAD_REQUEST for a value that is not a whole number ≥ 0.
 */
export function withRequestParameters(
  parameters: Readonly<Record<string, unknown>> | undefined,
  options: RequestOptions,
  now: number = performance.now()
): RequestOptions {
  if (parameters === undefined) return options
  const timeoutUs = wholeNumber(parameters, TIMEOUT_PARAMETER, 'microseconds; 0 for none')
  const priority = wholeNumber(parameters, PRIORITY_PARAMETER, "a level, 1 the highest; 0 for the model's default")
  if (timeoutUs === undefined && priority === undefined) return options
  let deadlineAt = options.deadlineAt
  if (timeoutUs !== undefined && timeoutUs > 0) {
    const timeoutAt = now + timeoutUs / 1000
    if (deadlineAt === undefined || timeoutAt < deadlineAt) deadlineAt = timeoutAt
  }
  return { ...options, deadlineAt, priority: priority ?? options.priority }
}

/** Triton's shared-memory extensions name a region for a tensor with these parameters. */
const SHARED_MEMORY_PARAMETERS = ['shared_memory_region', 'shared_memory_byte_size', 'shared_memory_offset'] as const

/**
 * Refuses a tensor (`what`: 'Input "x"' or 'Output "y"') whose parameters place it in shared memory:
 * the shared-memory extensions are not implemented, and an output answered inline instead would
 * leave the client reading its region's stale bytes as the answer.
 */
export function refuseSharedMemory(what: string, parameters: Readonly<Record<string, unknown>> | undefined): void {
  if (parameters === undefined) return
  for (const name of SHARED_MEMORY_PARAMETERS) {
    if (parameters[name] !== undefined) {
      throw new ServiceError(
        'BAD_REQUEST',
        `${what} has the parameter "${name}": this server does not implement shared memory (system or CUDA); send the tensor in the request and read it from the answer.`
      )
    }
  }
}

/**
 * An output's `classification` parameter (Triton's classification extension): a number, checked
 * further against the model by prepareOutputs, or undefined. Any other type is INVALID_TOPK naming
 * what came (a string "3" was told "is NaN").
 */
export function classificationCount(value: unknown): number | undefined {
  if (value === undefined || typeof value === 'number') return value
  const shown = typeof value === 'string' ? `the string "${echoed(value)}"` : `of type ${typeof value}`
  throw new ServiceError('INVALID_TOPK', `The classification parameter is ${shown}; it must be an integer ≥ 1.`)
}
