import { readFile } from 'node:fs/promises'
import { connect, constants as http2, type ClientHttp2Session } from 'node:http2'
import { createConnection } from 'node:net'
import { Writable } from 'node:stream'
import { gzipSync } from 'node:zlib'
import { status } from '@grpc/grpc-js'
import { pino, type Logger } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BODY_PACE_GRACE_MS, SILENT_WAIT_MS } from '../../src/body-pace.js'
import { RESERVED_CALLS } from '../../src/grpc/call-admission.js'
import { RECLAIM_AFTER_MS } from '../../src/grpc/idle-streams.js'
import { MAX_DIMS, MAX_PARAMETERS, MAX_TENSORS, MAX_UNKNOWN_FIELDS } from '../../src/grpc/request-bounds.js'
import { LOGGED_ID_CHARS } from '../../src/open-inference/infer.js'
import { MAX_LISTED_ELEMENTS } from '../../src/open-inference/tensor-limits.js'
import {
  callRefusal,
  grpcFrame,
  openGrpcStream,
  rawGrpcCall,
  startTestGrpc,
  type GrpcTestDoor,
  type RawCallEnd,
  type RawGrpcCall
} from '../helpers/grpc.js'
import { syntheticModelRepository } from '../helpers/models.js'
import { photoPaths } from '../helpers/photos.js'
import { copiesIn, inferWire, lengthDelimited, repeatedField, varint, varintField } from '../helpers/protobuf-wire.js'
import { metricValue, startTestServer, type TestServer } from '../helpers/server.js'
import { waitFor } from '../helpers/versioned-models.js'

/**
 * Admission on the gRPC door, against the real service and door: the API key is checked before a
 * ModelInfer message is read, absurd entry counts are refused before protobuf decodes the message,
 * the receive limit follows the models' largest batch (not --body-limit-bytes), and every status,
 * grpc-js's own included, carries a registry code. "Not decoded" is read off the door's count of
 * decoded ModelInfer messages, not off timings.
 */

const MODEL = 'resnet50'
const KEY = 'sesame'
const MAX_ITEMS = 8
/** One FP32 image of the model: 3 × 224 × 224 floats. */
const ITEM_ELEMENTS = 3 * 224 * 224
const ITEM_BYTES = ITEM_ELEMENTS * 4
const WITH_KEY = { metadata: { 'x-api-key': KEY } }

let server: TestServer
let grpc: GrpcTestDoor
let photo: Buffer
/** Every line the door logged, parsed. */
const logs: LogLine[] = []

const failures = (reason: string): Promise<number> =>
  metricValue(server, 'resnet_serve_request_failure_total', `model="${MODEL}",reason="${reason}"`)

/** Polls until `read` differs from `before`, for outcomes recorded after the answer went out. */
async function changed(read: () => Promise<number>, before: number): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const now = await read()
    if (now !== before) return now
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return read()
}

interface LogLine {
  readonly level: number
  readonly code?: string
  readonly count?: number
  readonly id?: string
  readonly msg: string
}

/** A logger at info whose every line is parsed into `lines`, for a door whose logs the test reads. */
function readLog(lines: LogLine[] = []): { lines: LogLine[]; logger: Logger } {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as LogLine)
      done()
    }
  })
  return { lines, logger: pino({ level: 'info' }, sink) }
}

beforeAll(async () => {
  // A small batch limit and a body limit far below it: the receive limit must follow the first.
  server = await startTestServer(await syntheticModelRepository(), [
    '--max-batch-items',
    String(MAX_ITEMS),
    '--body-limit-bytes',
    String(1 << 20),
    '--api-key',
    KEY
  ])
  grpc = await startTestGrpc(server, server.settings, readLog(logs).logger)
  photo = await readFile(photoPaths()[0]!)
})

afterAll(async () => {
  await grpc?.close()
  await server?.close()
})

describe('gRPC admission: the API key before the message', () => {
  it('a keyless 16 MB ModelInfer of 8 M empty outputs is refused UNAUTHENTICATED without being decoded (it froze the server 16 s, +1 GB)', async () => {
    const attack = Buffer.concat([inferWire.modelName(MODEL), repeatedField(inferWire.emptyOutput, copiesIn(16 << 20, 2))])
    const decodedBefore = grpc.decodedInferRequests()
    const unauthenticatedBefore = await failures('UNAUTHENTICATED')
    expect(await callRefusal(grpc.callRaw('ModelInfer', attack))).toEqual({
      code: 'UNAUTHENTICATED',
      details: expect.stringMatching(/^UNAUTHENTICATED: /) as string
    })
    expect(await callRefusal(grpc.callRaw('ModelInfer', attack, { metadata: { authorization: 'Bearer wrong' } }))).toMatchObject({
      code: 'UNAUTHENTICATED'
    })
    expect(grpc.decodedInferRequests()).toBe(decodedBefore)
    expect(await failures('UNAUTHENTICATED')).toBe(unauthenticatedBefore + 2)
    // With the key, the same message is over the receive limit: refused on its length, still unread.
    expect(await callRefusal(grpc.callRaw('ModelInfer', attack, WITH_KEY))).toEqual({
      code: 'RESOURCE_EXHAUSTED',
      details: expect.stringMatching(/^BODY_TOO_LARGE: /) as string
    })
    expect(grpc.decodedInferRequests()).toBe(decodedBefore)

    // The door still answers, and the counter does count what it decodes.
    expect(await grpc.call('ServerLive', {})).toEqual({ live: true })
    const answer = await grpc.call<{ outputs: Array<{ shape: number[] }> }>(
      'ModelInfer',
      { model_name: MODEL, inputs: [{ name: 'input', datatype: 'BYTES', shape: [1], contents: { bytes_contents: [photo] } }] },
      WITH_KEY
    )
    expect(answer.outputs[0]!.shape).toEqual([1, 1000])
    expect(grpc.decodedInferRequests()).toBe(decodedBefore + 1)
  })
})

describe('gRPC admission: absurd entry counts are refused before decoding', () => {
  const under = (limit: number): number => Math.min(limit, grpc.receiveLimitBytes - 1024)
  const model = () => inferWire.modelName(MODEL)
  const contents = (bytes: Buffer) => Buffer.concat([model(), inferWire.input('input', 'BYTES', [1], bytes)])

  const cases: Array<{ name: string; message: () => Buffer; code?: string; details: RegExp }> = [
    {
      name: 'millions of empty outputs',
      message: () => Buffer.concat([model(), repeatedField(inferWire.emptyOutput, copiesIn(under(4 << 20), 2))]),
      details: new RegExp(`ModelInferRequest\\.outputs holds more than ${MAX_TENSORS} entries`)
    },
    {
      name: `${MAX_TENSORS + 1} inputs`,
      message: () => Buffer.concat([model(), repeatedField(inferWire.input('input', 'FP32', [1, 3, 224, 224]), MAX_TENSORS + 1)]),
      details: /ModelInferRequest\.inputs holds more than/
    },
    {
      name: 'millions of request parameters',
      message: () => Buffer.concat([model(), repeatedField(inferWire.emptyParameter, copiesIn(under(4 << 20), 2))]),
      details: new RegExp(`ModelInferRequest\\.parameters holds more than ${MAX_PARAMETERS} entries`)
    },
    {
      name: 'millions of shape dimensions',
      message: () => Buffer.concat([model(), lengthDelimited(5, lengthDelimited(3, Buffer.alloc(under(4 << 20))))]),
      details: new RegExp(`InferInputTensor\\.shape holds more than ${MAX_DIMS} elements`)
    },
    {
      name: 'millions of empty bytes_contents',
      message: () => contents(repeatedField(lengthDelimited(8, ''), copiesIn(under(4 << 20), 2))),
      code: 'TOO_MANY_ITEMS',
      details: /bytes_contents holds more than 8 entries/
    },
    {
      name: 'one image more than --max-batch-items in bytes_contents',
      message: () => contents(repeatedField(lengthDelimited(8, 'x'), MAX_ITEMS + 1)),
      code: 'TOO_MANY_ITEMS',
      details: /bytes_contents/
    },
    {
      name: 'more fp32_contents than --max-batch-items images hold',
      message: () => contents(lengthDelimited(6, Buffer.alloc((MAX_ITEMS * ITEM_ELEMENTS + 1) * 4))),
      details: new RegExp(`fp32_contents holds more than ${MAX_ITEMS * ITEM_ELEMENTS} elements`)
    },
    {
      name: 'millions of packed uint_contents',
      message: () => contents(lengthDelimited(4, Buffer.alloc(under(4 << 20)))),
      details: /uint_contents holds more than/
    },
    {
      // What KServe's InferenceGRPCClient sends for set_data_from_numpy(..., binary_data=False):
      // the answer names the switch to raw_input_contents in that client too.
      name: 'more typed elements than a request may list, within one field',
      message: () => contents(lengthDelimited(4, Buffer.alloc(MAX_LISTED_ELEMENTS + 1))),
      details: new RegExp(
        `lists more than ${MAX_LISTED_ELEMENTS} tensor elements in typed contents.*raw_input_contents.*set_data_from_numpy\\(\\.\\.\\., binary_data=True\\)`
      )
    },
    {
      name: 'more typed elements than a request may list, across two inputs',
      message: () =>
        Buffer.concat([
          model(),
          inferWire.input('a', 'UINT8', [1], lengthDelimited(4, Buffer.alloc(MAX_LISTED_ELEMENTS / 2))),
          inferWire.input('b', 'FP32', [1], lengthDelimited(6, Buffer.alloc(4 * (MAX_LISTED_ELEMENTS / 2 + 1))))
        ]),
      details: /lists more than .* tensor elements in typed contents/
    },
    {
      name: 'int64_contents, which no model reads',
      message: () => contents(lengthDelimited(3, Buffer.alloc(1024))),
      details: /int64_contents must be empty/
    },
    { name: 'model_name twice', message: () => Buffer.concat([model(), model()]), details: /model_name occurs more than once/ },
    {
      name: 'too many undeclared fields',
      message: () => Buffer.concat([model(), repeatedField(varintField(99, 1), MAX_UNKNOWN_FIELDS + 1)]),
      details: /not valid protobuf: .*fields the protocol does not declare/
    },
    {
      name: 'a group (not proto3)',
      message: () => Buffer.concat([model(), varint(99 * 8 + 3)]),
      details: /not valid protobuf: .*wire type 3/
    },
    {
      name: 'a field longer than the message',
      message: () => Buffer.concat([model(), Buffer.from([0x2a]), varint(1000)]),
      details: /not valid protobuf: .*runs past the end/
    },
    {
      name: 'an input that is not a message',
      message: () => Buffer.concat([model(), varintField(5, 0)]),
      details: /not valid protobuf: .*inputs is a message/
    }
  ]

  it.each(cases)('$name → INVALID_ARGUMENT, never decoded', async ({ message, code = 'BAD_REQUEST', details }) => {
    const decodedBefore = grpc.decodedInferRequests()
    const refusal = await callRefusal(grpc.callRaw('ModelInfer', message(), WITH_KEY))
    expect(refusal.code).toBe('INVALID_ARGUMENT')
    expect(refusal.details).toMatch(new RegExp(`^${code}: `))
    expect(refusal.details).toMatch(details)
    expect(grpc.decodedInferRequests()).toBe(decodedBefore)
  })

  it('a message within every bound is decoded and answered as before', async () => {
    const decodedBefore = grpc.decodedInferRequests()
    const message = Buffer.concat([
      inferWire.modelName(MODEL),
      inferWire.input('input', 'BYTES', [1], lengthDelimited(8, photo)),
      repeatedField(varintField(99, 1), MAX_UNKNOWN_FIELDS)
    ])
    const answer = await grpc.callRaw<{ outputs: Array<{ shape: number[] }> }>('ModelInfer', message, WITH_KEY)
    expect(answer.outputs[0]!.shape).toEqual([1, 1000])
    expect(grpc.decodedInferRequests()).toBe(decodedBefore + 1)
  })
})

describe('gRPC admission: the receive limit follows the largest batch', () => {
  const fp32Batch = (items: number): Buffer =>
    Buffer.concat([
      inferWire.modelName(MODEL),
      inferWire.input('input', 'FP32', [items, 3, 224, 224]),
      inferWire.rawInputContents(Buffer.alloc(items * ITEM_BYTES))
    ])

  it('an FP32 batch of --max-batch-items images works though it is over --body-limit-bytes (28 and more failed at the 16 MB default)', async () => {
    expect(grpc.receiveLimitBytes).toBe(MAX_ITEMS * ITEM_BYTES + 64 * 1024)
    expect(MAX_ITEMS * ITEM_BYTES).toBeGreaterThan(server.settings.bodyLimitBytes)
    const answer = await grpc.callRaw<{ outputs: Array<{ shape: number[] }> }>('ModelInfer', fp32Batch(MAX_ITEMS), WITH_KEY)
    expect(answer.outputs[0]!.shape).toEqual([MAX_ITEMS, 1000])
  })

  it('one image more is over the limit: RESOURCE_EXHAUSTED BODY_TOO_LARGE, in the registry like every refusal', async () => {
    const refusal = await callRefusal(grpc.callRaw('ModelInfer', fp32Batch(MAX_ITEMS + 1), WITH_KEY))
    expect(refusal.code).toBe('RESOURCE_EXHAUSTED')
    expect(refusal.details).toMatch(/^BODY_TOO_LARGE: .*larger than max/)
  })

  it('the small RPCs take small messages only', async () => {
    const refusal = await callRefusal(
      grpc.callRaw('ModelMetadata', Buffer.concat([lengthDelimited(1, MODEL), lengthDelimited(99, Buffer.alloc(64 * 1024))]))
    )
    expect(refusal).toMatchObject({
      code: 'RESOURCE_EXHAUSTED',
      details: expect.stringMatching(/^BODY_TOO_LARGE: .*ModelMetadata/) as string
    })
  })
})

describe('gRPC admission: messages being received at once stay within the body budget', () => {
  it('a message is held from the moment its length arrives, and waits while the budget has no room; a slow sender gives its share back after --request-timeout-ms', async () => {
    // Room for two messages being read: the budget is twice the receive limit (and a little).
    const settings = { ...server.settings, bodyBudgetBytes: 2 * grpc.receiveLimitBytes + 1024, requestTimeoutMs: 1_500 }
    const door = await startTestGrpc(server, settings, pino({ level: 'silent' }))
    try {
      const timedOutBefore = await failures('REQUEST_TIMEOUT')
      const order: string[] = []
      const stalled = await stallTwoUploads(door, order)
      // A whole, valid call now waits for room: it is answered only once a stalled one has timed out.
      const message = Buffer.concat([inferWire.modelName(MODEL), inferWire.input('input', 'BYTES', [1], lengthDelimited(8, photo))])
      const good = door.callRaw('ModelInfer', message, WITH_KEY)
      const answer = good.then(() => order.push('good'))
      await waitFor('the valid call to wait for room', () => door.bodyBudget().waiting === 1, 10_000)
      // The other RPCs have a lane of their own: a health call does not wait behind inference uploads.
      await door.call('ServerLive', {}, WITH_KEY)
      order.push('live')
      const ends = await Promise.all(stalled.map((c) => c.ended))
      await answer
      for (const end of ends)
        expect(end).toEqual({ code: status.DEADLINE_EXCEEDED, details: expect.stringMatching(/^REQUEST_TIMEOUT: /) as string })
      expect(order.indexOf('good')).toBeGreaterThan(Math.min(order.indexOf('stalled 0'), order.indexOf('stalled 1')))
      expect(order[0]).toBe('live')
      expect(await changed(() => failures('REQUEST_TIMEOUT'), timedOutBefore)).toBe(timedOutBefore + 2)
      for (const c of stalled) c.close()
    } finally {
      await door.close()
    }
  })

  it('a call that has sent no bytes of its message holds nothing (each held a whole receive limit for --request-timeout-ms: six such calls shut ModelInfer out)', async () => {
    const settings = { ...server.settings, bodyBudgetBytes: 2 * grpc.receiveLimitBytes + 1024, requestTimeoutMs: 1_500 }
    const door = await startTestGrpc(server, settings, pino({ level: 'silent' }))
    try {
      const silent = Array.from({ length: 6 }, () => rawGrpcCall(door.port, 'ModelInfer', { 'x-api-key': KEY }))
      const message = Buffer.concat([inferWire.modelName(MODEL), inferWire.input('input', 'BYTES', [1], lengthDelimited(8, photo))])
      await door.callRaw('ModelInfer', message, WITH_KEY)
      expect(door.bodyBudget()).toEqual({ heldBytes: 0, waiting: 0 })
      // Their message is still due: each ends once --request-timeout-ms has passed.
      for (const call of silent)
        expect(await call.ended).toEqual({ code: status.DEADLINE_EXCEEDED, details: expect.stringMatching(/^REQUEST_TIMEOUT: /) as string })
      for (const call of silent) call.close()
    } finally {
      await door.close()
    }
  })
})

/** A gRPC message's 5-byte prefix: uncompressed, `bytes` long. */
function announce(bytes: number): Buffer {
  const prefix = Buffer.alloc(5)
  prefix.writeUInt32BE(bytes, 1)
  return prefix
}

/**
 * Two ModelInfer clients announce a message of a whole receive limit, send 1 kB of it and stall:
 * once each holds its length, a door whose budget is two receive limits (and a little) is full.
 * Each call's end is recorded in `order` as `stalled <i>`.
 */
async function stallTwoUploads(door: GrpcTestDoor, order: string[]): Promise<RawGrpcCall[]> {
  const stalled = [0, 1].map((i) => {
    const call = rawGrpcCall(door.port, 'ModelInfer', { 'x-api-key': KEY })
    call.stream.write(Buffer.concat([announce(door.receiveLimitBytes), Buffer.alloc(1_000)]))
    // A call the test closes before its status came rejects: it is not one of those the order looks at.
    void call.ended.then(
      () => order.push(`stalled ${i}`),
      () => undefined
    )
    return call
  })
  await waitFor('both stalled calls to hold a receive limit', () => door.bodyBudget().heldBytes === 2 * door.receiveLimitBytes, 10_000)
  return stalled
}

/** A ModelStreamInfer call written over HTTP/2: what it writes, and how many answers have come back whole. */
function rawStream(port: number, headers: Readonly<Record<string, string>> = {}): RawGrpcCall & { answers(): number } {
  const call = rawGrpcCall(port, 'ModelStreamInfer', { 'x-api-key': KEY, ...headers })
  let pending = Buffer.alloc(0)
  let answers = 0
  call.stream.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk])
    while (pending.byteLength >= 5 && pending.byteLength >= 5 + pending.readUInt32BE(1)) {
      pending = pending.subarray(5 + pending.readUInt32BE(1))
      answers++
    }
  })
  return { ...call, answers: () => answers }
}

describe("gRPC admission: a stream's messages are held in the same budget, each from its first bytes", () => {
  const inferMessage = (): Buffer =>
    Buffer.concat([inferWire.modelName(MODEL), inferWire.input('input', 'BYTES', [1], lengthDelimited(8, photo))])

  it('idle streams hold nothing: ten streams open and waiting for their next request leave the budget empty', async () => {
    // Room for two messages: were an idle stream's read reserved for, two streams would shut out everyone else.
    const settings = { ...server.settings, bodyBudgetBytes: 2 * grpc.receiveLimitBytes + 1024 }
    const door = await startTestGrpc(server, settings, pino({ level: 'silent' }))
    const streams = Array.from({ length: 10 }, () => rawStream(door.port))
    try {
      for (const s of streams) s.stream.write(grpcFrame(inferMessage()))
      await waitFor('every stream to be answered', () => streams.every((s) => s.answers() === 1), 20_000)
      await waitFor('the shares to be given back', () => door.bodyBudget().heldBytes === 0, 1_000)
      // The streams now wait, read open, for requests that do not come; unary calls still find the room.
      await Promise.all([0, 1].map(() => door.callRaw('ModelInfer', inferMessage(), WITH_KEY)))
      expect(door.bodyBudget()).toEqual({ heldBytes: 0, waiting: 0 })
      expect(door.streamCounters().requestsRead).toBe(10)
    } finally {
      for (const s of streams) s.close()
      await door.close()
    }
  })

  it('a streamed message waits for room as a unary one does, and a stream that stalls mid-message gives its share back after --request-timeout-ms', async () => {
    const settings = { ...server.settings, bodyBudgetBytes: 2 * grpc.receiveLimitBytes + 1024, requestTimeoutMs: 1_500 }
    const door = await startTestGrpc(server, settings, pino({ level: 'silent' }))
    const sender = rawStream(door.port)
    const staller = rawStream(door.port)
    try {
      const order: string[] = []
      // Two unary uploads stall with a receive limit each: the budget is full.
      const stalled = await stallTwoUploads(door, order)
      const message = grpcFrame(inferMessage())
      sender.stream.write(message)
      await waitFor("the streamed message's first bytes to wait for room", () => door.bodyBudget().waiting === 1, 10_000)
      await waitFor('the stream to be answered', () => sender.answers() === 1, 10_000)
      order.push('streamed')
      expect(order.indexOf('streamed')).toBeGreaterThan(Math.min(order.indexOf('stalled 0'), order.indexOf('stalled 1')))
      for (const c of stalled) c.close()

      // A stream announces 100 kB, sends 1 kB of it and stalls: it holds the 100 kB, then ends.
      await waitFor('the budget to be free', () => door.bodyBudget().heldBytes === 0, 10_000)
      staller.stream.write(grpcFrame(Buffer.alloc(100_000)).subarray(0, 1_000))
      await waitFor('the stalled message to hold its size', () => door.bodyBudget().heldBytes === 100_000, 10_000)
      expect(await staller.ended).toEqual({
        code: status.DEADLINE_EXCEEDED,
        details: expect.stringMatching(/^REQUEST_TIMEOUT: /) as string
      })
      await waitFor('its share to be given back', () => door.bodyBudget().heldBytes === 0, 1_000)
    } finally {
      sender.close()
      staller.close()
      await door.close()
    }
  })

  it('compressed messages, each holding a whole receive limit until its size is known, are read and answered (the next one hung until REQUEST_TIMEOUT)', async () => {
    const door = await startTestGrpc(server, { ...server.settings, requestTimeoutMs: 3_000 }, pino({ level: 'silent' }))
    const stream = rawStream(door.port, { 'grpc-encoding': 'gzip' })
    try {
      for (let i = 0; i < 3; i++) stream.stream.write(grpcFrame(gzipSync(inferMessage()), true))
      stream.stream.end()
      expect(await stream.ended).toEqual({ code: status.OK, details: 'OK' })
      expect(stream.answers()).toBe(3)
      expect(door.bodyBudget()).toEqual({ heldBytes: 0, waiting: 0 })
    } finally {
      stream.close()
      await door.close()
    }
  })

  it('a client that takes none of its answers for --request-timeout-ms has its stream reset, ANSWERS_NOT_READ in the log, and what it held given back', async () => {
    const { lines, logger } = readLog()
    const door = await startTestGrpc(server, { ...server.settings, requestTimeoutMs: 1_500 }, logger)
    const stream = rawStream(door.port)
    try {
      // Answers of 1000 raw scores (4 kB each): the client's 64 kB window is full after some 16.
      stream.stream.pause()
      const message = grpcFrame(
        Buffer.concat([inferWire.modelName(MODEL), inferWire.input('input', 'BYTES', [1], lengthDelimited(8, photo))])
      )
      for (let i = 0; i < 40; i++) stream.stream.write(message)
      await expect(stream.ended).rejects.toThrow('without a grpc-status')
      expect(stream.stream.rstCode).toBe(http2.NGHTTP2_CANCEL)
      expect(lines.filter((l) => l.code === 'ANSWERS_NOT_READ').map((l) => l.msg)).toEqual(['gRPC call refused'])
      await waitFor('its shares to be given back', () => door.bodyBudget().heldBytes === 0, 5_000)
    } finally {
      stream.close()
      await door.close()
    }
  }, 20_000)

  it('a stream whose handler falls behind holds about one receive limit read and unanswered, not the 16 messages grpc-js would read ahead', async () => {
    const door = await startTestGrpc(server, server.settings, pino({ level: 'silent' }))
    const stream = rawStream(door.port)
    try {
      // Batches of half the largest: the stream's running requests take two, grpc-js would read sixteen more.
      const items = MAX_ITEMS / 2
      const batch = grpcFrame(
        Buffer.concat([
          inferWire.modelName(MODEL),
          inferWire.input('input', 'FP32', [items, 3, 224, 224]),
          inferWire.rawInputContents(Buffer.alloc(items * ITEM_BYTES))
        ])
      )
      let peak = 0
      const sampler = setInterval(() => (peak = Math.max(peak, door.bodyBudget().heldBytes)), 2)
      // Written as HTTP/2 takes them (the client session's own memory cap would otherwise reset the stream).
      for (let i = 0; i < 12; i++) if (!stream.stream.write(batch)) await new Promise((resolve) => stream.stream.once('drain', resolve))
      stream.stream.end()
      const end = await stream.ended
      clearInterval(sampler)
      expect(end.code).toBe(status.OK)
      expect(door.streamCounters().requestsRead).toBe(12)
      expect(peak).toBeGreaterThan(0)
      // Its part (one receive limit), one message more read while under it, and one arriving.
      expect(peak).toBeLessThanOrEqual(door.receiveLimitBytes + 2 * batch.byteLength)
      expect(door.bodyBudget()).toEqual({ heldBytes: 0, waiting: 0 })
    } finally {
      stream.close()
      await door.close()
    }
  })
})

describe('gRPC admission: calls open at once are capped (--max-grpc-calls)', () => {
  it('with the cap reached by open streams, one more call is refused RESOURCE_EXHAUSTED TOO_MANY_CALLS before its message is read; a stream that closes makes room (100 000 idle streams took 1.4 GiB)', async () => {
    const door = await startTestGrpc(server, { ...server.settings, maxGrpcCalls: 3 }, pino({ level: 'silent' }))
    const message = Buffer.concat([inferWire.modelName(MODEL), inferWire.input('input', 'BYTES', [1], lengthDelimited(8, photo))])
    // Calls that end, every way, give their place back: one kept would refuse the third stream below.
    for (let i = 0; i < 4; i++) await door.callRaw('ModelInfer', message, WITH_KEY)
    expect((await callRefusal(door.callRaw('ModelInfer', message))).code).toBe('UNAUTHENTICATED')
    for (let i = 0; i < 2; i++) {
      const closed = rawStream(door.port)
      closed.stream.end(grpcFrame(message))
      expect((await closed.ended).code).toBe(status.OK)
      closed.close()
    }
    const streams = Array.from({ length: 3 }, () => rawStream(door.port))
    try {
      for (const s of streams) s.stream.write(grpcFrame(message))
      await waitFor('every stream to be open and answered', () => streams.every((s) => s.answers() === 1), 20_000)
      const decodedBefore = door.decodedInferRequests()
      const refusal = await callRefusal(door.callRaw('ModelInfer', message, WITH_KEY))
      expect(refusal).toEqual({ code: 'RESOURCE_EXHAUSTED', details: expect.stringMatching(/^TOO_MANY_CALLS: /) as string })
      expect(door.decodedInferRequests()).toBe(decodedBefore)
      // A stream hangs up: its place is free again.
      streams[0]!.close()
      let served = false
      await waitFor(
        'a call to be served in the freed place',
        async () =>
          (served = await door.callRaw('ModelInfer', message, WITH_KEY).then(
            () => true,
            () => false
          )),
        10_000
      )
      expect(served).toBe(true)
    } finally {
      for (const s of streams) s.close()
      await door.close()
    }
  })
})

describe('gRPC admission: open connections are capped (--max-grpc-connections)', () => {
  it('a connection over the cap is closed as soon as it is accepted; one that closes makes room, and calls on those open are served', async () => {
    const door = await startTestGrpc(server, { ...server.settings, maxGrpcConnections: 2 }, pino({ level: 'silent' }))
    /** An HTTP/2 connection, and whether the server spoke (its SETTINGS) before it closed. */
    const open = (): Promise<{ session: ClientHttp2Session; spoke: boolean }> =>
      new Promise((resolve) => {
        const session = connect(`http://127.0.0.1:${door.port}`)
        session.on('error', () => undefined)
        session.once('remoteSettings', () => resolve({ session, spoke: true }))
        session.once('close', () => resolve({ session, spoke: false }))
      })
    const sessions: ClientHttp2Session[] = []
    try {
      const [first, second] = [await open(), await open()]
      sessions.push(first.session, second.session)
      expect([first.spoke, second.spoke]).toEqual([true, true])
      const third = await open()
      sessions.push(third.session)
      expect(third.spoke).toBe(false)
      first.session.destroy()
      await waitFor(
        'a connection to be accepted in the freed place',
        async () => {
          const next = await open()
          sessions.push(next.session)
          return next.spoke
        },
        5_000
      )
      // A client's connection within the cap serves calls as ever.
      second.session.destroy()
      const message = Buffer.concat([inferWire.modelName(MODEL), inferWire.input('input', 'BYTES', [1], lengthDelimited(8, photo))])
      await waitFor(
        'a call on a new connection to be served',
        () =>
          door.callRaw('ModelInfer', message, WITH_KEY).then(
            () => true,
            () => false
          ),
        10_000
      )
    } finally {
      for (const session of sessions) session.destroy()
      await door.close()
    }
  })
})

describe('gRPC admission: connections that hold no call do not keep clients out', () => {
  /** An HTTP/2 connection once the server has spoken (its SETTINGS); undefined when it closed first. */
  const handshake = (port: number): Promise<ClientHttp2Session | undefined> =>
    new Promise((resolve) => {
      const session = connect(`http://127.0.0.1:${port}`)
      session.on('error', () => undefined)
      session.once('remoteSettings', () => resolve(session))
      session.once('close', () => resolve(undefined))
    })
  const inferMessage = (): Buffer =>
    Buffer.concat([inferWire.modelName(MODEL), inferWire.input('input', 'BYTES', [1], lengthDelimited(8, photo))])
  const closed = (session: { once(event: 'close', listener: () => void): unknown; closed?: boolean; destroyed?: boolean }): Promise<void> =>
    new Promise((resolve) => (session.closed === true || session.destroyed === true ? resolve() : session.once('close', resolve)))
  const live = (session: ClientHttp2Session): Promise<RawCallEnd> => {
    const stream = openGrpcStream(session, 'ServerLive')
    stream.end(grpcFrame(new Uint8Array(0)))
    return new Promise((resolve) => stream.on('trailers', (h) => resolve({ code: Number(h['grpc-status']), details: '' })).resume())
  }

  it('a connection that begins no call within --headers-timeout-ms is closed, silent or after the HTTP/2 handshake, and logged; one that called stays open (1030 silent TCP connections held every place of --max-grpc-connections for good)', async () => {
    const { lines, logger } = readLog()
    const headersTimeoutMs = 500
    const door = await startTestGrpc(server, { ...server.settings, headersTimeoutMs }, logger)
    const silent = createConnection(door.port, '127.0.0.1')
    // Read, so that the server's close reaches 'close' (a paused socket never sees its end).
    silent.on('error', () => undefined).resume()
    const quiet = await handshake(door.port)
    const caller = await handshake(door.port)
    try {
      expect(quiet).toBeDefined()
      expect((await live(caller!)).code).toBe(status.OK)
      const stillOpen = new Promise((resolve) => setTimeout(resolve, headersTimeoutMs + 2_000, 'still open'))
      expect(await Promise.race([Promise.all([closed(silent), closed(quiet!)]).then(() => 'closed'), stillOpen])).toBe('closed')
      await new Promise((resolve) => setTimeout(resolve, headersTimeoutMs))
      expect(caller!.closed || caller!.destroyed).toBe(false)
      expect((await live(caller!)).code).toBe(status.OK)
      await waitFor('the closes to be logged', () => lines.some((l) => l.code === 'REQUEST_TIMEOUT' && /no call began/.test(l.msg)), 11_000)
    } finally {
      silent.destroy()
      quiet?.destroy()
      caller?.destroy()
      await door.close()
    }
  })

  it('at --max-grpc-connections, connections with no call open are told GOAWAY NO_ERROR so the next client gets in; one with a call open is not', async () => {
    const door = await startTestGrpc(server, { ...server.settings, maxGrpcConnections: 2 }, pino({ level: 'silent' }))
    const idle = await handshake(door.port)
    const streaming = rawStream(door.port)
    const sessions: ClientHttp2Session[] = []
    try {
      expect((await live(idle!)).code).toBe(status.OK)
      streaming.stream.write(grpcFrame(inferMessage()))
      await waitFor('the stream to be answered', () => streaming.answers() === 1, 20_000)
      const goaway = new Promise<number>((resolve) => idle!.once('goaway', resolve))
      // Over the cap: this one is refused, and the idle one told to go away.
      const refused = await handshake(door.port)
      expect(refused).toBeUndefined()
      const noGoaway = new Promise((resolve) => setTimeout(resolve, 2_000, 'no GOAWAY within 2 s'))
      expect(await Promise.race([goaway, noGoaway])).toBe(http2.NGHTTP2_NO_ERROR)
      await closed(idle!)
      let next: ClientHttp2Session | undefined
      await waitFor('a new connection to be accepted', async () => (next = await handshake(door.port)) !== undefined, 5_000)
      sessions.push(next!)
      expect((await live(next!)).code).toBe(status.OK)
      // The stream's connection was left alone: it still serves its requests.
      streaming.stream.write(grpcFrame(inferMessage()))
      await waitFor('the stream to be answered again', () => streaming.answers() === 2, 20_000)
    } finally {
      idle?.destroy()
      streaming.close()
      for (const s of sessions) s.destroy()
      await door.close()
    }
  })
})

describe('gRPC admission: ModelStreamInfer streams with no request in flight do not keep clients out', () => {
  const inferMessage = (): Buffer =>
    Buffer.concat([inferWire.modelName(MODEL), inferWire.input('input', 'BYTES', [1], lengthDelimited(8, photo))])
  const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
  /** How a call ended within `ms`, or 'open'. */
  const endWithin = (call: RawGrpcCall, ms: number): Promise<RawCallEnd | 'open'> =>
    Promise.race([call.ended.catch(() => ({ code: -1, details: 'closed without a status' })), sleep(ms).then(() => 'open' as const)])
  const handshake = (port: number): Promise<ClientHttp2Session | undefined> =>
    new Promise((resolve) => {
      const session = connect(`http://127.0.0.1:${port}`)
      session.on('error', () => undefined)
      session.once('remoteSettings', () => resolve(session))
      session.once('close', () => resolve(undefined))
    })
  const stillOpen = (call: RawGrpcCall): Promise<RawCallEnd | 'open'> => endWithin(call, 200)

  it('at --max-grpc-calls, a health call is answered in a reserved place and a keyed call takes the place of the stream idle longest, which ends UNAVAILABLE STREAM_IDLE (33 × 126 streams that sent nothing refused every call, ServerLive included, for as long as they stayed)', async () => {
    const door = await startTestGrpc(server, { ...server.settings, maxGrpcCalls: 3 }, pino({ level: 'silent' }))
    const streams = Array.from({ length: 3 }, () => rawStream(door.port))
    try {
      await sleep(100)
      // Every place is held by streams idle less than RECLAIM_AFTER_MS: an inference call is refused, a probe still answered.
      expect(await callRefusal(door.callRaw('ModelInfer', inferMessage(), WITH_KEY))).toEqual({
        code: 'RESOURCE_EXHAUSTED',
        details: expect.stringMatching(/^TOO_MANY_CALLS: /) as string
      })
      expect(await door.call('ServerLive', {})).toEqual({ live: true })
      expect(await door.call('ModelReady', { name: MODEL })).toEqual({ ready: true })

      await sleep(RECLAIM_AFTER_MS)
      // The first stream is used now: it is idle from its answer on, the others from their opening.
      streams[0]!.stream.write(grpcFrame(inferMessage()))
      await waitFor('the first stream to be answered', () => streams[0]!.answers() === 1, 20_000)
      // A keyless call takes nobody's place.
      expect((await callRefusal(door.callRaw('ModelInfer', inferMessage()))).code).toBe('UNAUTHENTICATED')
      expect(await Promise.all(streams.map(stillOpen))).toEqual(['open', 'open', 'open'])
      // A keyed one does: a stream idle since it opened ends, the one just used stays.
      const answer = await door.callRaw<{ outputs: Array<{ shape: number[] }> }>('ModelInfer', inferMessage(), WITH_KEY)
      expect(answer.outputs[0]!.shape).toEqual([1, 1000])
      const [first, ...others] = await Promise.all(streams.map(stillOpen))
      expect(first).toBe('open')
      expect(others.filter((end) => end !== 'open')).toEqual([
        { code: status.UNAVAILABLE, details: expect.stringMatching(/^STREAM_IDLE: .*--max-grpc-calls were open/) as string }
      ])
      streams[0]!.stream.write(grpcFrame(inferMessage()))
      await waitFor('the first stream to be answered again', () => streams[0]!.answers() === 2, 20_000)
    } finally {
      for (const s of streams) s.close()
      await door.close()
    }
  })

  it('at --max-grpc-calls, a unary call whose message has not begun gives way as an idle stream does (1024 ModelInfer calls that sent only their headers held every place until --request-timeout-ms, renewed at will)', async () => {
    const door = await startTestGrpc(server, { ...server.settings, maxGrpcCalls: 3 }, pino({ level: 'silent' }))
    const silent = Array.from({ length: 3 }, () => rawGrpcCall(door.port, 'ModelInfer', { 'x-api-key': KEY }))
    try {
      await sleep(100)
      // Idle less than RECLAIM_AFTER_MS: nobody's place is taken yet.
      expect(await callRefusal(door.callRaw('ModelInfer', inferMessage(), WITH_KEY))).toEqual({
        code: 'RESOURCE_EXHAUSTED',
        details: expect.stringMatching(/^TOO_MANY_CALLS: /) as string
      })
      await sleep(RECLAIM_AFTER_MS)
      const answer = await door.callRaw<{ outputs: Array<{ shape: number[] }> }>('ModelInfer', inferMessage(), WITH_KEY)
      expect(answer.outputs[0]!.shape).toEqual([1, 1000])
      const ends = await Promise.all(silent.map(stillOpen))
      expect(ends.filter((end) => end !== 'open')).toEqual([
        {
          code: status.UNAVAILABLE,
          details: expect.stringMatching(/^STREAM_IDLE: .*a call whose message had not begun.*--max-grpc-calls were open/) as string
        }
      ])
    } finally {
      for (const s of silent) s.close()
      await door.close()
    }
  })

  it(`the reserved places are ${RESERVED_CALLS}, for unary health and metadata calls only`, async () => {
    const door = await startTestGrpc(server, { ...server.settings, maxGrpcCalls: 1 }, pino({ level: 'silent' }))
    // A unary call that sends nothing holds the one place until it has been idle RECLAIM_AFTER_MS; nobody takes it sooner.
    const holder = rawGrpcCall(door.port, 'ModelInfer', { 'x-api-key': KEY })
    const probes: RawGrpcCall[] = []
    try {
      await sleep(100)
      for (let i = 0; i < RESERVED_CALLS; i++) probes.push(rawGrpcCall(door.port, 'ServerLive'))
      await sleep(500)
      expect((await Promise.all(probes.map(stillOpen))).every((end) => end === 'open')).toBe(true)
      expect(await callRefusal(door.call('ServerReady', {}))).toMatchObject({ code: 'RESOURCE_EXHAUSTED' })
      probes[0]!.close()
      await waitFor(
        'a probe to be answered in the freed place',
        () =>
          door.call('ServerReady', {}).then(
            () => true,
            () => false
          ),
        5_000
      )
    } finally {
      holder.close()
      for (const p of probes) p.close()
      await door.close()
    }
  })

  it('a stream with no request in flight for --grpc-stream-idle-timeout-ms ends UNAVAILABLE STREAM_IDLE; one that sends a request more often is served on', async () => {
    const { lines, logger } = readLog()
    const idleTimeoutMs = 1500
    const door = await startTestGrpc(server, { ...server.settings, grpcStreamIdleTimeoutMs: idleTimeoutMs }, logger)
    const silent = rawStream(door.port)
    const used = rawStream(door.port)
    try {
      const openedAt = performance.now()
      const silentEnd = silent.ended.then((end) => ({ end, afterMs: performance.now() - openedAt }))
      for (let i = 1; i <= 5; i++) {
        used.stream.write(grpcFrame(inferMessage()))
        await waitFor(`answer ${i}`, () => used.answers() === i, 20_000)
        await sleep(idleTimeoutMs / 2)
      }
      const { end, afterMs } = await silentEnd
      expect(end).toEqual({ code: status.UNAVAILABLE, details: expect.stringMatching(/^STREAM_IDLE: .*It had none for 1500 ms/) as string })
      // Swept once a second.
      expect(afterMs).toBeGreaterThanOrEqual(idleTimeoutMs)
      expect(afterMs).toBeLessThan(idleTimeoutMs + 1_500)
      used.stream.end()
      expect(await used.ended).toEqual({ code: status.OK, details: 'OK' })
      expect(used.answers()).toBe(5)
      await waitFor('the end to be logged', () => lines.some((l) => l.code === 'STREAM_IDLE' && /no request in flight/.test(l.msg)), 5_000)
    } finally {
      silent.close()
      used.close()
      await door.close()
    }
  })

  it('at --max-grpc-connections, the connection whose streams have been idle longest has them ended and is told GOAWAY, so the next client gets in (1024 connections with one silent stream each refused every new client)', async () => {
    const door = await startTestGrpc(server, { ...server.settings, maxGrpcConnections: 2 }, pino({ level: 'silent' }))
    const older = rawStream(door.port)
    const recent = rawStream(door.port)
    const sessions: ClientHttp2Session[] = []
    try {
      await sleep(RECLAIM_AFTER_MS + 100)
      recent.stream.write(grpcFrame(inferMessage()))
      await waitFor('the recent stream to be answered', () => recent.answers() === 1, 20_000)
      const goaway = new Promise<number>((resolve) => older.stream.session!.once('goaway', resolve))
      // Over the cap: this one is refused, and the connection idle longest told to go away.
      expect(await handshake(door.port)).toBeUndefined()
      expect(await older.ended).toEqual({
        code: status.UNAVAILABLE,
        details: expect.stringMatching(/^STREAM_IDLE: .*--max-grpc-connections were open/) as string
      })
      expect(await goaway).toBe(http2.NGHTTP2_NO_ERROR)
      let next: ClientHttp2Session | undefined
      await waitFor('a new connection to be accepted', async () => (next = await handshake(door.port)) !== undefined, 5_000)
      sessions.push(next!)
      const live = openGrpcStream(next!, 'ServerLive')
      live.end(grpcFrame(new Uint8Array(0)))
      const liveStatus = await new Promise((resolve) => live.on('trailers', (h) => resolve(Number(h['grpc-status']))).resume())
      expect(liveStatus).toBe(status.OK)
      // The stream used last was left alone.
      expect(await stillOpen(recent)).toBe('open')
      recent.stream.write(grpcFrame(inferMessage()))
      await waitFor('the recent stream to be answered again', () => recent.answers() === 2, 20_000)
    } finally {
      older.close()
      recent.close()
      for (const s of sessions) s.destroy()
      await door.close()
    }
  })
})

describe('gRPC admission: calls begun in one turn of the event loop are bounded (rapid reset)', () => {
  it('a connection that opens and resets more streams at once than --max-grpc-calls is told GOAWAY ENHANCE_YOUR_CALM, logged CALL_BURST; other connections serve on (200 such connections exhausted the heap of a server in 1.5 GiB)', async () => {
    const { lines, logger } = readLog()
    const door = await startTestGrpc(server, { ...server.settings, maxGrpcCalls: 20 }, logger)
    const message = Buffer.concat([inferWire.modelName(MODEL), inferWire.input('input', 'BYTES', [1], lengthDelimited(8, photo))])
    const bystander = rawStream(door.port)
    const attacker = connect(`http://127.0.0.1:${door.port}`)
    attacker.on('error', () => undefined)
    const settled = new Promise((resolve) => attacker.once('remoteSettings', resolve))
    try {
      // One call on the bystander's connection first: it is open, and stays served.
      bystander.stream.write(grpcFrame(message))
      await waitFor('the bystander to be answered', () => bystander.answers() === 1, 20_000)
      await settled
      const goaway = new Promise<number>((resolve) => attacker.once('goaway', resolve))
      // 300 streams opened and reset in one write: none waits for an answer.
      let opened = 0
      for (let i = 0; i < 300 && !attacker.closed; i++) {
        const stream = openGrpcStream(attacker, 'ModelStreamInfer', { 'x-api-key': KEY })
        stream.close(http2.NGHTTP2_CANCEL)
        opened++
      }
      expect(opened).toBeGreaterThan(20)
      const noGoaway = new Promise((resolve) => setTimeout(resolve, 5_000, 'no GOAWAY within 5 s'))
      expect(await Promise.race([goaway, noGoaway])).toBe(http2.NGHTTP2_ENHANCE_YOUR_CALM)
      await waitFor('the burst to be logged', () => lines.some((l) => l.code === 'CALL_BURST'), 5_000)
      expect(lines.find((l) => l.code === 'CALL_BURST')).toMatchObject({ count: 1 })
      // The bystander's stream takes its next request; a new connection is served too.
      bystander.stream.write(grpcFrame(message))
      await waitFor('the bystander to be answered again', () => bystander.answers() === 2, 20_000)
      await door.callRaw('ModelInfer', message, WITH_KEY)
    } finally {
      attacker.destroy()
      bystander.close()
      await door.close()
    }
  })
})

describe('gRPC admission: one body budget for both doors, as main.ts shares it', () => {
  it('a gRPC message holding the budget keeps an HTTP upload that does not fit waiting in line, its body unread; once the message falls behind its pace, the upload takes its share and is served', async () => {
    const budget = 2 * 1024 * 1024
    const shared = await startTestServer(await syntheticModelRepository(), [
      '--body-budget-bytes',
      String(budget),
      '--request-timeout-ms',
      '6000',
      '--headers-timeout-ms',
      '1000'
    ])
    const door = await startTestGrpc(shared, shared.settings, pino({ level: 'silent' }), shared.bodyBudget)
    try {
      // A stalled gRPC upload announces 1.5 MiB: the HTTP door sees the same budget held.
      const stalled = rawGrpcCall(door.port, 'ModelInfer')
      stalled.stream.write(Buffer.concat([announce(1.5 * 1024 * 1024), Buffer.alloc(1_000)]))
      await waitFor('the gRPC message to hold its length', () => shared.bodyBudget.state.heldBytes === 1.5 * 1024 * 1024, 10_000)
      // A real photo padded to 600 kB (a JPEG decoder stops at its end marker): over what is left.
      const upload = Buffer.concat([photo, Buffer.alloc(600_000 - photo.byteLength)])
      const served = fetch(`${shared.url}/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: upload })
      await waitFor('the upload to wait in line', () => shared.bodyBudget.state.waiting === 1, 5_000)
      expect(shared.bodyBudget.state.heldBytes).toBe(1.5 * 1024 * 1024)
      // Past its grace the message is behind the pace that finishes it within the timeout.
      expect((await served).status).toBe(200)
      expect(await stalled.ended).toEqual({
        code: status.DEADLINE_EXCEEDED,
        details: expect.stringMatching(/^REQUEST_TIMEOUT: .*more slowly than --request-timeout-ms allows/) as string
      })
      stalled.close()
      await waitFor('the upload to give its share back', () => shared.bodyBudget.state.heldBytes === 0, 5_000)
    } finally {
      await door.close()
      await shared.close()
    }
  })

  it('regression (attacker): messages announced anew every half second, one byte of each sent (about 2 KB a second), kept every upload 429 BODY_BUDGET_FULL for as long as they came; an upload now waits its turn, ahead of later announcements, and those ahead that sent less than 16 KiB are refused at theirs', async () => {
    const shared = await startTestServer(await syntheticModelRepository(), ['--headers-timeout-ms', '1000'])
    const door = await startTestGrpc(shared, shared.settings, pino({ level: 'silent' }), shared.bodyBudget)
    const calls: RawGrpcCall[] = []
    // Six receive limits are more than the default budget: each round fills it anew, more waiting.
    const round = (): void => {
      for (let i = 0; i < 12; i++) {
        const call = rawGrpcCall(door.port, 'ModelInfer')
        call.stream.write(Buffer.concat([announce(door.receiveLimitBytes), Buffer.alloc(1)]))
        calls.push(call)
      }
    }
    round()
    const rounds = setInterval(round, BODY_PACE_GRACE_MS / 2)
    try {
      await waitFor('the announcements to fill the budget', () => shared.bodyBudget.state.waiting > 0, 10_000)
      const statuses: number[] = []
      for (let i = 0; i < 3; i++) {
        const res = await fetch(`${shared.url}/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: photo })
        statuses.push(res.status)
      }
      expect(statuses).toEqual([200, 200, 200])
    } finally {
      clearInterval(rounds)
      for (const call of calls) call.close()
      await door.close()
      await shared.close()
    }
  })

  it('regression (attacker, round 6b): thirty more such calls waiting in line are refused when their turn comes, not each granted a share for its grace; an upload gets in, and a waiting message that sent bytes is granted', async () => {
    const shared = await startTestServer(await syntheticModelRepository(), [
      '--request-timeout-ms',
      '10000',
      '--headers-timeout-ms',
      '1000'
    ])
    const door = await startTestGrpc(shared, shared.settings, pino({ level: 'silent' }), shared.bodyBudget)
    const holders = Array.from({ length: 5 }, () => rawGrpcCall(door.port, 'ModelInfer'))
    const silent = Array.from({ length: 30 }, () => rawGrpcCall(door.port, 'ModelInfer'))
    const sending = rawGrpcCall(door.port, 'ModelInfer')
    try {
      for (const call of holders) call.stream.write(announce(door.receiveLimitBytes))
      await waitFor(
        'five announced messages to fill the budget',
        () => shared.bodyBudget.state.heldBytes === 5 * door.receiveLimitBytes,
        10_000
      )
      // First in line: a client that sends the start of its message (what its flow-control window
      // allows) after its prefix: the bytes come while its stream is paused, held unread.
      sending.stream.write(announce(door.receiveLimitBytes))
      await waitFor('the sending call to wait', () => shared.bodyBudget.state.waiting === 1, 10_000)
      sending.stream.write(Buffer.alloc(32 * 1024))
      for (const call of silent) call.stream.write(announce(door.receiveLimitBytes))
      await waitFor('the silent calls to wait', () => shared.bodyBudget.state.waiting === 31, 10_000)
      // Those granted before they had waited SILENT_WAIT_MS hold their shares for a grace; after that
      // the rest are refused as their turn comes. Before: the line was worked off five grants a
      // grace, each ahead of every upload, 429s for 6 s more.
      await new Promise((resolve) => setTimeout(resolve, SILENT_WAIT_MS + 2 * BODY_PACE_GRACE_MS + 600))
      const served = await fetch(`${shared.url}/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: photo })
      expect(served.status).toBe(200)
      expect(shared.bodyBudget.state.waiting).toBe(0)
      // The few granted before they had waited SILENT_WAIT_MS end later, at the read timeout (nothing
      // else needs their shares); every other one is refused as its turn comes.
      const ends = await Promise.all(silent.map((c) => c.ended))
      for (const end of ends)
        expect(end).toEqual({ code: status.DEADLINE_EXCEEDED, details: expect.stringMatching(/^REQUEST_TIMEOUT: /) as string })
      const refusedSilent = ends.filter((e) => /sent 0 of them in \d+ ms waiting for room/.test(e.details)).length
      expect(refusedSilent).toBeGreaterThanOrEqual(silent.length - 5)
      // The call that sent bytes was granted its share, not refused for silence (it ends for its pace or
      // the timeout later, or when the test closes it).
      const sendingEnd = await Promise.race([sending.ended, new Promise<'open'>((resolve) => setTimeout(() => resolve('open'), 50))])
      if (sendingEnd !== 'open') expect((sendingEnd as { details: string }).details).not.toMatch(/ of them in \d+ ms waiting for room/)
    } finally {
      for (const call of [...holders, ...silent, sending]) call.close()
      await door.close()
      await shared.close()
    }
  })

  it('regression: six calls that each announce a receive limit and send nothing more (30 bytes in all) no longer shut out every upload: a newcomer takes their shares, and they end REQUEST_TIMEOUT', async () => {
    const shared = await startTestServer(await syntheticModelRepository(), ['--request-timeout-ms', '3000', '--headers-timeout-ms', '1000'])
    const door = await startTestGrpc(shared, shared.settings, pino({ level: 'silent' }), shared.bodyBudget)
    const announced = Array.from({ length: 6 }, () => rawGrpcCall(door.port, 'ModelInfer'))
    try {
      // Six receive limits are more than the default budget: five hold it whole, one waits.
      for (const call of announced) call.stream.write(announce(door.receiveLimitBytes))
      await waitFor('the announced messages to fill the budget', () => shared.bodyBudget.state.waiting === 1, 10_000)
      // Before: every upload was 429 BODY_BUDGET_FULL for all of --request-timeout-ms. Past the
      // grace, nothing of a receive limit is behind the pace.
      await new Promise((resolve) => setTimeout(resolve, BODY_PACE_GRACE_MS + 300))
      const served = await fetch(`${shared.url}/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: photo })
      expect(served.status).toBe(200)
      const message = Buffer.concat([inferWire.modelName(MODEL), inferWire.input('input', 'BYTES', [1], lengthDelimited(8, photo))])
      await door.callRaw('ModelInfer', message)
      const ends = await Promise.race([
        Promise.all(announced.map((c) => c.ended)),
        new Promise<'late'>((resolve) => setTimeout(() => resolve('late'), 10_000))
      ])
      expect(ends).not.toBe('late')
      for (const end of ends as Array<{ code: number; details: string }>)
        expect(end).toEqual({ code: status.DEADLINE_EXCEEDED, details: expect.stringMatching(/^REQUEST_TIMEOUT: /) as string })
    } finally {
      for (const call of announced) call.close()
      await door.close()
      await shared.close()
    }
  })
})

describe("gRPC admission: grpc-js's own answers carry registry codes", () => {
  it('an unreadable grpc-timeout → INVALID_ARGUMENT INVALID_DEADLINE (was INTERNAL)', async () => {
    const call = rawGrpcCall(grpc.port, 'ServerLive', { 'grpc-timeout': 'soon' })
    call.stream.end(grpcFrame(Buffer.alloc(0)))
    expect(await call.ended).toEqual({ code: status.INVALID_ARGUMENT, details: expect.stringMatching(/^INVALID_DEADLINE: /) as string })
    call.close()
  })

  it('a unary call without its message → INVALID_ARGUMENT BAD_REQUEST (was UNIMPLEMENTED)', async () => {
    const call = rawGrpcCall(grpc.port, 'ServerLive')
    call.stream.end()
    expect(await call.ended).toEqual({ code: status.INVALID_ARGUMENT, details: expect.stringMatching(/^BAD_REQUEST: /) as string })
    call.close()
  })

  it('a message in an encoding the server lacks → INVALID_ARGUMENT BAD_REQUEST', async () => {
    const call = rawGrpcCall(grpc.port, 'ServerLive', { 'grpc-encoding': 'snappy' })
    call.stream.end(grpcFrame(Buffer.from([1, 2, 3]), true))
    expect(await call.ended).toEqual({ code: status.INVALID_ARGUMENT, details: expect.stringMatching(/^BAD_REQUEST: .*snappy/) as string })
    call.close()
  })

  it("a request's id is answered whole and logged at most LOGGED_ID_CHARS long (a 20 MB id was a 20 MB log line)", async () => {
    const id = 'i'.repeat(100_000)
    const logsBefore = logs.length
    const answer = await grpc.call<{ id: string }>(
      'ModelInfer',
      { model_name: MODEL, id, inputs: [{ name: 'input', datatype: 'BYTES', shape: [1], contents: { bytes_contents: [photo] } }] },
      WITH_KEY
    )
    expect(answer.id).toBe(id)
    const inferred = logs.slice(logsBefore).find((line) => line.msg === 'inferred')
    expect(inferred?.id).toBe(`${'i'.repeat(LOGGED_ID_CHARS)}… (100000 characters)`)
  })

  it('a client that hangs up mid-upload is CLIENT_CLOSED at info level, not INTERNAL', async () => {
    const [closedBefore, internalBefore] = [await failures('CLIENT_CLOSED'), await failures('INTERNAL')]
    const logsBefore = logs.length
    const call = rawGrpcCall(grpc.port, 'ModelInfer', { 'x-api-key': KEY })
    call.stream.write(grpcFrame(Buffer.alloc(100_000)).subarray(0, 1_000))
    call.stream.close(http2.NGHTTP2_CANCEL)
    expect(await changed(() => failures('CLIENT_CLOSED'), closedBefore)).toBe(closedBefore + 1)
    expect(await failures('INTERNAL')).toBe(internalBefore)
    const lines = logs.slice(logsBefore)
    expect(lines).toContainEqual(expect.objectContaining({ level: 30, code: 'CLIENT_CLOSED' }))
    expect(lines.filter((l) => l.level >= 50)).toEqual([])
    call.close()
  })

  it('a client that cancels while its batch runs is counted CLIENT_CLOSED, not as a success it never saw', async () => {
    const successes = (): Promise<number> => metricValue(server, 'resnet_serve_request_success_total', `model="${MODEL}"`)
    const [closedBefore, okBefore] = [await failures('CLIENT_CLOSED'), await successes()]
    const { batcher } = server.service.model(MODEL)
    const call = rawGrpcCall(grpc.port, 'ModelInfer', { 'x-api-key': KEY })
    const images = 4
    const message = Buffer.concat([
      inferWire.modelName(MODEL),
      inferWire.input('input', 'FP32', [images, 3, 224, 224]),
      inferWire.rawInputContents(Buffer.alloc(images * ITEM_BYTES))
    ])
    call.stream.end(grpcFrame(message))
    // Its batch has left the queue and runs (four images of ResNet-50): cancel now.
    for (let i = 0; !(batcher.inFlight === 1 && batcher.pending === 0); i++) {
      if (i > 20_000) throw new Error('the request never ran')
      await new Promise((r) => setTimeout(r, 1))
    }
    call.stream.close(http2.NGHTTP2_CANCEL)
    expect(await changed(() => failures('CLIENT_CLOSED'), closedBefore)).toBe(closedBefore + 1)
    expect(batcher.inFlight).toBe(0)
    expect(await successes()).toBe(okBefore)
    call.close()
  })

  it("a client's own deadline passing mid-upload is DEADLINE_EXCEEDED at info level", async () => {
    const exceededBefore = await failures('DEADLINE_EXCEEDED')
    const logsBefore = logs.length
    const call = rawGrpcCall(grpc.port, 'ModelInfer', { 'x-api-key': KEY, 'grpc-timeout': '100m' })
    call.stream.write(grpcFrame(Buffer.alloc(100_000)).subarray(0, 1_000))
    expect(await call.ended).toEqual({ code: status.DEADLINE_EXCEEDED, details: expect.stringMatching(/^DEADLINE_EXCEEDED: /) as string })
    expect(await failures('DEADLINE_EXCEEDED')).toBe(exceededBefore + 1)
    const lines = logs.slice(logsBefore)
    expect(lines).toContainEqual(expect.objectContaining({ level: 30, code: 'DEADLINE_EXCEEDED' }))
    expect(lines.filter((l) => l.level >= 50)).toEqual([])
    call.close()
  })
})
