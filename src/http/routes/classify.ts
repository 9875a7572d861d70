import { Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { ClassifyService } from '../../core/classify-service.js'
import { ServiceError } from '../../errors.js'
import { MULTIPART_TYPE } from '../admission.js'
import { TOLERATED_FIELDS, multipartParts, partBytes } from '../multipart-body.js'
import { DEFAULT_TOPK, MAX_DEADLINE_MS, multipartTopk, requestOptions } from '../request-input.js'
import { Classification, ErrorBody, SYNTHETIC_WARNING } from '../schemas.js'

/** POST /classify: one image, as multipart field "image" or as a raw image/* body. */

const ClassifyQuery = Type.Object(
  {
    model: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'Model name (default: the server default)' })),
    topk: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: `How many predictions, best first (default ${DEFAULT_TOPK}; wins over a multipart topk field)`
      })
    ),
    deadline_ms: Type.Optional(
      Type.Integer({ minimum: 1, maximum: MAX_DEADLINE_MS, description: 'Give up if the image has not run within this many ms' })
    )
  },
  { additionalProperties: false }
)

interface ClassifyQueryT {
  model?: string
  topk?: number
  deadline_ms?: number
}

/** The image, and the topk text field when a multipart form sent one. */
interface ImageInput {
  image: Uint8Array
  topkField?: string
}

async function readImage(request: FastifyRequest): Promise<ImageInput> {
  if (!request.isMultipart()) {
    const body = request.body
    if (body === undefined || body === null || (body instanceof Uint8Array && body.byteLength === 0)) throw new ServiceError('EMPTY_BODY')
    // Only the raw-image parsers yield bytes; the admission hook refuses every other content type.
    if (!(body instanceof Uint8Array)) throw new ServiceError('UNSUPPORTED_MEDIA_TYPE')
    return { image: body }
  }
  let image: Buffer | undefined
  let topkField: string | undefined
  for await (const part of multipartParts(request)) {
    if (part.type !== 'file') {
      if (part.fieldname === 'topk') topkField = String(part.value)
      continue
    }
    if (part.fieldname !== 'image') {
      throw new ServiceError(
        'BAD_MULTIPART',
        `Unexpected file field "${part.fieldname.slice(0, 64)}"; send the image in the "image" field (curl -F image=@photo.jpg).`
      )
    }
    if (image !== undefined) throw new ServiceError('BAD_MULTIPART', 'Only one file may be sent.')
    image = await partBytes(part, request)
  }
  if (image === undefined) throw new ServiceError('BAD_MULTIPART', 'No file in the "image" field.')
  if (image.byteLength === 0) throw new ServiceError('EMPTY_BODY')
  return topkField === undefined ? { image } : { image, topkField }
}

export function classifyRoutes(app: FastifyInstance, service: ClassifyService): void {
  app.post(
    '/classify',
    {
      config: {
        countRequests: 'request',
        bodyTypes: ['image/*', 'application/octet-stream', MULTIPART_TYPE],
        bodyExample: "-F image=@photo.jpg, or --data-binary @photo.jpg -H 'content-type: image/jpeg'",
        multipart: { files: 1, ...TOLERATED_FIELDS, fileBytes: service.settings.bodyLimitBytes }
      },
      schema: {
        summary: 'Classify one image',
        description:
          'Send the image as multipart/form-data (field "image", optionally a text field topk) or as the raw body with an image/* content type. Deadline: query deadline_ms or header x-deadline-ms.',
        querystring: ClassifyQuery,
        response: { 200: Classification, '4xx': ErrorBody, '5xx': ErrorBody }
      }
    },
    async (request, reply) => {
      const query = request.query as ClassifyQueryT
      const options = requestOptions(request, reply, query.deadline_ms)
      const { image, topkField } = await readImage(request)
      const topk = query.topk ?? multipartTopk(topkField, service.settings.maxTopk)
      const result = await service.classify(query.model, image, topk, options)
      // A client that hung up while its batch ran is counted CLIENT_CLOSED (request-counting.ts).
      if (options.signal?.aborted === true) {
        request.log.info(
          { model: result.name, code: 'CLIENT_CLOSED', timings: result.timings },
          'classified for a client that had gone: answer dropped'
        )
      } else request.log.info({ model: result.name, batchSize: result.batchSize, timings: result.timings }, 'classified')
      return {
        model: result.name,
        version: result.version,
        synthetic: result.synthetic,
        ...(result.synthetic ? { warning: SYNTHETIC_WARNING } : {}),
        predictions: result.predictions,
        batchSize: result.batchSize,
        timings: result.timings
      }
    }
  )
}
