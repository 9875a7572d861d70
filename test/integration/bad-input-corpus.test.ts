import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ERRORS } from '../../src/errors.js'
import { badInputCorpus, CORPUS_SERVER_FLAGS, type BadInput } from '../fixtures/bad-inputs.js'
import { syntheticModelRepository } from '../helpers/models.js'
import { readPhoto } from '../helpers/photos.js'
import { startTestServer, type TestServer } from '../helpers/server.js'

/**
 * Every case of the hostile-input corpus (test/fixtures/bad-inputs.ts) gets its documented status
 * and code, and the same server then classifies a good photo as it did before. (Ten thousand of
 * them against a server process: test/stress/bad-input-soak.test.ts.)
 */

interface ErrorAnswer {
  statusCode?: number
  code?: string
  message?: string
  predictions?: Array<{ index: number; probability: number } | { error: { code: string } }>
}

const corpus = await badInputCorpus()
let server: TestServer
let goodPhoto: Buffer
let goodAnswerBefore: unknown

async function send(request: BadInput['request']): Promise<{ status: number; body: ErrorAnswer }> {
  const res = await fetch(`${server.url}${request.path}`, { method: request.method, headers: request.headers, body: request.body })
  return { status: res.status, body: (await res.json()) as ErrorAnswer }
}

async function classify(image: Buffer): Promise<unknown> {
  const res = await fetch(`${server.url}/classify`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream' },
    body: image
  })
  expect(res.status).toBe(200)
  return ((await res.json()) as ErrorAnswer).predictions
}

beforeAll(async () => {
  server = await startTestServer(await syntheticModelRepository(), [...CORPUS_SERVER_FLAGS])
  goodPhoto = await readPhoto('chelsea')
  goodAnswerBefore = await classify(goodPhoto)
})
afterAll(async () => {
  await server?.close()
})

describe('the bad-input corpus', () => {
  it('has at least 30 cases, each named once', () => {
    expect(corpus.length).toBeGreaterThanOrEqual(30)
    expect(new Set(corpus.map((c) => c.name)).size).toBe(corpus.length)
  })

  for (const c of corpus) {
    const { expected } = c
    const what = expected.code ?? ('itemCode' in expected ? `200, item ${expected.itemCode}` : 'accepted')
    it(`${c.name} → ${expected.status} ${what}`, async () => {
      const { status, body } = await send(c.request)
      expect(status).toBe(expected.status)
      if (expected.code !== undefined) {
        expect(body.code).toBe(expected.code)
        expect(body.statusCode).toBe(expected.status)
        expect(body.message?.startsWith(ERRORS[expected.code].message)).toBe(true)
      } else if ('itemCode' in expected) {
        expect(body.predictions).toHaveLength(1)
        expect(body.predictions![0]).toEqual({ error: { code: expected.itemCode, message: expect.any(String) } })
      } else {
        expect(body.predictions).toHaveLength(5)
        if ('sameAnswerAs' in expected && expected.sameAnswerAs !== undefined)
          expect(body.predictions).toEqual(await classify(expected.sameAnswerAs))
      }
      // Whatever went wrong, the answer names no file, module or stack frame.
      expect(JSON.stringify(body)).not.toMatch(/\/work\/|\/tmp\/|node_modules|\.ts:\d+|\.js:\d+|\bat \S+ \(/)
    })
  }

  it('then still classifies a good photo exactly as before', async () => {
    expect(await classify(goodPhoto)).toEqual(goodAnswerBefore)
    const ready = await fetch(`${server.url}/health/ready`)
    expect(ready.status).toBe(200)
  })
})
