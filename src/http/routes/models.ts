import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import type { ClassifyService, ModelInfo } from '../../core/classify-service.js'
import { ServiceError } from '../../errors.js'

/** GET /models: the models this server knows, for clients (the demo page's select) that let a person choose. */

const ModelListing = Type.Object(
  {
    models: Type.Array(
      Type.Object({
        name: Type.String(),
        version: Type.Optional(Type.String({ description: 'Absent when the model failed to load' })),
        synthetic: Type.Optional(
          Type.Boolean({
            description: 'True when the weights are seeded random numbers: the labels mean nothing. Absent when the model failed to load.'
          })
        ),
        ready: Type.Boolean({ description: 'Loaded, warmed up, and the server is not shutting down' }),
        default: Type.Boolean({ description: 'Used by /classify when the request names no model' })
      })
    )
  },
  { description: 'Every model folder the server loaded or (under --allow-partial-start) failed to load, by name.' }
)

/** The model's name, version and weights kind; undefined for a model that failed to load. */
function loadedModelInfo(service: ClassifyService, name: string): ModelInfo | undefined {
  try {
    return service.model(name).info
  } catch (err) {
    if (err instanceof ServiceError) return undefined
    throw err
  }
}

export function modelsRoutes(app: FastifyInstance, service: ClassifyService): void {
  app.get('/models', { schema: { summary: 'List the models', response: { 200: ModelListing } } }, async () => ({
    models: service.modelNames().map((name) => {
      const info = loadedModelInfo(service, name)
      return {
        name,
        ...(info === undefined ? {} : { version: info.version, synthetic: info.synthetic }),
        ready: service.isModelReady(name),
        default: name === service.defaultModel
      }
    })
  }))
}
