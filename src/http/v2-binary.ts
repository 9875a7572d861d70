import { ServiceError } from '../errors.js'
import { jsonCostRefusal } from './json-cost.js'

/**
 * Triton's binary tensor data extension on the HTTP door: an infer body is the JSON inference
 * header, then the binary tensors back to back, in input (or output) order; the
 * Inference-Header-Content-Length header gives the JSON's length, and each binary tensor's
 * `binary_data_size` parameter its own. Tensor bytes are packed little-endian, row-major; a BYTES
 * element is a little-endian uint32 length followed by its bytes.
 *
 * Triton's clients send such bodies as application/octet-stream, but the length header, not the
 * content type, is what marks a body as binary here: any content type is read the same way.
 */

export const INFERENCE_HEADER_LENGTH = 'inference-header-content-length'
export const BINARY_DATA_SIZE = 'binary_data_size'

export interface InferenceBody {
  /** The parsed JSON inference header (validated by the route's schema afterwards). */
  readonly header: unknown
  /** Everything after the header: the binary tensors; empty when there are none. */
  readonly binary: Buffer
  /** A raw binary request: no header at all (Inference-Header-Content-Length: 0), the whole body one input's data. */
  readonly raw: boolean
}

/**
 * The header a raw binary request stands for: one input, every output answered as binary data (as
 * Triton answers it). The route replaces the input with the body's bytes, deduced by the core.
 */
export const RAW_REQUEST_HEADER = Object.freeze({
  inputs: [{ name: 'raw_input', datatype: 'BYTES', shape: [1] }],
  parameters: { binary_data_output: true }
})

function malformed(detail: string): ServiceError {
  return new ServiceError('BAD_REQUEST', detail)
}

/**
 * The JSON bytes of an infer body, for what parsing it may cost: the Inference-Header-Content-Length
 * when it is a number within the body, else the whole body (readInferenceBody refuses a bad header).
 */
export function jsonHeaderBytes(body: Buffer, headerLength: string | string[] | undefined): number {
  const n = typeof headerLength === 'string' ? Number(headerLength) : NaN
  return Number.isSafeInteger(n) && n >= 0 && n <= body.byteLength ? n : body.byteLength
}

/** Splits an infer body at Inference-Header-Content-Length (absent: the whole body is JSON). */
export function readInferenceBody(body: Buffer, headerLength: string | string[] | undefined): InferenceBody {
  let jsonEnd = body.byteLength
  if (headerLength !== undefined) {
    const n = typeof headerLength === 'string' && /^\s*\d+\s*$/.test(headerLength) ? Number(headerLength) : NaN
    if (!Number.isSafeInteger(n) || n > body.byteLength) {
      throw malformed(
        `The Inference-Header-Content-Length header must be one integer no larger than the body (${body.byteLength} bytes); got "${String(headerLength)}".`
      )
    }
    jsonEnd = n
    // Triton's raw binary request: the whole body is the one input's data.
    if (n === 0) return { header: structuredClone(RAW_REQUEST_HEADER), binary: body, raw: true }
  }
  if (jsonEnd === 0) throw malformed('The body holds no JSON inference header.')
  const refusal = jsonCostRefusal(body, jsonEnd)
  if (refusal !== undefined) throw malformed(refusal)
  let header: unknown
  try {
    header = JSON.parse(body.toString('utf8', 0, jsonEnd))
  } catch {
    throw malformed(
      headerLength === undefined
        ? 'The body is not valid JSON (binary tensor data needs the Inference-Header-Content-Length header).'
        : `The first ${jsonEnd} bytes (Inference-Header-Content-Length) are not valid JSON.`
    )
  }
  return { header, binary: body.subarray(jsonEnd), raw: false }
}

/**
 * Each input's binary data, in input order: `sizes[i]` is input i's binary_data_size (undefined:
 * that input carries JSON data). The sizes must account for the binary part exactly.
 */
export function binaryInputSlices(sizes: readonly unknown[], binary: Buffer): Array<Buffer | undefined> {
  const slices: Array<Buffer | undefined> = new Array(sizes.length)
  let offset = 0
  for (let i = 0; i < sizes.length; i++) {
    const size = sizes[i]
    if (size === undefined) continue
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
      throw malformed(`Input ${i}: binary_data_size must be a non-negative integer; got ${JSON.stringify(size)}.`)
    }
    if (offset + size > binary.byteLength) {
      throw malformed(
        `Input ${i}: binary_data_size ${size} runs past the end of the body (${binary.byteLength - offset} binary bytes left).`
      )
    }
    slices[i] = binary.subarray(offset, offset + size)
    offset += size
  }
  if (offset !== binary.byteLength) {
    throw malformed(`The body holds ${binary.byteLength} bytes after the JSON header; the inputs' binary_data_size add up to ${offset}.`)
  }
  return slices
}

/** A response body in the extension's form: the JSON header, then each binary output's bytes in order. */
export function binaryResponseBody(header: unknown, binaryOutputs: readonly Uint8Array[]): { body: Buffer; headerLength: number } {
  const json = Buffer.from(JSON.stringify(header), 'utf8')
  return { body: Buffer.concat([json, ...binaryOutputs]), headerLength: json.byteLength }
}
