import { ServiceError } from '../errors.js'
import type { InferOutput } from './types.js'

/**
 * Tensor bytes as the protocol packs them: little-endian, row-major; a BYTES element in raw form
 * is a little-endian uint32 length followed by its bytes. What the binary extension and gRPC's raw
 * contents carry, in both directions.
 */

/** Bytes per element of every datatype the protocol defines; BYTES elements have their own length. */
export const ELEMENT_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1,
  UINT8: 1,
  UINT16: 2,
  UINT32: 4,
  UINT64: 8,
  INT8: 1,
  INT16: 2,
  INT32: 4,
  INT64: 8,
  FP16: 2,
  BF16: 2,
  FP32: 4,
  FP64: 8,
  BYTES: 0
}

/** A BYTES element in raw form is preceded by its length, a little-endian uint32. */
const LENGTH_PREFIX_BYTES = 4

function badRequest(detail: string): ServiceError {
  return new ServiceError('BAD_REQUEST', detail)
}

/** Splits raw BYTES data (each element a little-endian uint32 length, then that many bytes). */
export function splitLengthPrefixed(raw: Uint8Array, expectedCount: number): Uint8Array[] {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength)
  const elements: Uint8Array[] = []
  let offset = 0
  while (offset < raw.byteLength) {
    if (offset + LENGTH_PREFIX_BYTES > raw.byteLength) throw badRequest("The BYTES data ends inside an element's 4-byte length.")
    const length = view.getUint32(offset, true)
    offset += LENGTH_PREFIX_BYTES
    if (offset + length > raw.byteLength)
      throw badRequest(`A BYTES element claims ${length} bytes; only ${raw.byteLength - offset} remain.`)
    if (elements.length === expectedCount) throw badRequest(`The BYTES data holds more elements than its shape's ${expectedCount}.`)
    elements.push(raw.subarray(offset, offset + length))
    offset += length
  }
  if (elements.length !== expectedCount)
    throw badRequest(`The BYTES data holds ${elements.length} elements; its shape says ${expectedCount}.`)
  return elements
}

/** The raw (packed little-endian) form of an output: what the binary extension and gRPC send. */
export function rawOutputBytes(output: InferOutput): Uint8Array {
  if (output.datatype === 'FP32') return new Uint8Array(output.data.buffer, output.data.byteOffset, output.data.byteLength)
  const encoded = output.data.map((s) => Buffer.from(s, 'utf8'))
  let total = 0
  for (const e of encoded) total += LENGTH_PREFIX_BYTES + e.byteLength
  const raw = Buffer.allocUnsafe(total)
  let offset = 0
  for (const e of encoded) {
    raw.writeUInt32LE(e.byteLength, offset)
    offset += LENGTH_PREFIX_BYTES
    offset += e.copy(raw, offset)
  }
  return raw
}

/**
 * Numbers → the tensor's bytes (host order, which the workers read; every supported host is
 * little-endian): float32 for FP32, else UINT8, each of which must be an integer from 0 to 255.
 * Numbers packed already (a Float32Array for FP32, a Uint8Array for UINT8) are the bytes as they are.
 */
export function packNumbers(values: ArrayLike<number>, float: boolean): Uint8Array {
  if (float && values instanceof Float32Array) return new Uint8Array(values.buffer, values.byteOffset, values.byteLength)
  if (!float && values instanceof Uint8Array) return values
  if (float) {
    const packed = new Float32Array(values)
    return new Uint8Array(packed.buffer)
  }
  const packed = new Uint8Array(values.length)
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!
    if (!Number.isInteger(v) || v < 0 || v > 255) throw badRequest(`UINT8 element ${i} is ${v}; it must be an integer from 0 to 255.`)
    packed[i] = v
  }
  return packed
}

const FLOAT32_EXPONENT = 0x7f800000

/**
 * The index of the first element of packed little-endian float32 data that is NaN or ±Infinity
 * (all exponent bits set), or -1. A NaN would run through the model into NaN logits answered as a
 * success. One pass over the bits through a DataView, because raw tensors (binary extension, gRPC
 * raw_input_contents) may start at any byte offset; about 0.1 ms per 3×224×224 image.
 */
export function firstNonFiniteFloat32(bytes: Uint8Array): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const count = bytes.byteLength >>> 2
  for (let i = 0; i < count; i++) {
    if ((view.getUint32(i * 4, true) & FLOAT32_EXPONENT) === FLOAT32_EXPONENT) return i
  }
  return -1
}

/** Element `index` of packed little-endian float32 data. */
export function float32At(bytes: Uint8Array, index: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getFloat32(index * 4, true)
}

/** The shortest decimal that reads back as the same float32 (the model's value, without float64 noise). */
export function float32Text(value: number): string {
  for (let digits = 6; digits < 9; digits++) {
    const candidate = Number(value.toPrecision(digits))
    if (Math.fround(candidate) === value) return String(candidate)
  }
  return String(Number(value.toPrecision(9)))
}
