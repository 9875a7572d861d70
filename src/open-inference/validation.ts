import { sniffImageFormat } from '../core/image-sniff.js'
import { ServiceError, echoed } from '../errors.js'
import { itemShape, tensorDatatype, type ModelContract } from './metadata.js'
import { ELEMENT_BYTES, firstNonFiniteFloat32, float32At, packNumbers, splitLengthPrefixed } from './tensor-codec.js'
import type { InferInput, RequestedOutput } from './types.js'

/**
 * An inference request checked against the model before any image runs: its one input (BYTES
 * encoded images, or the model's own tensor) cut into one item per image, and its outputs. Every
 * refusal is a ServiceError: BAD_REQUEST, TOO_MANY_ITEMS or INVALID_TOPK.
 */

export interface PreparedInput {
  /** Encoded images (BYTES) or one image's tensor each, in request order. */
  readonly items: readonly Uint8Array[]
  readonly encoded: boolean
}

export interface PreparedOutput {
  readonly name: string
  readonly classification: number | undefined
}

function badRequest(detail: string): ServiceError {
  return new ServiceError('BAD_REQUEST', detail)
}

/** Dimensions a message shows of a shape; a longer one is shown cut, with its rank. */
const SHOWN_DIMS = 8

/** A shape as messages show it: `[1, 3, 224, 224]`; past SHOWN_DIMS dimensions cut, with the rank. */
export function describeShape(shape: readonly (number | string)[]): string {
  if (shape.length <= SHOWN_DIMS) return `[${shape.join(', ')}]`
  return `[${shape.slice(0, SHOWN_DIMS).join(', ')}, … (${shape.length} dimensions)]`
}

function checkShape(shape: readonly number[]): void {
  for (const dim of shape) {
    if (!Number.isSafeInteger(dim) || dim < 0)
      throw badRequest(`Shape ${describeShape(shape)} has a dimension that is not a non-negative integer.`)
  }
}

export function checkItemCount(count: number, maxItems: number): void {
  if (count === 0) throw badRequest('The input holds no images (its first dimension is 0).')
  if (count > maxItems) throw new ServiceError('TOO_MANY_ITEMS', `Got ${count}; the maximum is ${maxItems}.`)
}

/** BYTES [N] or [N, 1]: the encoded images. */
function encodedImages(input: InferInput, maxItems: number): PreparedInput {
  const { shape, data } = input
  if (shape.length < 1 || shape.length > 2 || (shape.length === 2 && shape[1] !== 1)) {
    throw badRequest(`A BYTES input holds encoded images with shape [N] or [N, 1]; got ${describeShape(shape)}.`)
  }
  const count = shape[0]!
  checkItemCount(count, maxItems)
  switch (data.form) {
    case 'raw':
      return { items: splitLengthPrefixed(data.bytes, count), encoded: true }
    case 'elements':
      if (data.values.length !== count) throw badRequest(`The BYTES input holds ${data.values.length} elements; its shape says ${count}.`)
      return { items: data.values, encoded: true }
    case 'numbers':
      throw badRequest('A BYTES input carries byte strings (JSON: base64 strings), not numbers.')
  }
}

/** The model's own tensor, [N, ...item]: sliced into one view per image. */
function tensorItems(model: ModelContract, input: InferInput, maxItems: number): PreparedInput {
  const { shape, data } = input
  const item = itemShape(model)
  const expected = ['N', ...item]
  if (shape.length !== expected.length || item.some((dim, i) => shape[i + 1] !== dim)) {
    throw badRequest(
      `Input "${echoed(input.name)}" of ${model.entry.name} takes ${input.datatype} ${describeShape(expected)}; got ${describeShape(shape)}.`
    )
  }
  const count = shape[0]!
  checkItemCount(count, maxItems)
  const itemBytes = model.tensorItemBytes
  let bytes: Uint8Array
  switch (data.form) {
    case 'raw':
      bytes = data.bytes
      break
    case 'numbers': {
      const elements = count * (itemBytes / ELEMENT_BYTES[input.datatype]!)
      if (data.values.length !== elements)
        throw badRequest(`Shape ${describeShape(shape)} has ${elements} elements; the data holds ${data.values.length}.`)
      bytes = packNumbers(data.values, input.datatype === 'FP32')
      break
    }
    case 'elements':
      throw badRequest(`A ${input.datatype} input carries numbers, not byte strings.`)
  }
  if (bytes.byteLength !== count * itemBytes) {
    throw badRequest(`${input.datatype} ${describeShape(shape)} is ${count * itemBytes} bytes of data; got ${bytes.byteLength}.`)
  }
  if (input.datatype === 'FP32') {
    const bad = firstNonFiniteFloat32(bytes)
    if (bad !== -1) {
      const itemElements = itemBytes / ELEMENT_BYTES.FP32!
      throw badRequest(
        `Input "${echoed(input.name)}" image ${Math.floor(bad / itemElements)}, element ${bad % itemElements} is ${String(float32At(bytes, bad))} as a float32; FP32 elements must be finite.`
      )
    }
  }
  const items: Uint8Array[] = new Array(count)
  for (let i = 0; i < count; i++) items[i] = bytes.subarray(i * itemBytes, (i + 1) * itemBytes)
  return { items, encoded: false }
}

/** For refusals: what the model's input takes. */
function acceptedInputs(model: ModelContract): string {
  return `BYTES [N] (encoded images) or ${tensorDatatype(model)} ${describeShape(['N', ...itemShape(model)])}`
}

/**
 * A raw binary request's one image: the model's own tensor when the bytes are exactly one image of
 * it and no image format starts them (Triton reads the body as the config's datatype, batch 1), else
 * one encoded image (Triton's BYTES [1] raw input, without a length prefix).
 */
function deducedItem(model: ModelContract, input: InferInput): PreparedInput {
  if (input.data.form !== 'raw') throw new Error('a deduced input carries raw bytes')
  const bytes = input.data.bytes
  const tensor = bytes.byteLength === model.tensorItemBytes && sniffImageFormat(bytes) === undefined
  if (!tensor) return { items: [bytes], encoded: true }
  const shape = [1, ...itemShape(model)]
  return tensorItems(model, { name: model.entry.config.input.name, datatype: tensorDatatype(model), shape, data: input.data }, 1)
}

/**
 * Refuses a datatype the protocol does not name. Names are case-sensitive (the protocol's strings
 * are), so `bytes` is refused with the spelling that is meant.
 */
export function checkDatatype(datatype: string): void {
  if (Object.hasOwn(ELEMENT_BYTES, datatype)) return
  const upper = datatype.toUpperCase()
  const meant = Object.hasOwn(ELEMENT_BYTES, upper) ? ` Datatypes are upper-case: "${upper}".` : ''
  throw badRequest(`Unknown datatype "${echoed(datatype)}".${meant}`)
}

/** The request's inputs as one item per image; at most maxItems of them. */
export function prepareInput(model: ModelContract, inputs: readonly InferInput[], maxItems: number): PreparedInput {
  if (inputs.length === 1 && inputs[0]!.deduced === true) return deducedItem(model, inputs[0]!)
  const expectedName = model.entry.config.input.name
  const tensorType = tensorDatatype(model)
  if (inputs.length !== 1)
    throw badRequest(`${model.entry.name} takes one input, "${expectedName}" (${acceptedInputs(model)}); got ${inputs.length}.`)
  const input = inputs[0]!
  if (input.name !== expectedName)
    throw badRequest(`${model.entry.name} has no input "${echoed(input.name)}"; its input is "${expectedName}" (${acceptedInputs(model)}).`)
  checkDatatype(input.datatype)
  checkShape(input.shape)
  if (input.datatype === 'BYTES') return encodedImages(input, maxItems)
  if (input.datatype === tensorType) return tensorItems(model, input, maxItems)
  throw badRequest(`Input "${expectedName}" takes ${acceptedInputs(model)}; got ${echoed(input.datatype)}.`)
}

/**
 * The outputs to answer (none requested: the raw output tensor). A classification count k must be
 * an integer ≥ 1; one above the model's classes or --max-topk is answered with that many, as Triton
 * answers min(k, classes) (the answer's shape [N, k] says how many came).
 */
export function prepareOutputs(
  model: ModelContract,
  requested: readonly RequestedOutput[] | undefined,
  maxTopk: number
): readonly PreparedOutput[] {
  const outputName = model.entry.config.output.name
  if (requested === undefined || requested.length === 0) return [{ name: outputName, classification: undefined }]
  const limit = Math.min(maxTopk, model.numClasses)
  const seen = new Set<string>()
  return requested.map((output) => {
    if (output.name !== outputName)
      throw badRequest(`${model.entry.name} has no output "${echoed(output.name)}"; its output is "${outputName}".`)
    if (seen.has(output.name)) throw badRequest(`Output "${echoed(output.name)}" is requested twice.`)
    seen.add(output.name)
    const k = output.classification
    if (k === undefined) return output
    if (!Number.isInteger(k) || k < 1) {
      throw new ServiceError('INVALID_TOPK', `The classification parameter is ${String(k)}; it must be an integer ≥ 1.`)
    }
    return { name: output.name, classification: Math.min(k, limit) }
  })
}
