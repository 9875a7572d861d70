import { setMaxListeners } from 'node:events'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ServiceError } from '../errors.js'
import type { ClassifyService, RequestOptions, ScoresResult, ServedModel } from './classify-service.js'

/**
 * The Open Inference Protocol (KServe V2) over the core service, shared by the REST and gRPC
 * doors: each door turns its wire format into an InferRequest and an InferResponse back into its
 * wire format; what the request means, and every refusal, is decided here once.
 *
 * What a model accepts, on its one input (named as in its config.json):
 * - BYTES, shape [N] or [N, 1]: N encoded images (JPEG, PNG, …), decoded and preprocessed by the
 *   server exactly as /classify does;
 * - the model's own input tensor, already preprocessed: FP32 [N, 3, crop, crop] for float32 NCHW
 *   models, UINT8 [N, crop, crop, 3] for uint8 NHWC ones (layout as config.json says).
 * Either way each image runs through the model's batcher on its own, alongside everyone else's.
 *
 * What it answers, on its one output: the FP32 [N, classes] output rows (logits, or
 * probabilities when the model outputs those), or, when the output asks for `classification: k`
 * (Triton's classification extension), BYTES [N, k] of "value:index:label", best first, where
 * value is the model's own output value for that class.
 */

export const SERVER_NAME = 'resnet-serve'
export const PLATFORM = 'onnxruntime_onnx'
export const EXTENSIONS: readonly string[] = Object.freeze(['classification', 'binary_tensor_data'])

/** Bytes per element of every datatype the protocol defines; BYTES elements have their own length. */
const ELEMENT_BYTES: Readonly<Record<string, number>> = {
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

export interface TensorMetadata {
  readonly name: string
  readonly datatype: string
  /** -1 for a dimension of any size (the batch). */
  readonly shape: readonly number[]
}

export interface ServerMetadata {
  readonly name: string
  readonly version: string
  readonly extensions: readonly string[]
}

export interface ModelMetadata {
  readonly name: string
  readonly versions: readonly string[]
  readonly platform: string
  readonly inputs: readonly TensorMetadata[]
  readonly outputs: readonly TensorMetadata[]
}

/**
 * A tensor's elements as the door received them:
 * - raw: packed little-endian, row-major (binary extension, gRPC raw_input_contents); BYTES
 *   elements length-prefixed;
 * - numbers: one number per element, flattened row-major (JSON `data`, gRPC typed contents);
 * - elements: one byte string per BYTES element (JSON base64 strings decoded, gRPC bytes_contents).
 */
export type TensorData =
  | { readonly form: 'raw'; readonly bytes: Uint8Array }
  | { readonly form: 'numbers'; readonly values: ArrayLike<number> }
  | { readonly form: 'elements'; readonly values: readonly Uint8Array[] }

export interface InferInput {
  readonly name: string
  readonly datatype: string
  readonly shape: readonly number[]
  readonly data: TensorData
}

export interface RequestedOutput {
  readonly name: string
  /** The classification extension's k; undefined for the raw output tensor. */
  readonly classification: number | undefined
}

export interface InferRequest {
  readonly modelName: string
  /** Undefined or empty: whichever version the model serves. */
  readonly modelVersion: string | undefined
  readonly id: string | undefined
  readonly inputs: readonly InferInput[]
  /** Undefined or empty: every output, as raw tensors. */
  readonly outputs: readonly RequestedOutput[] | undefined
}

export type InferOutput =
  | { readonly name: string; readonly datatype: 'FP32'; readonly shape: readonly number[]; readonly data: Float32Array }
  | { readonly name: string; readonly datatype: 'BYTES'; readonly shape: readonly number[]; readonly data: readonly string[] }

export interface InferResponse {
  readonly modelName: string
  readonly modelVersion: string
  readonly id: string | undefined
  readonly outputs: readonly InferOutput[]
  /** The largest model execution any of the images ran in (for the log line). */
  readonly batchSize: number
}

/** The version in the project's package.json, found upward from this module (src/ or dist/src/). */
function packageVersion(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); dir !== dirname(dir); dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string }
      if (pkg.name === SERVER_NAME && pkg.version !== undefined) return pkg.version
    } catch {
      // No package.json at this level: keep walking up.
    }
  }
  return '0.0.0'
}

const SERVER_METADATA: ServerMetadata = Object.freeze({ name: SERVER_NAME, version: packageVersion(), extensions: EXTENSIONS })

export function serverMetadata(): ServerMetadata {
  return SERVER_METADATA
}

/** The served model of that name; MODEL_NOT_FOUND when a version is named that it does not serve. */
export function resolveModel(service: ClassifyService, name: string, version: string | undefined): ServedModel {
  const model = service.model(name)
  if (version !== undefined && version !== '' && version !== model.info.version) {
    throw new ServiceError('MODEL_NOT_FOUND', `(version "${version}" of "${name}": only version "${model.info.version}" is served).`)
  }
  return model
}

/** One image of the model's input tensor, without the batch dimension. */
function itemShape(model: ServedModel): readonly number[] {
  const { crop } = model.entry.config.preprocess
  return model.entry.config.input.layout === 'NCHW' ? [3, crop, crop] : [crop, crop, 3]
}

function tensorDatatype(model: ServedModel): 'FP32' | 'UINT8' {
  return model.entry.config.input.datatype === 'float32' ? 'FP32' : 'UINT8'
}

export function modelMetadata(service: ClassifyService, name: string, version: string | undefined): ModelMetadata {
  const model = resolveModel(service, name, version)
  const { input, output } = model.entry.config
  return {
    name: model.info.name,
    versions: [model.info.version],
    platform: PLATFORM,
    inputs: [{ name: input.name, datatype: tensorDatatype(model), shape: [-1, ...itemShape(model)] }],
    outputs: [{ name: output.name, datatype: 'FP32', shape: [-1, model.numClasses] }]
  }
}

/** Whether the model (and version, when named) takes requests now; MODEL_NOT_FOUND if unknown. */
export function isModelReady(service: ClassifyService, name: string, version: string | undefined): boolean {
  try {
    resolveModel(service, name, version)
  } catch (err) {
    // A model that failed to load is known but not ready; only unknown names are errors.
    if (err instanceof ServiceError && err.code === 'MODEL_NOT_READY') return false
    throw err
  }
  return service.isModelReady(name)
}

function badRequest(detail: string): ServiceError {
  return new ServiceError('BAD_REQUEST', detail)
}

function describeShape(shape: readonly (number | string)[]): string {
  return `[${shape.join(', ')}]`
}

function checkShape(shape: readonly number[]): void {
  for (const dim of shape) {
    if (!Number.isSafeInteger(dim) || dim < 0) throw badRequest(`Shape ${describeShape(shape)} has a dimension that is not a non-negative integer.`)
  }
}

function checkItemCount(count: number, maxItems: number): void {
  if (count === 0) throw badRequest('The input holds no images (its first dimension is 0).')
  if (count > maxItems) throw new ServiceError('TOO_MANY_ITEMS', `Got ${count}; the maximum is ${maxItems}.`)
}

/** Splits raw BYTES data (each element a little-endian uint32 length, then that many bytes). */
export function splitLengthPrefixed(raw: Uint8Array, expectedCount: number): Uint8Array[] {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength)
  const elements: Uint8Array[] = []
  let offset = 0
  while (offset < raw.byteLength) {
    if (offset + LENGTH_PREFIX_BYTES > raw.byteLength) throw badRequest('The BYTES data ends inside an element\'s 4-byte length.')
    const length = view.getUint32(offset, true)
    offset += LENGTH_PREFIX_BYTES
    if (offset + length > raw.byteLength) throw badRequest(`A BYTES element claims ${length} bytes; only ${raw.byteLength - offset} remain.`)
    if (elements.length === expectedCount) throw badRequest(`The BYTES data holds more elements than its shape's ${expectedCount}.`)
    elements.push(raw.subarray(offset, offset + length))
    offset += length
  }
  if (elements.length !== expectedCount) throw badRequest(`The BYTES data holds ${elements.length} elements; its shape says ${expectedCount}.`)
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

interface PreparedInput {
  /** Encoded images (BYTES) or one image's tensor each, in request order. */
  readonly items: readonly Uint8Array[]
  readonly encoded: boolean
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
function tensorItems(model: ServedModel, input: InferInput, maxItems: number): PreparedInput {
  const { shape, data } = input
  const item = itemShape(model)
  const expected = ['N', ...item]
  if (shape.length !== expected.length || item.some((dim, i) => shape[i + 1] !== dim)) {
    throw badRequest(`Input "${input.name}" of ${model.entry.name} takes ${input.datatype} ${describeShape(expected)}; got ${describeShape(shape)}.`)
  }
  const count = shape[0]!
  checkItemCount(count, maxItems)
  const itemBytes = model.tensorItemBytes
  let bytes: Uint8Array
  switch (data.form) {
    case 'raw':
      bytes = data.bytes
      break
    case 'numbers':
      bytes = packNumbers(data.values, input.datatype === 'FP32', count * (itemBytes / ELEMENT_BYTES[input.datatype]!), shape)
      break
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
        `Input "${input.name}" image ${Math.floor(bad / itemElements)}, element ${bad % itemElements} is ${nonFiniteText(bytes, bad)} as a float32; FP32 elements must be finite.`
      )
    }
  }
  const items: Uint8Array[] = new Array(count)
  for (let i = 0; i < count; i++) items[i] = bytes.subarray(i * itemBytes, (i + 1) * itemBytes)
  return { items, encoded: false }
}

/** Numbers → the tensor's bytes (host order, which the workers read; every supported host is little-endian). */
function packNumbers(values: ArrayLike<number>, float: boolean, expectedCount: number, shape: readonly number[]): Uint8Array {
  if (values.length !== expectedCount) throw badRequest(`Shape ${describeShape(shape)} has ${expectedCount} elements; the data holds ${values.length}.`)
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
function firstNonFiniteFloat32(bytes: Uint8Array): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const count = bytes.byteLength >>> 2
  for (let i = 0; i < count; i++) {
    if ((view.getUint32(i * 4, true) & FLOAT32_EXPONENT) === FLOAT32_EXPONENT) return i
  }
  return -1
}

function nonFiniteText(bytes: Uint8Array, index: number): string {
  return String(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getFloat32(index * 4, true))
}

/** For refusals: what the model's input takes. */
function acceptedInputs(model: ServedModel): string {
  return `BYTES [N] (encoded images) or ${tensorDatatype(model)} ${describeShape(['N', ...itemShape(model)])}`
}

function prepareInput(model: ServedModel, inputs: readonly InferInput[], maxItems: number): PreparedInput {
  const expectedName = model.entry.config.input.name
  const tensorType = tensorDatatype(model)
  if (inputs.length !== 1) throw badRequest(`${model.entry.name} takes one input, "${expectedName}" (${acceptedInputs(model)}); got ${inputs.length}.`)
  const input = inputs[0]!
  if (input.name !== expectedName) throw badRequest(`${model.entry.name} has no input "${input.name}"; its input is "${expectedName}" (${acceptedInputs(model)}).`)
  if (!Object.hasOwn(ELEMENT_BYTES, input.datatype)) throw badRequest(`Unknown datatype "${input.datatype}".`)
  checkShape(input.shape)
  if (input.datatype === 'BYTES') return encodedImages(input, maxItems)
  if (input.datatype === tensorType) return tensorItems(model, input, maxItems)
  throw badRequest(`Input "${expectedName}" takes ${acceptedInputs(model)}; got ${input.datatype}.`)
}

interface PreparedOutput {
  readonly name: string
  readonly classification: number | undefined
}

function prepareOutputs(model: ServedModel, requested: readonly RequestedOutput[] | undefined, maxTopk: number): readonly PreparedOutput[] {
  const outputName = model.entry.config.output.name
  if (requested === undefined || requested.length === 0) return [{ name: outputName, classification: undefined }]
  const limit = Math.min(maxTopk, model.numClasses)
  const seen = new Set<string>()
  for (const output of requested) {
    if (output.name !== outputName) throw badRequest(`${model.entry.name} has no output "${output.name}"; its output is "${outputName}".`)
    if (seen.has(output.name)) throw badRequest(`Output "${output.name}" is requested twice.`)
    seen.add(output.name)
    const k = output.classification
    if (k !== undefined && (!Number.isInteger(k) || k < 1 || k > limit)) {
      throw new ServiceError('INVALID_TOPK', `The classification parameter is ${String(k)}; it must be an integer from 1 to ${limit}.`)
    }
  }
  return requested
}

/** The shortest decimal that reads back as the same float32 (the model's value, without float64 noise). */
function float32Text(value: number): string {
  for (let digits = 6; digits < 9; digits++) {
    const candidate = Number(value.toPrecision(digits))
    if (Math.fround(candidate) === value) return String(candidate)
  }
  return String(Number(value.toPrecision(9)))
}

function classificationOutput(service: ClassifyService, model: ServedModel, name: string, results: readonly ScoresResult[], k: number): InferOutput {
  const data: string[] = new Array(results.length * k)
  const labels = model.entry.labels
  let n = 0
  for (const { scores } of results) {
    for (const { index } of service.predictions(model, scores, k)) data[n++] = `${float32Text(scores[index]!)}:${index}:${labels[index] ?? ''}`
  }
  return { name, datatype: 'BYTES', shape: [results.length, k], data }
}

function scoresOutput(model: ServedModel, name: string, results: readonly ScoresResult[]): InferOutput {
  const width = model.numClasses
  const data = new Float32Array(results.length * width)
  for (let i = 0; i < results.length; i++) data.set(results[i]!.scores, i * width)
  return { name, datatype: 'FP32', shape: [results.length, width], data }
}

/**
 * Runs one V2 inference request. Everything about the request is checked before any image runs
 * (ServiceError BAD_REQUEST, TOO_MANY_ITEMS, INVALID_TOPK, MODEL_NOT_FOUND); then each image goes
 * through the model's batcher. The first image that fails fails the request and withdraws the
 * others still queued, so a doomed request costs no further model runs.
 */
export async function infer(service: ClassifyService, request: InferRequest, options: RequestOptions = {}): Promise<InferResponse> {
  const model = resolveModel(service, request.modelName, request.modelVersion)
  const { items, encoded } = prepareInput(model, request.inputs, service.settings.maxBatchItems)
  const outputs = prepareOutputs(model, request.outputs, service.settings.maxTopk)

  const withdraw = new AbortController()
  // Every queued image listens on this signal: more than Node's default of 10 is expected.
  setMaxListeners(items.length + 10, withdraw.signal)
  const outer = options.signal
  const onOuterAbort = (): void => withdraw.abort()
  if (outer !== undefined) {
    if (outer.aborted) withdraw.abort()
    else outer.addEventListener('abort', onOuterAbort, { once: true })
  }
  const itemOptions: RequestOptions = { deadlineAt: options.deadlineAt, signal: withdraw.signal }
  const name = model.entry.name
  let results: ScoresResult[]
  try {
    results = await Promise.all(items.map((item) => (encoded ? service.inferImage(name, item, itemOptions) : service.inferTensor(name, item, itemOptions))))
  } catch (err) {
    withdraw.abort()
    throw err
  } finally {
    outer?.removeEventListener('abort', onOuterAbort)
  }

  let batchSize = 0
  for (const r of results) if (r.batchSize > batchSize) batchSize = r.batchSize
  return {
    modelName: model.info.name,
    modelVersion: model.info.version,
    id: request.id,
    outputs: outputs.map((o) => (o.classification === undefined ? scoresOutput(model, o.name, results) : classificationOutput(service, model, o.name, results, o.classification))),
    batchSize
  }
}
