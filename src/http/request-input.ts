import { performance } from 'node:perf_hooks'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Settings } from '../config.js'
import type { RequestOptions } from '../core/classify-service.js'
import { ServiceError } from '../errors.js'

/**
 * What every inference route reads off a request the same way: its deadline and hang-up signal,
 * images sent as base64, and how large a JSON body of images may be. Routes share these through
 * this module and never import each other.
 */

export const DEADLINE_HEADER = 'x-deadline-ms'

/** The longest deadline a request may set (query deadline_ms or the header): one hour. */
export const MAX_DEADLINE_MS = 3_600_000

/** The request's deadline (query wins over header) on performance.now()'s clock, and a signal for a client that hangs up. */
export function requestOptions(request: FastifyRequest, reply: FastifyReply, deadlineMs: number | undefined): RequestOptions {
  let relative = deadlineMs
  const header = request.headers[DEADLINE_HEADER]
  if (relative === undefined && header !== undefined) {
    // Decimal digits only: Number() also reads 0x10 and 1e3.
    const n = typeof header === 'string' && /^[0-9]{1,7}$/.test(header) ? Number(header) : NaN
    if (!(n >= 1 && n <= MAX_DEADLINE_MS)) throw new ServiceError('INVALID_DEADLINE')
    relative = n
  }
  // A client that hangs up while its image is queued should not cost a model run.
  const abort = new AbortController()
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) abort.abort()
  })
  return relative === undefined ? { signal: abort.signal } : { signal: abort.signal, deadlineAt: performance.now() + relative }
}

export { DEFAULT_TOPK } from '../core/postprocess.js'

/**
 * A topk sent as a multipart text field (`curl -F topk=3`), which wins over the query's topk: an
 * integer from 1 to --max-topk, else INVALID_TOPK naming the maximum. The model's own class count
 * is checked later, as for a query's topk.
 */
export function multipartTopk(value: string | undefined, maxTopk: number): number | undefined {
  if (value === undefined) return undefined
  const n = /^\s*\d{1,9}\s*$/.test(value) ? Number(value) : NaN
  if (!(n >= 1 && n <= maxTopk)) {
    throw new ServiceError(
      'INVALID_TOPK',
      `The multipart field topk is "${value.slice(0, 32)}"; the maximum is ${maxTopk} (--max-topk; at most the model's classes).`
    )
  }
  return n
}

/** Standard (+/) or URL-safe (-_) alphabet; padding, when present, completes the last quantum. */
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/

/** The image bytes of one base64 item, or the error that goes in its slot. */
export function decodeBase64Item(b64: string): Uint8Array | ServiceError {
  if (b64.length === 0) return new ServiceError('EMPTY_BODY')
  const padded = b64.endsWith('=')
  if (!BASE64.test(b64) || b64.length % 4 === 1 || (padded && b64.length % 4 !== 0)) return new ServiceError('INVALID_BASE64')
  return Buffer.from(b64, 'base64')
}

/** JSON around the base64 strings: `{"b64":""},` per item, plus the envelope. */
const JSON_BYTES_PER_ITEM = 64
const JSON_ENVELOPE_BYTES = 4096

/** The largest JSON body that holds bodyLimitBytes of images in base64, plus the JSON around them. */
export function jsonBatchBodyLimit(settings: Settings): number {
  return Math.ceil(settings.bodyLimitBytes / 3) * 4 + settings.maxBatchItems * JSON_BYTES_PER_ITEM + JSON_ENVELOPE_BYTES
}
