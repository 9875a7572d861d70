import { Type, type TSchema } from '@sinclair/typebox'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Settings } from '../../config.js'
import type { ClassifyService } from '../../core/classify-service.js'
import { ServiceError, echoed } from '../../errors.js'
import { infer, loggedId } from '../../open-inference/infer.js'
import { isModelReady, modelMetadata, serverMetadata } from '../../open-inference/metadata.js'
import { checkDatatype, checkItemCount, describeShape } from '../../open-inference/validation.js'
import { classificationCount, refuseSharedMemory } from '../../open-inference/request-parameters.js'
import { rawOutputBytes } from '../../open-inference/tensor-codec.js'
import { tensorLimits } from '../../open-inference/tensor-limits.js'
import type { InferInput, InferOutput, InferRequest, InferResponse, TensorData } from '../../open-inference/types.js'
import type { RequestTrace } from '../../trace/tracer.js'
import { inflateRequestBody } from '../content-encoding.js'
import { sendError, v2ErrorBody } from '../error-status.js'
import type { HeaderParsePool } from '../header-parse-pool.js'
import { decodeBase64Item, jsonBatchBodyLimit, requestOptions } from '../request-input.js'
import { V2_ERROR_RESPONSES } from '../schemas.js'
import {
  BINARY_DATA_SIZE,
  INFERENCE_HEADER_LENGTH,
  binaryInputSlices,
  binaryResponseBody,
  RAW_REQUEST_HEADER,
  splitInferenceBody
} from '../v2-binary.js'

/**
 * The Open Inference Protocol (KServe V2) REST routes, registered under the prefix /v2. Meaning
 * lives in src/open-inference/; this door reads and writes the wire format only.
 *
 * Conventions where the protocol leaves the choice to the server:
 * - A BYTES element in JSON `data` is a string holding the base64 (standard or URL-safe alphabet)
 *   of the element's bytes, i.e. of one encoded image; in binary data it is the raw bytes.
 * - Health answers: 200 means true, 400 false (Triton's clients read the status), with the
 *   protocol's JSON body saying the same (KServe's read `live` / `ready`). An unknown model is 404
 *   with an error.
 * - Infer bodies may be compressed (Content-Encoding gzip or deflate); the body limit applies to
 *   the inflated bytes.
 * - Errors are `{"error": "<CODE>: <message>"}`, the code from docs/operations.md, with that code's
 *   HTTP status.
 * - Deadline: the x-deadline-ms header, as on /classify.
 */

declare module 'fastify' {
  interface FastifyRequest {
    /** /v2 infer: the body's bytes after the JSON inference header (binary tensor data extension). */
    inferenceBinaryData: Buffer | null
    /** /v2 infer: a raw binary request (Inference-Header-Content-Length: 0), the whole body one input's data. */
    inferenceRawBinary: boolean
  }
}

export interface V2RouteOptions {
  readonly service: ClassifyService
  readonly settings: Settings
  /** Where large inference headers (JSON tensors) are parsed: worker threads (header-parse-pool.ts). */
  readonly headerParser: HeaderParsePool
}

/**
 * Parameter values are strings, numbers or booleans, checked where each is read: a schema union
 * would let ajv's type coercion turn `true` into "true" while trying the union's branches.
 */
const Parameters = Type.Record(Type.String(), Type.Unknown({ description: 'string, number or boolean' }), {
  description: 'Name/value parameters'
})

// The status is the answer (200 true, 400 false), as Triton's clients read it; the body says the same, as KServe's read it.
const Live = Type.Object({ live: Type.Boolean() }, { description: 'The status is the answer: 200 live.' })
const Ready = Type.Object({ ready: Type.Boolean() }, { description: 'The status is the answer: 200 ready, 400 not.' })
const ModelReady = Type.Object(
  { name: Type.String(), ready: Type.Boolean() },
  { description: 'The status is the answer: 200 ready, 400 not.' }
)

const TensorMetadataSchema = Type.Object({
  name: Type.String(),
  datatype: Type.String(),
  shape: Type.Array(Type.Integer({ description: '-1: any size' }))
})

const ServerMetadataSchema = Type.Object({ name: Type.String(), version: Type.String(), extensions: Type.Array(Type.String()) })

const ModelMetadataSchema = Type.Object({
  name: Type.String(),
  versions: Type.Array(Type.String()),
  platform: Type.String(),
  inputs: Type.Array(TensorMetadataSchema),
  outputs: Type.Array(TensorMetadataSchema)
})

const RequestInput = Type.Object({
  name: Type.String(),
  shape: Type.Array(Type.Integer({ minimum: 0 })),
  datatype: Type.String({
    description: 'BYTES (encoded images, base64 strings in JSON) or the model input datatype (FP32, or UINT8 for uint8 models)'
  }),
  parameters: Type.Optional(Parameters),
  data: Type.Optional(Type.Unknown({ description: 'Row-major elements, flat or nested; absent when binary_data_size is given' }))
})

const RequestOutput = Type.Object({
  name: Type.String(),
  parameters: Type.Optional(Parameters)
})

const InferenceRequestSchema = Type.Object(
  {
    id: Type.Optional(Type.String()),
    parameters: Type.Optional(Parameters),
    inputs: Type.Array(RequestInput, { minItems: 1 }),
    outputs: Type.Optional(Type.Array(RequestOutput))
  },
  {
    description:
      'JSON, or (binary tensor data extension) JSON followed by binary tensors with the Inference-Header-Content-Length header giving the JSON length; any content type. Output parameters: classification (k best as BYTES "value:index:label"), binary_data; request parameter binary_data_output.'
  }
)

const ResponseOutput = Type.Object({
  name: Type.String(),
  datatype: Type.String(),
  shape: Type.Array(Type.Integer()),
  parameters: Type.Optional(Parameters),
  data: Type.Optional(Type.Unknown())
})

const InferenceResponseSchema = Type.Object(
  {
    model_name: Type.String(),
    model_version: Type.String(),
    id: Type.Optional(Type.String()),
    outputs: Type.Array(ResponseOutput)
  },
  { description: 'JSON; application/octet-stream with the Inference-Header-Content-Length header when any output is binary.' }
)

const ModelName = Type.String({ minLength: 1, maxLength: 128 })
const ModelParams = Type.Object({ model: ModelName })
const VersionParams = Type.Object({ model: ModelName, version: Type.String({ minLength: 1, maxLength: 128 }) })

type ParametersT = Record<string, unknown>

interface RequestInputT {
  name: string
  shape: number[]
  datatype: string
  parameters?: ParametersT
  data?: unknown
}

interface InferenceRequestT {
  id?: string
  parameters?: ParametersT
  inputs: RequestInputT[]
  outputs?: Array<{ name: string; parameters?: ParametersT }>
}

interface ModelRouteParams {
  model: string
  version?: string
}

const NO_BINARY_DATA = Buffer.alloc(0)

function badRequest(detail: string): ServiceError {
  return new ServiceError('BAD_REQUEST', detail)
}

/** JSON `data`, flat or nested, appended to `out` in row-major order. */
function flattenInto(data: unknown, out: unknown[]): void {
  if (!Array.isArray(data)) {
    out.push(data)
    return
  }
  for (const element of data) flattenInto(element, out)
}

/** JSON `data` as its elements, row-major; FP32 and UINT8 data parsed in a worker come packed already (packJsonTensors). */
function flatJsonData(data: unknown): ArrayLike<unknown> {
  if (data instanceof Float32Array || data instanceof Uint8Array) return data
  if (Array.isArray(data) && !data.some(Array.isArray)) return data
  const flat: unknown[] = []
  flattenInto(data, flat)
  return flat
}

/** The elements a shape holds, or Infinity past `cap` (shapes are non-negative integers by the schema). */
function elementCount(shape: readonly number[], cap: number): number {
  let count = 1
  for (const dim of shape) {
    count *= dim
    if (count > cap) return Infinity
  }
  return count
}

/**
 * JSON `data` of one input → the core's TensorData (BYTES: base64 strings; others: numbers). The
 * element count is checked against the shape, and a BYTES input's against --max-batch-items (one
 * image an element), before any element is looked at: a million elements behind shape [1], or a
 * million behind a shape of a million, cost no million base64 decodes (the second took 1.4 s of
 * event loop).
 */
function jsonTensorData(input: RequestInputT, maxItems: number): TensorData {
  const values = flatJsonData(input.data)
  const expected = elementCount(input.shape, values.length)
  if (expected !== values.length) {
    throw badRequest(
      `Input "${echoed(input.name)}" has ${values.length} data elements; its shape ${describeShape(input.shape)} holds ${expected === Infinity ? 'more' : expected}.`
    )
  }
  if (input.datatype === 'BYTES') {
    checkItemCount(values.length, maxItems)
    const elements: Uint8Array[] = new Array(values.length)
    for (let i = 0; i < values.length; i++) {
      const value = values[i]
      if (typeof value !== 'string')
        throw badRequest(`Input "${echoed(input.name)}" element ${i}: a BYTES element in JSON is a base64 string.`)
      const bytes = decodeBase64Item(value)
      if (bytes instanceof ServiceError) throw bytes
      elements[i] = bytes
    }
    return { form: 'elements', values: elements }
  }
  // Before the elements: `bytes` with base64 strings was refused as "element 0 is not a number".
  checkDatatype(input.datatype)
  if (values instanceof Float32Array || values instanceof Uint8Array) return { form: 'numbers', values }
  for (let i = 0; i < values.length; i++) {
    if (typeof values[i] !== 'number') throw badRequest(`Input "${echoed(input.name)}" element ${i} is not a number.`)
  }
  return { form: 'numbers', values: values as ArrayLike<number> }
}

/** A raw binary request's one input: the whole body, its name, datatype and shape deduced by the core. */
function rawBinaryInput(body: Buffer): InferInput {
  return { name: 'raw_input', datatype: 'BYTES', shape: [1], data: { form: 'raw', bytes: body }, deduced: true }
}

function toInferRequest(body: InferenceRequestT, binary: Buffer, params: ModelRouteParams, raw: boolean, maxItems: number): InferRequest {
  if (raw)
    return { modelName: params.model, modelVersion: params.version, id: undefined, inputs: [rawBinaryInput(binary)], outputs: undefined }
  const slices = binaryInputSlices(
    body.inputs.map((input) => input.parameters?.[BINARY_DATA_SIZE]),
    binary
  )
  const inputs: InferInput[] = body.inputs.map((input, i) => {
    refuseSharedMemory(`Input "${echoed(input.name)}"`, input.parameters)
    const slice = slices[i]
    if (slice !== undefined && input.data !== undefined)
      throw badRequest(`Input "${echoed(input.name)}" has both JSON data and binary_data_size.`)
    if (slice === undefined && input.data === undefined)
      throw badRequest(`Input "${echoed(input.name)}" has neither JSON data nor binary_data_size.`)
    return {
      name: input.name,
      datatype: input.datatype,
      shape: input.shape,
      data: slice === undefined ? jsonTensorData(input, maxItems) : { form: 'raw', bytes: slice }
    }
  })
  return {
    modelName: params.model,
    modelVersion: params.version,
    id: body.id,
    parameters: body.parameters,
    inputs,
    outputs: body.outputs?.map((output) => {
      refuseSharedMemory(`Output "${echoed(output.name)}"`, output.parameters)
      const k = output.parameters?.classification
      return { name: output.name, classification: classificationCount(k) }
    })
  }
}

/** Whether each answered output goes binary: its own binary_data, else the request's binary_data_output. */
function binaryFlags(body: InferenceRequestT, response: InferResponse): boolean[] {
  const fallback = body.parameters?.binary_data_output === true
  return response.outputs.map((output) => {
    const own = body.outputs?.find((o) => o.name === output.name)?.parameters?.binary_data
    return own === undefined ? fallback : own === true
  })
}

function jsonOutput(output: InferOutput): Record<string, unknown> {
  return {
    name: output.name,
    datatype: output.datatype,
    shape: output.shape,
    data: output.datatype === 'FP32' ? Array.from(output.data) : output.data
  }
}

function sendInferResponse(reply: FastifyReply, body: InferenceRequestT, response: InferResponse): unknown {
  const head = {
    model_name: response.modelName,
    model_version: response.modelVersion,
    ...(response.id === undefined ? {} : { id: response.id })
  }
  const binary = binaryFlags(body, response)
  if (!binary.includes(true)) return { ...head, outputs: response.outputs.map(jsonOutput) }
  const chunks: Uint8Array[] = []
  const outputs = response.outputs.map((output, i) => {
    if (!binary[i]) return jsonOutput(output)
    const raw = rawOutputBytes(output)
    chunks.push(raw)
    return { name: output.name, datatype: output.datatype, shape: output.shape, parameters: { [BINARY_DATA_SIZE]: raw.byteLength } }
  })
  const { body: payload, headerLength } = binaryResponseBody({ ...head, outputs }, chunks)
  return reply.header('content-type', 'application/octet-stream').header(INFERENCE_HEADER_LENGTH, String(headerLength)).send(payload)
}

function withVersions(paths: string, summary: string): Array<{ url: string; summary: string; params: TSchema }> {
  return [
    { url: `/models/:model${paths}`, summary, params: ModelParams },
    { url: `/models/:model/versions/:version${paths}`, summary: `${summary} (a named version)`, params: VersionParams }
  ]
}

/**
 * A traced request's trace is written once its answer has been written, or its client has gone
 * (then without HTTP_SEND_END): a request answered for no one was still traced.
 */
function finishOnClose(reply: FastifyReply, trace: RequestTrace): void {
  const response = reply.raw
  const finish = (): void => {
    if (response.writableFinished) trace.stamp('HTTP_SEND_END')
    trace.finish()
  }
  if (response.destroyed) finish()
  else response.once('close', finish)
}

/** Room in a binary infer body for the JSON header around the tensors: names, shapes, parameters. */
const INFER_HEADER_BYTES = 64 * 1024

/** An infer body holds an encoded-image batch as JSON, or in binary any tensor batch the gRPC door takes. */
export function v2InferBodyLimit(service: ClassifyService, settings: Settings): number {
  return Math.max(jsonBatchBodyLimit(settings), tensorLimits(service, settings).payloadBytes + INFER_HEADER_BYTES)
}

/** Register with `{ prefix: '/v2' }`: the plugin's parsers and error handlers apply to /v2 only. */
export async function v2Routes(app: FastifyInstance, { service, settings, headerParser }: V2RouteOptions): Promise<void> {
  // Infer bodies may carry binary tensors after the JSON, under any content type: this plugin
  // reads every body as bytes and splits it itself, for its own routes only.
  const inferBodyLimit = v2InferBodyLimit(service, settings)
  app.removeAllContentTypeParsers()
  app.decorateRequest('inferenceBinaryData', null)
  app.decorateRequest('inferenceRawBinary', false)
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: inferBodyLimit }, (request, body, done) => {
    const bytes = body as Buffer
    const headerLength = request.headers[INFERENCE_HEADER_LENGTH]
    let split: ReturnType<typeof splitInferenceBody>
    try {
      split = splitInferenceBody(bytes, headerLength)
    } catch (err) {
      done(err as Error, undefined)
      return
    }
    const { end, binary, raw } = split
    request.inferenceBinaryData = binary
    request.inferenceRawBinary = raw
    if (raw) {
      done(null, structuredClone(RAW_REQUEST_HEADER))
      return
    }
    const withLength = headerLength !== undefined
    headerParser.parse(bytes, end, withLength).then(
      (header) => done(null, header),
      (err: unknown) => done(err as Error, undefined)
    )
  })

  app.setErrorHandler((err, request, reply) => {
    sendError(request, reply, err, v2ErrorBody)
  })
  // Unknown routes are refused by the admission hook before their body is read; this is the fallback.
  app.setNotFoundHandler(async (request) => {
    throw new ServiceError('ROUTE_NOT_FOUND', `No route ${request.method} for this path.`)
  })

  app.get('/', { schema: { summary: 'V2 server metadata', response: { 200: ServerMetadataSchema, ...V2_ERROR_RESPONSES } } }, async () =>
    serverMetadata()
  )
  app.get('/health/live', { schema: { summary: 'V2 liveness', response: { 200: Live } } }, async () => ({ live: true }))
  app.get(
    '/health/ready',
    { schema: { summary: 'V2 readiness: every loaded model serves', response: { 200: Ready, 400: Ready } } },
    async (_request, reply) => {
      const ready = service.ready
      return reply.code(ready ? 200 : 400).send({ ready })
    }
  )

  for (const { url, summary, params } of withVersions('', 'V2 model metadata')) {
    app.get(url, { schema: { summary, params, response: { 200: ModelMetadataSchema, ...V2_ERROR_RESPONSES } } }, async (request) => {
      const { model, version } = request.params as ModelRouteParams
      return modelMetadata(service, model, version)
    })
  }
  for (const { url, summary, params } of withVersions('/ready', 'V2 model readiness')) {
    app.get(
      url,
      { schema: { summary, params, response: { 200: ModelReady, 400: ModelReady, ...V2_ERROR_RESPONSES } } },
      async (request, reply) => {
        const { model, version } = request.params as ModelRouteParams
        const ready = isModelReady(service, model, version)
        return reply.code(ready ? 200 : 400).send({ name: model, ready })
      }
    )
  }
  for (const { url, summary, params } of withVersions('/infer', 'V2 inference')) {
    app.post(
      url,
      {
        bodyLimit: inferBodyLimit,
        config: { countRequests: 'request', bodyTypes: ['*'], inflatesBody: true },
        // tritonclient's request_compression_algorithm: gzip or deflate bodies, limited by their inflated size.
        preParsing: inflateRequestBody,
        schema: { summary, params, body: InferenceRequestSchema, response: { 200: InferenceResponseSchema, ...V2_ERROR_RESPONSES } }
      },
      async (request: FastifyRequest, reply: FastifyReply) => {
        const receivedAt = performance.now()
        const options = requestOptions(request, reply, undefined)
        const body = request.body as InferenceRequestT
        const inferRequest = toInferRequest(
          body,
          request.inferenceBinaryData ?? NO_BINARY_DATA,
          request.params as ModelRouteParams,
          request.inferenceRawBinary,
          settings.maxBatchItems
        )
        const response = await infer(service, inferRequest, options)
        request.log.info(
          {
            model: response.modelName,
            id: loggedId(response.id),
            items: inferRequest.inputs[0]?.shape[0],
            batchSize: response.batchSize,
            totalMs: Math.round(reply.elapsedTime * 10) / 10
          },
          'inferred'
        )
        const trace = response.trace
        if (trace !== undefined) {
          // fastify times the request from its arrival (reply.elapsedTime); the handler begins once the body is read.
          trace.stamp('HTTP_RECV_START', performance.now() - reply.elapsedTime)
          trace.stamp('HTTP_RECV_END', receivedAt)
          trace.stamp('HTTP_SEND_START')
          finishOnClose(reply, trace)
        }
        return sendInferResponse(reply, body, response)
      }
    )
  }
}
