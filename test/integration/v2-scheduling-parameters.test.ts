import { readFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadModelFolder } from '../../src/repository/repository.js'
import { callRefusal, startTestGrpc, type GrpcTestDoor } from '../helpers/grpc.js'
import { removeVariantRepositories, variantRepository } from '../helpers/model-variants.js'
import { photoPaths } from '../helpers/photos.js'
import { modelInputTensor, startTestServer, type TestServer } from '../helpers/server.js'
import { tensorBytes } from '../helpers/v2-bytes.js'

/**
 * Triton's `timeout` (µs) and `priority` request parameters end to end, on both doors, with the
 * synthetic ResNet-50 run one image per execution (maxBatchSize 1) so that a request of several
 * images holds the model for several runs. Orders are read off completions, never off timings:
 * a high-priority request sent while such a request is queued finishes before it; one at the
 * default level finishes after it; a request whose timeout is shorter than that queue ends
 * DEADLINE_EXCEEDED.
 */

const MODEL = 'ranked'
const INPUT = 'input'
/** Images of the request that holds the model while the others are sent. */
const HOLD_IMAGES = 6

let server: TestServer
let grpc: GrpcTestDoor
let image: Buffer

function tensorRequest(id: string, images: number, parameters: Record<string, object> = {}): object {
  return {
    model_name: MODEL,
    id,
    parameters,
    inputs: [{ name: INPUT, datatype: 'FP32', shape: [images, 3, 224, 224] }],
    outputs: [{ name: 'logits', parameters: { classification: { int64_param: 1 } } }],
    raw_input_contents: [Buffer.concat(Array.from({ length: images }, () => image))]
  }
}

/** Sends a request of HOLD_IMAGES images and resolves once at least `queued` of them wait in the model's queue. */
async function holdTheModel(id: string, queued = 3): Promise<{ done: Promise<unknown> }> {
  const done = grpc.call('ModelInfer', tensorRequest(id, HOLD_IMAGES))
  for (let i = 0; server.service.model(MODEL).batcher.pending < queued; i++) {
    if (i > 400) throw new Error('the held request never queued')
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  // Wrapped: an async function's promise would wait for the request itself.
  return { done }
}

function restInfer(parameters: Record<string, unknown>): Promise<Response> {
  const floats = new Float32Array(image.buffer, image.byteOffset, image.byteLength / 4)
  return fetch(`${server.url}/v2/models/${MODEL}/infer`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      parameters,
      inputs: [{ name: INPUT, datatype: 'FP32', shape: [1, 3, 224, 224], data: Array.from(floats) }],
      outputs: [{ name: 'logits', parameters: { classification: 1 } }]
    })
  })
}

beforeAll(async () => {
  const root = await variantRepository({ [MODEL]: { batching: { maxBatchSize: 1, priorityLevels: 2 } } })
  server = await startTestServer(root, ['--sessions-per-model', '1'])
  grpc = await startTestGrpc(server)
  image = tensorBytes(await modelInputTensor(server, MODEL, await readFile(photoPaths()[0]!)))
})

afterAll(async () => {
  await grpc?.close()
  await server?.close()
  await removeVariantRepositories()
})

describe('priority', () => {
  it('a priority-1 request sent behind a queued request finishes before it; one at the default level (2, the lowest) after it', async () => {
    const order: string[] = []
    const held = (await holdTheModel('held')).done.then(() => order.push('held'))
    const high = grpc.call('ModelInfer', tensorRequest('high', 1, { priority: { int64_param: 1 } })).then(() => order.push('high'))
    const low = grpc.call('ModelInfer', tensorRequest('low', 1, { priority: { uint64_param: 2 } })).then(() => order.push('low'))
    const unnamed = restInfer({}).then((res) => order.push(`unnamed ${res.status}`))
    await Promise.all([held, high, low, unnamed])
    expect(order[0]).toBe('high')
    expect(order.indexOf('low')).toBeGreaterThan(order.indexOf('held'))
    expect(order.indexOf('unnamed 200')).toBeGreaterThan(order.indexOf('held'))
  })

  it('over REST too, and priority 0 means the default level', async () => {
    const order: string[] = []
    const held = (await holdTheModel('held-rest')).done.then(() => order.push('held'))
    const zero = restInfer({ priority: 0 }).then((res) => order.push(`zero ${res.status}`))
    const high = restInfer({ priority: 1 }).then((res) => order.push(`high ${res.status}`))
    await Promise.all([held, zero, high])
    expect(order[0]).toBe('high 200')
    expect(order.indexOf('zero 200')).toBeGreaterThan(order.indexOf('held'))
  })

  it('refuses a priority that is not a whole number ≥ 0 with BAD_REQUEST, on both doors', async () => {
    const res = await restInfer({ priority: -1 })
    expect(res.status).toBe(400)
    expect(((await res.json()) as { error: string }).error).toMatch(/^BAD_REQUEST: .*"priority" must be a whole number ≥ 0/)
    const refusal = await callRefusal(grpc.call('ModelInfer', tensorRequest('odd', 1, { priority: { string_param: 'high' } })))
    expect(refusal.code).toBe('INVALID_ARGUMENT')
  })
})

describe('timeout', () => {
  it('a timeout shorter than the queue ahead ends DEADLINE_EXCEEDED (504, and the gRPC status); a longer one, or 0, is answered', async () => {
    const held = (await holdTheModel('held-timeout')).done
    // 20 ms: less than the HOLD_IMAGES − 1 runs still ahead of it, however fast the machine.
    const short = restInfer({ timeout: 20_000 })
    const shortGrpc = callRefusal(grpc.call('ModelInfer', tensorRequest('short', 1, { timeout: { int64_param: 20_000 } })))
    const long = restInfer({ timeout: 600_000_000 })
    const none = restInfer({ timeout: 0 })
    const shortRes = await short
    expect(shortRes.status).toBe(504)
    expect(((await shortRes.json()) as { error: string }).error).toMatch(/^DEADLINE_EXCEEDED: /)
    expect((await shortGrpc).code).toBe('DEADLINE_EXCEEDED')
    expect((await long).status).toBe(200)
    expect((await none).status).toBe(200)
    await held
  })

  it('refuses a timeout that is not a whole number of microseconds with BAD_REQUEST', async () => {
    for (const timeout of ['soon', -5, 1.5]) {
      const res = await restInfer({ timeout })
      expect(res.status).toBe(400)
      expect(((await res.json()) as { error: string }).error).toMatch(/"timeout" must be a whole number ≥ 0 \(microseconds/)
    }
  })
})

describe('priority settings in config.json', () => {
  it('a defaultPriorityLevel above priorityLevels stops the model from loading, saying what to fix', async () => {
    const root = await variantRepository({ bad: { batching: { priorityLevels: 2, defaultPriorityLevel: 3 } } })
    await expect(loadModelFolder(root, 'bad')).rejects.toThrow(
      /batching\.defaultPriorityLevel \(3\) is above batching\.priorityLevels \(2\)\. Fix: Set priorityLevels to at least defaultPriorityLevel/
    )
  })
})
