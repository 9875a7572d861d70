import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { syntheticModelRepository } from '../helpers/models.js'
import { startTestServer, type TestServer } from '../helpers/server.js'

/** The OpenAPI document is generated from the route schemas; every route must be in it, fully described. */

interface Operation {
  parameters?: Array<{ in: string; name: string }>
  requestBody?: { content: Record<string, unknown> }
  responses: Record<string, { content?: Record<string, { schema?: unknown }> }>
}
interface OpenApiDocument {
  openapi: string
  info: { title: string; version: string }
  paths: Record<string, Record<string, Operation>>
}

let server: TestServer
let doc: OpenApiDocument

beforeAll(async () => {
  server = await startTestServer(await syntheticModelRepository())
  const res = await fetch(`${server.url}/docs/json`)
  expect(res.status).toBe(200)
  doc = (await res.json()) as OpenApiDocument
})
afterAll(async () => {
  await server?.close()
})

describe('OpenAPI at /docs/json and Swagger UI at /docs', () => {
  it('is an OpenAPI 3 document listing the inference, health and metrics routes', () => {
    expect(doc.openapi).toMatch(/^3\./)
    expect(doc.info.title).toBe('resnet-serve')
    for (const path of ['/classify', '/v1/models/{model}:classify', '/health/ready', '/health/live', '/metrics']) {
      expect(Object.keys(doc.paths), path).toContain(path)
    }
  })

  it('describes the batch route: model path parameter, JSON and multipart bodies, answer and error schemas', () => {
    const batch = doc.paths['/v1/models/{model}:classify']?.post
    expect(batch).toBeDefined()
    expect(batch!.parameters).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ in: 'path', name: 'model' }),
        expect.objectContaining({ in: 'query', name: 'topk' })
      ])
    )
    expect(Object.keys(batch!.requestBody!.content).sort()).toEqual(['application/json', 'multipart/form-data'])
    expect(Object.keys(batch!.responses)).toEqual(expect.arrayContaining(['200', '4XX', '5XX']))
  })

  it('gives every operation a documented success response', () => {
    const operations = Object.entries(doc.paths).flatMap(([path, methods]) =>
      Object.entries(methods).map(([method, op]) => ({ where: `${method.toUpperCase()} ${path}`, op }))
    )
    expect(operations.length).toBeGreaterThanOrEqual(5)
    for (const { where, op } of operations) {
      const success = Object.entries(op.responses).find(([status]) => status.startsWith('2'))
      expect(success, where).toBeDefined()
      expect(
        Object.values(success![1].content ?? {}).some((c) => c.schema !== undefined),
        where
      ).toBe(true)
    }
  })

  it('serves the Swagger UI as HTML', async () => {
    const res = await fetch(`${server.url}/docs`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^text\/html/)
    expect(await res.text()).toMatch(/swagger/i)
  })
})
