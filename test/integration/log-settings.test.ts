import { status } from '@grpc/grpc-js'
import { pino } from 'pino'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/http/app.js'
import { createLogger } from '../../src/log-settings.js'
import { callRefusal, startTestGrpc, type GrpcTestDoor } from '../helpers/grpc.js'
import { readPhoto } from '../helpers/photos.js'
import { startTestServer, type TestServer } from '../helpers/server.js'
import { removeTempDirs } from '../helpers/tiny-model.js'
import { tinyModelRepository } from '../helpers/tiny-repository.js'

/**
 * Triton's logging extension, as tritonclient's get_log_settings / update_log_settings call it:
 * GET and POST /v2/logging (the settings as JSON, sent without a content type) and gRPC LogSettings
 * (a map of typed values). Both doors act on the one logger the server writes through, read here
 * line by line. Before, both were refused 501 NOT_IMPLEMENTED and the level was fixed at start.
 */

const KEY = 'log-settings-test-key'
const auth = { authorization: `Bearer ${KEY}` }

type Line = Record<string, unknown> & { msg: string; level: number }
const lines: Line[] = []

let server: TestServer
let grpc: GrpcTestDoor
let photo: Buffer

const DEFAULTS = { log_file: '', log_info: true, log_warning: true, log_error: true, log_verbose_level: 0, log_format: 'default' }

beforeAll(async () => {
  const log = createLogger('info', { write: (line: string) => void lines.push(JSON.parse(line) as Line) })
  server = await startTestServer(await tinyModelRepository(), ['--api-key', KEY], {}, log)
  grpc = await startTestGrpc(server)
  photo = await readPhoto('chelsea.jpg')
})

afterAll(async () => {
  await grpc?.close()
  await server?.close()
  await removeTempDirs()
})

async function post(body: string | undefined, headers: Record<string, string> = auth): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${server.url}/v2/logging`, { method: 'POST', headers, body })
  return { status: res.status, body: await res.json() }
}

async function classify(): Promise<void> {
  const res = await fetch(`${server.url}/classify?model=tiny`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'image/jpeg' },
    body: photo
  })
  expect(res.status).toBe(200)
}

/** The lines written since `from` with this message. */
function since(from: number, msg: string): Line[] {
  return lines.slice(from).filter((line) => line.msg === msg)
}

beforeEach(async () => {
  expect((await post(JSON.stringify(DEFAULTS))).status).toBe(200)
})

describe('log settings (REST)', () => {
  it("GET answers the settings in Triton's names; /v2 lists the extension", async () => {
    const res = await fetch(`${server.url}/v2/logging`, { headers: auth })
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual(DEFAULTS)
    const metadata = (await (await fetch(`${server.url}/v2`)).json()) as { extensions: string[] }
    expect(metadata.extensions).toContain('logging')
  })

  it('verbose level 1 writes a line for each HTTP request and gRPC call, 2 also for each model execution; 0 neither', async () => {
    const start = lines.length
    await classify()
    expect(since(start, 'request answered')).toEqual([])

    const changed = await post(JSON.stringify({ log_verbose_level: 1 }))
    expect(changed).toEqual({ status: 200, body: { ...DEFAULTS, log_verbose_level: 1 } })
    const one = lines.length
    await classify()
    await grpc.call('ServerLive', {})
    const [request] = since(one, 'request answered').filter((l) => (l.url as string).startsWith('/classify'))
    expect(request).toMatchObject({ level: 20, method: 'POST', url: '/classify?model=tiny', statusCode: 200 })
    expect(typeof request!.ms).toBe('number')
    expect(since(one, 'gRPC call answered')).toEqual([
      expect.objectContaining({ level: 20, rpc: 'ServerLive', code: status.OK, door: 'grpc' })
    ])
    expect(since(one, 'model executed')).toEqual([])

    await post(JSON.stringify({ log_verbose_level: 2 }))
    const two = lines.length
    await classify()
    expect(since(two, 'model executed')).toEqual([expect.objectContaining({ level: 10, model: 'tiny', version: '1', batchSize: 1 })])
  })

  it('log_info off drops info lines and keeps warnings and errors; the change itself is an info line', async () => {
    const start = lines.length
    expect((await post(JSON.stringify({ log_verbose_level: 1 }))).status).toBe(200)
    expect(since(start, 'log settings changed on request')).toHaveLength(1)
    const off = lines.length
    expect(await post(JSON.stringify({ log_info: false }))).toEqual({
      status: 200,
      body: { ...DEFAULTS, log_info: false, log_verbose_level: 1 }
    })
    server.log.info('an info line')
    server.log.warn('a warning')
    server.log.error('an error')
    expect(lines.slice(off).map((l) => l.msg)).toEqual(['request answered', 'a warning', 'an error'])
  })

  it('log_format ISO8601 writes the time as an ISO 8601 string', async () => {
    await post(JSON.stringify({ log_format: 'ISO8601' }))
    const start = lines.length
    server.log.warn('when')
    expect(lines[start]!.time).toMatch(/^\d{4}-\d\d-\d\dT/)
  })

  it('refuses what it cannot apply with 400 INVALID_LOG_SETTING, changing nothing', async () => {
    const cases: Array<[string, RegExp]> = [
      [JSON.stringify({ log_verbose_level: 1, log_info: 'no' }), /log_info must be a boolean/],
      [JSON.stringify({ log_verbose_level: -1 }), /log_verbose_level must be an integer ≥ 0/],
      [JSON.stringify({ log_format: 'json' }), /log_format must be one of default, ISO8601/],
      [JSON.stringify({ log_file: '/tmp/resnet-serve-log-test.log' }), /log_file cannot be changed over the network/],
      [JSON.stringify({ log_warnings: false }), /unknown setting "log_warnings"/],
      [JSON.stringify([{ log_info: false }]), /must be a JSON object of settings/],
      ['{"log_info": tru', /not valid JSON/]
    ]
    for (const [body, message] of cases) {
      const res = await post(body)
      expect([body, res.status]).toEqual([body, 400])
      expect((res.body as { error: string }).error, body).toMatch(/^INVALID_LOG_SETTING: /)
      expect((res.body as { error: string }).error, body).toMatch(message)
    }
    const res = await fetch(`${server.url}/v2/logging`, { headers: auth })
    expect(await res.json()).toEqual(DEFAULTS)
  })

  it('an empty POST reads; what GET answered may be posted back as it is (tritonclient reads, changes, sends)', async () => {
    expect(await post(undefined)).toEqual({ status: 200, body: DEFAULTS })
    expect(await post(JSON.stringify({ ...DEFAULTS, log_error: false, log_file: '' }))).toEqual({
      status: 200,
      body: { ...DEFAULTS, log_error: false }
    })
  })

  it('needs the API key when one is set, as the repository routes do', async () => {
    expect((await fetch(`${server.url}/v2/logging`)).status).toBe(401)
    expect((await post(JSON.stringify({ log_info: false }), {})).status).toBe(401)
    expect((await fetch(`${server.url}/v2/logging`, { headers: auth })).status).toBe(200)
  })
})

describe('log settings (gRPC LogSettings)', () => {
  const metadata = { authorization: `Bearer ${KEY}` }

  it('answers every setting in its typed field and changes the ones the map names', async () => {
    expect(await grpc.call('LogSettings', { settings: {} }, { metadata })).toEqual({
      settings: {
        log_file: { parameter_choice: 'string_param', string_param: '' },
        log_info: { parameter_choice: 'bool_param', bool_param: true },
        log_warning: { parameter_choice: 'bool_param', bool_param: true },
        log_error: { parameter_choice: 'bool_param', bool_param: true },
        log_verbose_level: { parameter_choice: 'uint32_param', uint32_param: 0 },
        log_format: { parameter_choice: 'string_param', string_param: 'default' }
      }
    })
    const changed = (await grpc.call(
      'LogSettings',
      { settings: { log_verbose_level: { uint32_param: 1 }, log_warning: { bool_param: false } } },
      { metadata }
    )) as { settings: Record<string, unknown> }
    expect(changed.settings).toMatchObject({ log_verbose_level: { uint32_param: 1 }, log_warning: { bool_param: false } })
    const res = await fetch(`${server.url}/v2/logging`, { headers: auth })
    expect(await res.json()).toEqual({ ...DEFAULTS, log_verbose_level: 1, log_warning: false })
  })

  it('refuses a value in another field than its type, an unknown setting and a call without the key', async () => {
    const wrongField = await callRefusal(grpc.call('LogSettings', { settings: { log_verbose_level: { string_param: '1' } } }, { metadata }))
    expect([wrongField.code, wrongField.details]).toEqual([
      status[status.INVALID_ARGUMENT],
      expect.stringMatching(/^INVALID_LOG_SETTING: .*log_verbose_level travels in uint32_param, got string_param/)
    ])
    const unknown = await callRefusal(grpc.call('LogSettings', { settings: { log_colour: { bool_param: true } } }, { metadata }))
    expect(unknown.details).toMatch(/unknown setting "log_colour"/)
    // Regression (attacker review): a setting named __proto__ set the map's prototype and was answered OK.
    const proto = await callRefusal(
      grpc.call('LogSettings', { settings: JSON.parse('{"__proto__": {"bool_param": true}}') as object }, { metadata })
    )
    expect(proto.details).toMatch(/unknown setting "__proto__"/)
    const keyless = await callRefusal(grpc.call('LogSettings', { settings: {} }))
    expect(keyless.code).toBe(status[status.UNAUTHENTICATED])
  })
})

describe('a door given a logger of its own', () => {
  it('answers the logging extension 501 NOT_IMPLEMENTED: it has no settings to change', async () => {
    const app = await buildApp(server.service, server.settings, pino({ level: 'silent' }), server.metrics)
    try {
      const res = await app.inject({ method: 'POST', url: '/v2/logging', headers: auth, payload: '{"log_verbose_level": 1}' })
      expect(res.statusCode).toBe(501)
      expect(res.json<{ error: string }>().error).toMatch(/^NOT_IMPLEMENTED: .*--log-level/)
    } finally {
      await app.close()
    }
  })
})
