import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import onnxProto from 'onnx-proto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { intsAttribute } from '../../src/model-tools/onnx-edit.js'
import { syntheticModelRepository } from '../helpers/models.js'
import { photoPaths } from '../helpers/photos.js'
import { modelInputTensor, startTestServer, type TestServer } from '../helpers/server.js'

/**
 * A float32 model that takes channels-last images (TensorFlow/Keras exports: input [N, 224, 224, 3],
 * `input.layout` NHWC) is fed normalised pixels in that layout. The NHWC model here is the synthetic
 * ResNet-50 behind a Transpose to NCHW, so each photo must get from it exactly what the NCHW model
 * answers; pixels written channel plane by channel plane and read as channels-last do not.
 */

const { onnx } = onnxProto
const PHOTOS = ['chelsea.jpg', 'coffee.jpg', 'motorcycle.jpg', 'rocket.jpg', 'retina.jpg']
const TOPK = 100

/** The model with its float NCHW input "input" replaced by a float NHWC input "images" and a Transpose. */
function channelsLastInput(bytes: Uint8Array): Uint8Array {
  const model = onnx.ModelProto.decode(bytes)
  const graph = model.graph!
  const input = graph.input!.find((i) => i.name === 'input')!
  const [batch, , height, width] = input.type!.tensorType!.shape!.dim!
  graph.input = graph.input!.map((i) =>
    i === input
      ? {
          name: 'images',
          type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: [batch!, height!, width!, { dimValue: 3 }] } } }
        }
      : i
  )
  graph.node = [
    { name: 'to_nchw', opType: 'Transpose', input: ['images'], output: ['input'], attribute: [intsAttribute('perm', [0, 3, 1, 2])] },
    ...graph.node!
  ]
  return onnx.ModelProto.encode(model).finish()
}

let server: TestServer
let root: string

beforeAll(async () => {
  const source = join(await syntheticModelRepository(), 'resnet50')
  const config = JSON.parse(await readFile(join(source, 'config.json'), 'utf8')) as Record<string, unknown>
  root = await mkdtemp(join(tmpdir(), 'rs-nhwc-'))
  for (const [name, layout] of [
    ['nchw', 'NCHW'],
    ['nhwc', 'NHWC']
  ] as const) {
    const dir = join(root, name)
    await mkdir(dir)
    await copyFile(join(source, 'labels.txt'), join(dir, 'labels.txt'))
    const model = await readFile(join(source, 'model.onnx'))
    await writeFile(join(dir, 'model.onnx'), layout === 'NCHW' ? model : channelsLastInput(model))
    const input = layout === 'NCHW' ? { name: 'input', layout, datatype: 'float32' } : { name: 'images', layout, datatype: 'float32' }
    await writeFile(join(dir, 'config.json'), JSON.stringify({ ...config, input }))
  }
  server = await startTestServer(root, ['--sessions-per-model', '1'])
}, 180_000)

afterAll(async () => {
  await server?.close()
  if (root !== undefined) await rm(root, { recursive: true, force: true })
})

interface Prediction {
  index: number
  probability: number
}

async function classify(model: string, photo: Buffer): Promise<Prediction[]> {
  const res = await fetch(`${server.url}/classify?model=${model}&topk=${TOPK}`, {
    method: 'POST',
    headers: { 'content-type': 'image/jpeg' },
    body: photo
  })
  expect(res.status).toBe(200)
  return ((await res.json()) as { predictions: Prediction[] }).predictions
}

describe('a float32 NHWC model', () => {
  it('answers each photo as the same network with an NCHW input does (its 100 best, within 1e-5)', async () => {
    const paths = photoPaths().filter((p) => PHOTOS.some((name) => p.endsWith(`/${name}`)))
    expect(paths).toHaveLength(PHOTOS.length)
    for (const path of paths) {
      const photo = await readFile(path)
      const [nchw, nhwc] = await Promise.all([classify('nchw', photo), classify('nhwc', photo)])
      expect(nhwc.map((p) => p.index)).toEqual(nchw.map((p) => p.index))
      for (const [i, p] of nhwc.entries()) expect(Math.abs(p.probability - nchw[i]!.probability)).toBeLessThan(1e-5)
    }
  }, 120_000)

  it('takes a V2 FP32 tensor shaped [1, 224, 224, 3], channels last, and answers as /classify does', async () => {
    const photo = await readFile(photoPaths().find((p) => p.endsWith('/coffee.jpg'))!)
    const tensor = await modelInputTensor(server, 'nhwc', photo)
    const res = await fetch(`${server.url}/v2/models/nhwc/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        inputs: [{ name: 'images', shape: [1, 224, 224, 3], datatype: 'FP32', data: Array.from(tensor) }],
        outputs: [{ name: 'logits', parameters: { classification: 5 } }]
      })
    })
    expect(res.status).toBe(200)
    const body = (await res.json()) as { outputs: Array<{ data: string[] }> }
    const indices = body.outputs[0]!.data.map((entry) => Number(entry.split(':')[1]))
    expect(indices).toEqual((await classify('nchw', photo)).slice(0, 5).map((p) => p.index))
  }, 60_000)
})
