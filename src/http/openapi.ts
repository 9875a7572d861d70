import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifyInstance } from 'fastify'

/**
 * OpenAPI 3 built from the route schemas (habit 5: every route declares them), served as JSON at
 * /docs/json and as Swagger UI at /docs.
 *
 * Register before any route: @fastify/swagger learns routes through an onRoute hook, so routes
 * added before it are missing from the document.
 */

export const DOCS_PREFIX = '/docs'

/** The version in the project's package.json, found upward from this module (src/ or dist/src/). */
function packageVersion(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); dir !== dirname(dir); dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string }
      if (pkg.name === 'resnet-serve' && pkg.version !== undefined) return pkg.version
    } catch {
      // No package.json at this level: keep walking up.
    }
  }
  return '0.0.0'
}

export async function registerOpenApi(app: FastifyInstance): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'resnet-serve',
        description: 'ResNet image classification: single images, batches, and KServe V2. Error codes: docs/operations.md.',
        version: packageVersion()
      }
    }
  })
  await app.register(swaggerUi, { routePrefix: DOCS_PREFIX })
}
