import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadSettings } from '../../src/config.js'
import { buildApp } from '../../src/http/app.js'
import { syntheticModelRepository } from '../helpers/models.js'
import { readPhoto } from '../helpers/photos.js'
import { startTestServer, testLogger, type TestServer } from '../helpers/server.js'

/**
 * Access control and what answers reveal: the API key on inference routes (and, when asked, on
 * health and metrics), CORS only for configured origins, no stack traces or paths in answers.
 */

const KEY = 'test-key_Zm9vYmFy.42'
let server: TestServer
let repository: string
let photo: Buffer
const apps: FastifyInstance[] = []

beforeAll(async () => {
  repository = await syntheticModelRepository()
  server = await startTestServer(repository, ['--api-key', KEY, '--cors-origins', 'https://app.example.com'])
  photo = await readPhoto('chelsea')
})
afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()))
  await server?.close()
})

/** Another HTTP door with other flags over the same running service, used through inject(). */
async function doorWith(flags: string[]): Promise<FastifyInstance> {
  const settings = loadSettings(['--model-repository', repository, '--provider', 'cpu', ...flags], {})
  const app = await buildApp(server.service, settings, testLogger(), server.metrics)
  apps.push(app)
  return app
}

const post = (path: string, headers: Record<string, string>, body: Buffer | string): Promise<Response> =>
  fetch(`${server.url}${path}`, { method: 'POST', headers, body })

describe('--api-key', () => {
  it('inference routes refuse a missing or wrong key with 401 UNAUTHENTICATED and WWW-Authenticate', async () => {
    const batch = JSON.stringify({ instances: [{ b64: photo.toString('base64') }] })
    for (const [path, type, body] of [
      ['/classify', 'image/jpeg', photo],
      ['/v1/models/resnet50:classify', 'application/json', batch]
    ] as const) {
      for (const headers of [{}, { authorization: 'Bearer wrong' }, { 'x-api-key': `${KEY}x` }] as Array<Record<string, string>>) {
        const res = await post(path, { 'content-type': type, ...headers }, body)
        expect(res.status).toBe(401)
        expect(res.headers.get('www-authenticate')).toBe('Bearer')
        expect(((await res.json()) as { code: string }).code).toBe('UNAUTHENTICATED')
      }
    }
  })

  it('the V2 inference route needs the key too', async (context) => {
    if (!server.app.hasRoute({ method: 'POST', url: '/v2/models/:model/infer' })) context.skip()
    const res = await post('/v2/models/resnet50/infer', { 'content-type': 'application/json' }, JSON.stringify({ inputs: [] }))
    expect(res.status).toBe(401)
    expect(res.headers.get('www-authenticate')).toBe('Bearer')
  })

  it('accepts the key as a bearer token or as x-api-key', async () => {
    for (const headers of [{ authorization: `Bearer ${KEY}` }, { 'x-api-key': KEY }] as Array<Record<string, string>>) {
      const res = await post('/classify', { 'content-type': 'image/jpeg', ...headers }, photo)
      expect(res.status).toBe(200)
    }
  })

  it('health, metrics and the model list stay open by default', async () => {
    for (const path of ['/health/live', '/health/ready', '/metrics', '/models'])
      expect((await fetch(`${server.url}${path}`)).status).toBe(200)
  })

  it('--auth-health and --auth-metrics put health and metrics behind the key', async () => {
    const app = await doorWith(['--api-key', KEY, '--auth-health', '--auth-metrics'])
    for (const url of ['/health/live', '/health/ready', '/metrics']) {
      const refused = await app.inject({ method: 'GET', url })
      expect(refused.statusCode).toBe(401)
      expect(refused.json<{ code: string }>().code).toBe('UNAUTHENTICATED')
      expect((await app.inject({ method: 'GET', url, headers: { 'x-api-key': KEY } })).statusCode).toBe(200)
    }
    expect((await app.inject({ method: 'GET', url: '/models' })).statusCode).toBe(200)
  })

  it('without --api-key nothing asks for one', async () => {
    const app = await doorWith([])
    const res = await app.inject({ method: 'POST', url: '/classify', headers: { 'content-type': 'image/jpeg' }, payload: photo })
    expect(res.statusCode).toBe(200)
  })
})

describe('CORS', () => {
  it('answers a preflight from a configured origin, and only from it', async () => {
    const preflight = (origin: string): Promise<Response> =>
      fetch(`${server.url}/classify`, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,authorization' }
      })
    const allowed = await preflight('https://app.example.com')
    expect(allowed.status).toBe(204)
    expect(allowed.headers.get('access-control-allow-origin')).toBe('https://app.example.com')
    expect(allowed.headers.get('access-control-allow-headers')).toMatch(/authorization/)
    // A page can send a V2 binary or gzip request, and read a binary answer's JSON length.
    expect(allowed.headers.get('access-control-allow-headers')).toMatch(/inference-header-content-length.*content-encoding/)
    const other = await preflight('https://evil.example.net')
    expect(other.headers.get('access-control-allow-origin')).toBeNull()
  })

  it('sends no CORS headers at all unless --cors-origins is set', async () => {
    const app = await doorWith([])
    const res = await app.inject({ method: 'GET', url: '/health/live', headers: { origin: 'https://app.example.com' } })
    expect(Object.keys(res.headers).filter((h) => h.startsWith('access-control-'))).toEqual([])
    const preflight = await app.inject({
      method: 'OPTIONS',
      url: '/classify',
      headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST' }
    })
    expect(Object.keys(preflight.headers).filter((h) => h.startsWith('access-control-'))).toEqual([])
  })

  it('refuses an origin with a path at start-up', () => {
    expect(() => loadSettings(['--cors-origins', 'https://app.example.com/x'], {})).toThrow(/--cors-origins.*scheme, host and port only/)
  })
})

describe('answers reveal no internals', () => {
  const LEAK = /\/work\/|\/tmp\/|\/home\/|node_modules|\.ts:\d+|\.js:\d+|\bat \S+ \(|stack/
  const auth = { 'x-api-key': KEY }
  const cases: Array<[string, () => Promise<Response>, number]> = [
    ['corrupt image', () => post('/classify', { ...auth, 'content-type': 'image/jpeg' }, photo.subarray(0, 5000)), 400],
    ['not an image', () => post('/classify', { ...auth, 'content-type': 'image/png' }, 'plain text'), 400],
    [
      'model given as the repository path',
      () => post(`/classify?model=${encodeURIComponent(`${repository}/resnet50`)}`, { ...auth, 'content-type': 'image/jpeg' }, photo),
      404
    ],
    ['model ../', () => post('/classify?model=..%2F..%2Fresnet50', { ...auth, 'content-type': 'image/jpeg' }, photo), 404],
    [
      'batch model %2e%2e',
      () => post('/v1/models/%2e%2e:classify', { ...auth, 'content-type': 'application/json' }, '{"instances":[]}'),
      404
    ],
    [
      'malformed JSON',
      () => post('/v1/models/resnet50:classify', { ...auth, 'content-type': 'application/json' }, '{"instances": [}'),
      400
    ],
    [
      'malformed multipart',
      () =>
        post(
          '/classify',
          { ...auth, 'content-type': 'multipart/form-data; boundary=b' },
          '--b\r\nContent-Disposition: form-data; name="image"\r\n\r\nxx'
        ),
      400
    ],
    ['no such route', () => fetch(`${server.url}/etc/passwd`), 404],
    ['unauthenticated', () => post('/classify', { 'content-type': 'image/jpeg' }, photo), 401]
  ]
  for (const [name, send, status] of cases) {
    it(`${name} → ${status}, no stack or path`, async () => {
      const res = await send()
      expect(res.status).toBe(status)
      const text = await res.text()
      expect(text).not.toMatch(LEAK)
      expect(text).not.toContain(repository)
    })
  }
})
