import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifyInstance } from 'fastify'
import { PACKAGE_NAME, PACKAGE_VERSION } from '../package-version.js'

/**
 * OpenAPI 3 built from the route schemas (every route declares them), served as JSON at
 * /docs/json and as Swagger UI at /docs.
 *
 * Register before any route: @fastify/swagger learns routes through an onRoute hook, so routes
 * added before it are missing from the document.
 */

export const DOCS_PREFIX = '/docs'

export async function registerOpenApi(app: FastifyInstance): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: PACKAGE_NAME,
        description: 'ResNet image classification: single images, batches, and KServe V2. Error codes: docs/operations.md.',
        version: PACKAGE_VERSION
      }
    }
  })
  await app.register(swaggerUi, { routePrefix: DOCS_PREFIX })
}
