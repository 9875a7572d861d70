import { status } from '@grpc/grpc-js'
import { afterAll, describe, expect, it } from 'vitest'
import { callRefusal, startTestGrpc } from '../helpers/grpc.js'
import { readPhoto } from '../helpers/photos.js'
import { startTestServer, type TestServer } from '../helpers/server.js'
import { removeTempDirs } from '../helpers/tiny-model.js'
import { tinyRepository } from '../helpers/versioned-models.js'

/**
 * Triton's `config` load parameter (src/open-inference/config-override.ts): a configuration for
 * one load, as Triton's clients send it (`load_model(name, config=json)`), over REST and gRPC.
 */

afterAll(async () => {
  await removeTempDirs()
})

type Config = Record<string, unknown> & {
  max_batch_size: number
  dynamic_batching: { max_queue_delay_microseconds: number; preferred_batch_size: number[] }
  parameters: Record<string, { string_value: string }>
}

async function load(server: TestServer, model: string, parameters?: Record<string, unknown>): Promise<{ status: number; error?: string }> {
  const res = await fetch(`${server.url}/v2/repository/models/${model}/load`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(parameters === undefined ? {} : { parameters })
  })
  const text = await res.text()
  return { status: res.status, error: text === '' ? undefined : (JSON.parse(text) as { error: string }).error }
}

async function config(server: TestServer, model: string): Promise<Config> {
  const res = await fetch(`${server.url}/v2/models/${model}/config`)
  expect(res.status).toBe(200)
  return (await res.json()) as Config
}

/** The top answer's probability for one photo: moves when the preprocessing does. */
async function topProbability(server: TestServer, model: string): Promise<number> {
  const res = await fetch(`${server.url}/classify?model=${model}&topk=1`, {
    method: 'POST',
    headers: { 'content-type': 'image/jpeg' },
    body: await readPhoto('clock')
  })
  expect(res.status).toBe(200)
  return ((await res.json()) as { predictions: Array<{ probability: number }> }).predictions[0]!.probability
}

async function explicitServer(): Promise<TestServer> {
  const repository = await tinyRepository({ alpha: {}, beta: {} })
  return startTestServer(repository, ['--model-control-mode', 'explicit', '--load-model', 'alpha'])
}

describe('load with a config parameter over REST', () => {
  it('loads the configuration the config endpoint answered, changed; a later load without one goes back to the folder', async () => {
    const server = await explicitServer()
    try {
      const before = await config(server, 'alpha')
      const probability = await topProbability(server, 'alpha')
      expect(before.max_batch_size).toBe(4)

      const changed = {
        ...before,
        max_batch_size: 2,
        instance_group: [{ ...(before.instance_group as object[])[0], count: 2 }],
        dynamic_batching: { ...before.dynamic_batching, max_queue_delay_microseconds: 1500 },
        parameters: { ...before.parameters, 'preprocess.mean': { string_value: '0,0,0' } }
      }
      expect(await load(server, 'alpha', { config: JSON.stringify(changed) })).toEqual({ status: 200, error: undefined })
      const after = await config(server, 'alpha')
      expect(after.max_batch_size).toBe(2)
      expect(after.dynamic_batching.max_queue_delay_microseconds).toBe(1500)
      expect(after.parameters['preprocess.mean']).toEqual({ string_value: '0,0,0' })
      // Two sessions, each on half the cores (none set by --threads-per-session).
      expect(after.instance_group).toEqual([expect.objectContaining({ kind: 'KIND_CPU', count: 2 })])
      expect(server.service.model('alpha').sessions.sessionCount).toBe(2)
      // The preprocessing serves as configured, not only as answered.
      expect(await topProbability(server, 'alpha')).not.toBeCloseTo(probability, 6)

      expect(await load(server, 'alpha')).toEqual({ status: 200, error: undefined })
      expect(await config(server, 'alpha')).toEqual(before)
      expect(await topProbability(server, 'alpha')).toBeCloseTo(probability, 6)
    } finally {
      await server.close()
    }
  })

  it("reads it as protobuf JSON: lowerCamelCase names, 64-bit integers as strings, enums by number, Triton's own defaults", async () => {
    const server = await explicitServer()
    try {
      const written = {
        name: 'beta',
        platform: 'onnxruntime_onnx',
        maxBatchSize: '3',
        input: [{ name: 'input', dataType: 11, format: 2, dims: ['3', '224', '224'], isShapeTensor: false }],
        // Triton writes label_filename "" for a model without labels: a default, so not a claim.
        output: [{ name: 'logits', data_type: 'TYPE_FP32', dims: [1000], label_filename: '' }],
        dynamicBatching: { maxQueueDelayMicroseconds: '250', defaultQueuePolicy: { maxQueueSize: '12', timeoutAction: 'REJECT' } },
        instanceGroup: [{ name: 'beta', kind: 'KIND_AUTO', count: 1, gpus: [], passive: false }],
        optimization: { priority: 'PRIORITY_DEFAULT', inputPinnedMemory: { enable: true }, outputPinnedMemory: { enable: true } },
        modelTransactionPolicy: { decoupled: false },
        responseCache: { enable: false },
        modelWarmup: []
      }
      // As Triton's HTTP client sends it: the object's JSON text in parameters.config.
      expect(await load(server, 'beta', { config: JSON.stringify(written) })).toEqual({ status: 200, error: undefined })
      const after = await config(server, 'beta')
      expect(after).toMatchObject({
        max_batch_size: 3,
        dynamic_batching: { max_queue_delay_microseconds: 250, default_queue_policy: { max_queue_size: 12 } }
      })
      // The object itself is taken too.
      expect(await load(server, 'beta', { config: { max_batch_size: 1 } })).toEqual({ status: 200, error: undefined })
      expect((await config(server, 'beta')).max_batch_size).toBe(1)
    } finally {
      await server.close()
    }
  })

  it('refuses, before loading, what it cannot read or do, naming the field', async () => {
    const server = await explicitServer()
    try {
      const refusals: Array<[unknown, RegExp]> = [
        ['{"max_batch_size":', /not valid JSON/],
        ['[]', /top level must be a JSON object/],
        [{ name: 'gamma' }, /name \("gamma"\) is not the model being loaded \("alpha"\)/],
        [{ max_batch_size: 0 }, /max_batch_size is 0/],
        [{ max_batch_size: 5000 }, /max_batch_size must be from 0 to 1024/],
        [{ platform: 'tensorrt_plan' }, /platform must be "onnxruntime_onnx"/],
        [{ sequence_batching: { max_sequence_idle_microseconds: 5 } }, /sequence_batching may only hold its defaults/],
        [{ ensembleScheduling: { step: [{ model_name: 'x' }] } }, /ensemble_scheduling may only hold its defaults/],
        [{ no_such_field: 1 }, /no_such_field is not a ModelConfig field/],
        [{ parameters: { intra_op_thread_count: { string_value: '4' } } }, /parameters\["intra_op_thread_count"\] is not a parameter/],
        [{ parameters: { 'preprocess.resize': { string_value: 'big' } } }, /must hold a number/],
        // Regression: names of Object's own members found them (500 INTERNAL "setting is not iterable").
        ...['constructor', 'toString', '__proto__'].map((name): [unknown, RegExp] => [
          `{"parameters":{"${name}":"x"}}`,
          new RegExp(`parameters\\["${name}"\\] is not a parameter`)
        ]),
        [{ input: [{}, {}] }, /input lists 2 tensors/],
        [
          { dynamic_batching: { default_queue_policy: { default_timeout_microseconds: 5 } } },
          /default_timeout_microseconds may only hold its default/
        ],
        [{ optimization: { cuda: { graphs: true } } }, /optimization may only hold its defaults/],
        [{ version_policy: { latest: { num_versions: 1 }, all: {} } }, /version_policy must set one/],
        // Nested far past any ModelConfig: refused, not walked.
        [`{"response_cache":${'['.repeat(5000)}${']'.repeat(5000)}}`, /response_cache may only hold its defaults/]
      ]
      for (const [value, message] of refusals) {
        const answer = await load(server, 'alpha', { config: value })
        expect(answer.status, JSON.stringify(value).slice(0, 80)).toBe(400)
        expect(answer.error).toMatch(/^BAD_REQUEST: The request is invalid. The "config" parameter/)
        expect(answer.error).toMatch(message)
      }
      // A config.json rule broken by the amended configuration is named with the request's part in it.
      const crossField = await load(server, 'alpha', { config: { parameters: { 'preprocess.crop': { string_value: '300' } } } })
      expect(crossField.status).toBe(400)
      expect(crossField.error).toMatch(
        /^MODEL_LOAD_FAILED: .*config\.json with the load request's "config".*crop \(300\) is larger than preprocess\.resize/
      )
      // Regression: a folder without version folders took a policy naming another version, and its config answer claimed it.
      const unserved = await load(server, 'alpha', { config: { version_policy: { specific: { versions: [77] } } } })
      expect([unserved.status, unserved.error]).toEqual([
        400,
        expect.stringMatching(/^MODEL_LOAD_FAILED: .*names version 77, but the folder/)
      ])
      // Regression: constants that overflow float32 loaded, and every image was then answered 500.
      const overflowing = await load(server, 'alpha', { config: { parameters: { 'preprocess.scale': { string_value: '1e39' } } } })
      expect([overflowing.status, overflowing.error]).toEqual([
        400,
        expect.stringMatching(/^MODEL_LOAD_FAILED: .*scale 1e\+39 is beyond float32/)
      ])
      expect((await load(server, 'alpha', { 'file:1/model.onnx': 'eA==' })).error).toMatch(
        /^BAD_REQUEST: .*The "file:1\/model.onnx" parameter is not supported/
      )
      const unload = await fetch(`${server.url}/v2/repository/models/alpha/unload`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ parameters: { config: '{}' } })
      })
      expect(unload.status).toBe(400)
      expect(await topProbability(server, 'alpha')).toBeGreaterThan(0)
    } finally {
      await server.close()
    }
  })

  it('fails the load, keeping what served, when the configuration says the model is what it is not', async () => {
    const server = await explicitServer()
    try {
      const before = await config(server, 'alpha')
      const refusals: Array<[Record<string, unknown>, RegExp]> = [
        [
          { input: [{ name: 'input', dims: [3, 256, 256] }] },
          /input\[0\]\.dims is \[3,256,256\], but version 1 loads with \[3,224,224\] \(the crop sets them/
        ],
        [{ input: [{ name: 'data' }] }, /input\[0\]\.name is "data", but version 1 loads with "input"/],
        [{ output: [{ name: 'logits', data_type: 'TYPE_FP32', dims: [10] }] }, /output\[0\]\.dims is \[10\].*\[1000\]/],
        [{ instance_group: [{ kind: 'KIND_GPU' }] }, /instance_group\[0\]\.kind is "KIND_GPU", but version 1 loads with "KIND_CPU"/],
        [{ default_model_filename: 'other.onnx' }, /default_model_filename/],
        [{ parameters: { synthetic: { string_value: 'false' } } }, /parameters\["synthetic"\] is "false"/]
      ]
      for (const [value, message] of refusals) {
        const answer = await load(server, 'alpha', { config: JSON.stringify(value) })
        expect(answer.status, JSON.stringify(value)).toBe(400)
        expect(answer.error).toMatch(/^MODEL_LOAD_FAILED: /)
        expect(answer.error).toMatch(message)
      }
      expect(await config(server, 'alpha')).toEqual(before)
      expect(await topProbability(server, 'alpha')).toBeGreaterThan(0)
    } finally {
      await server.close()
    }
  })
})

describe('load with a config parameter over gRPC', () => {
  it('takes it as string_param or bytes_param, and ModelConfig answers it', async () => {
    const server = await explicitServer()
    const grpc = await startTestGrpc(server)
    try {
      const json = JSON.stringify({ max_batch_size: 2, dynamic_batching: { max_queue_delay_microseconds: 100 } })
      expect(await grpc.call('RepositoryModelLoad', { model_name: 'beta', parameters: { config: { string_param: json } } })).toEqual({
        model_name: 'beta',
        isLoaded: true
      })
      const reply = await grpc.call<{
        config: { max_batch_size: number; dynamic_batching: { max_queue_delay_microseconds: string | number } }
      }>('ModelConfig', { name: 'beta' })
      expect(reply.config.max_batch_size).toBe(2)
      expect(Number(reply.config.dynamic_batching.max_queue_delay_microseconds)).toBe(100)
      await grpc.call('RepositoryModelLoad', {
        model_name: 'beta',
        parameters: { config: { bytes_param: Buffer.from('{"max_batch_size":3}') } }
      })
      expect((await grpc.call<{ config: { max_batch_size: number } }>('ModelConfig', { name: 'beta' })).config.max_batch_size).toBe(3)
      // A configuration as long as Triton's own answers get, padded: more than the 4 KiB other RPCs' requests may hold.
      const padded = `{"name":"beta"${' '.repeat(20_000)},"max_batch_size":4}`
      await grpc.call('RepositoryModelLoad', { model_name: 'beta', parameters: { config: { string_param: padded } } })
      expect((await grpc.call<{ config: { max_batch_size: number } }>('ModelConfig', { name: 'beta' })).config.max_batch_size).toBe(4)
      const large = await callRefusal(
        grpc.call('RepositoryModelLoad', {
          model_name: 'beta',
          parameters: { config: { string_param: `{"name":"beta"${' '.repeat(66_000)}}` } }
        })
      )
      expect(large.details).toMatch(/^BAD_REQUEST: .*holds 66015 characters; a model configuration is at most 65536/)
      const huge = await callRefusal(
        grpc.call('RepositoryModelLoad', { model_name: 'beta', parameters: { config: { string_param: ' '.repeat(100_000) } } })
      )
      expect(huge.details).toMatch(/^BODY_TOO_LARGE: /)
      // Regression: a parameter named __proto__ set the parameter map's prototype and was dropped; it is refused as on REST.
      const proto = await callRefusal(
        grpc.call('RepositoryModelLoad', { model_name: 'beta', parameters: JSON.parse('{"__proto__": {"string_param": "x"}}') as object })
      )
      expect(proto.details).toMatch(/^BAD_REQUEST: .*"__proto__"/)
      const refused = await callRefusal(
        grpc.call('RepositoryModelLoad', { model_name: 'beta', parameters: { config: { string_param: '{"max_batch_size":0}' } } })
      )
      expect([refused.code, refused.details]).toEqual([
        status[status.INVALID_ARGUMENT],
        expect.stringMatching(/^BAD_REQUEST: .*max_batch_size is 0/)
      ])
    } finally {
      await grpc.close()
      await server.close()
    }
  })
})
