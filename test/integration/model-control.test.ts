import { status } from '@grpc/grpc-js'
import { readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { callRefusal, startTestGrpc } from '../helpers/grpc.js'
import { lengthDelimited } from '../helpers/protobuf-wire.js'
import { readPhoto } from '../helpers/photos.js'
import { startTestServer, type TestServer } from '../helpers/server.js'
import { removeTempDirs } from '../helpers/tiny-model.js'
import { addTinyVersion, tinyRepository, waitFor } from '../helpers/versioned-models.js'

/**
 * --model-control-mode and the repository extension (index, load, unload) over REST and gRPC, as
 * Triton answers them: explicit mode loads what --load-model names, then only on request.
 */

afterAll(async () => {
  await removeTempDirs()
})

interface IndexEntry {
  name: string
  version?: string
  state: string
  reason: string
}

async function post(server: TestServer, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
}

async function index(server: TestServer, ready = false): Promise<IndexEntry[]> {
  const res = await post(server, '/v2/repository/index', { ready })
  expect(res.status).toBe(200)
  return (await res.json()) as IndexEntry[]
}

async function classifyVersion(server: TestServer, model: string): Promise<{ status: number; version?: string; code?: string }> {
  const res = await fetch(`${server.url}/classify?model=${model}&topk=1`, {
    method: 'POST',
    headers: { 'content-type': 'image/jpeg' },
    body: await readPhoto('clock')
  })
  const body = (await res.json()) as { version?: string; code?: string }
  return { status: res.status, version: body.version, code: body.code }
}

describe('--model-control-mode explicit over REST', () => {
  it('loads what --load-model names; the index lists every folder; load and unload change what serves', async () => {
    const repository = await tinyRepository({ alpha: { versions: [1] }, beta: {}, gamma: {} })
    const server = await startTestServer(repository, ['--model-control-mode', 'explicit', '--load-model', 'alpha', '--load-model', 'gamma'])
    try {
      expect(await index(server)).toEqual([
        { name: 'alpha', version: '1', state: 'READY', reason: '' },
        { name: 'beta', state: 'UNAVAILABLE', reason: 'unloaded' },
        { name: 'gamma', version: '1', state: 'READY', reason: '' }
      ])
      expect((await index(server, true)).map((e) => e.name)).toEqual(['alpha', 'gamma'])
      expect(await classifyVersion(server, 'beta')).toMatchObject({ status: 404, code: 'MODEL_NOT_FOUND' })
      expect((await fetch(`${server.url}/v2/health/ready`)).status).toBe(200)

      const load = await post(server, '/v2/repository/models/beta/load')
      expect(load.status).toBe(200)
      expect(await load.text()).toBe('')
      expect(await classifyVersion(server, 'beta')).toMatchObject({ status: 200, version: '1' })
      expect((await fetch(`${server.url}/v2/models/beta/ready`)).status).toBe(200)

      expect(await (await fetch(`${server.url}/metrics`)).text()).toContain('resnet_serve_pending_requests{model="gamma"} 0')
      const unload = await post(server, '/v2/repository/models/gamma/unload', { parameters: { unload_dependents: false } })
      expect(unload.status).toBe(200)
      expect(await classifyVersion(server, 'gamma')).toMatchObject({ status: 404, code: 'MODEL_NOT_FOUND' })
      expect((await fetch(`${server.url}/v2/models/gamma`)).status).toBe(404)
      expect(await index(server)).toContainEqual({ name: 'gamma', state: 'UNAVAILABLE', reason: 'unloaded' })
      const metrics = await (await fetch(`${server.url}/metrics`)).text()
      expect(metrics).toContain('resnet_serve_pending_requests{model="beta"} 0')
      expect(metrics, 'an unloaded model keeps no pending-requests series').not.toContain('resnet_serve_pending_requests{model="gamma"}')
      // Regression: a request answered while its model unloaded was counted under "(unknown)".
      server.metrics.recordRequest('gamma', 'success', 5)
      expect(await (await fetch(`${server.url}/metrics`)).text()).toContain('resnet_serve_request_success_total{model="gamma"} 1')
      const listing = (await (await fetch(`${server.url}/models`)).json()) as { models: Array<{ name: string }> }
      expect(listing.models.map((m) => m.name)).toEqual(['alpha', 'beta'])
      // Unloaded models do not count against readiness: only the ones that should serve do.
      expect((await fetch(`${server.url}/health/ready`)).status).toBe(200)

      // A reload with a new version folder: the new version serves, the old one is retired.
      await addTinyVersion(repository, 'alpha', 2)
      expect((await post(server, '/v2/repository/models/alpha/load', {})).status).toBe(200)
      expect(await classifyVersion(server, 'alpha')).toMatchObject({ status: 200, version: '2' })
      expect((await fetch(`${server.url}/v2/models/alpha/versions/1/ready`)).status).toBe(404)
    } finally {
      await server.close()
    }
  })

  it('a load that fails keeps the previous version serving and reports the failure in the index', async () => {
    const repository = await tinyRepository({ alpha: { versions: [1] } })
    const server = await startTestServer(repository, ['--model-control-mode', 'explicit', '--load-model', 'alpha'])
    try {
      await addTinyVersion(repository, 'alpha', 2)
      await writeFile(join(repository, 'alpha', '2', 'model.onnx'), 'not an ONNX model')
      const res = await post(server, '/v2/repository/models/alpha/load')
      expect(res.status).toBe(400)
      expect(((await res.json()) as { error: string }).error).toMatch(
        /^MODEL_LOAD_FAILED: .*alpha[/\\]2[/\\]model\.onnx: is not an ONNX model/
      )
      expect(await classifyVersion(server, 'alpha')).toMatchObject({ status: 200, version: '1' })
      const entries = await index(server)
      expect(entries[0]).toEqual({ name: 'alpha', version: '1', state: 'READY', reason: '' })
      expect(entries[1]).toMatchObject({ name: 'alpha', version: '2', state: 'UNAVAILABLE' })
      expect(entries[1]!.reason).toMatch(/is not an ONNX model/)
      expect((await fetch(`${server.url}/v2/health/ready`)).status).toBe(200)

      // The served version's own files broken: a reload fails, version 1 serves on, and its entry says why.
      await rm(join(repository, 'alpha', '2'), { recursive: true })
      const good = await readFile(join(repository, 'alpha', '1', 'model.onnx'))
      await writeFile(join(repository, 'alpha', '1', 'model.onnx'), 'not an ONNX model either')
      expect((await post(server, '/v2/repository/models/alpha/load')).status).toBe(400)
      expect(await classifyVersion(server, 'alpha')).toMatchObject({ status: 200, version: '1' })
      const reloaded = await index(server)
      expect(reloaded).toHaveLength(1)
      expect(reloaded[0]).toMatchObject({ name: 'alpha', version: '1', state: 'READY' })
      expect(reloaded[0]!.reason).toMatch(/^reload failed: .*is not an ONNX model/)
      await writeFile(join(repository, 'alpha', '1', 'model.onnx'), good)

      // Fixed on disk, loaded again: version 2 serves and the failure is gone.
      await rm(join(repository, 'alpha', '2'), { recursive: true, force: true })
      await addTinyVersion(repository, 'alpha', 2)
      expect((await post(server, '/v2/repository/models/alpha/load')).status).toBe(200)
      expect(await index(server)).toEqual([{ name: 'alpha', version: '2', state: 'READY', reason: '' }])
    } finally {
      await server.close()
    }
  })

  it('refuses unknown models, override parameters and malformed bodies with 4xx in the /v2 error shape', async () => {
    const repository = await tinyRepository({ alpha: {} })
    const server = await startTestServer(repository, ['--model-control-mode', 'explicit'])
    try {
      expect(await index(server)).toEqual([{ name: 'alpha', state: 'UNAVAILABLE', reason: 'unloaded' }])
      // Nothing loaded: as Triton, the server is ready with no model.
      expect((await fetch(`${server.url}/v2/health/ready`)).status).toBe(200)
      const unknown = await post(server, '/v2/repository/models/nope/load')
      expect(unknown.status).toBe(404)
      // A load of a folder the repository lacks said "No model of that name is loaded. (the repository has no folder …)".
      expect(((await unknown.json()) as { error: string }).error).toBe(
        'MODEL_NOT_FOUND: No such model or version. The repository has no folder "nope" (the repository index lists the models it has).'
      )
      const override = await post(server, '/v2/repository/models/alpha/load', { parameters: { 'file:1/model.onnx': 'eA==' } })
      expect(override.status).toBe(400)
      expect(((await override.json()) as { error: string }).error).toMatch(/^BAD_REQUEST: .*"file:1\/model.onnx"/)
      const malformed = await fetch(`${server.url}/v2/repository/index`, { method: 'POST', body: '{"ready":' })
      expect(malformed.status).toBe(400)
      expect(((await malformed.json()) as { error: string }).error).toMatch(/^BAD_REQUEST: /)
    } finally {
      await server.close()
    }
  })

  it('needs the API key when one is set', async () => {
    const repository = await tinyRepository({ alpha: {} })
    const server = await startTestServer(repository, ['--model-control-mode', 'explicit', '--api-key', 'sesame'])
    try {
      expect((await post(server, '/v2/repository/index')).status).toBe(401)
      expect((await post(server, '/v2/repository/models/alpha/load')).status).toBe(401)
      expect((await post(server, '/v2/repository/models/alpha/load', undefined, { authorization: 'Bearer sesame' })).status).toBe(200)
      expect((await post(server, '/v2/repository/models/alpha/unload', undefined, { 'x-api-key': 'sesame' })).status).toBe(200)
    } finally {
      await server.close()
    }
  })
})

describe('--model-control-mode poll', () => {
  it('regression: a config.json typo lists each served version once, READY with the failure (the model was listed twice, READY and a version-less UNAVAILABLE)', async () => {
    const repository = await tinyRepository({ alpha: { versions: [1, 2], versionPolicy: { all: {} } } })
    const server = await startTestServer(repository, ['--model-control-mode', 'poll', '--repository-poll-secs', '1'])
    try {
      const configFile = join(repository, 'alpha', 'config.json')
      const config = JSON.parse(await readFile(configFile, 'utf8')) as Record<string, unknown>
      await writeFile(configFile, JSON.stringify({ ...config, batchng: {} }))
      await waitFor('the failed reload', async () => (await index(server)).some((e) => e.reason !== ''))
      const entries = await index(server)
      expect(entries.map((e) => [e.name, e.version, e.state])).toEqual([
        ['alpha', '1', 'READY'],
        ['alpha', '2', 'READY']
      ])
      for (const e of entries) expect(e.reason).toMatch(/^reload failed: .*alpha[/\\]config\.json: .*batchng/)
      expect(await classifyVersion(server, 'alpha')).toMatchObject({ status: 200, version: '2' })
    } finally {
      await server.close()
    }
  })
})

describe('--model-control-mode none (the default)', () => {
  it('answers the index; refuses load and unload on both doors, as Triton does', async () => {
    const repository = await tinyRepository({ alpha: {} })
    const server = await startTestServer(repository)
    const grpc = await startTestGrpc(server)
    try {
      expect(await index(server)).toEqual([{ name: 'alpha', version: '1', state: 'READY', reason: '' }])
      for (const action of ['load', 'unload']) {
        const res = await post(server, `/v2/repository/models/alpha/${action}`)
        expect(res.status).toBe(400)
        expect(res.headers.get('content-type')).toMatch(/^application\/json/)
        expect(((await res.json()) as { error: string }).error).toMatch(/^MODEL_CONTROL_DISABLED: .*none/)
      }
      for (const rpc of ['RepositoryModelLoad', 'RepositoryModelUnload']) {
        const refusal = await callRefusal(grpc.call(rpc, { model_name: 'alpha' }))
        expect(refusal.code).toBe(status[status.INVALID_ARGUMENT])
        expect(refusal.details).toMatch(/^MODEL_CONTROL_DISABLED: /)
      }
      expect(await classifyVersion(server, 'alpha')).toMatchObject({ status: 200 })
    } finally {
      await grpc.close()
      await server.close()
    }
  })
})

describe('the repository extension over gRPC', () => {
  it('regression: a model loaded after the gRPC door started takes FP32 tensors (the door had sized its limits for no model)', async () => {
    const repository = await tinyRepository({ alpha: {} })
    const server = await startTestServer(repository, ['--model-control-mode', 'explicit'])
    const grpc = await startTestGrpc(server)
    try {
      expect(await grpc.call('RepositoryModelLoad', { model_name: 'alpha' })).toEqual({ model_name: 'alpha', isLoaded: true })
      const images = 2
      const response = await grpc.call<{ model_version: string; outputs: Array<{ shape: number[] }> }>('ModelInfer', {
        model_name: 'alpha',
        // Typed contents: their element count is bounded before decoding, from the door's limits.
        inputs: [
          {
            name: 'input',
            datatype: 'FP32',
            shape: [images, 3, 224, 224],
            contents: { fp32_contents: new Array<number>(images * 3 * 224 * 224).fill(0) }
          }
        ]
      })
      expect(response.model_version).toBe('1')
      expect(response.outputs[0]!.shape).toEqual([images, 1000])
    } finally {
      await grpc.close()
      await server.close()
    }
  })

  it('RepositoryIndex, RepositoryModelLoad and RepositoryModelUnload, from the .proto', async () => {
    const repository = await tinyRepository({ alpha: { versions: [1, 2], versionPolicy: { all: {} } }, beta: {} })
    const server = await startTestServer(repository, ['--model-control-mode', 'explicit', '--load-model', '*', '--api-key', 'sesame'])
    const grpc = await startTestGrpc(server)
    const auth = { metadata: { authorization: 'Bearer sesame' } }
    try {
      expect((await callRefusal(grpc.call('RepositoryIndex', {}))).code).toBe(status[status.UNAUTHENTICATED])
      expect(await grpc.call('RepositoryIndex', { ready: true }, auth)).toEqual({
        models: [
          { name: 'alpha', version: '1', state: 'READY', reason: '' },
          { name: 'alpha', version: '2', state: 'READY', reason: '' },
          { name: 'beta', version: '1', state: 'READY', reason: '' }
        ]
      })
      expect(
        await grpc.call('RepositoryModelUnload', { model_name: 'beta', parameters: { unload_dependents: { bool_param: true } } }, auth)
      ).toEqual({ model_name: 'beta', isUnloaded: true })
      expect(await grpc.call('ModelReady', { name: 'beta' }, auth)).toEqual({ ready: false })
      expect(await grpc.call('RepositoryIndex', {}, auth)).toMatchObject({
        models: [{ name: 'alpha' }, { name: 'alpha' }, { name: 'beta', version: '', state: 'UNAVAILABLE', reason: 'unloaded' }]
      })
      expect(await grpc.call('RepositoryModelLoad', { model_name: 'beta' }, auth)).toEqual({ model_name: 'beta', isLoaded: true })
      expect(await grpc.call('ModelReady', { name: 'beta', version: '1' }, auth)).toEqual({ ready: true })
      const unknown = await callRefusal(grpc.call('RepositoryModelLoad', { model_name: 'nope' }, auth))
      expect([unknown.code, unknown.details]).toEqual([status[status.NOT_FOUND], expect.stringMatching(/^MODEL_NOT_FOUND: /)])
      const override = await callRefusal(
        grpc.call(
          'RepositoryModelLoad',
          { model_name: 'beta', parameters: { 'file:1/model.onnx': { bytes_param: Buffer.from('x') } } },
          auth
        )
      )
      expect(override.code).toBe(status[status.INVALID_ARGUMENT])
    } finally {
      await grpc.close()
      await server.close()
    }
  })

  it('regression: KServe\'s grpc_predict_v2.proto load and unload (model_name is its field 1) were refused MODEL_NOT_FOUND for folder ""', async () => {
    const repository = await tinyRepository({ alpha: {} })
    const server = await startTestServer(repository, ['--model-control-mode', 'explicit'])
    const grpc = await startTestGrpc(server)
    try {
      // The bytes the KServe SDK's stubs send for RepositoryModelLoadRequest(model_name="alpha").
      const kserveRequest = lengthDelimited(1, 'alpha')
      // Its answer, read by the field numbers KServe's RepositoryModelLoadResponse shares with this
      // proto (model_name 1, isLoaded 2): a KServe client read isLoaded false from the empty answer.
      expect(await grpc.callRaw('RepositoryModelLoad', kserveRequest)).toEqual({ model_name: 'alpha', isLoaded: true })
      expect(await grpc.call('ModelReady', { name: 'alpha' })).toEqual({ ready: true })
      expect(await grpc.callRaw('RepositoryModelUnload', kserveRequest)).toEqual({ model_name: 'alpha', isUnloaded: true })
      expect(await grpc.call('ModelReady', { name: 'alpha' })).toEqual({ ready: false })
      const unknown = await callRefusal(grpc.callRaw('RepositoryModelLoad', lengthDelimited(1, 'nope')))
      expect([unknown.code, unknown.details]).toEqual([status[status.NOT_FOUND], expect.stringContaining('no folder "nope"')])
    } finally {
      await grpc.close()
      await server.close()
    }
  })
})
