import { Client, Metadata, credentials, status, type ClientDuplexStream, type ServiceDefinition, type StatusObject } from '@grpc/grpc-js'
import { connect, type IncomingHttpHeaders } from 'node:http2'
import sharp from 'sharp'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { SERVICE_NAME, loadInferenceProto } from '../../src/grpc/server.js'
import { STREAM_MAX_IN_FLIGHT } from '../../src/grpc/stream-infer.js'
import { grpcFrame, startTestGrpc, type GrpcTestDoor } from '../helpers/grpc.js'
import { inferWire, lengthDelimited } from '../helpers/protobuf-wire.js'
import { startTestServer, type TestServer } from '../helpers/server.js'
import { removeTempDirs } from '../helpers/tiny-model.js'
import { tinyModelRepository } from '../helpers/tiny-repository.js'
import { waitFor } from '../helpers/versioned-models.js'
import { lengthPrefixed } from '../helpers/v2-bytes.js'

/**
 * ModelStreamInfer (the protocol's bidirectional stream) against the real door and a tiny real
 * model: every request answered on the stream with its id, errors in error_message without ending
 * the stream, and flow control that stops reading a client's requests while it does not read its
 * answers. The client is grpc-js with the messages encoded from the proto (and, for a malformed
 * request, written by hand).
 */

const MODEL = 'tiny'
const KEY = 'sesame'
const ITEM_ELEMENTS = 3 * 224 * 224

interface InferResponse {
  model_name: string
  model_version: string
  id: string
  parameters: Record<string, { bool_param?: boolean }>
  outputs: Array<{ name: string; datatype: string; shape: number[] }>
  raw_output_contents: Buffer[]
}

interface StreamAnswer {
  error_message: string
  infer_response: InferResponse | null
}

type Stream = ClientDuplexStream<object | Buffer, StreamAnswer>

const definition = loadInferenceProto()[SERVICE_NAME] as ServiceDefinition
const method = definition.ModelStreamInfer!
const zeros = Buffer.alloc(ITEM_ELEMENTS * 4)
const withNaN = Buffer.alloc(ITEM_ELEMENTS * 4)
withNaN.writeFloatLE(NaN, 4 * 1000)

let server: TestServer
let grpc: GrpcTestDoor
let client: Client
let png: Buffer

/** Messages given as objects are encoded from the proto; a Buffer goes as it is (a malformed request). */
const serialize = (value: object | Buffer): Buffer =>
  Buffer.isBuffer(value) ? value : (method.requestSerialize as (v: object) => Buffer)(value)

function openStream(
  metadata: Record<string, string> = { 'x-api-key': KEY },
  on: Client = client
): { stream: Stream; ended: Promise<StatusObject> } {
  const md = new Metadata()
  for (const [k, v] of Object.entries(metadata)) md.set(k, v)
  const stream = on.makeBidiStreamRequest(method.path, serialize, method.responseDeserialize as (b: Buffer) => StreamAnswer, md, {})
  const ended = new Promise<StatusObject>((resolve) => stream.on('status', resolve))
  stream.on('error', () => undefined)
  return { stream, ended }
}

function request(id: string, options: { model?: string; shape?: number[]; tensor?: Buffer } = {}): object {
  return {
    model_name: options.model ?? MODEL,
    id,
    inputs: [{ name: 'input', datatype: 'FP32', shape: options.shape ?? [1, 3, 224, 224] }],
    outputs: [{ name: 'logits', parameters: { classification: { int64_param: 1 } } }],
    raw_input_contents: [options.tensor ?? zeros]
  }
}

/** One 8×8 PNG as BYTES, all outputs raw. */
function pngRequest(id: string): object {
  return {
    model_name: MODEL,
    id,
    inputs: [{ name: 'input', datatype: 'BYTES', shape: [1] }],
    raw_input_contents: [lengthPrefixed(png)]
  }
}

/** The messages of a gRPC body: each a compressed flag, a 4-byte big-endian length, the bytes. */
function grpcMessages(body: Buffer): Buffer[] {
  const messages: Buffer[] = []
  for (let offset = 0; offset < body.byteLength;) {
    const length = body.readUInt32BE(offset + 1)
    messages.push(body.subarray(offset + 5, offset + 5 + length))
    offset += 5 + length
  }
  return messages
}

/** Reads `count` answers off the stream. */
function answers(stream: Stream, count: number): Promise<StreamAnswer[]> {
  const got: StreamAnswer[] = []
  return new Promise((resolve, reject) => {
    const onData = (answer: StreamAnswer): void => {
      got.push(answer)
      if (got.length === count) {
        stream.off('data', onData)
        resolve(got)
      }
    }
    stream.on('data', onData)
    stream.once('status', (s: StatusObject) => {
      if (got.length < count) reject(new Error(`the stream ended (${status[s.code]} ${s.details}) after ${got.length} of ${count} answers`))
    })
  })
}

beforeAll(async () => {
  server = await startTestServer(await tinyModelRepository(MODEL), ['--api-key', KEY])
  grpc = await startTestGrpc(server)
  png = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 200, g: 30, b: 30 } } })
    .png()
    .toBuffer()
  client = new Client(`127.0.0.1:${grpc.port}`, credentials.createInsecure(), { 'grpc.max_receive_message_length': -1 })
})

afterAll(async () => {
  client?.close()
  await grpc?.close()
  await server?.close()
  await removeTempDirs()
})

describe('ModelStreamInfer', () => {
  it('answers a stream of 100 requests with errors mixed in: 100 answers, ids echoed, errors in error_message, and the stream still serves', async () => {
    const { stream, ended } = openStream()
    const expected = new Map<string, string>()
    const pending = answers(stream, 100)
    for (let i = 0; i < 100; i++) {
      const id = `req-${i}`
      switch (i % 10) {
        case 3:
          expected.set(id, 'MODEL_NOT_FOUND')
          stream.write(request(id, { model: 'nope' }))
          break
        case 5:
          expected.set(id, 'BAD_REQUEST')
          stream.write(request(id, { shape: [1, 3, 224] }))
          break
        case 7:
          expected.set(id, 'BAD_REQUEST')
          stream.write(request(id, { tensor: withNaN }))
          break
        case 9:
          // The id, then bytes that are not protobuf (a tag whose varint never ends).
          expected.set(id, 'BAD_REQUEST')
          stream.write(Buffer.concat([lengthDelimited(3, id), inferWire.modelName(MODEL), Buffer.alloc(11, 0xff)]))
          break
        default:
          expected.set(id, '')
          stream.write(request(id))
      }
    }
    const got = await pending
    const byId = new Map(got.map((a) => [a.infer_response?.id ?? '', a]))
    expect(byId.size).toBe(100)
    for (const [id, code] of expected) {
      const answer = byId.get(id)!
      expect(answer, id).toBeDefined()
      // Every answer is its request's last, as Triton flags it (stream clients wait for the flag).
      expect(answer.infer_response!.parameters.triton_final_response, id).toMatchObject({ bool_param: true })
      if (code === '') {
        expect(answer.error_message, id).toBe('')
        expect(answer.infer_response!.model_name).toBe(MODEL)
        expect(answer.infer_response!.outputs).toEqual([
          { name: 'logits', datatype: 'BYTES', shape: [1, 1], parameters: {}, contents: null }
        ])
      } else {
        expect(answer.error_message, id).toMatch(new RegExp(`^${code}: `))
      }
    }
    expect(byId.get('req-3')!.error_message).toMatch(/MODEL_NOT_FOUND: .*Loaded models: tiny/)
    expect(byId.get('req-7')!.error_message).toMatch(/must be finite/)
    expect(byId.get('req-3')!.infer_response!.model_name).toBe('nope')

    // Regression (attacker review): a refused request's id over 1 KiB came back empty, where a
    // successful answer echoes it whole.
    const longId = `long-${'x'.repeat(4096)}`
    const refused = answers(stream, 1)
    stream.write(request(longId, { model: 'nope' }))
    expect((await refused)[0]).toMatchObject({ error_message: expect.stringMatching(/^MODEL_NOT_FOUND: /), infer_response: { id: longId } })

    // The same stream after its errors: one more request, then a clean end.
    const after = answers(stream, 1)
    stream.write(request('after'))
    expect((await after)[0]).toMatchObject({ error_message: '', infer_response: { id: 'after' } })
    stream.end()
    expect((await ended).code).toBe(status.OK)
  })

  it('stops reading requests while the client reads no answers: requests read and not answered stay within the bound, and every answer comes once it reads', async () => {
    // A client written over HTTP/2 directly, so that "not reading" is exact: its stream is paused,
    // and HTTP/2 flow control holds the server's answers once the client's window is full.
    const session = connect(`http://127.0.0.1:${grpc.port}`)
    session.on('error', () => undefined)
    const call = session.request({
      ':method': 'POST',
      ':path': method.path,
      'content-type': 'application/grpc',
      te: 'trailers',
      'x-api-key': KEY
    })
    call.on('error', () => undefined)
    call.pause()
    let trailers: IncomingHttpHeaders = {}
    call.on('trailers', (t) => (trailers = t))
    const before = grpc.streamCounters()
    // Small requests (an 8×8 PNG) with answers of 1000 raw scores (4 kB each): the client's 64 kB
    // window fills after some 16 answers, while requests keep coming.
    const total = 200
    for (let i = 0; i < total; i++) call.write(grpcFrame(serialize(pngRequest(`slow-${i}`))))
    call.end()
    // Wait until the server has stopped reading (no request read for half a second), however slow the machine.
    let read = -1
    for (let stable = 0; stable < 5;) {
      await new Promise((resolve) => setTimeout(resolve, 100))
      const now = grpc.streamCounters().requestsRead
      stable = now === read ? stable + 1 : 0
      read = now
    }
    const stalled = grpc.streamCounters()
    expect(stalled.requestsRead - before.requestsRead).toBeLessThan(total)
    // Running requests, plus the answers grpc-js holds in the call's writable buffer (its object-mode
    // high-water mark, 16) and the one being written.
    const bound = STREAM_MAX_IN_FLIGHT + 16 + 1
    expect(stalled.peakUnanswered).toBeLessThanOrEqual(bound)

    const chunks: Buffer[] = []
    call.on('data', (chunk: Buffer) => chunks.push(chunk))
    call.resume()
    await new Promise((resolve) => call.on('close', resolve))
    session.close()
    const got = grpcMessages(Buffer.concat(chunks)).map((m) => method.responseDeserialize(m) as StreamAnswer)
    expect(got.length).toBe(total)
    expect(new Set(got.map((a) => a.infer_response?.id)).size).toBe(total)
    expect(got.filter((a) => a.error_message !== '')).toEqual([])
    expect(trailers['grpc-status']).toBe('0')
    expect(grpc.streamCounters().requestsRead - before.requestsRead).toBe(total)
    expect(grpc.streamCounters().peakUnanswered).toBeLessThanOrEqual(bound)
  })

  it('a message over the receive limit ends the stream RESOURCE_EXHAUSTED BODY_TOO_LARGE (grpc-js ends the call), after the answers before it', async () => {
    // A door whose limit is one image's tensor (and a 1 MiB body) plus the envelope.
    const small = await startTestGrpc(server, { ...server.settings, maxBatchItems: 1, bodyLimitBytes: 1 << 20 })
    const smallClient = new Client(`127.0.0.1:${small.port}`, credentials.createInsecure(), { 'grpc.max_receive_message_length': -1 })
    try {
      const md = new Metadata()
      md.set('x-api-key', KEY)
      const stream: Stream = smallClient.makeBidiStreamRequest(
        method.path,
        serialize,
        method.responseDeserialize as (b: Buffer) => StreamAnswer,
        md,
        {}
      )
      stream.on('error', () => undefined)
      const ended = new Promise<StatusObject>((resolve) => stream.on('status', resolve))
      const first = answers(stream, 1)
      stream.write(request('fits'))
      expect((await first)[0]).toMatchObject({ error_message: '', infer_response: { id: 'fits' } })
      stream.write(request('too-large', { tensor: Buffer.alloc(small.receiveLimitBytes) }))
      const end = await ended
      expect(status[end.code]).toBe('RESOURCE_EXHAUSTED')
      expect(end.details).toMatch(/^BODY_TOO_LARGE: /)
    } finally {
      smallClient.close()
      await small.close()
    }
  })

  it('an empty stream (closed at once) ends OK with no answers', async () => {
    const { stream, ended } = openStream()
    const got: unknown[] = []
    stream.on('data', (a) => got.push(a))
    stream.end()
    expect((await ended).code).toBe(status.OK)
    expect(got).toEqual([])
  })

  it('a door that closes ends an open stream UNAVAILABLE SHUTTING_DOWN once what it read is answered, without waiting out the drain timeout', async () => {
    const door = await startTestGrpc(server, { ...server.settings, drainTimeoutMs: 30_000 })
    const other = new Client(`127.0.0.1:${door.port}`, credentials.createInsecure(), { 'grpc.max_receive_message_length': -1 })
    try {
      const { stream, ended } = openStream(undefined, other)
      const ids: string[] = []
      stream.on('data', (a: StreamAnswer) => ids.push(a.infer_response?.id ?? `error ${a.error_message}`))
      stream.write(request('answered-before'))
      await waitFor('the first answer', () => ids.length === 1, 10_000)
      // Read by the server but not yet answered when the door closes: it is answered all the same.
      stream.write(request('in-flight'))
      await waitFor('the second request read', () => door.streamCounters().requestsRead === 2, 10_000)
      const t0 = performance.now()
      await door.close()
      const closeMs = performance.now() - t0
      const end = await ended
      expect(status[end.code]).toBe('UNAVAILABLE')
      expect(end.details).toMatch(/^SHUTTING_DOWN: /)
      expect(ids).toEqual(['answered-before', 'in-flight'])
      expect(closeMs).toBeLessThan(5_000)
    } finally {
      other.close()
    }
  })

  it('needs the API key, as ModelInfer does: refused UNAUTHENTICATED before any request is read', async () => {
    const decodedBefore = grpc.decodedInferRequests()
    const { stream, ended } = openStream({})
    stream.on('data', () => undefined)
    stream.write(request('keyless'))
    stream.end()
    const end = await ended
    expect(status[end.code]).toBe('UNAUTHENTICATED')
    expect(end.details).toMatch(/^UNAUTHENTICATED: /)
    expect(grpc.decodedInferRequests()).toBe(decodedBefore)
  })
})
