import { readFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { callRefusal, startTestGrpc, type GrpcTestDoor } from '../helpers/grpc.js'
import { syntheticModelRepository } from '../helpers/models.js'
import { photoPaths } from '../helpers/photos.js'
import { modelInputTensor, startTestServer, type TestServer } from '../helpers/server.js'
import { tensorBytes } from '../helpers/v2-bytes.js'

/**
 * FP32 tensors over the gRPC door are checked by the same core as over REST: an element that is
 * NaN or ±Infinity as a float32, in raw_input_contents or in typed fp32_contents, is refused with
 * INVALID_ARGUMENT naming the input, where it used to run and answer NaN logits with OK.
 */

const MODEL = 'resnet50'
const INPUT = 'input'
const SHAPE = [1, 3, 224, 224]

let server: TestServer
let grpc: GrpcTestDoor
let tensor: Float32Array

interface InferResponse {
  raw_output_contents: Buffer[]
}

beforeAll(async () => {
  server = await startTestServer(await syntheticModelRepository())
  grpc = await startTestGrpc(server)
  tensor = await modelInputTensor(server, MODEL, await readFile(photoPaths()[0]!))
})

afterAll(async () => {
  await grpc?.close()
  await server?.close()
})

describe('V2 gRPC: non-finite FP32 elements', () => {
  it('NaN in raw_input_contents → INVALID_ARGUMENT naming the input (was OK with NaN logits)', async () => {
    const poisoned = tensor.slice()
    poisoned[1000] = NaN
    const refused = await callRefusal(
      grpc.call('ModelInfer', {
        model_name: MODEL,
        inputs: [{ name: INPUT, datatype: 'FP32', shape: SHAPE }],
        raw_input_contents: [tensorBytes(poisoned)]
      })
    )
    expect(refused.code).toBe('INVALID_ARGUMENT')
    expect(refused.details).toMatch(/^BAD_REQUEST: .*"input" image 0, element 1000 is NaN/)
  })

  it('Infinity in typed fp32_contents → INVALID_ARGUMENT', async () => {
    const values = Array.from(tensor)
    values[values.length - 1] = Infinity
    const refused = await callRefusal(
      grpc.call('ModelInfer', {
        model_name: MODEL,
        inputs: [{ name: INPUT, datatype: 'FP32', shape: SHAPE, contents: { fp32_contents: values } }]
      })
    )
    expect(refused).toEqual({
      code: 'INVALID_ARGUMENT',
      details: expect.stringMatching(/"input" image 0, element 150527 is Infinity/) as unknown
    })
  })

  it('the same tensor with finite values runs, and its logits are finite', async () => {
    const res = await grpc.call<InferResponse>('ModelInfer', {
      model_name: MODEL,
      inputs: [{ name: INPUT, datatype: 'FP32', shape: SHAPE }],
      raw_input_contents: [tensorBytes(tensor)]
    })
    const logits = res.raw_output_contents[0]!
    const scores = new Float32Array(logits.buffer.slice(logits.byteOffset, logits.byteOffset + logits.byteLength))
    expect(scores.length).toBe(1000)
    expect(scores.every(Number.isFinite)).toBe(true)
  })
})
