import { readFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ErrorCode } from '../../src/errors.js'
import { jsonBatchBodyLimit } from '../../src/http/request-input.js'
import { photoPaths } from '../helpers/photos.js'
import { syntheticModelRepository } from '../helpers/models.js'
import { startTestServer, type TestServer } from '../helpers/server.js'

/** POST /v1/models/{model}:classify on a real server (port 0), synthetic ResNet-50, real photos. */

interface Prediction {
  index: number
  label: string
  probability: number
}
type Item =
  { predictions: Prediction[]; batchSize: number; timings: Record<string, number> } | { error: { code: ErrorCode; message: string } }
interface BatchAnswer {
  model: string
  version: string
  synthetic: boolean
  warning?: string
  predictions: Item[]
}
interface ErrorAnswer {
  statusCode: number
  code: ErrorCode
  message: string
}

const MAX_ITEMS = 8

let server: TestServer
let photos: Buffer[]
/** /classify's answer for each photo, the reference every batch answer must equal. */
let alone: Prediction[][]

beforeAll(async () => {
  server = await startTestServer(await syntheticModelRepository(), ['--max-batch-items', String(MAX_ITEMS)])
  photos = await Promise.all(
    photoPaths()
      .slice(0, 4)
      .map((p) => readFile(p))
  )
  expect(photos).toHaveLength(4)
  alone = []
  for (const photo of photos) {
    const res = await fetch(`${server.url}/classify?topk=5`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: photo })
    expect(res.status).toBe(200)
    alone.push(((await res.json()) as { predictions: Prediction[] }).predictions)
  }
  // The comparisons below prove nothing if every photo gets the same answer.
  expect(new Set(alone.map((p) => p.map((x) => x.index).join())).size).toBeGreaterThan(1)
})
afterAll(async () => {
  await server?.close()
})

async function postJson(body: unknown, model = 'resnet50', query = ''): Promise<{ status: number; body: BatchAnswer & ErrorAnswer }> {
  const res = await fetch(`${server.url}/v1/models/${model}:classify${query}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body)
  })
  return { status: res.status, body: (await res.json()) as BatchAnswer & ErrorAnswer }
}

async function postForm(form: FormData, query = ''): Promise<{ status: number; body: BatchAnswer & ErrorAnswer }> {
  const res = await fetch(`${server.url}/v1/models/resnet50:classify${query}`, { method: 'POST', body: form })
  return { status: res.status, body: (await res.json()) as BatchAnswer & ErrorAnswer }
}

/** One multipart part with these header lines, written by hand (FormData always names its parts). */
async function postRawMultipart(headerLines: string, content: Uint8Array): Promise<{ status: number; body: BatchAnswer & ErrorAnswer }> {
  const body = Buffer.concat([Buffer.from(`--xyz\r\n${headerLines}\r\n\r\n`), content, Buffer.from('\r\n--xyz--\r\n')])
  const res = await fetch(`${server.url}/v1/models/resnet50:classify`, {
    method: 'POST',
    headers: { 'content-type': 'multipart/form-data; boundary=xyz' },
    body
  })
  return { status: res.status, body: (await res.json()) as BatchAnswer & ErrorAnswer }
}

function expectSameAsAlone(item: Item | undefined, photoIndex: number): void {
  expect(item).toBeDefined()
  if (item === undefined || 'error' in item) throw new Error(`expected predictions, got ${JSON.stringify(item)}`)
  const ref = alone[photoIndex]!
  expect(item.predictions.map((p) => p.index)).toEqual(ref.map((p) => p.index))
  item.predictions.forEach((p, j) => expect(Math.abs(p.probability - ref[j]!.probability)).toBeLessThan(1e-5))
  expect(item.batchSize).toBeGreaterThanOrEqual(1)
  expect(item.timings.totalMs).toBeGreaterThanOrEqual(0)
}

function expectError(item: Item | undefined, code: ErrorCode): void {
  expect(item).toEqual({ error: { code, message: expect.any(String) } })
}

const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64')

describe('POST /v1/models/{model}:classify', () => {
  it('answers JSON items in request order; bad items get their own code, good ones equal /classify', async () => {
    const instances = [
      { b64: b64(photos[0]!) },
      { b64: '@@@ this is not base64 @@@' },
      { b64: b64(photos[1]!) },
      { b64: b64(photos[2]!) },
      { b64: b64(Buffer.from('hello, this is text and not an image at all')) },
      { b64: b64(photos[3]!) }
    ]
    const { status, body } = await postJson({ instances, topk: 5 })
    expect(status).toBe(200)
    expect(body.model).toBe('resnet50')
    expect(body.synthetic).toBe(true)
    expect(body.warning).toMatch(/synthetic/)
    expect(body.predictions).toHaveLength(6)
    expectSameAsAlone(body.predictions[0], 0)
    expectError(body.predictions[1], 'INVALID_BASE64')
    expectSameAsAlone(body.predictions[2], 1)
    expectSameAsAlone(body.predictions[3], 2)
    expectError(body.predictions[4], 'NOT_AN_IMAGE')
    expectSameAsAlone(body.predictions[5], 3)
  })

  it('gives a truncated image and an empty item their codes, and reads URL-safe base64 and query topk', async () => {
    const urlSafe = Buffer.from(photos[0]!).toString('base64url')
    const { status, body } = await postJson(
      { instances: [{ b64: b64(photos[1]!.subarray(0, photos[1]!.length >> 1)) }, { b64: '' }, { b64: urlSafe }] },
      'resnet50',
      '?topk=3'
    )
    expect(status).toBe(200)
    expectError(body.predictions[0], 'CORRUPT_IMAGE')
    expectError(body.predictions[1], 'EMPTY_BODY')
    const last = body.predictions[2]!
    if ('error' in last) throw new Error(JSON.stringify(last))
    expect(last.predictions.map((p) => p.index)).toEqual(alone[0]!.slice(0, 3).map((p) => p.index))
  })

  it('answers multipart files ("image" and "images" fields) in the order sent', async () => {
    const form = new FormData()
    form.append('images', new Blob([photos[2]!], { type: 'image/jpeg' }), 'c.jpg')
    form.append('image', new Blob([photos[0]!], { type: 'image/jpeg' }), 'a.jpg')
    form.append('images', new Blob([photos[3]!], { type: 'image/jpeg' }), 'd.jpg')
    const { status, body } = await postForm(form)
    expect(status).toBe(200)
    expect(body.predictions).toHaveLength(3)
    expectSameAsAlone(body.predictions[0], 2)
    expectSameAsAlone(body.predictions[1], 0)
    expectSameAsAlone(body.predictions[2], 3)
  })

  it('refuses more than --max-batch-items images with TOO_MANY_ITEMS, as JSON and as multipart', async () => {
    const json = await postJson({ instances: Array.from({ length: MAX_ITEMS + 1 }, () => ({ b64: b64(photos[0]!) })) })
    expect(json.status).toBe(400)
    expect(json.body.code).toBe('TOO_MANY_ITEMS')
    const form = new FormData()
    for (let i = 0; i <= MAX_ITEMS; i++) form.append('images', new Blob([photos[i % 4]!], { type: 'image/jpeg' }), `${i}.jpg`)
    const multipart = await postForm(form)
    expect(multipart.status).toBe(400)
    expect(multipart.body.code).toBe('TOO_MANY_ITEMS')
  })

  it('refuses an empty batch, an unknown model, a bad topk, a malformed body and an oversized one', async () => {
    const cases: Array<[Promise<{ status: number; body: ErrorAnswer }>, number, ErrorCode]> = [
      [postJson({ instances: [] }), 400, 'EMPTY_BODY'],
      [postForm(new FormData()), 400, 'EMPTY_BODY'],
      [postJson({ instances: [{ b64: b64(photos[0]!) }] }, 'resnet9000'), 404, 'MODEL_NOT_FOUND'],
      [postJson({ instances: [{ b64: b64(photos[0]!) }], topk: 5000 }), 400, 'INVALID_TOPK'],
      [postJson({ instances: [{ image: 'x' }] }), 400, 'BAD_REQUEST'],
      [postJson('{"instances": [', 'resnet50'), 400, 'BAD_REQUEST'],
      [postJson({ instances: [{ b64: 'A'.repeat(jsonBatchBodyLimit(server.settings)) }] }), 413, 'BODY_TOO_LARGE'],
      // Regression (attacker review): a file part with a filename and no name was a 500.
      [postRawMultipart('Content-Disposition: form-data; filename="a.jpg"\r\nContent-Type: image/jpeg', photos[0]!), 400, 'BAD_MULTIPART'],
      // Regression (attacker review): a part without a form-data disposition, past 16 KiB, hung the request for good.
      [postRawMultipart('Content-Type: image/jpeg', Buffer.alloc(100_000, 0x61)), 400, 'BAD_MULTIPART']
    ]
    for (const [answer, status, code] of cases) {
      const { status: got, body } = await answer
      expect({ got, code: body.code }).toEqual({ got: status, code })
    }
  })

  it('runs the items of one request together through the batcher', async () => {
    const instances = Array.from({ length: MAX_ITEMS }, (_, i) => ({ b64: b64(photos[i % 4]!) }))
    const { status, body } = await postJson({ instances })
    expect(status).toBe(200)
    const sizes = body.predictions.map((p) => ('error' in p ? 0 : p.batchSize))
    expect(Math.max(...sizes)).toBeGreaterThan(1)
    body.predictions.forEach((item, i) => expectSameAsAlone(item, i % 4))
  })
})
