import { readFile } from 'node:fs/promises'
import sharp from 'sharp'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ERRORS, type ErrorCode } from '../../src/errors.js'
import { photoPaths } from '../helpers/photos.js'
import { syntheticModelRepository } from '../helpers/models.js'
import { startTestServer, type TestServer } from '../helpers/server.js'

/** Each bad input gets its documented 4xx and stable code; the server keeps answering. */

let server: TestServer
let photo: Buffer
const BODY_LIMIT = 300_000

beforeAll(async () => {
  server = await startTestServer(await syntheticModelRepository(), [
    '--body-limit-bytes',
    String(BODY_LIMIT),
    '--max-input-pixels',
    '4000000'
  ])
  photo = await readFile(photoPaths()[0]!)
})
afterAll(async () => {
  await server?.close()
})

async function post(
  body: RequestInit['body'],
  headers: Record<string, string>,
  query = ''
): Promise<{ status: number; body: { code: ErrorCode; message: string; statusCode: number }; headers: Headers }> {
  const res = await fetch(`${server.url}/classify${query}`, { method: 'POST', headers, ...(body === undefined ? {} : { body }) })
  return { status: res.status, body: (await res.json()) as never, headers: res.headers }
}

const jpeg = { 'content-type': 'image/jpeg' }
const multipartHeaders = { 'content-type': 'multipart/form-data; boundary=xyz' }

/** A multipart body of one part with these header lines, as a hand-written client might send it. */
function multipartOf(headerLines: string, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`--xyz\r\n${headerLines}\r\n\r\n`), content, Buffer.from('\r\n--xyz--\r\n')])
}

describe('bad input to POST /classify', () => {
  const cases: Array<[string, () => Promise<Awaited<ReturnType<typeof post>>>, number, ErrorCode]> = [
    ['empty body', () => post(new Uint8Array(0), jpeg), 400, 'EMPTY_BODY'],
    ['bytes that are not an image', () => post(Buffer.from('hello, this is text and not an image at all'), jpeg), 400, 'NOT_AN_IMAGE'],
    ['unsupported content type', () => post('{"a":1}', { 'content-type': 'text/plain' }), 415, 'UNSUPPORTED_MEDIA_TYPE'],
    ['truncated JPEG', () => post(photo.subarray(0, Math.floor(photo.length / 2)), jpeg), 400, 'CORRUPT_IMAGE'],
    [
      'too many pixels',
      async () =>
        post(
          await sharp({ create: { width: 2500, height: 2000, channels: 3, background: '#468' } })
            .jpeg()
            .toBuffer(),
          jpeg
        ),
      413,
      'IMAGE_TOO_LARGE'
    ],
    ['upload over the size limit (raw)', () => post(Buffer.alloc(BODY_LIMIT + 1000, 1), jpeg), 413, 'BODY_TOO_LARGE'],
    [
      'upload over the size limit (multipart)',
      () => {
        const form = new FormData()
        form.append('image', new Blob([Buffer.alloc(BODY_LIMIT + 1000, 1)], { type: 'image/jpeg' }), 'big.jpg')
        return post(form, {})
      },
      413,
      'BODY_TOO_LARGE'
    ],
    [
      'multipart with the wrong field name',
      () => {
        const form = new FormData()
        form.append('file', new Blob([photo], { type: 'image/jpeg' }), 'x.jpg')
        return post(form, {})
      },
      400,
      'BAD_MULTIPART'
    ],
    [
      'multipart with two files',
      () => {
        const form = new FormData()
        form.append('image', new Blob([photo], { type: 'image/jpeg' }), 'a.jpg')
        form.append('image', new Blob([photo], { type: 'image/jpeg' }), 'b.jpg')
        return post(form, {})
      },
      400,
      'BAD_MULTIPART'
    ],
    [
      'malformed multipart',
      () =>
        post('--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\nabc', {
          'content-type': 'multipart/form-data; boundary=xyz'
        }),
      400,
      'BAD_MULTIPART'
    ],
    // Regression (attacker review): busboy skips a part without Content-Disposition: form-data and,
    // past 16 KiB of it, stopped reading the body for good: no answer, its budget share held.
    ...['Content-Type: image/jpeg', 'Content-Disposition: attachment; name="image"'].map(
      (head): [string, () => ReturnType<typeof post>, number, ErrorCode] => [
        `multipart part of 100 kB with "${head}" and no form-data disposition`,
        () => post(multipartOf(head, Buffer.concat([photo, Buffer.alloc(100_000 - photo.length, 0x61)])), multipartHeaders),
        400,
        'BAD_MULTIPART'
      ]
    ),
    // Regression (attacker review): a file part with a filename and no name was a 500 (its field name read as undefined).
    [
      'multipart file part with a filename and no name',
      () => post(multipartOf('Content-Disposition: form-data; filename="a.jpg"\r\nContent-Type: image/jpeg', photo), multipartHeaders),
      400,
      'BAD_MULTIPART'
    ],
    ['unknown model', () => post(photo, jpeg, '?model=resnet9000'), 404, 'MODEL_NOT_FOUND'],
    ['model name with ../', () => post(photo, jpeg, '?model=../resnet50'), 404, 'MODEL_NOT_FOUND'],
    ['topk 0', () => post(photo, jpeg, '?topk=0'), 400, 'INVALID_TOPK'],
    ['topk -1', () => post(photo, jpeg, '?topk=-1'), 400, 'INVALID_TOPK'],
    ['topk 9999', () => post(photo, jpeg, '?topk=9999'), 400, 'INVALID_TOPK'],
    ['topk abc', () => post(photo, jpeg, '?topk=abc'), 400, 'INVALID_TOPK'],
    ['deadline header not a number', () => post(photo, { ...jpeg, 'x-deadline-ms': 'soon' }), 400, 'INVALID_DEADLINE']
  ]

  for (const [name, send, status, code] of cases) {
    it(`${name} → ${status} ${code}`, async () => {
      const res = await send()
      expect(res.status).toBe(status)
      expect(res.body.code).toBe(code)
      expect(res.body.statusCode).toBe(status)
      expect(res.body.message.startsWith(ERRORS[code].message)).toBe(true)
      expect(res.body.message).not.toMatch(/\/work\/|node_modules|at .*\.ts:\d+/)
    })
  }

  it('a multipart body over a count limit says which limit', async () => {
    const twoFiles = new FormData()
    twoFiles.append('image', new Blob([photo], { type: 'image/jpeg' }), 'a.jpg')
    twoFiles.append('image', new Blob([photo], { type: 'image/jpeg' }), 'b.jpg')
    expect((await post(twoFiles, {})).body.message).toMatch(/more files than this route reads \(\/classify: 1;/)
    const manyFields = new FormData()
    for (let i = 0; i < 9; i++) manyFields.append(`note${i}`, 'x')
    manyFields.append('image', new Blob([photo], { type: 'image/jpeg' }), 'a.jpg')
    expect((await post(manyFields, {})).body.message).toMatch(/more text fields than this route reads/)
  })

  it('an expired deadline gets 504 DEADLINE_EXCEEDED', async () => {
    // Keep the one session busy so the request with a 1 ms deadline has to queue.
    const busy = Array.from({ length: 8 }, () => post(photo, jpeg))
    const late = await post(photo, { ...jpeg, 'x-deadline-ms': '1' })
    await Promise.all(busy)
    expect(late.status).toBe(504)
    expect(late.body.code).toBe('DEADLINE_EXCEEDED')
  })

  it('still answers a good request correctly afterwards', async () => {
    const res = await fetch(`${server.url}/classify`, { method: 'POST', headers: jpeg, body: photo })
    expect(res.status).toBe(200)
    const body = (await res.json()) as { predictions: unknown[] }
    expect(body.predictions).toHaveLength(5)
  })
})
