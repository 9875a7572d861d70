import { Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Settings } from '../../config.js'
import { classifyBatch } from '../../core/classify-batch.js'
import type { Classification, ClassifyService } from '../../core/classify-service.js'
import { ServiceError } from '../../errors.js'
import type { ServiceMetrics } from '../../metrics.js'
import { MULTIPART_TYPE } from '../admission.js'
import { TOLERATED_FIELDS, multipartParts, partBytes } from '../multipart-body.js'
import { DEFAULT_TOPK, decodeBase64Item, jsonBatchBodyLimit, MAX_DEADLINE_MS, multipartTopk, requestOptions } from '../request-input.js'
import { ErrorBody, Prediction, SYNTHETIC_WARNING, Timings } from '../schemas.js'

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

const FILE_FIELDS: ReadonlySet<string> = new Set(['image', 'images'])

const BatchParams = Type.Object({ model: Type.String({ minLength: 1, maxLength: 128, description: 'Model name' }) })

const BatchQuery = Type.Object(
  {
    topk: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: `Predictions per image, best first (default ${DEFAULT_TOPK}; a JSON body's topk or a multipart topk field wins)`
      })
    ),
    deadline_ms: Type.Optional(
      Type.Integer({ minimum: 1, maximum: MAX_DEADLINE_MS, description: 'Give up on images that have not run within this many ms' })
    )
  },
  { additionalProperties: false }
)

const JsonBatch = Type.Object(
  {
    instances: Type.Array(
      Type.Object(
        { b64: Type.String({ description: 'The encoded image (JPEG, PNG, …) in base64, standard or URL-safe alphabet' }) },
        { additionalProperties: false }
      ),
      {
        description: 'The images, answered in this order; at most --max-batch-items (default 64) of them.'
      }
    ),
    topk: Type.Optional(Type.Integer({ minimum: 1, description: `Predictions per image, best first (default ${DEFAULT_TOPK})` }))
  },
  { additionalProperties: false }
)

// Documents the multipart form; the files are read from the stream, so request.body stays
// undefined and `nullable` lets the (null) body through validation.
const MultipartBatch = {
  type: 'object',
  nullable: true,
  description: 'Files in fields "image" or "images" (one file per part), answered in the order sent; optionally a text field topk.',
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

function tooMany(settings: Settings, count: number | string): ServiceError {
  return new ServiceError('TOO_MANY_ITEMS', `Got ${count}; the maximum is ${settings.maxBatchItems}.`)
}

/**
 * The files of a multipart batch, in order: at most maxBatchItems, at most bodyLimitBytes
 * together; and its topk text field, when it has one.
 */
async function readMultipartItems(request: FastifyRequest, settings: Settings): Promise<{ items: Uint8Array[]; topkField?: string }> {
  const items: Uint8Array[] = []
  let topkField: string | undefined
  let total = 0
  for await (const part of multipartParts(request)) {
    if (part.type !== 'file') {
      if (part.fieldname === 'topk') topkField = String(part.value)
      continue
    }
    if (!FILE_FIELDS.has(part.fieldname))
      throw new ServiceError('BAD_MULTIPART', `Unexpected file field "${part.fieldname.slice(0, 64)}"; use "image" or "images".`)
    if (items.length === settings.maxBatchItems) throw tooMany(settings, 'more')
    const bytes = await partBytes(part, request)
    total += bytes.byteLength
    if (total > settings.bodyLimitBytes)
      throw new ServiceError('BODY_TOO_LARGE', `The images together are over ${settings.bodyLimitBytes} bytes.`)
    items.push(bytes)
  }
  return topkField === undefined ? { items } : { items, topkField }
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

/** One image's slot in the answer: its classification, or the error that stopped it. */
function itemAnswer(outcome: Classification | ServiceError): ItemAnswerT {
  if (outcome instanceof ServiceError) return { error: { code: outcome.code, message: outcome.message } }
  return { predictions: outcome.predictions, batchSize: outcome.batchSize, timings: outcome.timings }
}

export function batchRoutes(app: FastifyInstance, service: ClassifyService, metrics: ServiceMetrics): void {
  const { settings } = service

  app.post(
    BATCH_ROUTE,
    {
      bodyLimit: jsonBatchBodyLimit(settings),
      config: {
        countRequests: 'items',
        bodyTypes: ['application/json', MULTIPART_TYPE],
        bodyExample: `-F images=@a.jpg -F images=@b.jpg, or -H 'content-type: application/json' -d '{"instances": [{"b64": "<base64 of the image>"}]}'`,
        // One file more than allowed, so the handler (not the parser's generic limit error) names the excess.
        multipart: { files: settings.maxBatchItems + 1, ...TOLERATED_FIELDS, fileBytes: settings.bodyLimitBytes }
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
      let topk = query.topk
      if (request.isMultipart()) {
        const form = await readMultipartItems(request, settings)
        items = form.items
        topk = multipartTopk(form.topkField, settings.maxTopk) ?? topk
      } else {
        const body = jsonBody(request)
        items = readJsonItems(body, settings)
        topk = body.topk ?? topk
      }
      const outcomes = await classifyBatch(service, model, items, topk, options)
      // Each image counts as a request of its own, as it would have on /classify, that took the batch's
      // time; when the client hung up while they ran, the answer reaches no one: each is CLIENT_CLOSED.
      let failed = 0
      const elapsedMs = reply.elapsedTime
      const gone = options.signal?.aborted === true ? new ServiceError('CLIENT_CLOSED') : undefined
      for (const outcome of outcomes) {
        metrics.recordRequest(model.entry.name, outcome instanceof ServiceError ? outcome : (gone ?? 'success'), elapsedMs)
        if (!(outcome instanceof ServiceError)) continue
        failed++
        if (outcome.code === 'INTERNAL') request.log.error({ err: outcome.cause ?? outcome }, 'batch item failed')
      }
      request.log.info(
        { model: model.entry.name, items: items.length, failed, totalMs: Math.round(elapsedMs * 10) / 10 },
        'classified batch'
      )
      return {
        model: model.info.name,
        version: model.info.version,
        synthetic: model.info.synthetic,
        ...(model.info.synthetic ? { warning: SYNTHETIC_WARNING } : {}),
        predictions: outcomes.map(itemAnswer)
      }
    }
  )
}
