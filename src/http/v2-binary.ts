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
 * Where an infer body's JSON header ends: at Inference-Header-Content-Length (0: Triton's raw
 * binary request, the whole body one input's data), or the body's end when the header is absent.
 */
export function inferenceHeaderEnd(body: Uint8Array, headerLength: string | string[] | undefined): number {
  if (headerLength === undefined) return body.byteLength
  const n = typeof headerLength === 'string' && /^\s*\d+\s*$/.test(headerLength) ? Number(headerLength) : NaN
  if (!Number.isSafeInteger(n) || n > body.byteLength) {
    throw malformed(
      `The Inference-Header-Content-Length header must be one integer no larger than the body (${body.byteLength} bytes); got "${String(headerLength)}".`
    )
  }
  return n
}

/**
 * Bytes [0, end) of an infer body as its JSON header: what parsing may cost is checked first
 * (json-cost.ts), then JSON.parse. `withLength`: the body had Inference-Header-Content-Length, which
 * the refusal of invalid JSON names.
 */
export function parseInferenceHeader(body: Uint8Array, end: number, withLength: boolean): unknown {
  if (end === 0) throw malformed('The body holds no JSON inference header.')
  const refusal = jsonCostRefusal(body, end)
  if (refusal !== undefined) throw malformed(refusal)
  try {
    return JSON.parse(Buffer.from(body.buffer, body.byteOffset, end).toString('utf8')) as unknown
  } catch {
    throw malformed(
      withLength
        ? `The first ${end} bytes (Inference-Header-Content-Length) are not valid JSON.`
        : 'The body is not valid JSON (binary tensor data needs the Inference-Header-Content-Length header).'
    )
  }
}

/** How many numbers JSON `data` (flat or nested) holds, when every element is a number `accept`s; else undefined. */
function numbersIn(data: unknown[], accept: (n: number) => boolean): number | undefined {
  let count = 0
  for (const element of data) {
    if (typeof element === 'number' && accept(element)) count++
    else if (Array.isArray(element)) {
      const inner = numbersIn(element, accept)
      if (inner === undefined) return undefined
      count += inner
    } else return undefined
  }
  return count
}

function copyNumbers(data: unknown[], out: Float32Array | Uint8Array, at: number): number {
  for (const element of data) {
    if (Array.isArray(element)) at = copyNumbers(element, out, at)
    else out[at++] = element as number
  }
  return at
}

const PACKED: Readonly<Record<string, { readonly array: new (length: number) => Float32Array | Uint8Array; accept(n: number): boolean }>> =
  {
    FP32: { array: Float32Array, accept: () => true },
    UINT8: { array: Uint8Array, accept: (n) => Number.isInteger(n) && n >= 0 && n <= 255 }
  }

/**
 * Replaces the JSON `data` of each FP32 or UINT8 input whose elements (flat or nested) are all
 * numbers of its type with one flat Float32Array or Uint8Array of them, row-major, as the tensor's
 * bytes will hold them, and returns those arrays: they cross threads without a copy and become the
 * tensor without another pass (packNumbers). Other data (BYTES strings, a stray `null`, 256 for a
 * UINT8) is left as it is, for the route to describe what is wrong with it.
 */
export function packJsonTensors(header: unknown): Array<Float32Array | Uint8Array> {
  const inputs = (header as { inputs?: unknown } | null)?.inputs
  const out: Array<Float32Array | Uint8Array> = []
  if (!Array.isArray(inputs)) return out
  for (const input of inputs) {
    const { datatype, data } = (input ?? {}) as { datatype?: unknown; data?: unknown }
    const packed = typeof datatype === 'string' && Object.hasOwn(PACKED, datatype) ? PACKED[datatype]! : undefined
    if (packed === undefined || !Array.isArray(data)) continue
    const count = numbersIn(data, packed.accept)
    if (count === undefined) continue
    const flat = new packed.array(count)
    copyNumbers(data, flat, 0)
    ;(input as { data: unknown }).data = flat
    out.push(flat)
  }
  return out
}

const NO_BINARY = Buffer.alloc(0)

/**
 * An infer body split at Inference-Header-Content-Length (absent: the whole body is JSON), before
 * its header is parsed: the header's end, and the binary part, taken as a view of its own (empty
 * when there is none), so that the header's bytes may then move to another thread.
 */
export function splitInferenceBody(
  body: Buffer,
  headerLength: string | string[] | undefined
): { readonly end: number; readonly binary: Buffer; readonly raw: boolean } {
  const end = inferenceHeaderEnd(body, headerLength)
  // Triton's raw binary request: the whole body is the one input's data.
  if (end === 0 && headerLength !== undefined) return { end, binary: body, raw: true }
  return { end, binary: end === body.byteLength ? NO_BINARY : body.subarray(end), raw: false }
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
