import { readFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { callRefusal, startTestGrpc, type GrpcTestDoor } from '../helpers/grpc.js'
import { readPhoto } from '../helpers/photos.js'
import { startTestServer, type TestServer } from '../helpers/server.js'
import { removeTempDirs, tempDir } from '../helpers/tiny-model.js'
import { tinyModelRepository } from '../helpers/tiny-repository.js'

/**
 * Triton's trace extension, as tritonclient's get_trace_settings / update_trace_settings call it:
 * GET and POST /v2/trace/setting and /v2/models/{model}/trace/setting, gRPC TraceSetting; and the
 * traces themselves, in Triton's JSON format, of V2 requests over both doors (here one file per
 * trace: log_frequency 1). Before, every one of these was refused 501 NOT_IMPLEMENTED.
 */

const KEY = 'trace-test-key'
const auth = { authorization: `Bearer ${KEY}` }

let server: TestServer
let grpc: GrpcTestDoor
let photo: Buffer
let traceDir: string
let file: string

interface TraceObject {
  id: number
  model_name?: string
  model_version?: number
  request_id?: string
  timestamps?: Array<{ name: string; ns: number }>
}

beforeAll(async () => {
  photo = await readPhoto('chelsea.jpg')
  traceDir = await tempDir('rs-trace-it-')
  file = join(traceDir, 'trace.json')
  server = await startTestServer(await tinyModelRepository(), [
    '--api-key',
    KEY,
    '--trace-file',
    file,
    '--trace-level',
    'timestamps',
    '--trace-rate',
    '1',
    '--trace-log-frequency',
    '1'
  ])
  grpc = await startTestGrpc(server)
})

afterAll(async () => {
  await grpc?.close()
  await server?.close()
  await removeTempDirs()
})

const GLOBAL = { trace_file: '', trace_level: ['TIMESTAMPS'], trace_rate: '1', trace_count: '-1', log_frequency: '1', trace_mode: 'triton' }

beforeEach(async () => {
  // Back to the settings at start, and no model's own.
  expect((await post('/v2/trace/setting', { trace_level: null, trace_rate: null, trace_count: null, log_frequency: null })).status).toBe(
    200
  )
  expect((await post('/v2/models/tiny/trace/setting', { trace_level: null, trace_rate: null, trace_count: null })).status).toBe(200)
})

async function post(path: string, body: unknown, headers: Record<string, string> = auth): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${server.url}${path}`, { method: 'POST', headers, body: body === undefined ? undefined : JSON.stringify(body) })
  return { status: res.status, body: await res.json() }
}

async function inferRest(images = 1, id = 'rest-1'): Promise<void> {
  const data = Array.from({ length: images }, () => photo.toString('base64'))
  const res = await post('/v2/models/tiny/infer', { id, inputs: [{ name: 'input', datatype: 'BYTES', shape: [images], data }] })
  expect(res.status, JSON.stringify(res.body)).toBe(200)
}

/** The traces written whole so far (each file closed), in id order. */
async function traces(): Promise<Array<{ head: TraceObject; stamps: Array<{ name: string; ns: number }> }>> {
  const out: TraceObject[] = []
  for (const name of await readdir(traceDir)) {
    try {
      out.push(...(JSON.parse(await readFile(join(traceDir, name), 'utf8')) as TraceObject[]))
    } catch {
      // Still being written.
    }
  }
  const ids = [...new Set(out.map((o) => o.id))].sort((a, b) => a - b)
  return ids.map((id) => ({
    head: out.find((o) => o.id === id && o.model_name !== undefined)!,
    stamps: out.find((o) => o.id === id && o.timestamps !== undefined)!.timestamps!
  }))
}

/** Waits for the trace file count to reach `n` (each file is closed a moment after its trace). */
async function tracesAfter(n: number): Promise<Awaited<ReturnType<typeof traces>>> {
  for (let i = 0; i < 100; i++) {
    const now = await traces()
    if (now.length >= n) return now
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return traces()
}

function expectInOrder(stamps: Array<{ name: string; ns: number }>, names: string[]): void {
  expect(stamps.map((s) => s.name)).toEqual(names)
  for (let i = 1; i < stamps.length; i++) expect(stamps[i]!.ns, stamps[i]!.name).toBeGreaterThanOrEqual(stamps[i - 1]!.ns)
}

const CORE = ['REQUEST_START', 'QUEUE_START', 'COMPUTE_START', 'COMPUTE_INPUT_END', 'COMPUTE_OUTPUT_START', 'COMPUTE_END', 'REQUEST_END']

describe('trace settings (REST)', () => {
  it("GET answers the global settings in Triton's names; /v2 lists the extension", async () => {
    const res = await fetch(`${server.url}/v2/trace/setting`, { headers: auth })
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ ...GLOBAL, trace_file: file })
    const metadata = (await (await fetch(`${server.url}/v2`)).json()) as { extensions: string[] }
    expect(metadata.extensions).toContain('trace')
  })

  it('needs the API key, as the other routes that change the server do', async () => {
    expect((await post('/v2/trace/setting', { trace_rate: '5' }, {})).status).toBe(401)
    expect((await fetch(`${server.url}/v2/models/tiny/trace/setting`)).status).toBe(401)
  })

  it('refuses what it cannot apply with 400 INVALID_TRACE_SETTING naming it, changing nothing; an unknown model is 404', async () => {
    const bodies = [{ trace_level: ['TENSORS'] }, { trace_file: '/etc/passwd' }, { trace_rate: 'often' }, [1], 'x'].map((b) =>
      JSON.stringify(b)
    )
    for (const body of [...bodies, '{"__proto__":{"trace_rate":"5"}}', '{"constructor":"1"}', '{']) {
      const res = await fetch(`${server.url}/v2/trace/setting`, { method: 'POST', headers: auth, body })
      expect(res.status, JSON.stringify(body)).toBe(400)
      expect(((await res.json()) as { error: string }).error).toMatch(/^INVALID_TRACE_SETTING: /)
    }
    expect((await fetch(`${server.url}/v2/trace/setting`, { headers: auth }).then((r) => r.json())) as unknown).toEqual({
      ...GLOBAL,
      trace_file: file
    })
    const unknown = await post('/v2/models/nope/trace/setting', { trace_rate: '2' })
    expect(unknown.status).toBe(404)
    expect((unknown.body as { error: string }).error).toMatch(/^MODEL_NOT_FOUND: .*"nope"/)
  })
})

describe('traces', () => {
  it('a V2 REST request: HTTP receive, the core, HTTP send, in order, named by model, version and request id', async () => {
    const before = (await traces()).length
    await inferRest(1, 'rest-one')
    const all = await tracesAfter(before + 1)
    const { head, stamps } = all.at(-1)!
    expect(head).toMatchObject({ model_name: 'tiny', model_version: 1, request_id: 'rest-one' })
    expectInOrder(stamps, ['HTTP_RECV_START', 'HTTP_RECV_END', ...CORE, 'HTTP_SEND_START', 'HTTP_SEND_END'])
  })

  it('a request of three images: from the first one queued to the last one computed', async () => {
    const before = (await traces()).length
    await inferRest(3, 'rest-three')
    const { head, stamps } = (await tracesAfter(before + 1)).at(-1)!
    expect(head.request_id).toBe('rest-three')
    expectInOrder(stamps, ['HTTP_RECV_START', 'HTTP_RECV_END', ...CORE, 'HTTP_SEND_START', 'HTTP_SEND_END'])
  })

  it('a gRPC ModelInfer: the message in hand, the core, the answer handed to grpc-js', async () => {
    const before = (await traces()).length
    await grpc.call(
      'ModelInfer',
      {
        model_name: 'tiny',
        id: 'grpc-one',
        inputs: [{ name: 'input', datatype: 'BYTES', shape: [1], contents: { bytes_contents: [photo] } }]
      },
      { metadata: auth }
    )
    const { head, stamps } = (await tracesAfter(before + 1)).at(-1)!
    expect(head).toMatchObject({ model_name: 'tiny', request_id: 'grpc-one' })
    expectInOrder(stamps, ['GRPC_WAITREAD_END', ...CORE, 'GRPC_SEND_START'])
  })

  it("a model's own settings: OFF for it stops its traces, its rate samples its own requests, null follows the global ones again", async () => {
    expect(await post('/v2/models/tiny/trace/setting', { trace_level: ['OFF'] })).toEqual({
      status: 200,
      body: { ...GLOBAL, trace_file: file, trace_level: ['OFF'] }
    })
    const before = (await traces()).length
    await inferRest()
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(await traces()).toHaveLength(before)

    await post('/v2/models/tiny/trace/setting', { trace_level: null, trace_rate: '2' })
    for (let i = 0; i < 4; i++) await inferRest(1, `rate-${i}`)
    const rated = await tracesAfter(before + 2)
    expect(rated.slice(before).map((t) => t.head.request_id)).toEqual(['rate-1', 'rate-3'])

    // A change that names nothing only reads; null brings each setting back to the global one.
    expect((await post('/v2/models/tiny/trace/setting', {})).body).toMatchObject({ trace_rate: '2' })
    expect((await post('/v2/models/tiny/trace/setting', { trace_rate: null })).body).toEqual({ ...GLOBAL, trace_file: file })
    await inferRest(1, 'global-again')
    expect((await tracesAfter(before + 3)).at(-1)!.head.request_id).toBe('global-again')
  })

  it('a request whose image does not decode is traced up to REQUEST_END: it reached the core', async () => {
    const before = (await traces()).length
    const res = await post('/v2/models/tiny/infer', {
      id: 'not-an-image',
      inputs: [{ name: 'input', datatype: 'BYTES', shape: [1], data: [Buffer.from('GIF89a, not really').toString('base64')] }]
    })
    expect(res.status).toBe(400)
    const { head, stamps } = (await tracesAfter(before + 1)).at(-1)!
    expect(head.request_id).toBe('not-an-image')
    expectInOrder(stamps, ['REQUEST_START', 'REQUEST_END'])
  })

  it('the count: what remains is answered, and none is taken once it is spent', async () => {
    await post('/v2/trace/setting', { trace_count: 1 })
    const before = (await traces()).length
    await inferRest(1, 'counted')
    await inferRest(1, 'not-counted')
    await new Promise((resolve) => setTimeout(resolve, 100))
    const after = await traces()
    expect(after.slice(before).map((t) => t.head.request_id)).toEqual(['counted'])
    expect(
      ((await fetch(`${server.url}/v2/trace/setting`, { headers: auth }).then((r) => r.json())) as { trace_count: string }).trace_count
    ).toBe('0')
  })
})

describe('trace settings (gRPC)', () => {
  interface TraceSettingResponse {
    settings: Record<string, { value: string[] }>
  }

  it('reads and changes the settings, globally and for a model, each value a list of strings', async () => {
    const read = await grpc.call<TraceSettingResponse>('TraceSetting', {}, { metadata: auth })
    expect(read.settings).toEqual({
      trace_file: { value: [file] },
      trace_level: { value: ['TIMESTAMPS'] },
      trace_rate: { value: ['1'] },
      trace_count: { value: ['-1'] },
      log_frequency: { value: ['1'] },
      trace_mode: { value: ['triton'] }
    })
    const changed = await grpc.call<TraceSettingResponse>(
      'TraceSetting',
      { model_name: 'tiny', settings: { trace_rate: { value: ['9'] } } },
      { metadata: auth }
    )
    expect(changed.settings.trace_rate).toEqual({ value: ['9'] })
    // A model and no settings: what tritonclient's get_trace_settings(model_name) sends, a read (it removed them).
    const again = await grpc.call<TraceSettingResponse>('TraceSetting', { model_name: 'tiny' }, { metadata: auth })
    expect(again.settings.trace_rate).toEqual({ value: ['9'] })
    const rest = (await fetch(`${server.url}/v2/models/tiny/trace/setting`, { headers: auth }).then((r) => r.json())) as {
      trace_rate: string
    }
    expect(rest.trace_rate).toBe('9')
    // No value: the global one again.
    const cleared = await grpc.call<TraceSettingResponse>(
      'TraceSetting',
      { model_name: 'tiny', settings: { trace_rate: {} } },
      { metadata: auth }
    )
    expect(cleared.settings.trace_rate).toEqual({ value: ['1'] })
  })

  it('refuses INVALID_ARGUMENT INVALID_TRACE_SETTING, NOT_FOUND for an unknown model, UNAUTHENTICATED without the key', async () => {
    expect(await callRefusal(grpc.call('TraceSetting', { settings: { trace_level: { value: ['TENSORS'] } } }, { metadata: auth }))).toEqual(
      { code: 'INVALID_ARGUMENT', details: expect.stringMatching(/^INVALID_TRACE_SETTING: .*TENSORS/) as unknown }
    )
    // A setting named __proto__ (an own key, as a client's map has it) is a name like any other.
    const settings = JSON.parse('{"__proto__":{"value":["1"]}}') as Record<string, unknown>
    expect(await callRefusal(grpc.call('TraceSetting', { settings }, { metadata: auth }))).toEqual({
      code: 'INVALID_ARGUMENT',
      details: expect.stringMatching(/unknown setting "__proto__"/) as unknown
    })
    expect((await callRefusal(grpc.call('TraceSetting', { model_name: 'nope' }, { metadata: auth }))).code).toBe('NOT_FOUND')
    expect((await callRefusal(grpc.call('TraceSetting', {}))).code).toBe('UNAUTHENTICATED')
  })
})
