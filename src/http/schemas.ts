import { Type } from '@sinclair/typebox'
import { ERRORS } from '../errors.js'

/** Response and request schemas shared by the HTTP routes (fastify validates and serialises them). */

export const ErrorBody = Type.Object(
  {
    statusCode: Type.Integer(),
    code: Type.Union(Object.keys(ERRORS).map((c) => Type.Literal(c))),
    error: Type.String({ description: 'HTTP reason phrase' }),
    message: Type.String()
  },
  { $id: 'ErrorBody', description: 'Every error: a stable code (see docs/operations.md) and a message.' }
)

export const Prediction = Type.Object({
  index: Type.Integer({ description: 'Class index in the model output' }),
  label: Type.String(),
  probability: Type.Number()
})

export const Timings = Type.Object({
  queueMs: Type.Number(),
  preprocessMs: Type.Number(),
  inferenceMs: Type.Number(),
  postprocessMs: Type.Number(),
  totalMs: Type.Number()
})

export const Classification = Type.Object({
  model: Type.String(),
  version: Type.String(),
  synthetic: Type.Boolean({ description: 'True when the weights are seeded random numbers: the labels mean nothing.' }),
  warning: Type.Optional(Type.String()),
  predictions: Type.Array(Prediction),
  batchSize: Type.Integer({ description: 'How many images ran in the same model execution' }),
  timings: Timings
})

export const SYNTHETIC_WARNING =
  'This model has synthetic (seeded random) weights: the predictions are not meaningful. Serve a trained model (see README).'

/** The Open Inference Protocol's error body, on every /v2 route: `{ error: "<CODE>: <message>" }` (v2ErrorBody). */
const V2Error = Type.Object(
  { error: Type.String({ description: '"<CODE>: <message>"; the codes are listed in docs/operations.md' }) },
  { description: 'Open Inference Protocol error' }
)

/** The error responses of a /v2 route's schema. */
export const V2_ERROR_RESPONSES = { '4xx': V2Error, '5xx': V2Error } as const
