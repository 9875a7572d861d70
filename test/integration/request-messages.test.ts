import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readPhoto } from '../helpers/photos.js'
import { syntheticModelRepository } from '../helpers/models.js'
import { startTestServer, type TestServer } from '../helpers/server.js'

/**
 * The refusals a newcomer meets first say what was wrong and what to send instead. Regressions:
 * topk=0 said "the configured maximum" without the number; curl's default form type got a 415
 * that named neither the type nor the fix; the batch endpoint's wrong-field answer spoke of
 * "exactly one file"; a multipart topk field was ignored.
 */

const MAX_TOPK = 7
let server: TestServer
let photo: Buffer

beforeAll(async () => {
  server = await startTestServer(await syntheticModelRepository(), ['--max-topk', String(MAX_TOPK)])
  photo = await readPhoto('chelsea')
})
afterAll(async () => {
  await server?.close()
})

interface Answer {
  status: number
  body: { code?: string; message?: string; predictions?: Array<{ predictions?: unknown[] }> }
}

async function post(path: string, init: RequestInit): Promise<Answer> {
  const res = await fetch(`${server.url}${path}`, { method: 'POST', ...init })
  return { status: res.status, body: (await res.json()) as Answer['body'] }
}

function form(fields: Record<string, string>, files: Record<string, Buffer> = {}): FormData {
  const data = new FormData()
  for (const [name, bytes] of Object.entries(files)) data.append(name, new Blob([bytes], { type: 'image/jpeg' }), `${name}.jpg`)
  for (const [name, value] of Object.entries(fields)) data.append(name, value)
  return data
}

const BATCH = '/v1/models/resnet50:classify'

describe('topk out of range names the maximum', () => {
  for (const [where, path] of [
    ['/classify', '/classify'],
    ['the batch endpoint', BATCH]
  ] as const) {
    for (const topk of ['0', 'abc', String(MAX_TOPK + 1)]) {
      it(`${where}?topk=${topk}`, async () => {
        const init =
          path === BATCH
            ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ instances: [{ b64: photo.toString('base64') }] }) }
            : { headers: { 'content-type': 'image/jpeg' }, body: photo }
        const answer = await post(`${path}?topk=${topk}`, init)
        expect(answer.status).toBe(400)
        expect(answer.body.code).toBe('INVALID_TOPK')
        expect(answer.body.message).toMatch(new RegExp(`maximum is ${MAX_TOPK}\\b`, 'i'))
        // The value it got, as a newcomer asked of topk=0 and topk=abc.
        expect(answer.body.message).toMatch(new RegExp(`\\b(It was read as|Got) "?${topk}"?[;.]`))
      })
    }
  }

  it('in a JSON batch body', async () => {
    const body = JSON.stringify({ instances: [{ b64: photo.toString('base64') }], topk: 0 })
    const answer = await post(BATCH, { headers: { 'content-type': 'application/json' }, body })
    expect(answer.body.code).toBe('INVALID_TOPK')
    expect(answer.body.message).toContain(`It was read as 0; the maximum is ${MAX_TOPK}`)
  })
})

describe("curl's default form content type", () => {
  it('/classify: 415 names the type it got, the types it reads and a command that works', async () => {
    const answer = await post('/classify', { headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: photo })
    expect(answer.status).toBe(415)
    expect(answer.body.code).toBe('UNSUPPORTED_MEDIA_TYPE')
    expect(answer.body.message).toContain(`got "application/x-www-form-urlencoded", what curl's -d/--data sends`)
    expect(answer.body.message).toContain('It reads image/*, application/octet-stream, multipart/form-data')
    expect(answer.body.message).toContain('curl -F image=@photo.jpg')
  })

  it('the batch endpoint: its own example', async () => {
    const answer = await post(BATCH, { headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: photo })
    expect(answer.status).toBe(415)
    expect(answer.body.message).toContain('got "application/x-www-form-urlencoded"')
    expect(answer.body.message).toContain('curl -F images=@a.jpg -F images=@b.jpg')
  })

  it('no content type at all says so', async () => {
    const answer = await post('/classify', { body: new Uint8Array(photo) })
    expect(answer.status).toBe(415)
    expect(answer.body.message).toContain('got no Content-Type')
  })
})

describe('multipart field names', () => {
  it('the batch endpoint names its own fields, not "exactly one file"', async () => {
    const answer = await post(BATCH, { body: form({}, { file: photo }) })
    expect(answer.status).toBe(400)
    expect(answer.body.code).toBe('BAD_MULTIPART')
    expect(answer.body.message).not.toContain('exactly one file')
    expect(answer.body.message).toContain('Unexpected file field "file"; use "image" or "images"')
  })

  it('/classify names the "image" field', async () => {
    const answer = await post('/classify', { body: form({}, { file: photo }) })
    expect(answer.body.code).toBe('BAD_MULTIPART')
    expect(answer.body.message).toContain('send the image in the "image" field (curl -F image=@photo.jpg)')
  })
})

describe('a multipart topk field', () => {
  it('/classify honours it', async () => {
    const answer = await post('/classify', { body: form({ topk: '2' }, { image: photo }) })
    expect(answer.status).toBe(200)
    expect(answer.body.predictions).toHaveLength(2)
  })

  it("/classify: the query's topk wins over the field", async () => {
    const answer = await post('/classify?topk=3', { body: form({ topk: '2' }, { image: photo }) })
    expect(answer.body.predictions).toHaveLength(3)
  })

  it('/classify: a bad field is refused with the maximum', async () => {
    const answer = await post('/classify', { body: form({ topk: 'lots' }, { image: photo }) })
    expect(answer.status).toBe(400)
    expect(answer.body.code).toBe('INVALID_TOPK')
    expect(answer.body.message).toContain(`The multipart field topk is "lots"; the maximum is ${MAX_TOPK}`)
  })

  it("the batch endpoint honours it (the body's topk wins over the query's, as for JSON)", async () => {
    const answer = await post(`${BATCH}?topk=4`, { body: form({ topk: '2' }, { images: photo }) })
    expect(answer.status).toBe(200)
    expect(answer.body.predictions?.[0]?.predictions).toHaveLength(2)
  })
})

describe('--max-topk below the default of 5', () => {
  let small: TestServer
  beforeAll(async () => {
    small = await startTestServer(await syntheticModelRepository(), ['--max-topk', '3'])
  })
  afterAll(async () => {
    await small?.close()
  })

  it('a request that asks for no number gets --max-topk predictions, not a refusal of the default (/classify and the batch endpoint)', async () => {
    const single = await fetch(`${small.url}/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: photo })
    expect(single.status).toBe(200)
    expect(((await single.json()) as { predictions: unknown[] }).predictions).toHaveLength(3)
    const batch = await fetch(`${small.url}/v1/models/resnet50:classify`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ instances: [{ b64: photo.toString('base64') }] })
    })
    expect(batch.status).toBe(200)
    expect(((await batch.json()) as { predictions: Array<{ predictions: unknown[] }> }).predictions[0]!.predictions).toHaveLength(3)
    // Asking for more than the maximum is still refused.
    const over = await fetch(`${small.url}/classify?topk=4`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: photo })
    expect(over.status).toBe(400)
  })
})

describe('an unknown query parameter or body field is named, with the ones the route takes', () => {
  it('regression: ?top_k=3 was "querystring must NOT have additional properties", naming neither', async () => {
    const raw = { headers: { 'content-type': 'image/jpeg' }, body: photo }
    const topK = await post('/classify?top_k=3', raw)
    expect(topK.status).toBe(400)
    expect(topK.body).toMatchObject({ code: 'BAD_REQUEST' })
    expect(topK.body.message).toBe(
      'The request is invalid. The query has an unknown parameter "top_k"; it takes model, topk, deadline_ms (did you mean topk?)'
    )
    expect((await post('/classify?deadlineMs=50', raw)).body.message).toMatch(
      /unknown parameter "deadlineMs".*\(did you mean deadline_ms\?\)$/
    )
    // A name that is no name is not repeated.
    const odd = await post('/classify?%3Cb%3E=1', raw)
    expect(odd.body.message).toBe('The request is invalid. The query has an unknown parameter; it takes model, topk, deadline_ms')
  })

  it('the batch endpoint names a stray field of the body or of an instance', async () => {
    const json = (body: unknown): RequestInit => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    const b64 = photo.toString('base64')
    const body = await post(BATCH, json({ instances: [{ b64 }], top_k: 3 }))
    expect(body.status).toBe(400)
    expect(body.body.message).toMatch(/body has an unknown field "top_k"; it takes instances, topk \(did you mean topk\?\)$/)
    const instance = await post(BATCH, json({ instances: [{ b64, key: '1' }] }))
    expect(instance.body.message).toMatch(/body\/instances\/0 has an unknown field "key"; it takes b64$/)
  })
})

describe('a broken schema rule is a sentence that says what came', () => {
  const json = (body: unknown): RequestInit => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  const V2 = '/v2/models/resnet50/infer'

  it('regression: {"inputs": []} read "body/inputs must NOT have fewer than 1 items", {"inputs": {}} "must be array" (V2 REST)', async () => {
    const cases: Array<[unknown, string]> = [
      [{ inputs: [] }, 'body/inputs needs at least 1 item; it has 0'],
      [{ inputs: {} }, 'body/inputs must be an array; it is an object'],
      [{}, 'body lacks the field "inputs"'],
      [{ inputs: [{ name: 'input', shape: 'x', datatype: 'FP32', data: [1] }] }, 'body/inputs/0/shape must be an array; it is a string']
    ]
    for (const [body, text] of cases) {
      const answer = await fetch(`${server.url}${V2}`, { method: 'POST', ...json(body) })
      expect(answer.status).toBe(400)
      expect(((await answer.json()) as { error: string }).error).toBe(`BAD_REQUEST: The request is invalid. ${text}`)
    }
  })

  it('the batch endpoint: an instance without its image', async () => {
    const answer = await post(BATCH, json({ instances: [{}] }))
    expect(answer.status).toBe(400)
    expect(answer.body.message).toBe('The request is invalid. body/instances/0 lacks the field "b64"')
  })
})
