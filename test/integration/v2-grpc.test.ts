import { readFile } from 'node:fs/promises'
import { status } from '@grpc/grpc-js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { callRefusal, startTestGrpc, type GrpcCallError, type GrpcTestDoor } from '../helpers/grpc.js'
import { syntheticModelRepository } from '../helpers/models.js'
import { photoPaths } from '../helpers/photos.js'
import {
  classifyIndices,
  IMPLEMENTED_EXTENSIONS,
  metricValue,
  modelInputTensor,
  startTestServer,
  type TestServer
} from '../helpers/server.js'
import { lengthPrefixed, splitLengthPrefixed, tensorBytes } from '../helpers/v2-bytes.js'

/**
 * The Open Inference Protocol's gRPC service (inference.GRPCInferenceService) against the real
 * service: health and metadata, one real photo answered as /classify answers it through BYTES
 * (typed and raw) and a raw FP32 tensor, refusals as INVALID_ARGUMENT / NOT_FOUND. (An independent
 * Python client: test/system/v2-grpc-python.test.ts.)
 */

const MODEL = 'resnet50'
const INPUT = 'input'
const OUTPUT = 'logits'

let server: TestServer
let grpc: GrpcTestDoor
let photo: Buffer
let tensor: Float32Array
let classifyTop5: number[]
/** Images the model has run, summed over its executions. */
let imagesRun = 0

interface OutputTensor {
  name: string
  datatype: string
  shape: number[]
}

interface InferResponse {
  model_name: string
  model_version: string
  id: string
  outputs: OutputTensor[]
  raw_output_contents: Buffer[]
}

const classification = (k: number) => [{ name: OUTPUT, parameters: { classification: { int64_param: k } } }]

function classificationIndices(raw: Buffer): number[] {
  return splitLengthPrefixed(raw).map((s) => Number(s.split(':')[1]))
}

async function expectStatus(call: Promise<unknown>, code: status): Promise<string> {
  const refusal = await callRefusal(call)
  expect(refusal.code).toBe(status[code])
  return refusal.details
}

beforeAll(async () => {
  server = await startTestServer(await syntheticModelRepository(), [], {
    onBatch(_model, size) {
      imagesRun += size
    }
  })
  grpc = await startTestGrpc(server)
  photo = await readFile(photoPaths()[0]!)
  tensor = await modelInputTensor(server, MODEL, photo)
  classifyTop5 = await classifyIndices(server, MODEL, photo)
})

afterAll(async () => {
  await grpc?.close()
  await server?.close()
})

describe('V2 gRPC: health and metadata', () => {
  it('ServerLive, ServerReady, ModelReady', async () => {
    expect(await grpc.call('ServerLive', {})).toEqual({ live: true })
    expect(await grpc.call('ServerReady', {})).toEqual({ ready: true })
    expect(await grpc.call('ModelReady', { name: MODEL })).toEqual({ ready: true })
    expect(await grpc.call('ModelReady', { name: MODEL, version: '1' })).toEqual({ ready: true })
  })

  it('ModelReady for an unknown model or version answers ready: false, as Triton does (it was NOT_FOUND)', async () => {
    expect(await grpc.call('ModelReady', { name: 'nope' })).toEqual({ ready: false })
    expect(await grpc.call('ModelReady', { name: MODEL, version: '9' })).toEqual({ ready: false })
  })

  it('ServerMetadata and ModelMetadata', async () => {
    const server = await grpc.call<{ name: string; extensions: string[] }>('ServerMetadata', {})
    expect(server.name).toBe('resnet-serve')
    // Every extension implemented, under Triton's names (tooling reads the list before it uses one).
    expect([...server.extensions].sort()).toEqual(IMPLEMENTED_EXTENSIONS)
    expect(await grpc.call('ModelMetadata', { name: MODEL })).toEqual({
      name: MODEL,
      versions: ['1'],
      platform: 'onnxruntime_onnx',
      inputs: [{ name: INPUT, datatype: 'FP32', shape: [-1, 3, 224, 224] }],
      outputs: [{ name: OUTPUT, datatype: 'FP32', shape: [-1, 1000] }]
    })
    expect(await expectStatus(grpc.call('ModelMetadata', { name: MODEL, version: '9' }), status.NOT_FOUND)).toMatch(/^MODEL_NOT_FOUND: /)
  })
})

describe('V2 gRPC: ModelInfer, the same top-5 as /classify', () => {
  it('BYTES in typed contents (bytes_contents), classification answered in raw_output_contents', async () => {
    const res = await grpc.call<InferResponse>('ModelInfer', {
      model_name: MODEL,
      id: 'typed-bytes',
      inputs: [{ name: INPUT, datatype: 'BYTES', shape: [1], contents: { bytes_contents: [photo] } }],
      outputs: classification(5)
    })
    expect(res).toMatchObject({ model_name: MODEL, model_version: '1', id: 'typed-bytes' })
    expect(res.outputs).toEqual([expect.objectContaining({ name: OUTPUT, datatype: 'BYTES', shape: [1, 5] })])
    expect(classificationIndices(res.raw_output_contents[0]!)).toEqual(classifyTop5)
  })

  it('BYTES in raw_input_contents (length-prefixed)', async () => {
    const res = await grpc.call<InferResponse>('ModelInfer', {
      model_name: MODEL,
      inputs: [{ name: INPUT, datatype: 'BYTES', shape: [1, 1] }],
      outputs: classification(5),
      raw_input_contents: [lengthPrefixed(photo)]
    })
    expect(classificationIndices(res.raw_output_contents[0]!)).toEqual(classifyTop5)
  })

  it('raw FP32 preprocessed by the project: logits equal, byte for byte, to typed fp32_contents and to REST binary', async () => {
    const raw = await grpc.call<InferResponse>('ModelInfer', {
      model_name: MODEL,
      inputs: [{ name: INPUT, datatype: 'FP32', shape: [1, 3, 224, 224] }],
      raw_input_contents: [tensorBytes(tensor)]
    })
    expect(raw.outputs).toEqual([expect.objectContaining({ name: OUTPUT, datatype: 'FP32', shape: [1, 1000] })])
    const logits = raw.raw_output_contents[0]!
    expect(logits.byteLength).toBe(4000)
    const scores = new Float32Array(logits.buffer.slice(logits.byteOffset, logits.byteOffset + logits.byteLength))
    const top5 = [...scores.keys()].sort((a, b) => scores[b]! - scores[a]! || a - b).slice(0, 5)
    expect(top5).toEqual(classifyTop5)

    const typed = await grpc.call<InferResponse>('ModelInfer', {
      model_name: MODEL,
      inputs: [{ name: INPUT, datatype: 'FP32', shape: [1, 3, 224, 224], contents: { fp32_contents: Array.from(tensor) } }]
    })
    expect(typed.raw_output_contents[0]!.equals(logits)).toBe(true)

    const json = Buffer.from(
      JSON.stringify({
        inputs: [{ name: INPUT, datatype: 'FP32', shape: [1, 3, 224, 224], parameters: { binary_data_size: tensor.byteLength } }],
        parameters: { binary_data_output: true }
      })
    )
    const rest = await fetch(`${server.url}/v2/models/${MODEL}/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(json.byteLength) },
      body: Buffer.concat([json, tensorBytes(tensor)])
    })
    const body = Buffer.from(await rest.arrayBuffer())
    expect(body.subarray(Number(rest.headers.get('inference-header-content-length'))).equals(logits)).toBe(true)
  })
})

describe('V2 gRPC: refusals', () => {
  const fp32 = (overrides: Record<string, unknown>) => ({
    model_name: MODEL,
    inputs: [{ name: INPUT, datatype: 'FP32', shape: [1, 3, 224, 224], ...overrides }],
    raw_input_contents: [tensorBytes(tensor)]
  })

  it('wrong input name, unknown datatype, shape not matching the data → INVALID_ARGUMENT', async () => {
    expect(await expectStatus(grpc.call('ModelInfer', fp32({ name: 'image' })), status.INVALID_ARGUMENT)).toMatch(/^BAD_REQUEST: .*"image"/)
    expect(await expectStatus(grpc.call('ModelInfer', fp32({ datatype: 'FP33' })), status.INVALID_ARGUMENT)).toMatch(/Unknown datatype/)
    await expectStatus(grpc.call('ModelInfer', fp32({ shape: [2, 3, 224, 224] })), status.INVALID_ARGUMENT)
    await expectStatus(
      grpc.call('ModelInfer', {
        model_name: MODEL,
        inputs: [{ name: INPUT, datatype: 'BYTES', shape: [2] }],
        raw_input_contents: [lengthPrefixed(photo)]
      }),
      status.INVALID_ARGUMENT
    )
    await expectStatus(
      grpc.call('ModelInfer', {
        model_name: MODEL,
        inputs: [{ name: INPUT, datatype: 'BYTES', shape: [1], contents: { bytes_contents: [photo.subarray(0, 100)] } }]
      }),
      status.INVALID_ARGUMENT
    )
    await expectStatus(grpc.call('ModelInfer', { ...fp32({}), outputs: classification(0) }), status.INVALID_ARGUMENT)
  })

  it('shared-memory parameters on an input or output → INVALID_ARGUMENT saying so, not an inline answer', async () => {
    const region = { shared_memory_region: { string_param: 'out0' }, shared_memory_byte_size: { int64_param: 4000 } }
    expect(
      await expectStatus(grpc.call('ModelInfer', { ...fp32({}), outputs: [{ name: OUTPUT, parameters: region }] }), status.INVALID_ARGUMENT)
    ).toMatch(/Output "logits" has the parameter "shared_memory_region"/)
    expect(
      await expectStatus(
        grpc.call('ModelInfer', {
          model_name: MODEL,
          inputs: [{ name: INPUT, datatype: 'FP32', shape: [1, 3, 224, 224], parameters: region }]
        }),
        status.INVALID_ARGUMENT
      )
    ).toMatch(/Input "input" has the parameter "shared_memory_region": this server does not implement shared memory/)
  })

  it('unknown model or version → NOT_FOUND; the server keeps answering', async () => {
    await expectStatus(grpc.call('ModelInfer', { ...fp32({}), model_name: 'nope' }), status.NOT_FOUND)
    await expectStatus(grpc.call('ModelInfer', { ...fp32({}), model_version: '2' }), status.NOT_FOUND)
    expect(await grpc.call('ServerReady', {})).toEqual({ ready: true })
    const res = await grpc.call<InferResponse>('ModelInfer', {
      model_name: MODEL,
      inputs: [{ name: INPUT, datatype: 'BYTES', shape: [1], contents: { bytes_contents: [photo] } }],
      outputs: classification(5)
    })
    expect(classificationIndices(res.raw_output_contents[0]!)).toEqual(classifyTop5)
  })

  it('the call deadline reaches the batcher: images still queued when it passes never run', async () => {
    // More calls than one batch holds, on one session: the first batch takes far longer than the
    // deadline, so what is left in the queue behind it must be dropped, not run for nobody.
    const calls = 24
    const imagesBefore = imagesRun
    const exceededBefore = await metricValue(server, 'resnet_serve_request_failure_total', `model="${MODEL}",reason="DEADLINE_EXCEEDED"`)
    const closedBefore = await metricValue(server, 'resnet_serve_request_failure_total', `model="${MODEL}",reason="CLIENT_CLOSED"`)
    const outcomes = await Promise.allSettled(
      Array.from({ length: calls }, () =>
        grpc.call(
          'ModelInfer',
          { model_name: MODEL, inputs: [{ name: INPUT, datatype: 'BYTES', shape: [1], contents: { bytes_contents: [photo] } }] },
          { deadlineMs: 150 }
        )
      )
    )
    const codes = outcomes.map((o) => (o.status === 'rejected' ? (o.reason as GrpcCallError).code : status.OK))
    expect(codes).toContain(status.DEADLINE_EXCEEDED)
    // Calls still decoding when their clients gave up reach the queue late, and are refused there.
    await new Promise((resolve) => setTimeout(resolve, 200))
    await server.service.model(MODEL).batcher.drained()
    expect(imagesRun - imagesBefore).toBeLessThan(calls)
    // Counted as what they were: a call whose deadline passed was counted CLIENT_CLOSED, as if its client had hung up.
    const failed = async (reason: string): Promise<number> =>
      metricValue(server, 'resnet_serve_request_failure_total', `model="${MODEL}",reason="${reason}"`)
    const exceeded = exceededBefore + codes.filter((c) => c === status.DEADLINE_EXCEEDED).length
    // An answer dropped after its batch ran is counted once that batch has answered.
    for (let i = 0; i < 100 && (await failed('DEADLINE_EXCEEDED')) < exceeded; i++) await new Promise((r) => setTimeout(r, 50))
    expect(await failed('DEADLINE_EXCEEDED')).toBe(exceeded)
    expect(await failed('CLIENT_CLOSED')).toBe(closedBefore)
    expect(await grpc.call('ServerLive', {})).toEqual({ live: true })
  })
})

/** One sample of the server's metrics text; 0 when the series does not exist yet. */

describe('V2 gRPC: API key', () => {
  it('with --api-key, ModelInfer needs the key in its metadata (bearer or x-api-key); metadata RPCs stay open', async () => {
    const locked = await startTestGrpc(server, { ...server.settings, apiKey: 'sesame', authHealth: false })
    try {
      const request = {
        model_name: MODEL,
        inputs: [{ name: INPUT, datatype: 'BYTES', shape: [1], contents: { bytes_contents: [photo] } }],
        outputs: classification(5)
      }
      expect(await expectStatus(locked.call('ModelInfer', request), status.UNAUTHENTICATED)).toMatch(/^UNAUTHENTICATED: /)
      await expectStatus(locked.call('ModelInfer', request, { metadata: { authorization: 'Bearer wrong' } }), status.UNAUTHENTICATED)
      const answer = await locked.call<InferResponse>('ModelInfer', request, { metadata: { authorization: 'Bearer sesame' } })
      expect(classificationIndices(answer.raw_output_contents[0]!)).toEqual(classifyTop5)
      await locked.call('ModelInfer', request, { metadata: { 'x-api-key': 'sesame' } })
      expect(await locked.call('ServerReady', {})).toEqual({ ready: true })
      expect(await locked.call('ModelMetadata', { name: MODEL })).toMatchObject({ name: MODEL })
    } finally {
      await locked.close()
    }
    const lockedHealth = await startTestGrpc(server, { ...server.settings, apiKey: 'sesame', authHealth: true })
    try {
      await expectStatus(lockedHealth.call('ServerReady', {}), status.UNAUTHENTICATED)
      expect(await lockedHealth.call('ServerReady', {}, { metadata: { 'x-api-key': 'sesame' } })).toEqual({ ready: true })
    } finally {
      await lockedHealth.close()
    }
  })
})

describe('V2 gRPC: request counting', () => {
  it('counts each ModelInfer call once, as a success or by its refusal code', async () => {
    const success = ['resnet_serve_request_success_total', `model="${MODEL}"`] as const
    const refused = ['resnet_serve_request_failure_total', `model="${MODEL}",reason="BAD_REQUEST"`] as const
    const [successBefore, refusedBefore] = [await metricValue(server, ...success), await metricValue(server, ...refused)]
    await grpc.call('ModelInfer', {
      model_name: MODEL,
      inputs: [{ name: INPUT, datatype: 'BYTES', shape: [1], contents: { bytes_contents: [photo] } }]
    })
    await expectStatus(
      grpc.call('ModelInfer', {
        model_name: MODEL,
        inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], contents: { bytes_contents: [photo] } }]
      }),
      status.INVALID_ARGUMENT
    )
    expect([await metricValue(server, ...success), await metricValue(server, ...refused)]).toEqual([successBefore + 1, refusedBefore + 1])
  })
})
