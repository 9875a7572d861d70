import { once } from 'node:events'
import { request as httpRequest } from 'node:http'
import { connect as netConnect } from 'node:net'
import { gzipSync, deflateSync, deflateRawSync } from 'node:zlib'
import sharp from 'sharp'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { jsonBatchBodyLimit } from '../../src/http/request-input.js'
import { v2InferBodyLimit } from '../../src/http/routes/v2.js'
import { tensorLimits } from '../../src/open-inference/tensor-limits.js'
import { DISCARD_MAX_BYTES } from '../../src/http/refused-body.js'
import { startTestServer, type TestServer } from '../helpers/server.js'
import { removeTempDirs } from '../helpers/tiny-model.js'
import { tinyModelRepository } from '../helpers/tiny-repository.js'

/**
 * What stock Triton and KServe clients need of the REST door beyond the protocol's happy path,
 * over real sockets: compressed infer bodies (tritonclient's request_compression_algorithm) with
 * the body limit on the inflated size, /v2 JSON sent as exactly application/json (the KServe SDK
 * reads `error` only then), and early refusals (401, 404, 413, 415) readable by a client that
 * sends its whole body before it reads the answer (tritonclient saw a broken pipe).
 */

const MODEL = 'tiny'
const KEY = 'sesame'
const BODY_LIMIT = 1 << 20

let server: TestServer
let png: Buffer
let inferBody: Buffer
/** The /v2 infer route's limit: what a JSON body of BODY_LIMIT bytes of images may be. */
let inferLimit: number

interface Answer {
  status: number
  type: string | undefined
  body: { error?: string; code?: string; outputs?: Array<{ data: string[] }> }
}

/** One request over node:http that writes its whole body before reading the answer, as tritonclient does. */
function send(
  path: string,
  headers: Record<string, string | number>,
  body: Buffer | Buffer[]
): Promise<Answer & { writeError: string | undefined }> {
  return new Promise((resolve, reject) => {
    let writeError: string | undefined
    const req = httpRequest(`${server.url}${path}`, { method: 'POST', headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body: text === '' ? {} : JSON.parse(text), writeError })
      })
      res.on('error', reject)
    })
    req.on('error', (err: NodeJS.ErrnoException) => {
      writeError = err.code
      reject(err)
    })
    for (const chunk of Array.isArray(body) ? body : [body]) req.write(chunk)
    req.end()
  })
}

const json = { 'content-type': 'application/json', 'x-api-key': KEY }
const grpcPayload = (s: TestServer): number => tensorLimits(s.service, s.settings).payloadBytes
const inferPath = `/v2/models/${MODEL}/infer`

beforeAll(async () => {
  server = await startTestServer(await tinyModelRepository(MODEL), [
    '--api-key',
    KEY,
    '--body-limit-bytes',
    String(BODY_LIMIT),
    // /v2 takes any tensor batch gRPC does: 3 FP32 images of 224×224 (1.8 MB) keep its limit small.
    '--max-batch-items',
    '3',
    '--headers-timeout-ms',
    '1000',
    '--request-timeout-ms',
    '1500'
  ])
  inferLimit = v2InferBodyLimit(server.service, server.settings)
  png = await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 10, g: 120, b: 200 } } })
    .png()
    .toBuffer()
  inferBody = Buffer.from(
    JSON.stringify({
      id: 'zipped',
      inputs: [{ name: 'input', datatype: 'BYTES', shape: [1], data: [png.toString('base64')] }],
      outputs: [{ name: 'logits', parameters: { classification: 3 } }]
    })
  )
})

afterAll(async () => {
  await server?.close()
  await removeTempDirs()
})

describe('the infer body limit', () => {
  it('takes a binary tensor batch of --max-batch-items images, as the gRPC door does, though it is over the JSON limit', async () => {
    const images = 3
    const tensor = Buffer.alloc(images * 3 * 224 * 224 * 4)
    expect(tensor.byteLength).toBeGreaterThan(jsonBatchBodyLimit(server.settings))
    const header = Buffer.from(
      JSON.stringify({
        inputs: [{ name: 'input', datatype: 'FP32', shape: [images, 3, 224, 224], parameters: { binary_data_size: tensor.byteLength } }],
        outputs: [{ name: 'logits', parameters: { classification: 1 } }]
      })
    )
    const answer = await send(inferPath, { ...json, 'inference-header-content-length': header.byteLength }, [header, tensor])
    expect(answer.status).toBe(200)
    expect(answer.body.outputs![0]!.data).toHaveLength(images)
    expect(inferLimit).toBe(Math.max(jsonBatchBodyLimit(server.settings), grpcPayload(server) + 64 * 1024))
  })
})

describe("the KServe Python SDK's InferenceRESTClient (protocol v2)", () => {
  it('takes its binary request as it writes it and answers what its InferResponse.from_bytes reads', async () => {
    const images = 2
    const tensor = Buffer.alloc(images * 3 * 224 * 224 * 4)
    // Byte for byte what InferRequest(..., request_id="k7", parameters={"binary_data_output": True}).to_rest()
    // writes (orjson, keys in this order; the SDK always sends an id and model_name), and its headers.
    const header = Buffer.from(
      `{"id":"k7","model_name":"${MODEL}","inputs":[{"name":"input","shape":[${images},3,224,224],"datatype":"FP32","parameters":{"binary_data_size":${tensor.byteLength}}}],"parameters":{"binary_data_output":true}}`
    )
    const res = await fetch(server.url + inferPath, {
      method: 'POST',
      headers: {
        'x-api-key': KEY,
        'inference-header-content-length': String(header.byteLength),
        'content-type': 'application/octet-stream'
      },
      body: Buffer.concat([header, tensor])
    })
    expect(res.status).toBe(200)
    // from_bytes: the JSON is the first Inference-Header-Content-Length bytes (else the whole body);
    // it reads model_name and each output's name, shape, datatype, and binary_data_size bytes in turn.
    const body = Buffer.from(await res.arrayBuffer())
    const jsonLength = Number(res.headers.get('inference-header-content-length'))
    const answer = JSON.parse(body.subarray(0, jsonLength).toString('utf8')) as {
      model_name: string
      id: string
      outputs: Array<{ name: string; shape: number[]; datatype: string; parameters: { binary_data_size: number } }>
    }
    expect(answer).toMatchObject({ model_name: MODEL, id: 'k7', outputs: [{ name: 'logits', datatype: 'FP32', shape: [images, 1000] }] })
    expect(answer.outputs[0]!.parameters.binary_data_size).toBe(images * 1000 * 4)
    expect(body.byteLength - jsonLength).toBe(images * 1000 * 4)
  })
})

describe('compressed infer bodies (Content-Encoding)', () => {
  it('gzip and deflate bodies are inflated and answered as the plain body is (they were 400)', async () => {
    const plain = await send(inferPath, json, inferBody)
    expect(plain.status).toBe(200)
    for (const [encoding, body] of [
      ['gzip', gzipSync(inferBody)],
      ['x-gzip', gzipSync(inferBody)],
      ['deflate', deflateSync(inferBody)],
      ['GZIP', gzipSync(inferBody)]
    ] as const) {
      const zipped = await send(inferPath, { ...json, 'content-encoding': encoding }, body)
      expect({ encoding, status: zipped.status, body: zipped.body }).toEqual({ encoding, status: 200, body: plain.body })
    }
  })

  it('a gzip bomb is refused 413 by its inflated size: 64 MiB of zeros in a 64 kB body', async () => {
    const bomb = gzipSync(Buffer.alloc(64 << 20), { level: 9 })
    expect(bomb.byteLength).toBeLessThan(inferLimit)
    const answer = await send(inferPath, { ...json, 'content-encoding': 'gzip' }, bomb)
    expect(answer.status).toBe(413)
    expect(answer.type).toBe('application/json')
    expect(answer.body.error).toMatch(/^BODY_TOO_LARGE: .*inflates to more than this route's \d+ bytes/)
    // Just over the limit when inflated: refused too; at the limit's edge a plain body still passes.
    const over = gzipSync(Buffer.concat([inferBody, Buffer.alloc(inferLimit, 0x20)]))
    expect((await send(inferPath, { ...json, 'content-encoding': 'gzip' }, over)).status).toBe(413)
    expect((await send(inferPath, { ...json, 'content-encoding': 'gzip' }, gzipSync(inferBody))).status).toBe(200)
  })

  it('refuses a coding it does not read (415) and bytes that are not what the coding says (400)', async () => {
    const br = await send(inferPath, { ...json, 'content-encoding': 'br' }, inferBody)
    expect(br.status).toBe(415)
    expect(br.body.error).toMatch(/^UNSUPPORTED_MEDIA_TYPE: .*Content-Encoding "br" is not supported; send gzip, deflate or none/)
    const notGzip = await send(inferPath, { ...json, 'content-encoding': 'gzip' }, inferBody)
    expect(notGzip.status).toBe(400)
    expect(notGzip.body.error).toMatch(/^BAD_REQUEST: The request is invalid\. The body is not valid gzip data/)
    // Raw deflate (no zlib header) is not HTTP's deflate.
    expect((await send(inferPath, { ...json, 'content-encoding': 'deflate' }, deflateRawSync(inferBody))).status).toBe(400)
  })
})

describe('/v2 JSON content type', () => {
  it('errors and answers under /v2 are exactly application/json (they carried "; charset=utf-8"), the other routes unchanged', async () => {
    const cases: Array<[string, RequestInit, number]> = [
      ['/v2', {}, 200],
      [`/v2/models/${MODEL}`, {}, 200],
      ['/v2/models/nope', {}, 404],
      ['/v2/nope', {}, 404],
      [inferPath, { method: 'POST', headers: json, body: '{"inputs": []}' }, 400],
      [inferPath, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }, 401],
      ['/v2/models/%E0%A4%A/ready', {}, 400]
    ]
    for (const [path, init, status] of cases) {
      const res = await fetch(server.url + path, init)
      expect({ path, status: res.status, type: res.headers.get('content-type') }).toEqual({ path, status, type: 'application/json' })
      if (status >= 400) expect(((await res.json()) as { error: string }).error).toMatch(/^[A-Z_]+: /)
    }
    expect((await fetch(`${server.url}/nope`)).headers.get('content-type')).toBe('application/json; charset=utf-8')
  })

  it('the answer written on the socket itself (a body that stopped arriving: 408) is application/json on /v2 too', async () => {
    const { port } = new URL(server.url)
    const socket = netConnect(Number(port), '127.0.0.1')
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', () => undefined)
    const closed = new Promise((resolve) => socket.on('close', resolve))
    socket.write(
      `POST ${inferPath} HTTP/1.1\r\nHost: x\r\nx-api-key: ${KEY}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"inputs":`
    )
    await closed
    const text = Buffer.concat(chunks).toString('utf8')
    expect(text).toMatch(/^HTTP\/1\.1 408 /)
    expect(text).toMatch(/\r\nContent-Type: application\/json\r\n/)
    expect(text).toMatch(/"error":"REQUEST_TIMEOUT: /)
  })
})

describe('early refusals reach a client that sends its whole body first', () => {
  /** Far over the /v2 infer limit (about 1.4 MB here) and /classify's, and more than socket buffers take in at once. */
  const big = Buffer.alloc(32 << 20, 0x20)

  /**
   * As tritonclient's HTTP client does: the request line, headers and the whole body are written
   * before a byte of the answer is read. Over a connection the server has closed, a write fails
   * (EPIPE, ECONNRESET) and the answer is lost.
   */
  async function sendAllThenRead(path: string, headers: Record<string, string | number>, body: Buffer): Promise<RawAnswer> {
    const { port } = new URL(server.url)
    const socket = netConnect(Number(port), '127.0.0.1')
    socket.pause()
    let failure: string | undefined
    socket.on('error', (err: NodeJS.ErrnoException) => (failure ??= err.code))
    await once(socket, 'connect')
    const head = Object.entries({ host: 'x', ...headers, 'content-length': body.byteLength })
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('')
    const write = (chunk: Buffer | string): Promise<void> =>
      new Promise((resolve) =>
        socket.write(chunk, (err) => ((failure ??= (err as NodeJS.ErrnoException | null | undefined)?.code), resolve()))
      )
    await write(`POST ${path} HTTP/1.1\r\n${head}\r\n`)
    for (let offset = 0; offset < body.byteLength && failure === undefined; offset += 1 << 20)
      await write(body.subarray(offset, offset + (1 << 20)))
    if (failure !== undefined) {
      socket.destroy()
      return { status: 0, failure }
    }
    socket.resume()
    let received = Buffer.alloc(0)
    for await (const chunk of socket) {
      received = Buffer.concat([received, chunk as Buffer])
      const end = received.indexOf('\r\n\r\n')
      const length = Number(/\r\ncontent-length: (\d+)/i.exec(received.toString('latin1'))?.[1] ?? NaN)
      if (end !== -1 && received.byteLength >= end + 4 + length) break
    }
    socket.destroy()
    const text = received.toString('utf8')
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0)
    return { status, failure, body: JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as Answer['body'] }
  }

  interface RawAnswer {
    status: number
    failure: string | undefined
    body?: Answer['body']
  }

  it('413 for a declared length over the limit: the client finishes sending and reads the answer (it saw a broken pipe)', async () => {
    const answer = await sendAllThenRead(inferPath, json, big)
    expect(answer).toMatchObject({ status: 413, failure: undefined })
    expect(answer.body?.error).toMatch(/^BODY_TOO_LARGE: /)
  })

  it('regression (client review): a 100 MB body (a batch of 166 FP32 images from tritonclient) met a reset past 64 MiB while still sending; it is read to its end and answered 413', async () => {
    const answer = await sendAllThenRead(inferPath, json, Buffer.alloc(100_000_000, 0x20))
    expect(answer).toMatchObject({ status: 413, failure: undefined })
    expect(answer.body?.error).toMatch(/^BODY_TOO_LARGE: /)
  })

  it('413 for a chunked body that passes the limit while it arrives', async () => {
    const chunks = Array.from({ length: 24 }, () => Buffer.alloc(128 * 1024, 0x20))
    const answer = await send(inferPath, { ...json, 'transfer-encoding': 'chunked' }, chunks)
    expect(answer.status).toBe(413)
  })

  it('401, 404 and 415 the same way', async () => {
    const keyless = await sendAllThenRead(inferPath, { 'content-type': 'application/json' }, big)
    expect(keyless).toMatchObject({ status: 401, failure: undefined })
    const unknown = await sendAllThenRead('/v2/models/tiny/nope', json, big)
    expect(unknown).toMatchObject({ status: 404, failure: undefined })
    const unsupported = await sendAllThenRead('/classify', json, big)
    expect(unsupported).toMatchObject({ status: 415, failure: undefined })
    expect(unsupported.body?.code).toBe('UNSUPPORTED_MEDIA_TYPE')
  })

  it('a body past the discard bound is not read to its end: the connection is closed before the client has sent it all', async () => {
    const total = DISCARD_MAX_BYTES * 2
    const piece = Buffer.alloc(1 << 20)
    let sent = 0
    const sentAtClose = await new Promise<number>((resolve) => {
      const req = httpRequest(`${server.url}${inferPath}`, { method: 'POST', headers: { ...json, 'content-length': total } })
      req.on('error', () => undefined)
      req.on('socket', (socket) => socket.once('close', () => resolve(sent)))
      req.on('response', (res) => res.resume())
      const pump = (): void => {
        while (sent < total) {
          sent += piece.byteLength
          if (!req.write(piece)) {
            req.once('drain', pump)
            return
          }
        }
        req.end()
      }
      pump()
    })
    expect(sentAtClose).toBeLessThan(total)
  })
})
