import { setMaxListeners } from 'node:events'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Settings } from '../../config.js'
import type { ClassifyService, RequestOptions, ServedModel } from '../../core/classify-service.js'
import { ServiceError } from '../../errors.js'
import type { ServiceMetrics } from '../../metrics.js'
import { MULTIPART_TYPE } from '../admission.js'
import { toServiceError } from '../error-status.js'
import { multipartParts } from '../multipart-body.js'
import { ErrorBody, Prediction, SYNTHETIC_WARNING, Timings } from '../schemas.js'
import { requestOptions } from './classify.js'

/**
 * POST /v1/models/{model}:classify: many images in one request, answered in request order
 * (KServe V1 / TorchServe style `predictions`). Each image goes through the model's batcher like
 * any single request; a bad image gets an error object in its slot and the others are still
 * answered. The request as a whole is refused only when it cannot be read (too many images, too
 * large, malformed, unknown model, bad topk).
 */

/**
 * Matches `/v1/models/resnet50:classify`. find-my-way reads `::` as one literal colon, but only
 * after a parameter that ends in a regex: in `:model::classify` it takes the whole
 * `model::classify` as the parameter's name. The regex also keeps `/` and `:` out of model names,
 * and @fastify/swagger turns this path into `/v1/models/{model}:classify`.
 */
export const BATCH_ROUTE = '/v1/models/:model([^/:]+)::classify'

const DEFAULT_TOPK = 5
/** JSON around the base64 strings: `{"b64":""},` per item, plus the envelope. */
const JSON_BYTES_PER_ITEM = 64
const JSON_ENVELOPE_BYTES = 4096
/** Form fields a multipart batch may carry besides its files (none are read), and the bytes of each. */
const MULTIPART_FIELDS = 8
const MULTIPART_FIELD_BYTES = 1024
const FILE_FIELDS: ReadonlySet<string> = new Set(['image', 'images'])

const BatchParams = Type.Object({ model: Type.String({ minLength: 1, maxLength: 128, description: 'Model name' }) })

const BatchQuery = Type.Object(
  {
    topk: Type.Optional(Type.Integer({ minimum: 1, description: `Predictions per image, best first (default ${DEFAULT_TOPK}; a JSON body's topk wins)` })),
    deadline_ms: Type.Optional(Type.Integer({ minimum: 1, maximum: 3_600_000, description: 'Give up on images that have not run within this many ms' }))
  },
  { additionalProperties: false }
)

const JsonBatch = Type.Object(
  {
    instances: Type.Array(Type.Object({ b64: Type.String({ description: 'The encoded image (JPEG, PNG, …) in base64, standard or URL-safe alphabet' }) }, { additionalProperties: false }), {
      description: 'The images, answered in this order; at most --max-batch-items (default 64) of them.'
    }),
    topk: Type.Optional(Type.Integer({ minimum: 1, description: `Predictions per image, best first (default ${DEFAULT_TOPK})` }))
  },
  { additionalProperties: false }
)

// Documents the multipart form; the files are read from the stream, so request.body stays
// undefined and `nullable` lets the (null) body through validation.
const MultipartBatch = {
  type: 'object',
  nullable: true,
  description: 'Files in fields "image" or "images" (one file per part), answered in the order sent.',
  properties: { images: { type: 'array', items: { type: 'string', format: 'binary' } } }
} as const

const ItemAnswer = Type.Object(
  {
    predictions: Type.Array(Prediction),
    batchSize: Type.Integer({ description: 'How many images ran in the same model execution' }),
    timings: Timings
  },
  { additionalProperties: false }
)

const ItemError = Type.Object(
  { error: Type.Object({ code: ErrorBody.properties.code, message: Type.String() }) },
  { additionalProperties: false, description: 'This image could not be classified; the code is one of the registry (docs/operations.md).' }
)

const BatchAnswer = Type.Object({
  model: Type.String(),
  version: Type.String(),
  synthetic: Type.Boolean({ description: 'True when the weights are seeded random numbers: the labels mean nothing.' }),
  warning: Type.Optional(Type.String()),
  predictions: Type.Array(Type.Union([ItemAnswer, ItemError]), { description: 'One entry per image, in request order.' })
})

interface BatchQueryT {
  topk?: number
  deadline_ms?: number
}

interface JsonBatchT {
  instances: Array<{ b64: string }>
  topk?: number
}

type ItemAnswerT = { predictions: unknown[]; batchSize: number; timings: unknown } | { error: { code: string; message: string } }

/** Standard (+/) or URL-safe (-_) alphabet; padding, when present, completes the last quantum. */
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/

/** The image bytes of one base64 item, or the error that goes in its slot. */
export function decodeBase64Item(b64: string): Uint8Array | ServiceError {
  if (b64.length === 0) return new ServiceError('EMPTY_BODY')
  const padded = b64.endsWith('=')
  if (!BASE64.test(b64) || b64.length % 4 === 1 || (padded && b64.length % 4 !== 0)) return new ServiceError('INVALID_BASE64')
  return Buffer.from(b64, 'base64')
}

/** The largest JSON body that holds bodyLimitBytes of images in base64, plus the JSON around them. */
export function jsonBatchBodyLimit(settings: Settings): number {
  return Math.ceil(settings.bodyLimitBytes / 3) * 4 + settings.maxBatchItems * JSON_BYTES_PER_ITEM + JSON_ENVELOPE_BYTES
}

function tooMany(settings: Settings, count: number | string): ServiceError {
  return new ServiceError('TOO_MANY_ITEMS', `Got ${count}; the maximum is ${settings.maxBatchItems}.`)
}

/** The files of a multipart batch, in order: at most maxBatchItems, at most bodyLimitBytes together. */
async function readMultipartItems(request: FastifyRequest, settings: Settings): Promise<Uint8Array[]> {
  const items: Uint8Array[] = []
  let total = 0
  for await (const part of multipartParts(request)) {
    if (part.type !== 'file') continue
    if (!FILE_FIELDS.has(part.fieldname)) throw new ServiceError('BAD_MULTIPART', `Unexpected file field "${part.fieldname.slice(0, 64)}"; use "image" or "images".`)
    if (items.length === settings.maxBatchItems) throw tooMany(settings, 'more')
    const bytes = await part.toBuffer()
    total += bytes.byteLength
    if (total > settings.bodyLimitBytes) throw new ServiceError('BODY_TOO_LARGE', `The images together are over ${settings.bodyLimitBytes} bytes.`)
    items.push(bytes)
  }
  return items
}

/** The images of a JSON batch, each decoded or replaced by the error for its slot. */
function readJsonItems(body: JsonBatchT, settings: Settings): Array<Uint8Array | ServiceError> {
  if (body.instances.length > settings.maxBatchItems) throw tooMany(settings, body.instances.length)
  return body.instances.map((instance) => decodeBase64Item(instance.b64))
}

/** The validated JSON body; raw image bodies (accepted app-wide for /classify) are refused here. */
function jsonBody(request: FastifyRequest): JsonBatchT {
  const body = request.body
  if (body === undefined || body === null) throw new ServiceError('EMPTY_BODY')
  if (typeof body !== 'object' || body instanceof Uint8Array) {
    throw new ServiceError('UNSUPPORTED_MEDIA_TYPE', 'This route takes application/json or multipart/form-data.')
  }
  return body as JsonBatchT
}

function errorSlot(err: ServiceError): ItemAnswerT {
  return { error: { code: err.code, message: err.message } }
}

export function batchRoutes(app: FastifyInstance, service: ClassifyService, metrics: ServiceMetrics): void {
  const { settings } = service

  async function classifyItem(request: FastifyRequest, model: ServedModel, item: Uint8Array | ServiceError, topk: number, options: RequestOptions): Promise<ItemAnswerT> {
    const name = model.entry.name
    if (item instanceof ServiceError) {
      metrics.recordRequest(name, item.code)
      return errorSlot(item)
    }
    try {
      const result = await service.classify(name, item, topk, options)
      metrics.recordRequest(name, 'success')
      return { predictions: result.predictions, batchSize: result.batchSize, timings: result.timings }
    } catch (err) {
      const se = toServiceError(err)
      if (se.code === 'INTERNAL') request.log.error({ err }, 'batch item failed')
      metrics.recordRequest(name, se.code)
      return errorSlot(se)
    }
  }

  app.post(
    BATCH_ROUTE,
    {
      bodyLimit: jsonBatchBodyLimit(settings),
      config: {
        countRequests: 'items',
        bodyTypes: ['application/json', MULTIPART_TYPE],
        // One file more than allowed, so the handler (not the parser's generic limit error) names the excess.
        multipart: { files: settings.maxBatchItems + 1, fields: MULTIPART_FIELDS, fieldBytes: MULTIPART_FIELD_BYTES, fileBytes: settings.bodyLimitBytes }
      },
      schema: {
        summary: 'Classify many images in one request',
        description:
          'JSON `{"instances": [{"b64": "<base64 image>"}, …], "topk": 5}` or multipart/form-data with one file per part in fields "image" or "images". ' +
          'Answers come back in request order; an image that cannot be classified gets `{"error": {code, message}}` in its slot and the others are still answered. ' +
          'At most --max-batch-items images (TOO_MANY_ITEMS otherwise); together at most --body-limit-bytes (BODY_TOO_LARGE). Deadline: query deadline_ms or header x-deadline-ms.',
        params: BatchParams,
        querystring: BatchQuery,
        body: { content: { 'application/json': { schema: JsonBatch }, 'multipart/form-data': { schema: MultipartBatch } } },
        response: { 200: BatchAnswer, '4xx': ErrorBody, '5xx': ErrorBody }
      }
    },
    async (request, reply) => {
      const { model: modelName } = request.params as { model: string }
      const query = request.query as BatchQueryT
      const model = service.model(modelName)
      const options = requestOptions(request, reply, query.deadline_ms)
      let items: Array<Uint8Array | ServiceError>
      let topk = query.topk ?? DEFAULT_TOPK
      if (request.isMultipart()) {
        items = await readMultipartItems(request, settings)
      } else {
        const body = jsonBody(request)
        items = readJsonItems(body, settings)
        topk = body.topk ?? topk
      }
      if (items.length === 0) throw new ServiceError('EMPTY_BODY', 'The batch holds no images.')
      service.checkTopk(model, topk)
      // Every queued image listens on the one abort signal; more than Node's default 10 is expected here.
      if (options.signal !== undefined) setMaxListeners(items.length + 10, options.signal)

      const answers = await Promise.all(items.map((item) => classifyItem(request, model, item, topk, options)))
      let failed = 0
      for (const answer of answers) if ('error' in answer) failed++
      request.log.info({ model: model.entry.name, items: items.length, failed }, 'classified batch')
      return {
        model: model.info.name,
        version: model.info.version,
        synthetic: model.info.synthetic,
        ...(model.info.synthetic ? { warning: SYNTHETIC_WARNING } : {}),
        predictions: answers
      }
    }
  )
}
