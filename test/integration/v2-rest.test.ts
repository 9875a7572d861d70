import { mkdtemp, readFile, rm, symlink, unlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { writeModelVariant } from '../../src/model-tools/model-variant.js'
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
 * The Open Inference Protocol (KServe V2) REST door against the real service: metadata and health
 * per the protocol, one real photo answered identically through /classify and every V2 input
 * form, the binary tensor data extension both ways, and refusals as `{"error"}` with the right
 * status while the server keeps answering.
 */

const MODEL = 'resnet50'
const INPUT = 'input'
const OUTPUT = 'logits'
const HEADER_LENGTH = 'inference-header-content-length'

let server: TestServer
let photo: Buffer
let secondPhoto: Buffer
/** The photo preprocessed by the project, as the model's float32 CHW tensor. */
let tensor: Float32Array
let classifyTop5: number[]

interface V2Output {
  name: string
  datatype: string
  shape: number[]
  parameters?: Record<string, unknown>
  data?: unknown[]
}

interface V2Response {
  model_name: string
  model_version: string
  id?: string
  outputs: V2Output[]
}

function infer(body: unknown, path = `/v2/models/${MODEL}/infer`): Promise<Response> {
  return fetch(server.url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
}

/** A binary-extension request: the JSON header, then the binary tensors. */
function inferBinary(header: unknown, ...tensors: Uint8Array[]): Promise<Response> {
  const json = Buffer.from(JSON.stringify(header))
  return fetch(`${server.url}/v2/models/${MODEL}/infer`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream', [HEADER_LENGTH]: String(json.byteLength) },
    body: Buffer.concat([json, ...tensors])
  })
}

/** A binary-extension response: its JSON header and each binary output's bytes, by output name. */
async function readBinaryResponse(res: Response): Promise<{ header: V2Response; binary: Map<string, Buffer> }> {
  expect(res.headers.get('content-type')).toBe('application/octet-stream')
  const body = Buffer.from(await res.arrayBuffer())
  const headerLength = Number(res.headers.get(HEADER_LENGTH))
  const header = JSON.parse(body.toString('utf8', 0, headerLength)) as V2Response
  const binary = new Map<string, Buffer>()
  let offset = headerLength
  for (const output of header.outputs) {
    const size = output.parameters?.binary_data_size
    if (typeof size !== 'number') continue
    binary.set(output.name, body.subarray(offset, offset + size))
    offset += size
  }
  expect(offset).toBe(body.byteLength)
  return { header, binary }
}

/** Class indices of classification strings "value:index:label". */
function indicesOf(classifications: unknown[]): number[] {
  return classifications.map((s) => Number(String(s).split(':')[1]))
}

async function expectV2Error(res: Response, status: number, code: string): Promise<string> {
  const body = (await res.json()) as Record<string, unknown>
  expect({ status: res.status, keys: Object.keys(body) }).toEqual({ status, keys: ['error'] })
  expect(body.error).toMatch(new RegExp(`^${code}: `))
  return body.error as string
}

beforeAll(async () => {
  server = await startTestServer(await syntheticModelRepository())
  const [first, second] = photoPaths()
  photo = await readFile(first!)
  secondPhoto = await readFile(second!)
  tensor = await modelInputTensor(server, MODEL, photo)
  classifyTop5 = await classifyIndices(server, MODEL, photo)
})

afterAll(async () => {
  await server?.close()
})

describe('V2 REST: metadata and health', () => {
  it('GET /v2 names the server, its version and the extensions it supports', async () => {
    const res = await fetch(`${server.url}/v2`)
    expect(res.status).toBe(200)
    const body = (await res.json()) as { name: string; version: string; extensions: string[] }
    expect(body.name).toBe('resnet-serve')
    expect(body.version).toMatch(/^\d+\.\d+\.\d+/)
    // Every extension implemented, under Triton's names (tooling reads the list before it uses one).
    expect([...body.extensions].sort()).toEqual(IMPLEMENTED_EXTENSIONS)
  })

  it("answers the health routes with a status and the protocol's JSON body (KServe's SDK reads it; the bodies were empty)", async () => {
    for (const [path, body] of [
      ['/v2/health/live', { live: true }],
      ['/v2/health/ready', { ready: true }],
      [`/v2/models/${MODEL}/ready`, { name: MODEL, ready: true }],
      [`/v2/models/${MODEL}/versions/1/ready`, { name: MODEL, ready: true }]
    ] as const) {
      const res = await fetch(server.url + path)
      expect({ path, status: res.status, type: res.headers.get('content-type'), body: await res.json() }).toEqual({
        path,
        status: 200,
        type: 'application/json',
        body
      })
    }
  })

  it('describes the model: versions, platform, FP32 input with a dynamic batch, logits output', async () => {
    const expected = {
      name: MODEL,
      versions: ['1'],
      platform: 'onnxruntime_onnx',
      inputs: [{ name: INPUT, datatype: 'FP32', shape: [-1, 3, 224, 224] }],
      outputs: [{ name: OUTPUT, datatype: 'FP32', shape: [-1, 1000] }]
    }
    for (const path of [`/v2/models/${MODEL}`, `/v2/models/${MODEL}/versions/1`]) {
      const res = await fetch(server.url + path)
      expect(res.status).toBe(200)
      expect(await res.json()).toEqual(expected)
    }
  })

  it('answers 404 with {error} for an unknown model or version, on every model route', async () => {
    for (const path of [
      '/v2/models/nope',
      `/v2/models/${MODEL}/versions/7`,
      '/v2/models/nope/ready',
      `/v2/models/${MODEL}/versions/7/ready`
    ]) {
      await expectV2Error(await fetch(server.url + path), 404, 'MODEL_NOT_FOUND')
    }
    const body = { inputs: [{ name: INPUT, datatype: 'BYTES', shape: [1], data: [photo.toString('base64')] }] }
    await expectV2Error(await infer(body, '/v2/models/nope/infer'), 404, 'MODEL_NOT_FOUND')
    await expectV2Error(await infer(body, `/v2/models/${MODEL}/versions/7/infer`), 404, 'MODEL_NOT_FOUND')
  })

  it('reads a version as Triton does: "01" is version 1, a negative one is 400 (it was 404, as for a version not served)', async () => {
    expect((await fetch(`${server.url}/v2/models/${MODEL}/versions/01/ready`)).status).toBe(200)
    expect(((await (await fetch(`${server.url}/v2/models/${MODEL}/versions/001`)).json()) as { name: string }).name).toBe(MODEL)
    for (const path of [`/v2/models/${MODEL}/versions/-1`, `/v2/models/${MODEL}/versions/-1/ready`]) {
      expect(await expectV2Error(await fetch(server.url + path), 400, 'BAD_REQUEST')).toMatch(/whole number ≥ 0.*got "-1"/)
    }
  })
})

describe('V2 REST: one photo, every input form, the same top-5 as /classify', () => {
  it('BYTES in JSON (base64 strings), classification extension', async () => {
    const res = await infer({
      id: 'json-bytes',
      inputs: [{ name: INPUT, datatype: 'BYTES', shape: [1], data: [photo.toString('base64')] }],
      outputs: [{ name: OUTPUT, parameters: { classification: 5 } }]
    })
    expect(res.status).toBe(200)
    const body = (await res.json()) as V2Response
    expect(body).toMatchObject({ model_name: MODEL, model_version: '1', id: 'json-bytes' })
    expect(body.outputs).toHaveLength(1)
    expect(body.outputs[0]).toMatchObject({ name: OUTPUT, datatype: 'BYTES', shape: [1, 5] })
    expect(indicesOf(body.outputs[0]!.data!)).toEqual(classifyTop5)
    // "value:index:label": the value is the model's logit, the label the model's own.
    const [value, index, label] = String(body.outputs[0]!.data![0]).split(/:(.*?):(.*)/s)
    expect(Number.isFinite(Number(value))).toBe(true)
    expect(label).toBe(server.service.model(MODEL).entry.labels[Number(index)])
  })

  it('a classification count above --max-topk is answered with that many, best first (image_client.py -c 101 was refused; Triton clamps to the classes)', async () => {
    const res = await infer({
      inputs: [{ name: INPUT, datatype: 'BYTES', shape: [1], data: [photo.toString('base64')] }],
      outputs: [{ name: OUTPUT, parameters: { classification: 1000 } }]
    })
    expect(res.status).toBe(200)
    const output = ((await res.json()) as V2Response).outputs[0]!
    expect(output.shape).toEqual([1, server.settings.maxTopk])
    expect(indicesOf(output.data!).slice(0, 5)).toEqual(classifyTop5)
  })

  it('BYTES in binary data ([N, 1], length-prefixed), classification answered as binary BYTES', async () => {
    const raw = lengthPrefixed(photo)
    const res = await inferBinary(
      {
        inputs: [{ name: INPUT, datatype: 'BYTES', shape: [1, 1], parameters: { binary_data_size: raw.byteLength } }],
        outputs: [{ name: OUTPUT, parameters: { classification: 5, binary_data: true } }]
      },
      raw
    )
    expect(res.status).toBe(200)
    const { header, binary } = await readBinaryResponse(res)
    expect(header.outputs[0]).toMatchObject({ name: OUTPUT, datatype: 'BYTES', shape: [1, 5] })
    expect(indicesOf(splitLengthPrefixed(binary.get(OUTPUT)!))).toEqual(classifyTop5)
  })

  it("Triton's raw binary request (Inference-Header-Content-Length: 0): the body alone, an encoded image or one image's tensor, answered as binary logits [1, classes]", async () => {
    const rawRequest = (body: Uint8Array): Promise<Response> =>
      fetch(`${server.url}/v2/models/${MODEL}/infer`, {
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream', [HEADER_LENGTH]: '0' },
        body
      })
    const top5 = (logits: Buffer): number[] => {
      const scores = new Float32Array(logits.buffer.slice(logits.byteOffset, logits.byteOffset + logits.byteLength))
      return [...scores.keys()].sort((a, b) => scores[b]! - scores[a]!).slice(0, 5)
    }
    for (const body of [photo, Buffer.from(tensor.buffer, tensor.byteOffset, tensor.byteLength)]) {
      const res = await rawRequest(body)
      expect(res.status).toBe(200)
      const { header, binary } = await readBinaryResponse(res)
      expect(header.outputs).toEqual([{ name: OUTPUT, datatype: 'FP32', shape: [1, 1000], parameters: { binary_data_size: 4000 } }])
      expect(top5(binary.get(OUTPUT)!)).toEqual(classifyTop5)
    }
    // Bytes that are neither are refused as any encoded image would be ("The body holds no JSON inference header" before).
    await expectV2Error(await rawRequest(Buffer.alloc(1000, 7)), 400, 'NOT_AN_IMAGE')
  })

  it('FP32 [1, 3, 224, 224] preprocessed by the project, in JSON', async () => {
    const res = await infer({
      inputs: [{ name: INPUT, datatype: 'FP32', shape: [1, 3, 224, 224], data: Array.from(tensor) }],
      outputs: [{ name: OUTPUT, parameters: { classification: 5 } }]
    })
    expect(res.status).toBe(200)
    const body = (await res.json()) as V2Response
    expect(indicesOf(body.outputs[0]!.data!)).toEqual(classifyTop5)
  })

  it('a batch of two encoded photos answers two rows, in order', async () => {
    const res = await infer({
      inputs: [{ name: INPUT, datatype: 'BYTES', shape: [2], data: [photo.toString('base64'), secondPhoto.toString('base64')] }],
      outputs: [{ name: OUTPUT, parameters: { classification: 5 } }]
    })
    expect(res.status).toBe(200)
    const data = ((await res.json()) as V2Response).outputs[0]!.data!
    expect(data).toHaveLength(10)
    expect(indicesOf(data.slice(0, 5))).toEqual(classifyTop5)
    const second = await fetch(`${server.url}/classify?model=${MODEL}&topk=5`, {
      method: 'POST',
      headers: { 'content-type': 'image/jpeg' },
      body: secondPhoto
    })
    expect(indicesOf(data.slice(5))).toEqual(
      ((await second.json()) as { predictions: Array<{ index: number }> }).predictions.map((p) => p.index)
    )
  })
})

describe('V2 REST: binary tensor data extension', () => {
  it('an FP32 tensor sent binary and answered binary gives exactly the logits JSON gives', async () => {
    const jsonRes = await infer({ inputs: [{ name: INPUT, datatype: 'FP32', shape: [1, 3, 224, 224], data: Array.from(tensor) }] })
    expect(jsonRes.status).toBe(200)
    expect(jsonRes.headers.get('content-type')).toMatch(/^application\/json/)
    const jsonOutput = ((await jsonRes.json()) as V2Response).outputs[0]!
    expect(jsonOutput).toMatchObject({ name: OUTPUT, datatype: 'FP32', shape: [1, 1000] })

    const input = tensorBytes(tensor)
    const binRes = await inferBinary(
      {
        inputs: [{ name: INPUT, datatype: 'FP32', shape: [1, 3, 224, 224], parameters: { binary_data_size: input.byteLength } }],
        parameters: { binary_data_output: true }
      },
      input
    )
    expect(binRes.status).toBe(200)
    const { header, binary } = await readBinaryResponse(binRes)
    expect(header.outputs[0]).toMatchObject({ name: OUTPUT, datatype: 'FP32', shape: [1, 1000], parameters: { binary_data_size: 4000 } })
    expect(header.outputs[0]!.data).toBeUndefined()
    expect(binary.get(OUTPUT)!.equals(tensorBytes(Float32Array.from(jsonOutput.data as number[])))).toBe(true)
  })

  it("an output's own binary_data: false overrides binary_data_output", async () => {
    const input = tensorBytes(tensor)
    const res = await inferBinary(
      {
        inputs: [{ name: INPUT, datatype: 'FP32', shape: [1, 3, 224, 224], parameters: { binary_data_size: input.byteLength } }],
        outputs: [{ name: OUTPUT, parameters: { binary_data: false, classification: 5 } }],
        parameters: { binary_data_output: true }
      },
      input
    )
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^application\/json/)
    expect(indicesOf(((await res.json()) as V2Response).outputs[0]!.data!)).toEqual(classifyTop5)
  })
})

describe('V2 REST: refusals are {error} with the right status, and the server keeps answering', () => {
  const tensorInput = (shape: number[], size: number) => ({
    inputs: [{ name: INPUT, datatype: 'FP32', shape, parameters: { binary_data_size: size } }]
  })

  it('malformed binary headers → 400', async () => {
    const json = Buffer.from(JSON.stringify(tensorInput([1, 3, 224, 224], 16)))
    const send = (headerLength: string, body: Buffer) =>
      fetch(`${server.url}/v2/models/${MODEL}/infer`, {
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream', [HEADER_LENGTH]: headerLength },
        body
      })
    const body = Buffer.concat([json, Buffer.alloc(16)])
    await expectV2Error(await send('twelve', body), 400, 'BAD_REQUEST')
    await expectV2Error(await send(String(body.byteLength + 1), body), 400, 'BAD_REQUEST')
    await expectV2Error(await send(String(json.byteLength - 3), body), 400, 'BAD_REQUEST')
    // binary_data_size larger than what follows the header
    await expectV2Error(await send(String(json.byteLength), Buffer.concat([json, Buffer.alloc(8)])), 400, 'BAD_REQUEST')
    // binary bytes nobody claims
    await expectV2Error(await send(String(json.byteLength), Buffer.concat([json, Buffer.alloc(20)])), 400, 'BAD_REQUEST')
    // binary data without the length header: the body is not JSON
    await expectV2Error(
      await fetch(`${server.url}/v2/models/${MODEL}/infer`, {
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream' },
        body
      }),
      400,
      'BAD_REQUEST'
    )
  })

  it('a shape that does not match the data → 400', async () => {
    await expectV2Error(
      await infer({ inputs: [{ name: INPUT, datatype: 'FP32', shape: [1, 3, 224, 224], data: [1, 2, 3] }] }),
      400,
      'BAD_REQUEST'
    )
    await expectV2Error(await infer({ inputs: [{ name: INPUT, datatype: 'FP32', shape: [1, 3, 224, 223], data: [] }] }), 400, 'BAD_REQUEST')
    await expectV2Error(await inferBinary(tensorInput([2, 3, 224, 224], tensor.byteLength), tensorBytes(tensor)), 400, 'BAD_REQUEST')
    await expectV2Error(
      await infer({ inputs: [{ name: INPUT, datatype: 'BYTES', shape: [2], data: [photo.toString('base64')] }] }),
      400,
      'BAD_REQUEST'
    )
    const raw = lengthPrefixed(photo)
    await expectV2Error(
      await inferBinary(
        { inputs: [{ name: INPUT, datatype: 'BYTES', shape: [1], parameters: { binary_data_size: raw.byteLength - 1 } }] },
        raw.subarray(0, -1)
      ),
      400,
      'BAD_REQUEST'
    )
  })

  it('an unknown or unsupported datatype → 400', async () => {
    expect(
      await expectV2Error(await infer({ inputs: [{ name: INPUT, datatype: 'FP33', shape: [1], data: [1] }] }), 400, 'BAD_REQUEST')
    ).toMatch(/Unknown datatype/)
    await expectV2Error(
      await infer({ inputs: [{ name: INPUT, datatype: 'INT64', shape: [1, 3, 224, 224], data: [1] }] }),
      400,
      'BAD_REQUEST'
    )
    // Regression: a lower-case "bytes" with its base64 image was refused 'element 0 is not a number'.
    expect(
      await expectV2Error(
        await infer({ inputs: [{ name: INPUT, datatype: 'bytes', shape: [1], data: [photo.toString('base64')] }] }),
        400,
        'BAD_REQUEST'
      )
    ).toMatch(/Unknown datatype "bytes". Datatypes are upper-case: "BYTES"\.$/)
  })

  it('a wrong input or output name, a missing input, a bad classification count → 400', async () => {
    const bytesInput = { name: INPUT, datatype: 'BYTES', shape: [1], data: [photo.toString('base64')] }
    expect(await expectV2Error(await infer({ inputs: [{ ...bytesInput, name: 'image' }] }), 400, 'BAD_REQUEST')).toMatch(/"image"/)
    await expectV2Error(await infer({ inputs: [bytesInput], outputs: [{ name: 'probabilities' }] }), 400, 'BAD_REQUEST')
    await expectV2Error(await infer({ inputs: [] }), 400, 'BAD_REQUEST')
    await expectV2Error(await infer({ outputs: [] }), 400, 'BAD_REQUEST')
    await expectV2Error(
      await infer({ inputs: [bytesInput], outputs: [{ name: OUTPUT, parameters: { classification: 0 } }] }),
      400,
      'INVALID_TOPK'
    )
    // What came is named (a string was told "is NaN").
    for (const [value, shown] of [
      ['3', 'the string "3"'],
      [true, 'of type boolean']
    ] as const) {
      const message = await expectV2Error(
        await infer({ inputs: [bytesInput], outputs: [{ name: OUTPUT, parameters: { classification: value } }] }),
        400,
        'INVALID_TOPK'
      )
      expect(message).toContain(`The classification parameter is ${shown}; it must be an integer`)
    }
  })

  it('shared-memory parameters on an input or output → 400 saying so (an output was answered inline, leaving the client to read a stale region)', async () => {
    const bytesInput = { name: INPUT, datatype: 'BYTES', shape: [1], data: [photo.toString('base64')] }
    const region = { shared_memory_region: 'out0', shared_memory_byte_size: 4000 }
    expect(
      await expectV2Error(await infer({ inputs: [bytesInput], outputs: [{ name: OUTPUT, parameters: region }] }), 400, 'BAD_REQUEST')
    ).toMatch(/Output "logits" has the parameter "shared_memory_region": this server does not implement shared memory/)
    const { data: _data, ...withoutData } = bytesInput
    expect(
      await expectV2Error(
        await infer({ inputs: [{ ...withoutData, parameters: { ...region, shared_memory_offset: 0 } }] }),
        400,
        'BAD_REQUEST'
      )
    ).toMatch(/Input "input" has the parameter "shared_memory_region"/)
  })

  it('regression: data elements are counted against the shape before any is decoded, and a refusal repeats at most a bounded part of what was sent', async () => {
    // 3 M of these behind shape [1] froze the event loop for 4–9 s (each was base64-decoded first).
    const flood = await expectV2Error(
      await infer({ inputs: [{ name: INPUT, datatype: 'BYTES', shape: [1], data: Array(50_000).fill('AAAA') }] }),
      400,
      'BAD_REQUEST'
    )
    expect(flood).toMatch(/Input "input" has 50000 data elements; its shape \[1\] holds 1\./)
    // A 1 MB name, a 1 MB datatype and a 100,000-dimension shape were each repeated whole in the answer.
    const long = 'n'.repeat(1 << 20)
    for (const input of [
      { name: long, datatype: 'BYTES', shape: [1], data: [photo.toString('base64')] },
      { name: INPUT, datatype: long, shape: [1], data: [0] },
      { name: INPUT, datatype: 'FP32', shape: Array(100_000).fill(1), data: [0] }
    ]) {
      const res = await infer({ inputs: [input] })
      const text = await res.text()
      expect(res.status).toBe(400)
      expect(text.length).toBeLessThan(1000)
      expect(text).toMatch(/BAD_REQUEST: .*(… \(1048576 characters\)|… \(100000 dimensions\))/)
    }
  })

  it('bad images, bad base64 and too many images → 400 with their own codes', async () => {
    await expectV2Error(
      await infer({ inputs: [{ name: INPUT, datatype: 'BYTES', shape: [1], data: ['not base64!'] }] }),
      400,
      'INVALID_BASE64'
    )
    await expectV2Error(
      await infer({ inputs: [{ name: INPUT, datatype: 'BYTES', shape: [1], data: [photo.subarray(0, 200).toString('base64')] }] }),
      400,
      'CORRUPT_IMAGE'
    )
    const many = server.settings.maxBatchItems + 1
    await expectV2Error(
      await infer({ inputs: [{ name: INPUT, datatype: 'BYTES', shape: [many], data: new Array(many).fill('AAAA') }] }),
      400,
      'TOO_MANY_ITEMS'
    )
    // Regression: the count came after every element was base64-decoded (a million behind shape
    // [1000000] froze the event loop for 1.4 s); elements that are not base64 show which came first.
    await expectV2Error(
      await infer({ inputs: [{ name: INPUT, datatype: 'BYTES', shape: [many], data: new Array(many).fill('not base64!') }] }),
      400,
      'TOO_MANY_ITEMS'
    )
  })

  it('a body that is not JSON → 400; an unknown /v2 route → 404 {error}; a known one with another method → 405', async () => {
    const res = await fetch(`${server.url}/v2/models/${MODEL}/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"inputs": ['
    })
    await expectV2Error(res, 400, 'BAD_REQUEST')
    // Larger than what is parsed in place: the worker thread's refusal reads the same.
    const large = await fetch(`${server.url}/v2/models/${MODEL}/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: `{"inputs": [{"name": "${INPUT}", "datatype": "FP32", "shape": [1, 3, 224, 224], "data": [${Array(20_000).fill('0.5').join(',')}`
    })
    expect(await expectV2Error(large, 400, 'BAD_REQUEST')).toMatch(
      /The body is not valid JSON \(binary tensor data needs the Inference-Header-Content-Length header\)/
    )
    await expectV2Error(await fetch(`${server.url}/v2/repository/nope`, { method: 'POST' }), 404, 'ROUTE_NOT_FOUND')
    await expectV2Error(await fetch(`${server.url}/v2/repository/index`), 405, 'METHOD_NOT_ALLOWED')
  })

  it('JSON data nested 10,000 deep → 400, not a stack overflow 500', async () => {
    const depth = 10_000
    const body = `{"inputs":[{"name":"${INPUT}","datatype":"FP32","shape":[1,3,224,224],"data":${'['.repeat(depth)}1${']'.repeat(depth)}}]}`
    const res = await fetch(`${server.url}/v2/models/${MODEL}/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body
    })
    expect(await expectV2Error(res, 400, 'BAD_REQUEST')).toMatch(/nests deeper than \d+ levels/)
    // The tensor's own nesting, [1][3][224][224], stays accepted.
    const nested = Array.from({ length: 3 }, (_, c) =>
      Array.from({ length: 224 }, (_, y) => Array.from(tensor.subarray((c * 224 + y) * 224, (c * 224 + y + 1) * 224)))
    )
    expect((await infer({ inputs: [{ name: INPUT, datatype: 'FP32', shape: [1, 3, 224, 224], data: [nested] }] })).status).toBe(200)
  })

  it('FP32 elements that are not finite as float32 → 400 naming the input, not 200 with NaN logits', async () => {
    // JSON has no NaN literal, but 1e39 overflows float32 to Infinity.
    const overflow = Array.from(tensor)
    overflow[5] = 1e39
    const json = await expectV2Error(
      await infer({ inputs: [{ name: INPUT, datatype: 'FP32', shape: [1, 3, 224, 224], data: overflow }] }),
      400,
      'BAD_REQUEST'
    )
    expect(json).toMatch(/"input" image 0, element 5 is Infinity/)

    // Binary data carries NaN as it is; the second image's tensor starts at an odd offset of the body.
    const pair = new Float32Array(tensor.length * 2)
    pair.set(tensor)
    pair.set(tensor, tensor.length)
    pair[tensor.length + 7] = NaN
    const header = {
      inputs: [{ name: INPUT, datatype: 'FP32', shape: [2, 3, 224, 224], parameters: { binary_data_size: pair.byteLength } }],
      id: 'odd'
    }
    expect(JSON.stringify(header).length % 4).not.toBe(0)
    expect(await expectV2Error(await inferBinary(header, tensorBytes(pair)), 400, 'BAD_REQUEST')).toMatch(
      /"input" image 1, element 7 is NaN/
    )
    pair[tensor.length + 7] = -Infinity
    expect(await expectV2Error(await inferBinary(header, tensorBytes(pair)), 400, 'BAD_REQUEST')).toMatch(
      /"input" image 1, element 7 is -Infinity/
    )
  })

  it('counts each infer request once, as a success or by its refusal code', async () => {
    const metric = (name: string, labels: string): Promise<number> => metricValue(server, name, labels)
    const success = ['resnet_serve_request_success_total', `model="${MODEL}"`] as const
    const refused = ['resnet_serve_request_failure_total', `model="${MODEL}",reason="BAD_REQUEST"`] as const
    const before = [await metric(...success), await metric(...refused)]
    const answered = await infer({ inputs: [{ name: INPUT, datatype: 'BYTES', shape: [1], data: [photo.toString('base64')] }] })
    expect(answered.status).toBe(200)
    await answered.arrayBuffer()
    await expectV2Error(
      await infer({ inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: [photo.toString('base64')] }] }),
      400,
      'BAD_REQUEST'
    )
    expect([await metric(...success), await metric(...refused)]).toEqual([before[0]! + 1, before[1]! + 1])
  })

  it('still answers after all that', async () => {
    const ready = await fetch(`${server.url}/v2/health/ready`)
    expect({ status: ready.status, body: await ready.json() }).toEqual({ status: 200, body: { ready: true } })
    const res = await infer({
      inputs: [{ name: INPUT, datatype: 'BYTES', shape: [1], data: [photo.toString('base64')] }],
      outputs: [{ name: OUTPUT, parameters: { classification: 5 } }]
    })
    expect(res.status).toBe(200)
    expect(indicesOf(((await res.json()) as V2Response).outputs[0]!.data!)).toEqual(classifyTop5)
  })
})

describe('V2 REST: a uint8 NHWC model takes UINT8 [N, 224, 224, 3]', () => {
  const U8_MODEL = 'resnet50-u8'
  let repository: string
  let u8Server: TestServer

  beforeAll(async () => {
    // The uint8 variant of the synthetic model (graph prologue normalises), alone in its own repository.
    repository = await mkdtemp(join(tmpdir(), 'v2-u8-'))
    await symlink(join(await syntheticModelRepository(), MODEL), join(repository, MODEL))
    await writeModelVariant({ repository, name: MODEL, uint8Input: true, fp16: false, outName: U8_MODEL })
    await unlink(join(repository, MODEL))
    u8Server = await startTestServer(repository)
  })

  afterAll(async () => {
    await u8Server?.close()
    if (repository !== undefined) await rm(repository, { recursive: true, force: true })
  })

  it('describes its input as UINT8 [-1, 224, 224, 3] and answers the pixels the project decodes as /classify answers the photo', async () => {
    const meta = (await (await fetch(`${u8Server.url}/v2/models/${U8_MODEL}`)).json()) as {
      inputs: Array<{ name: string; datatype: string; shape: number[] }>
    }
    const input = meta.inputs[0]!
    expect(input).toMatchObject({ datatype: 'UINT8', shape: [-1, 224, 224, 3] })

    const pixels = await u8Server.service.preprocess(U8_MODEL, photo)
    const json = Buffer.from(
      JSON.stringify({
        inputs: [{ name: input.name, datatype: 'UINT8', shape: [1, 224, 224, 3], parameters: { binary_data_size: pixels.byteLength } }],
        outputs: [{ name: OUTPUT, parameters: { classification: 5 } }]
      })
    )
    const res = await fetch(`${u8Server.url}/v2/models/${U8_MODEL}/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream', [HEADER_LENGTH]: String(json.byteLength) },
      body: Buffer.concat([json, pixels])
    })
    expect(res.status).toBe(200)
    const classify = await fetch(`${u8Server.url}/classify?model=${U8_MODEL}&topk=5`, {
      method: 'POST',
      headers: { 'content-type': 'image/jpeg' },
      body: photo
    })
    const expected = ((await classify.json()) as { predictions: Array<{ index: number }> }).predictions.map((p) => p.index)
    expect(indicesOf(((await res.json()) as V2Response).outputs[0]!.data!)).toEqual(expected)

    // The same pixels as JSON numbers (parsed in a worker thread and packed there) answer the same.
    const asJson = (data: number[]): Promise<Response> =>
      fetch(`${u8Server.url}/v2/models/${U8_MODEL}/infer`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          inputs: [{ name: input.name, datatype: 'UINT8', shape: [1, 224, 224, 3], data }],
          outputs: [{ name: OUTPUT, parameters: { classification: 5 } }]
        })
      })
    const jsonAnswer = await asJson(Array.from(pixels))
    expect(jsonAnswer.status).toBe(200)
    expect(indicesOf(((await jsonAnswer.json()) as V2Response).outputs[0]!.data!)).toEqual(expected)
    // A value no UINT8 holds is named, whichever thread parsed the body.
    const outOfRange = Array.from(pixels)
    outOfRange[1234] = 256
    expect(await expectV2Error(await asJson(outOfRange), 400, 'BAD_REQUEST')).toMatch(
      /UINT8 element 1234 is 256; it must be an integer from 0 to 255/
    )
    outOfRange[1234] = 2.5
    expect(await expectV2Error(await asJson(outOfRange), 400, 'BAD_REQUEST')).toMatch(/UINT8 element 1234 is 2.5/)

    // The float tensor of a float model is not this model's input.
    const fp32 = await fetch(`${u8Server.url}/v2/models/${U8_MODEL}/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ inputs: [{ name: input.name, datatype: 'FP32', shape: [1, 3, 224, 224], data: [0] }] })
    })
    await expectV2Error(fp32, 400, 'BAD_REQUEST')
  })
})
