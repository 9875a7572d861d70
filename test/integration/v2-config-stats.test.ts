import { status } from '@grpc/grpc-js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { callRefusal, startTestGrpc, type GrpcTestDoor } from '../helpers/grpc.js'
import { syntheticModelRepository } from '../helpers/models.js'
import { readPhoto } from '../helpers/photos.js'
import { metricValue, modelInputTensor, startTestServer, type TestServer } from '../helpers/server.js'

/**
 * Triton's model configuration and statistics extensions on both doors, against the real service:
 * the configuration a Triton client shapes its tensors from, and statistics that move by what a few
 * real inferences (an encoded image on /classify, encoded images and a refusal on V2 REST, an FP32
 * tensor on gRPC) did. The server holds an API key with --auth-metrics: statistics need the key,
 * the configuration does not.
 */

const MODEL = 'resnet50'
const KEY = 'stats-test-key'
const WITH_KEY = { 'x-api-key': KEY }

interface Duration {
  count: number
  ns: number
}

interface ModelStats {
  name: string
  version: string
  last_inference: number
  inference_count: number
  execution_count: number
  inference_stats: Record<'success' | 'fail' | 'queue' | 'compute_input' | 'compute_infer' | 'compute_output', Duration>
  batch_stats: Array<{ batch_size: number; compute_input: Duration; compute_infer: Duration; compute_output: Duration }>
}

interface ModelConfigJson {
  name: string
  platform: string
  max_batch_size: number
  input: Array<{ name: string; data_type: string; format: string; dims: number[] }>
  output: Array<{ name: string; data_type: string; dims: number[] }>
  instance_group: Array<{ kind: string; count: number }>
  parameters: Record<string, { string_value: string }>
}

let server: TestServer
let grpc: GrpcTestDoor
/** Batch sizes of the executions the core reported, in order. */
const executions: number[] = []

async function getJson<T>(path: string, headers: Record<string, string> = WITH_KEY): Promise<{ status: number; body: T }> {
  const res = await fetch(`${server.url}${path}`, { headers })
  return { status: res.status, body: (await res.json()) as T }
}

async function restStats(): Promise<ModelStats> {
  const { status: code, body } = await getJson<{ model_stats: ModelStats[] }>(`/v2/models/${MODEL}/stats`)
  expect(code).toBe(200)
  expect(body.model_stats).toHaveLength(1)
  return body.model_stats[0]!
}

function batchCounts(stats: ModelStats): Map<number, number> {
  return new Map(stats.batch_stats.map((b) => [b.batch_size, b.compute_infer.count]))
}

beforeAll(async () => {
  server = await startTestServer(await syntheticModelRepository(), ['--api-key', KEY, '--auth-metrics'], {
    onBatch(_model, size) {
      executions.push(size)
    }
  })
  grpc = await startTestGrpc(server)
})

afterAll(async () => {
  await grpc?.close()
  await server?.close()
})

describe('model configuration', () => {
  it("answers Triton's ModelConfig over REST, with and without a version, open without the key", async () => {
    const { status: code, body } = await getJson<ModelConfigJson>(`/v2/models/${MODEL}/config`, {})
    expect(code).toBe(200)
    expect(body).toMatchObject({
      name: MODEL,
      platform: 'onnxruntime_onnx',
      max_batch_size: 16,
      input: [{ name: 'input', data_type: 'TYPE_FP32', format: 'FORMAT_NCHW', dims: [3, 224, 224] }],
      output: [{ name: 'logits', data_type: 'TYPE_FP32', dims: [1000] }],
      instance_group: [{ kind: 'KIND_CPU', count: 1 }]
    })
    expect(body.parameters['preprocess.crop']).toEqual({ string_value: '224' })
    expect((await getJson(`/v2/models/${MODEL}/versions/1/config`, {})).body).toEqual(body)
  })

  it('agrees with the model metadata as Triton clients read the two together (batch dim + input dims)', async () => {
    const config = (await getJson<ModelConfigJson>(`/v2/models/${MODEL}/config`)).body
    const metadata = (await getJson<{ inputs: Array<{ shape: number[] }> }>(`/v2/models/${MODEL}`)).body
    expect(metadata.inputs[0]!.shape).toEqual([config.max_batch_size > 0 ? -1 : undefined, ...config.input[0]!.dims])
  })

  it('answers the same configuration over gRPC ModelConfig', async () => {
    const rest = (await getJson<ModelConfigJson>(`/v2/models/${MODEL}/config`)).body
    const reply = await grpc.call<{ config: ModelConfigJson }>('ModelConfig', { name: MODEL, version: '' })
    expect(reply.config).toMatchObject(rest as unknown as Record<string, unknown>)
  })

  it('refuses an unknown model or version with the door’s NOT_FOUND shape', async () => {
    for (const path of [`/v2/models/nope/config`, `/v2/models/${MODEL}/versions/2/config`, `/v2/models/nope/stats`]) {
      const { status: code, body } = await getJson<{ error: string }>(path)
      expect(code, path).toBe(404)
      expect(body.error, path).toMatch(/^MODEL_NOT_FOUND: /)
    }
    for (const [rpc, request] of [
      ['ModelConfig', { name: 'nope' }],
      ['ModelConfig', { name: MODEL, version: '2' }],
      ['ModelStatistics', { name: 'nope' }]
    ] as const) {
      const refusal = await callRefusal(grpc.call(rpc, request, { metadata: WITH_KEY }))
      expect(refusal.code).toBe(status[status.NOT_FOUND])
      expect(refusal.details).toMatch(/^MODEL_NOT_FOUND/)
    }
  })
})

describe('statistics', () => {
  it('move by what a few real inferences on both doors did', async () => {
    const photo = await readPhoto('chelsea')
    const before = await restStats()
    const durationsBefore = await metricValue(server, 'resnet_serve_request_duration_seconds_count', `model="${MODEL}"`)
    const executionsBefore = executions.length
    const startedAt = Date.now()

    // /classify: one encoded image (preprocess, queue, run, postprocess).
    const classify = await fetch(`${server.url}/classify?model=${MODEL}`, {
      method: 'POST',
      headers: { 'content-type': 'image/jpeg', ...WITH_KEY },
      body: photo
    })
    expect(classify.status).toBe(200)
    // V2 REST: two encoded images in one request, answered as classifications.
    const b64 = photo.toString('base64')
    const v2 = await fetch(`${server.url}/v2/models/${MODEL}/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...WITH_KEY },
      body: JSON.stringify({
        inputs: [{ name: 'input', shape: [2], datatype: 'BYTES', data: [b64, b64] }],
        outputs: [{ name: 'logits', parameters: { classification: 3 } }]
      })
    })
    expect(v2.status).toBe(200)
    // V2 REST refused: a failed request of this model, nothing run.
    const refused = await fetch(`${server.url}/v2/models/${MODEL}/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...WITH_KEY },
      body: JSON.stringify({ inputs: [{ name: 'wrong', shape: [1], datatype: 'BYTES', data: [b64] }] })
    })
    expect(refused.status).toBe(400)
    // gRPC: one preprocessed FP32 tensor, raw scores (no preprocessing, no postprocessing).
    const tensor = await modelInputTensor(server, MODEL, photo)
    await grpc.call(
      'ModelInfer',
      {
        model_name: MODEL,
        inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 224, 224] }],
        raw_input_contents: [Buffer.from(tensor.buffer, tensor.byteOffset, tensor.byteLength)]
      },
      { metadata: WITH_KEY }
    )

    const after = await restStats()
    const ran = executions.slice(executionsBefore)
    const delta = (pick: (s: ModelStats) => number): number => pick(after) - pick(before)
    const stage = (name: keyof ModelStats['inference_stats']) => ({
      count: delta((s) => s.inference_stats[name].count),
      ns: delta((s) => s.inference_stats[name].ns)
    })

    expect(after).toMatchObject({ name: MODEL, version: '1' })
    expect(after.last_inference).toBeGreaterThanOrEqual(startedAt)
    expect(delta((s) => s.inference_count)).toBe(4)
    expect(delta((s) => s.execution_count)).toBe(ran.length)
    expect(stage('success').count).toBe(3)
    expect(stage('fail').count).toBe(1)
    expect(stage('queue').count).toBe(4)
    // Encoded images only: the gRPC tensor came preprocessed.
    expect(stage('compute_input').count).toBe(3)
    expect(stage('compute_infer').count).toBe(4)
    // /classify's image and the two V2 classifications; the raw scores need no postprocessing.
    expect(stage('compute_output').count).toBe(3)
    for (const name of ['success', 'fail', 'queue', 'compute_input', 'compute_infer', 'compute_output'] as const) {
      expect(stage(name).ns, name).toBeGreaterThan(0)
    }
    // Per batch size: as many executions of each size as the core ran.
    const counted = batchCounts(after)
    const expected = batchCounts(before)
    for (const size of ran) expected.set(size, (expected.get(size) ?? 0) + 1)
    expect(counted).toEqual(expected)
    for (const batch of after.batch_stats) expect(batch.compute_infer.ns).toBeGreaterThan(0)
    // Prometheus times the same answered requests.
    const durations = await metricValue(server, 'resnet_serve_request_duration_seconds_count', `model="${MODEL}"`)
    expect(durations - durationsBefore).toBe(3)
  })

  it('count one execution for a request of three tensors on an idle model, as Triton batches a request whole (it ran 1 + 2)', async () => {
    const executionsBefore = executions.length
    const before = await restStats()
    await grpc.call(
      'ModelInfer',
      {
        model_name: MODEL,
        inputs: [{ name: 'input', datatype: 'FP32', shape: [3, 3, 224, 224] }],
        raw_input_contents: [Buffer.alloc(3 * 3 * 224 * 224 * 4)]
      },
      { metadata: WITH_KEY }
    )
    expect(executions.slice(executionsBefore)).toEqual([3])
    const after = await restStats()
    expect(after.execution_count - before.execution_count).toBe(1)
    expect(after.inference_count - before.inference_count).toBe(3)
  })

  it('count a request that names the served version; one naming a version not served counts nowhere', async () => {
    const b64 = (await readPhoto('chelsea')).toString('base64')
    const body = JSON.stringify({ inputs: [{ name: 'input', shape: [1], datatype: 'BYTES', data: [b64] }] })
    const before = await restStats()
    const send = (version: string) =>
      fetch(`${server.url}/v2/models/${MODEL}/versions/${version}/infer`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...WITH_KEY },
        body
      })
    expect((await send('1')).status).toBe(200)
    expect((await send('2')).status).toBe(404)
    const after = await restStats()
    expect(after.inference_stats.success.count - before.inference_stats.success.count).toBe(1)
    expect(after.inference_stats.fail.count).toBe(before.inference_stats.fail.count)
    expect(after.inference_count - before.inference_count).toBe(1)
  })

  it('answers the same over gRPC ModelStatistics, for one model and for all (empty name), and on /v2/models/stats', async () => {
    const rest = await restStats()
    const one = await grpc.call<{ model_stats: ModelStats[] }>('ModelStatistics', { name: MODEL }, { metadata: WITH_KEY })
    expect(one.model_stats).toHaveLength(1)
    expect(one.model_stats[0]).toMatchObject(rest as unknown as Record<string, unknown>)
    const all = await grpc.call<{ model_stats: ModelStats[] }>('ModelStatistics', {}, { metadata: WITH_KEY })
    expect(all.model_stats.map((s) => s.name)).toEqual([MODEL])
    const listed = await getJson<{ model_stats: ModelStats[] }>('/v2/models/stats')
    expect(listed.body.model_stats).toEqual([rest])
    expect((await getJson<{ model_stats: ModelStats[] }>(`/v2/models/${MODEL}/versions/1/stats`)).body.model_stats).toEqual([rest])
  })

  it('need the key with --auth-metrics, on both doors', async () => {
    for (const path of ['/v2/models/stats', `/v2/models/${MODEL}/stats`, `/v2/models/${MODEL}/versions/1/stats`]) {
      expect((await getJson(path, {})).status, path).toBe(401)
    }
    expect((await callRefusal(grpc.call('ModelStatistics', { name: MODEL }))).code).toBe(status[status.UNAUTHENTICATED])
    expect((await grpc.call<{ config: { name: string } }>('ModelConfig', { name: MODEL })).config.name).toBe(MODEL)
  })
})
