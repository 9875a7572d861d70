import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Value } from '@sinclair/typebox/value'
import ort from 'onnxruntime-node'
import sharp from 'sharp'
import { describe, expect, it } from 'vitest'
import { OnnxGraphBuilder, inspectOnnxGraph } from '../../src/model-tools/onnx-graph.js'
import { buildResNet, countResNet, RESNET_DEPTHS, type ResNetDepth, type ResNetVariant } from '../../src/model-tools/resnet.js'
import { ModelConfigSchema } from '../../src/repository/model-config.js'
import { syntheticModelRepository } from '../helpers/models.js'

/**
 * The ResNet builder against He et al. (2015) Table 1 and torchvision's counts, loaded and run by
 * real ONNX Runtime sessions on real photos (skimage's data folder).
 */

const PHOTO_DIR = '/usr/lib/python3/dist-packages/skimage/data'
const PHOTOS = ['astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg', 'motorcycle_left.png']
const IMAGE = 224
const PIXELS = IMAGE * IMAGE
const CLASSES = 1000

/** torchvision's eval transform, simply: shorter side → 256, centre crop 224, /255, ImageNet mean/std, NCHW. */
async function photoTensor(file: string): Promise<Float32Array> {
  const path = join(PHOTO_DIR, file)
  const { width, height } = await sharp(path).metadata()
  const scale = 256 / Math.min(width, height)
  const w = Math.max(256, Math.trunc(width * scale))
  const h = Math.max(256, Math.trunc(height * scale))
  const rgb = await sharp(path)
    .removeAlpha()
    .toColourspace('srgb')
    .resize(w, h, { fit: 'fill' })
    .extract({ left: Math.round((w - IMAGE) / 2), top: Math.round((h - IMAGE) / 2), width: IMAGE, height: IMAGE })
    .raw()
    .toBuffer()
  const mean = [0.485, 0.456, 0.406]
  const std = [0.229, 0.224, 0.225]
  const chw = new Float32Array(3 * PIXELS)
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < PIXELS; i++) chw[c * PIXELS + i] = (rgb[i * 3 + c]! / 255 - mean[c]!) / std[c]!
  }
  return chw
}

async function photoBatch(files: readonly string[]): Promise<ort.Tensor> {
  const batch = new Float32Array(files.length * 3 * PIXELS)
  const tensors = await Promise.all(files.map(photoTensor))
  tensors.forEach((t, i) => batch.set(t, i * 3 * PIXELS))
  return new ort.Tensor('float32', batch, [files.length, 3, IMAGE, IMAGE])
}

async function logits(session: ort.InferenceSession, input: ort.Tensor): Promise<Float32Array> {
  const out = await session.run({ input })
  return out.logits!.data as Float32Array
}

interface SoftmaxSummary {
  readonly maxAbsLogit: number
  readonly top1Probability: number
  readonly top5: readonly number[]
}

function summarise(row: Float32Array): SoftmaxSummary {
  let max = -Infinity
  let maxAbsLogit = 0
  for (const v of row) {
    max = Math.max(max, v)
    maxAbsLogit = Math.max(maxAbsLogit, Math.abs(v))
  }
  let sum = 0
  for (const v of row) sum += Math.exp(v - max)
  const top5 = [...row.keys()].sort((a, b) => row[b]! - row[a]!).slice(0, 5)
  return { maxAbsLogit, top1Probability: 1 / sum, top5 }
}

function rows(flat: Float32Array): Float32Array[] {
  return Array.from({ length: flat.length / CLASSES }, (_, i) => flat.subarray(i * CLASSES, (i + 1) * CLASSES))
}

/** Random weights must still tell photos apart and keep the softmax away from both flat and one-hot. */
function expectSaneSoftmax(summaries: readonly SoftmaxSummary[]): void {
  for (const s of summaries) {
    expect(s.maxAbsLogit).toBeLessThan(100)
    expect(s.top1Probability).toBeGreaterThan(0.02)
    expect(s.top1Probability).toBeLessThan(0.9)
  }
  const top5Sets = summaries.map((s) => [...s.top5].sort((a, b) => a - b).join(','))
  expect(new Set(top5Sets).size).toBe(summaries.length)
}

describe('countResNet', () => {
  // torchvision's sum(p.numel() for p in model.parameters()); the paper's "FLOPs" are multiply-adds.
  const expected: Record<ResNetDepth, { parameters: number; v1: number; 'v1.5': number }> = {
    50: { parameters: 25_557_032, v1: 3.8e9, 'v1.5': 4.1e9 },
    101: { parameters: 44_549_160, v1: 7.6e9, 'v1.5': 7.8e9 },
    152: { parameters: 60_192_808, v1: 11.3e9, 'v1.5': 11.5e9 }
  }
  for (const depth of RESNET_DEPTHS) {
    for (const variant of ['v1', 'v1.5'] as const) {
      it(`ResNet-${depth} ${variant}: parameters exact, multiply-adds as published`, () => {
        const counts = countResNet({ depth, variant })
        expect(counts.parameters).toBe(expected[depth].parameters)
        expect(Math.abs(counts.multiplyAdds - expected[depth][variant])).toBeLessThan(0.1e9)
      })
    }
  }

  it('v1.5 costs more than v1 exactly by the 1×1 convs that now run before the stride, at 4× the area', () => {
    for (const depth of RESNET_DEPTHS) {
      const v1 = countResNet({ depth, variant: 'v1' })
      const v15 = countResNet({ depth, variant: 'v1.5' })
      expect(v15.parameters).toBe(v1.parameters)
      // First block of stages 2–4 (width w, reading 2w channels, output size s): in v1 its 1×1 runs
      // at s×s, in v1.5 at 2s×2s; its 3×3 runs at s×s in both.
      const extra = [
        [128, 28],
        [256, 14],
        [512, 7]
      ].reduce((sum, [width, out]) => {
        const inChannels = width! * 2
        const oneByOne = width! * inChannels * 3 * out! * out!
        return sum + oneByOne
      }, 0)
      expect(v15.multiplyAdds - v1.multiplyAdds).toBe(extra)
    }
  })

  it('counts the classifier for other class counts', () => {
    const base = countResNet({ depth: 50, variant: 'v1.5' })
    const ten = countResNet({ depth: 50, variant: 'v1.5', numClasses: 10 })
    expect(base.parameters - ten.parameters).toBe(990 * 2048 + 990)
  })
})

describe('OnnxGraphBuilder', () => {
  it('writes a graph with initializers and a symbolic batch that ONNX Runtime loads and runs', async () => {
    const graph = new OnnxGraphBuilder('tiny')
    graph.addInput('x', ['N', 3])
    const w = graph.addInitializer('w', [2, 3], Float32Array.from([1, 2, 3, -1, 0.5, 0]))
    const b = graph.addInitializer('b', [2], Float32Array.from([0.25, -0.5]))
    const y = graph.addNode('Gemm', ['x', w, b], ['y'], { transB: { int: 1 } })
    graph.addNode('Relu', [y], ['out'])
    graph.addOutput('out', ['N', 2])
    const session = await ort.InferenceSession.create(graph.toBytes())
    const x = new ort.Tensor('float32', Float32Array.from([1, 1, 1, 2, 0, -4]), [2, 3])
    const out = (await session.run({ x })).out!
    expect(out.dims).toEqual([2, 2])
    expect(Array.from(out.data as Float32Array)).toEqual([6.25, 0, 0, 0])
    expect(session.inputNames).toEqual(['x'])
  })

  it('refuses a value name used twice', () => {
    const graph = new OnnxGraphBuilder('clash')
    graph.addInput('x', ['N', 1])
    expect(() => graph.addNode('Relu', ['x'], ['x'])).toThrow(/used twice/)
  })
})

interface InitializerTally {
  parameters: number
  buffers: number
  convs: number
  batchNorms: number
}

/** Sorts each initializer by what its consuming node uses it for, then adds up the element counts. */
function tallyInitializers(bytes: Uint8Array): InitializerTally {
  const graph = inspectOnnxGraph(bytes)
  const sizes = new Map([...graph.initializers].map(([name, dims]) => [name, dims.reduce((a, b) => a * b, 1)]))
  const tally: InitializerTally = { parameters: 0, buffers: 0, convs: 0, batchNorms: 0 }
  const used = new Set<string>()
  const take = (name: string, role: 'parameters' | 'buffers'): void => {
    expect(sizes.has(name), `${name} is an initializer`).toBe(true)
    expect(used.has(name), `${name} used once`).toBe(false)
    used.add(name)
    tally[role] += sizes.get(name)!
  }
  for (const node of graph.nodes) {
    if (node.opType === 'Conv') {
      expect(node.inputs).toHaveLength(2) // no bias: BN's shift does that job
      take(node.inputs[1]!, 'parameters')
      tally.convs++
    } else if (node.opType === 'BatchNormalization') {
      take(node.inputs[1]!, 'parameters')
      take(node.inputs[2]!, 'parameters')
      take(node.inputs[3]!, 'buffers')
      take(node.inputs[4]!, 'buffers')
      tally.batchNorms++
    } else if (node.opType === 'Gemm') {
      take(node.inputs[1]!, 'parameters')
      take(node.inputs[2]!, 'parameters')
    }
  }
  expect(used.size).toBe(sizes.size)
  return tally
}

function stridedConvs(bytes: Uint8Array): string[] {
  return inspectOnnxGraph(bytes)
    .nodes.filter((n) => n.opType === 'Conv' && n.intAttributes.get('strides')?.[0] === 2)
    .map((n) => n.name)
}

describe('buildResNet', () => {
  const builds = new Map<string, Uint8Array>()
  const build = (depth: ResNetDepth, variant: ResNetVariant, seed = 1): Uint8Array => {
    const key = `${depth}/${variant}/${seed}`
    let bytes = builds.get(key)
    if (!bytes) {
      bytes = buildResNet({ depth, variant, seed })
      builds.set(key, bytes)
    }
    return bytes
  }

  for (const [depth, variant, blocks] of [
    [50, 'v1', 16],
    [50, 'v1.5', 16],
    [101, 'v1.5', 33],
    [152, 'v1.5', 50]
  ] as const) {
    it(`ResNet-${depth} ${variant}: the graph's initializers are exactly what countResNet counts`, () => {
      const tally = tallyInitializers(build(depth, variant))
      const counts = countResNet({ depth, variant })
      expect(tally.parameters).toBe(counts.parameters)
      expect(tally.buffers).toBe(counts.buffers)
      // 3 convs per block, the stem, and one projection at the start of each of the 4 stages.
      expect(tally.convs).toBe(3 * blocks + 1 + 4)
      expect(tally.batchNorms).toBe(tally.convs)
    })
  }

  it("puts each stage's stride on the 1×1 (v1) or the 3×3 (v1.5); projections stride too", () => {
    expect(stridedConvs(build(50, 'v1'))).toEqual([
      'conv1',
      'layer2.0.conv1',
      'layer2.0.downsample.0',
      'layer3.0.conv1',
      'layer3.0.downsample.0',
      'layer4.0.conv1',
      'layer4.0.downsample.0'
    ])
    expect(stridedConvs(build(50, 'v1.5'))).toEqual([
      'conv1',
      'layer2.0.conv2',
      'layer2.0.downsample.0',
      'layer3.0.conv2',
      'layer3.0.downsample.0',
      'layer4.0.conv2',
      'layer4.0.downsample.0'
    ])
  })

  it('is deterministic in the seed: same seed, same bytes; another seed, other weights', () => {
    const again = buildResNet({ depth: 50, variant: 'v1.5', seed: 1 })
    expect(Buffer.from(again).equals(build(50, 'v1.5'))).toBe(true)
    const other = build(50, 'v1.5', 2)
    expect(other.length).toBe(again.length) // same graph, other numbers
    expect(Buffer.from(other).equals(again)).toBe(false)
  })

  it('reports progress up to done === total, once the bytes are ready', () => {
    const calls: Array<[number, number]> = []
    buildResNet({ depth: 50, variant: 'v1', seed: 3, onProgress: (done, total) => calls.push([done, total]) })
    expect(calls.length).toBeGreaterThan(10)
    const total = calls[0]![1]
    expect(calls.every(([, t]) => t === total)).toBe(true)
    expect(calls.map(([d]) => d)).toEqual([...calls.map(([d]) => d)].sort((a, b) => a - b))
    expect(calls.filter(([d]) => d === total)).toHaveLength(1)
    expect(calls.at(-1)).toEqual([total, total])
  })

  it('ResNet-50 runs with a dynamic batch (1 and 3), each image independent of its batch-mates; logits sane on photos', async () => {
    const session = await ort.InferenceSession.create(build(50, 'v1.5'))
    expect(session.inputNames).toEqual(['input'])
    expect(session.outputNames).toEqual(['logits'])

    const all = rows(await logits(session, await photoBatch(PHOTOS)))
    const three = await session.run({ input: await photoBatch(PHOTOS.slice(1, 4)) })
    expect(three.logits!.dims).toEqual([3, CLASSES])
    const single = await session.run({ input: await photoBatch([PHOTOS[2]!]) })
    expect(single.logits!.dims).toEqual([1, CLASSES])

    const threeRows = rows(three.logits!.data as Float32Array)
    for (let i = 0; i < 3; i++) {
      for (let k = 0; k < CLASSES; k++) expect(threeRows[i]![k]).toBeCloseTo(all[i + 1]![k]!, 3)
    }
    const singleRow = single.logits!.data as Float32Array
    for (let k = 0; k < CLASSES; k++) expect(singleRow[k]).toBeCloseTo(all[2]![k]!, 3)

    const summaries = all.map(summarise)
    expectSaneSoftmax(summaries)
    console.log(`ResNet-50 v1.5: ${describeSummaries(summaries)}`)
  })

  // Batch 1, one photo at a time: the deep models on 2 cores take ~0.15 s per photo.
  for (const [depth, variant] of [
    [50, 'v1'],
    [101, 'v1.5'],
    [152, 'v1.5']
  ] as const) {
    it(`ResNet-${depth} ${variant}: logits bounded, softmax neither flat nor one-hot, photos told apart`, async () => {
      const session = await ort.InferenceSession.create(build(depth, variant))
      const summaries: SoftmaxSummary[] = []
      for (const photo of PHOTOS) summaries.push(summarise(await logits(session, await photoBatch([photo]))))
      await session.release()
      builds.delete(`${depth}/${variant}/1`)
      expectSaneSoftmax(summaries)
      console.log(`ResNet-${depth} ${variant}: ${describeSummaries(summaries)}`)
    })
  }
})

function describeSummaries(summaries: readonly SoftmaxSummary[]): string {
  return summaries
    .map((s, i) => `${PHOTOS[i]} max|logit| ${s.maxAbsLogit.toFixed(1)} p1 ${s.top1Probability.toFixed(3)} top5 ${s.top5.join(',')}`)
    .join('; ')
}

describe('syntheticModelRepository (test helper) and the model folder it writes', () => {
  it('holds resnet50 with a valid synthetic config, the ImageNet labels, and a model ONNX Runtime opens', async () => {
    const dir = join(await syntheticModelRepository(), 'resnet50')
    const config: unknown = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'))
    expect(Value.Check(ModelConfigSchema, config)).toBe(true)
    expect(config).toMatchObject({ synthetic: true, preset: 'torchvision', input: { name: 'input' }, output: { name: 'logits' } })
    const labels = (await readFile(join(dir, 'labels.txt'), 'utf8')).split('\n')
    expect(labels).toHaveLength(CLASSES + 1) // trailing newline
    expect(labels[0]).toBe('tench, Tinca tinca')
    expect(labels[281]).toBe('tabby, tabby cat')
    expect(labels[999]).toMatch(/^toilet tissue, /)
    const session = await ort.InferenceSession.create(join(dir, 'model.onnx'))
    expect(session.inputNames).toEqual(['input'])
    await session.release()
    // A second call reuses the same folder.
    expect(await syntheticModelRepository()).toBe(join(dir, '..'))
  })
})
