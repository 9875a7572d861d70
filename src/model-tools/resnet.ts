import { OnnxGraphBuilder } from './onnx-graph.js'
import { SYNTHETIC_WEIGHTS_REVISION, SyntheticResNetWeights, type BatchNormRole } from './synthetic-weights.js'

/**
 * ResNet-50/101/152 as in He et al., "Deep Residual Learning for Image Recognition" (2015),
 * Table 1: the bottleneck ("deeper") networks. One description of the architecture drives both the
 * analytic counts and the ONNX graph, so the two cannot disagree.
 *
 * Names follow torchvision's state_dict (conv1, bn1, layer1.0.conv1, layer1.0.downsample.0, fc),
 * so the graph reads like torchvision's export and weights could later be mapped in by name.
 */

export const RESNET_DEPTHS = [50, 101, 152] as const
export type ResNetDepth = (typeof RESNET_DEPTHS)[number]

/**
 * 'v1': the paper's, stride 2 on a stage's first 1×1 conv. 'v1.5': stride 2 on the 3×3 (torchvision,
 * NVIDIA's "ResNet-50 v1.5"): the same parameters, ~6% more multiply-adds, a little more accurate.
 */
export const RESNET_VARIANTS = ['v1', 'v1.5'] as const
export type ResNetVariant = (typeof RESNET_VARIANTS)[number]

export function isResNetDepth(value: number): value is ResNetDepth {
  return (RESNET_DEPTHS as readonly number[]).includes(value)
}

export function isResNetVariant(value: string): value is ResNetVariant {
  return (RESNET_VARIANTS as readonly string[]).includes(value)
}

const STAGE_BLOCKS: Readonly<Record<ResNetDepth, readonly number[]>> = {
  50: [3, 4, 6, 3],
  101: [3, 4, 23, 3],
  152: [3, 8, 36, 3]
}
const STAGE_WIDTHS = [64, 128, 256, 512] as const
const BOTTLENECK_EXPANSION = 4
const STEM_CHANNELS = 64
const IMAGE_SIZE = 224
const BN_EPSILON = 1e-5

/** A convolution (no bias) followed by its BatchNormalization. */
interface ConvBn {
  readonly conv: string
  readonly bn: string
  readonly inChannels: number
  readonly outChannels: number
  readonly kernel: number
  readonly stride: number
  readonly pad: number
  /** Output height = width for a 224×224 input; multiply-adds scale with its square. */
  readonly outSize: number
  readonly bnRole: BatchNormRole
}

interface Bottleneck {
  readonly name: string
  readonly branch: readonly [ConvBn, ConvBn, ConvBn]
  /** Present where the shortcut changes shape (option B of the paper). */
  readonly projection: ConvBn | undefined
}

interface ResNetArchitecture {
  readonly stem: ConvBn
  readonly blocks: readonly Bottleneck[]
  readonly features: number
  readonly numClasses: number
}

function outputSize(inSize: number, kernel: number, stride: number, pad: number): number {
  return Math.floor((inSize + 2 * pad - kernel) / stride) + 1
}

function describeResNet(depth: ResNetDepth, variant: ResNetVariant, numClasses: number): ResNetArchitecture {
  const convBn = (
    conv: string,
    bn: string,
    inChannels: number,
    outChannels: number,
    kernel: number,
    stride: number,
    inSize: number,
    bnRole: BatchNormRole = 'main'
  ): ConvBn => {
    const pad = (kernel - 1) / 2
    return { conv, bn, inChannels, outChannels, kernel, stride, pad, outSize: outputSize(inSize, kernel, stride, pad), bnRole }
  }

  const stem = convBn('conv1', 'bn1', 3, STEM_CHANNELS, 7, 2, IMAGE_SIZE)
  let size = outputSize(stem.outSize, 3, 2, 1) // the 3×3/2 max pool
  let channels = STEM_CHANNELS
  const blocks: Bottleneck[] = []
  STAGE_BLOCKS[depth].forEach((count, stage) => {
    const width = STAGE_WIDTHS[stage]!
    const outChannels = width * BOTTLENECK_EXPANSION
    for (let index = 0; index < count; index++) {
      const name = `layer${stage + 1}.${index}`
      // conv2_x follows the max pool at stride 1; conv3_x..conv5_x halve the size in their first block.
      const stride = index === 0 && stage > 0 ? 2 : 1
      const [stride1x1, stride3x3] = variant === 'v1' ? [stride, 1] : [1, stride]
      const a = convBn(`${name}.conv1`, `${name}.bn1`, channels, width, 1, stride1x1, size)
      const b = convBn(`${name}.conv2`, `${name}.bn2`, width, width, 3, stride3x3, a.outSize)
      const c = convBn(`${name}.conv3`, `${name}.bn3`, width, outChannels, 1, 1, b.outSize, 'residual-branch-end')
      const projection =
        stride !== 1 || channels !== outChannels
          ? convBn(`${name}.downsample.0`, `${name}.downsample.1`, channels, outChannels, 1, stride, size)
          : undefined
      blocks.push({ name, branch: [a, b, c], projection })
      channels = outChannels
      size = c.outSize
    }
  })
  return { stem, blocks, features: channels, numClasses }
}

function convBnLayers(arch: ResNetArchitecture): ConvBn[] {
  return [arch.stem, ...arch.blocks.flatMap((b) => (b.projection ? [...b.branch, b.projection] : b.branch))]
}

export interface ResNetCounts {
  /** Trainable parameters: conv weights, BN scale and shift, FC weight and bias (as torchvision counts them). */
  readonly parameters: number
  /** BN running mean and variance: stored in the model, but buffers, not parameters. */
  readonly buffers: number
  /** Multiply-adds for one 224×224 image, over convolutions and the FC layer (as the paper counts "FLOPs"). */
  readonly multiplyAdds: number
}

export interface ResNetShape {
  readonly depth: ResNetDepth
  readonly variant: ResNetVariant
  readonly numClasses?: number
}

export function countResNet({ depth, variant, numClasses = 1000 }: ResNetShape): ResNetCounts {
  const arch = describeResNet(depth, variant, numClasses)
  let parameters = 0
  let buffers = 0
  let multiplyAdds = 0
  for (const layer of convBnLayers(arch)) {
    const convWeights = layer.outChannels * layer.inChannels * layer.kernel * layer.kernel
    parameters += convWeights + 2 * layer.outChannels
    buffers += 2 * layer.outChannels
    multiplyAdds += convWeights * layer.outSize * layer.outSize
  }
  parameters += arch.features * numClasses + numClasses
  multiplyAdds += arch.features * numClasses
  return { parameters, buffers, multiplyAdds }
}

export interface BuildResNetOptions extends ResNetShape {
  readonly seed: number
  readonly inputName?: string
  readonly outputName?: string
  /** Called as weights are generated and once more, with done === total, when the bytes are ready. */
  readonly onProgress?: (done: number, total: number) => void
}

/**
 * The ONNX bytes of a ResNet with synthetic weights (see synthetic-weights.ts): input
 * [N, 3, 224, 224] float32 NCHW, output [N, numClasses] logits, N dynamic.
 */
export function buildResNet(options: BuildResNetOptions): Uint8Array {
  const { depth, variant, seed, numClasses = 1000, inputName = 'input', outputName = 'logits', onProgress } = options
  const arch = describeResNet(depth, variant, numClasses)
  const counts = countResNet({ depth, variant, numClasses })
  const total = counts.parameters + counts.buffers
  let done = 0
  const progress = (values: number): void => {
    done += values
    if (done < total) onProgress?.(done, total)
  }

  const weights = new SyntheticResNetWeights(seed, arch.blocks.length)
  const graph = new OnnxGraphBuilder(`resnet${depth}`)
  graph.addInput(inputName, ['N', 3, IMAGE_SIZE, IMAGE_SIZE])

  const convBn = (layer: ConvBn, input: string): string => {
    const w = graph.addInitializer(
      `${layer.conv}.weight`,
      [layer.outChannels, layer.inChannels, layer.kernel, layer.kernel],
      weights.convWeight(layer.outChannels, layer.inChannels, layer.kernel)
    )
    const conv = graph.addNode(
      'Conv',
      [input, w],
      [`${layer.conv}.out`],
      {
        kernel_shape: { ints: [layer.kernel, layer.kernel] },
        strides: { ints: [layer.stride, layer.stride] },
        pads: { ints: [layer.pad, layer.pad, layer.pad, layer.pad] },
        dilations: { ints: [1, 1] },
        group: { int: 1 }
      },
      layer.conv
    )
    const bn = weights.batchNorm(layer.outChannels, layer.bnRole)
    const c = [layer.outChannels]
    const bnInputs = [
      conv,
      graph.addInitializer(`${layer.bn}.weight`, c, bn.scale),
      graph.addInitializer(`${layer.bn}.bias`, c, bn.shift),
      graph.addInitializer(`${layer.bn}.running_mean`, c, bn.runningMean),
      graph.addInitializer(`${layer.bn}.running_var`, c, bn.runningVariance)
    ]
    progress(layer.outChannels * layer.inChannels * layer.kernel * layer.kernel + 4 * layer.outChannels)
    return graph.addNode('BatchNormalization', bnInputs, [`${layer.bn}.out`], { epsilon: { float: BN_EPSILON } }, layer.bn)
  }
  const relu = (input: string, name: string): string => graph.addNode('Relu', [input], [name])

  let x = relu(convBn(arch.stem, inputName), 'relu.out')
  x = graph.addNode('MaxPool', [x], ['maxpool.out'], {
    kernel_shape: { ints: [3, 3] },
    strides: { ints: [2, 2] },
    pads: { ints: [1, 1, 1, 1] }
  })
  for (const block of arch.blocks) {
    const [a, b, c] = block.branch
    let branch = relu(convBn(a, x), `${block.name}.relu1.out`)
    branch = relu(convBn(b, branch), `${block.name}.relu2.out`)
    branch = convBn(c, branch)
    const shortcut = block.projection ? convBn(block.projection, x) : x
    const sum = graph.addNode('Add', [branch, shortcut], [`${block.name}.add.out`])
    x = relu(sum, `${block.name}.relu3.out`)
  }
  x = graph.addNode('GlobalAveragePool', [x], ['avgpool.out'])
  x = graph.addNode('Flatten', [x], ['flatten.out'], { axis: { int: 1 } })
  const fc = weights.classifier(numClasses, arch.features)
  const fcWeight = graph.addInitializer('fc.weight', [numClasses, arch.features], fc.weight)
  const fcBias = graph.addInitializer('fc.bias', [numClasses], fc.bias)
  graph.addNode('Gemm', [x, fcWeight, fcBias], [outputName], { alpha: { float: 1 }, beta: { float: 1 }, transB: { int: 1 } }, 'fc')
  graph.addOutput(outputName, ['N', numClasses])

  const bytes = graph.toBytes({
    docString: `ResNet-${depth} ${variant} (He et al. 2015, Table 1) with SYNTHETIC seeded random weights (seed ${seed}): not trained, its classes mean nothing.`,
    metadata: {
      architecture: `resnet${depth}`,
      variant,
      synthetic: 'true',
      seed: String(seed),
      synthetic_weights_revision: String(SYNTHETIC_WEIGHTS_REVISION)
    }
  })
  onProgress?.(total, total)
  return bytes
}
