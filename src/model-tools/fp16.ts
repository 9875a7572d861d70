import onnxProto from 'onnx-proto'
import type { onnx as OnnxTypes } from 'onnx-proto'
import {
  decodeModel,
  float32Initializer,
  graphValueNames,
  intAttribute,
  littleEndianBytes,
  readFloat32,
  rejectExternalData
} from './onnx-edit.js'

/**
 * The FP16 variant: weights stored as float16 and every float tensor inside the graph computed in
 * float16, with Casts at the edges, so the model keeps the signature the server checks (float32 in,
 * or the prologue's uint8; float32 out). Made for GPUs, whose tensor cores run half precision at
 * several times the float32 rate and whose memory traffic it halves.
 *
 * BatchNormalization is first folded into the Conv before it, in float32 (W' = W·k, b' = (b − mean)·k
 * + B with k = γ/√(var + ε)): in float16, ε = 1e-5 is a subnormal and a small running variance loses
 * most of its digits, while the folded weights are ordinary magnitudes. ONNX Runtime fuses Conv+BN
 * itself when it opens a float32 session, so folding here changes no float32 result beyond rounding.
 */

const { onnx } = onnxProto
const { DataType } = onnx.TensorProto
const { AttributeType } = onnx.AttributeProto

const FP16_SUFFIX = '/fp16'
export const FP16_METADATA_KEY = 'resnet_serve.fp16'

/**
 * Inputs that the ONNX operator schemas type as float32 whatever the data's type (Resize's scales,
 * Upsample's scales): their initializers stay FLOAT. None occurs in a ResNet; listed so that a
 * graph with them still loads.
 */
const FLOAT32_ONLY_INPUTS: Readonly<Record<string, readonly number[]>> = { Resize: [2], Upsample: [1] }

export interface Fp16Options {
  /** Fold BatchNormalization into the preceding Conv (in float32) before converting; default true. */
  readonly foldBatchNorm?: boolean
  /**
   * Keep the classifier (a Gemm or MatMul writing a graph output) in float32; default true. It is
   * about 0.05 % of a ResNet-50's multiply-adds, but a float16 kernel that accumulates its 2048
   * products in float16 (ONNX Runtime's CPU Gemm does) moves the logits by about 1 % of the largest.
   */
  readonly keepClassifierFloat32?: boolean
}

export interface Fp16Result {
  readonly bytes: Uint8Array
  readonly foldedBatchNorms: number
  /** Names of the nodes left in float32 (the classifier). */
  readonly float32Nodes: readonly string[]
  readonly convertedInitializers: number
}

export function convertToFp16(onnxBytes: Uint8Array, options: Fp16Options = {}): Fp16Result {
  const model = decodeModel(onnxBytes)
  const graph = model.graph!
  rejectExternalData(graph)
  for (const node of graph.node ?? []) {
    if ((node.attribute ?? []).some((a) => a.type === AttributeType.GRAPH || a.type === AttributeType.GRAPHS)) {
      throw new Error(
        `node "${node.name ?? node.opType ?? ''}" (${node.opType ?? ''}) has a subgraph; the FP16 conversion handles flat graphs only.`
      )
    }
  }
  if ((graph.node ?? []).some((n) => n.opType === 'Cast' && n.name?.endsWith(FP16_SUFFIX)))
    throw new Error('the model is an FP16 variant already.')

  const foldedBatchNorms = options.foldBatchNorm === false ? 0 : foldBatchNormalization(model)

  const graphOutputs = new Set((graph.output ?? []).filter((o) => o.type?.tensorType?.elemType === DataType.FLOAT).map((o) => o.name ?? ''))
  const float32Nodes = new Set(
    options.keepClassifierFloat32 === false
      ? []
      : (graph.node ?? []).filter(
          (n) => (n.opType === 'Gemm' || n.opType === 'MatMul') && (n.output ?? []).some((o) => graphOutputs.has(o))
        )
  )
  const float32Only = new Set<string>()
  const initializerNames = new Set((graph.initializer ?? []).map((t) => t.name ?? ''))
  for (const node of float32Nodes) for (const name of node.input ?? []) if (initializerNames.has(name)) float32Only.add(name)
  for (const node of graph.node ?? []) {
    for (const index of FLOAT32_ONLY_INPUTS[node.opType ?? ''] ?? []) {
      const name = node.input?.[index]
      if (name) float32Only.add(name)
    }
  }
  let convertedInitializers = 0
  for (const tensor of graph.initializer ?? []) {
    if (tensor.dataType !== DataType.FLOAT || float32Only.has(tensor.name ?? '')) continue
    toFloat16(tensor)
    convertedInitializers++
  }
  // Before IR 4 initializers are declared as graph inputs too; the declared type must follow the data.
  const initializerTypes = new Map((graph.initializer ?? []).map((t) => [t.name ?? '', t.dataType]))
  for (const input of graph.input ?? []) {
    const type = initializerTypes.get(input.name ?? '')
    if (type !== undefined && input.type?.tensorType) input.type.tensorType.elemType = type
  }
  for (const node of graph.node ?? []) {
    for (const attribute of node.attribute ?? []) {
      // Cast(to=FLOAT) inside the graph (the prologue's uint8 → float, exporters' casts) now casts to half.
      if (node.opType === 'Cast' && attribute.name === 'to' && Number(attribute.i) === DataType.FLOAT) attribute.i = DataType.FLOAT16
      // Constant and ConstantOfShape carry their value as a tensor attribute.
      if (attribute.type === AttributeType.TENSOR && attribute.t?.dataType === DataType.FLOAT) toFloat16(attribute.t)
    }
  }
  for (const info of graph.valueInfo ?? []) {
    if (info.type?.tensorType?.elemType === DataType.FLOAT) info.type.tensorType.elemType = DataType.FLOAT16
  }

  const taken = graphValueNames(graph)
  const halfName = (name: string): string => {
    const half = `${name}${FP16_SUFFIX}`
    if (taken.has(half)) throw new Error(`the graph already has a value "${half}".`)
    return half
  }
  const rename = (from: string, to: string): void => {
    for (const node of graph.node ?? []) node.input = (node.input ?? []).map((n) => (n === from ? to : n))
  }
  const edgeCasts: OnnxTypes.INodeProto[] = []
  for (const input of graph.input ?? []) {
    const name = input.name ?? ''
    if (initializerNames.has(name) || input.type?.tensorType?.elemType !== DataType.FLOAT) continue
    const half = halfName(name)
    rename(name, half)
    edgeCasts.push({ name: half, opType: 'Cast', input: [name], output: [half], attribute: [intAttribute('to', DataType.FLOAT16)] })
  }
  const outputCasts: OnnxTypes.INodeProto[] = []
  for (const output of graph.output ?? []) {
    const name = output.name ?? ''
    if (output.type?.tensorType?.elemType !== DataType.FLOAT) continue
    const producer = (graph.node ?? []).find((n) => (n.output ?? []).includes(name))
    if (producer === undefined) throw new Error(`output "${name}" is not produced by a node (a graph input or initializer passed through).`)
    if (float32Nodes.has(producer)) continue
    const half = halfName(name)
    rename(name, half)
    producer.output = (producer.output ?? []).map((n) => (n === name ? half : n))
    outputCasts.push({ name: half, opType: 'Cast', input: [half], output: [name], attribute: [intAttribute('to', DataType.FLOAT)] })
  }
  // The float32 nodes read float16 activations through a Cast each; their outputs are float32 already.
  const body: OnnxTypes.INodeProto[] = []
  for (const node of graph.node ?? []) {
    if (float32Nodes.has(node)) {
      node.input = (node.input ?? []).map((name) => {
        if (name === '' || initializerNames.has(name)) return name
        const single = `${name}/fp32`
        if (taken.has(single)) throw new Error(`the graph already has a value "${single}".`)
        taken.add(single)
        body.push({ name: single, opType: 'Cast', input: [name], output: [single], attribute: [intAttribute('to', DataType.FLOAT)] })
        return single
      })
    }
    body.push(node)
  }
  graph.node = [...edgeCasts, ...body, ...outputCasts]

  model.metadataProps = [
    ...(model.metadataProps ?? []).filter((p) => p.key !== FP16_METADATA_KEY),
    {
      key: FP16_METADATA_KEY,
      value: `float16 weights and compute, float32 at the edges; ${foldedBatchNorms} BatchNormalization folded into Conv in float32 first`
    }
  ]
  return {
    bytes: onnx.ModelProto.encode(model).finish(),
    foldedBatchNorms,
    float32Nodes: [...float32Nodes].map((n) => n.name ?? n.opType ?? ''),
    convertedInitializers
  }
}

/** Rewrites a FLOAT tensor as FLOAT16 raw_data in place. */
function toFloat16(tensor: OnnxTypes.ITensorProto): void {
  const halves = float32ArrayToFloat16Bits(readFloat32(tensor))
  tensor.dataType = DataType.FLOAT16
  tensor.rawData = littleEndianBytes(halves)
  tensor.floatData = []
}

/**
 * Folds, in place and in float32, each BatchNormalization whose input is a Conv's output read by
 * nothing else into that Conv, and drops the parameters no node reads any more. Returns how many
 * were folded; the others (a BN after a Relu, a training-mode BN, parameters computed at run time)
 * stay as they are.
 */
export function foldBatchNormalization(model: OnnxTypes.IModelProto): number {
  const graph = model.graph
  if (!graph) throw new Error('the ONNX model has no graph')
  const folded = foldIntoConvs(graph)
  dropUnusedInitializers(graph, Number(model.irVersion ?? 0))
  return folded
}

function foldIntoConvs(graph: OnnxTypes.IGraphProto): number {
  const nodes = graph.node ?? []
  const initializers = new Map((graph.initializer ?? []).map((t) => [t.name ?? '', t]))
  const readers = new Map<string, number>()
  for (const node of nodes) for (const name of node.input ?? []) readers.set(name, (readers.get(name) ?? 0) + 1)
  const producers = new Map<string, OnnxTypes.INodeProto>()
  for (const node of nodes) for (const name of node.output ?? []) producers.set(name, node)
  const graphOutputs = new Set((graph.output ?? []).map((o) => o.name ?? ''))
  const taken = graphValueNames(graph)
  const floatInitializer = (name: string | undefined): OnnxTypes.ITensorProto | undefined => {
    const t = name ? initializers.get(name) : undefined
    return t?.dataType === DataType.FLOAT ? t : undefined
  }

  const folded = new Set<OnnxTypes.INodeProto>()
  for (const bn of nodes) {
    if (bn.opType !== 'BatchNormalization' || (bn.output ?? []).filter(Boolean).length !== 1) continue
    if ((bn.attribute ?? []).some((a) => a.name === 'training_mode' && Number(a.i) !== 0)) continue
    const x = bn.input?.[0] ?? ''
    const conv = producers.get(x)
    if (conv?.opType !== 'Conv' || readers.get(x) !== 1 || graphOutputs.has(x)) continue
    const params = (bn.input ?? []).slice(1, 5).map(floatInitializer)
    const weight = floatInitializer(conv.input?.[1])
    const convBias = conv.input?.[2] ? floatInitializer(conv.input[2]) : undefined
    if (params.length !== 4 || params.some((p) => p === undefined) || weight === undefined) continue
    if (conv.input?.[2] && (convBias === undefined || readers.get(conv.input[2]) !== 1)) continue
    if (readers.get(conv.input![1]!) !== 1) continue

    const [scale, shift, mean, variance] = params.map((p) => readFloat32(p!)) as [Float32Array, Float32Array, Float32Array, Float32Array]
    const epsilon = (bn.attribute ?? []).find((a) => a.name === 'epsilon')?.f ?? 1e-5
    const w = readFloat32(weight)
    const outChannels = Number(weight.dims![0])
    const perChannel = w.length / outChannels
    const b = convBias ? readFloat32(convBias) : new Float32Array(outChannels)
    for (let c = 0; c < outChannels; c++) {
      const k = scale[c]! / Math.sqrt(variance[c]! + epsilon)
      for (let i = c * perChannel; i < (c + 1) * perChannel; i++) w[i] = w[i]! * k
      b[c] = (b[c]! - mean[c]!) * k + shift[c]!
    }
    weight.rawData = littleEndianBytes(w)
    weight.floatData = []
    if (convBias) {
      convBias.rawData = littleEndianBytes(b)
      convBias.floatData = []
    } else {
      let biasName = `${conv.input![1]!}.folded_bias`
      for (let n = 2; taken.has(biasName); n++) biasName = `${conv.input![1]!}.folded_bias${n}`
      taken.add(biasName)
      const bias = float32Initializer(biasName, [outChannels], b)
      graph.initializer!.push(bias)
      initializers.set(biasName, bias)
      conv.input = [conv.input![0]!, conv.input![1]!, biasName]
    }
    conv.output = [bn.output![0]!]
    folded.add(bn)
  }
  graph.node = nodes.filter((n) => !folded.has(n))
  return folded.size
}

/** Initializers no node reads (the folded BatchNormalizations' parameters) and, before IR 4, their input entries. */
function dropUnusedInitializers(graph: OnnxTypes.IGraphProto, irVersion: number): void {
  const used = new Set<string>()
  for (const node of graph.node ?? []) for (const name of node.input ?? []) used.add(name)
  for (const output of graph.output ?? []) used.add(output.name ?? '')
  const dropped = new Set((graph.initializer ?? []).filter((t) => !used.has(t.name ?? '')).map((t) => t.name ?? ''))
  graph.initializer = (graph.initializer ?? []).filter((t) => !dropped.has(t.name ?? ''))
  if (irVersion < 4) graph.input = (graph.input ?? []).filter((i) => !dropped.has(i.name ?? ''))
}

/**
 * IEEE 754 binary16 ("half") conversions, bit-exact: float32 → float16 rounds to nearest, ties to
 * even, as a GPU's conversion instruction and numpy's astype(float16) do. Node 20 has no
 * Float16Array, so halves travel as their bit patterns in a Uint16Array.
 */

const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)

/** The binary16 bits of the binary32 bits `x` (see float32ToFloat16Bits). */
function halfBitsOfSingleBits(x: number): number {
  const sign = (x >>> 16) & 0x8000
  const exponent = (x >>> 23) & 0xff
  const mantissa = x & 0x7fffff
  if (exponent === 0xff) {
    // Infinity stays infinity; a NaN keeps its top payload bits and is made quiet, so it stays a NaN.
    return mantissa === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mantissa >>> 13)
  }
  // The exponent rebiased from 127 to 15.
  const e = exponent - 112
  if (e >= 0x1f) return sign | 0x7c00 // beyond 65520 after rounding: overflow to infinity
  if (e <= 0) {
    // A half subnormal (or zero): units of 2^-24. Below 2^-25 everything rounds to ±0.
    if (e < -10) return sign
    const significand = mantissa | 0x800000
    const shift = 14 - e
    const half = significand >>> shift
    const rest = significand & ((1 << shift) - 1)
    const halfway = 1 << (shift - 1)
    // A carry out of the mantissa yields the smallest normal half, 0x0400: the right encoding.
    return sign | (rest > halfway || (rest === halfway && (half & 1) === 1) ? half + 1 : half)
  }
  const half = (e << 10) | (mantissa >>> 13)
  const rest = mantissa & 0x1fff
  // A carry can ripple into the exponent, and from 0x7bff (65504) to 0x7c00 (infinity): both correct.
  return sign | (rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1) ? half + 1 : half)
}

/** The binary16 bit pattern nearest to `value` once it is rounded to float32 (ties to even). */
export function float32ToFloat16Bits(value: number): number {
  f32[0] = value
  return halfBitsOfSingleBits(u32[0]!)
}

/** The value of a binary16 bit pattern (exact: every half is a float32 and a double). */
export function float16BitsToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1
  const exponent = (bits >>> 10) & 0x1f
  const mantissa = bits & 0x3ff
  if (exponent === 0) return sign * mantissa * 2 ** -24
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15)
}

/** Element-wise float32ToFloat16Bits, into a fresh array. */
export function float32ArrayToFloat16Bits(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length)
  const halves = new Uint16Array(values.length)
  for (let i = 0; i < values.length; i++) halves[i] = halfBitsOfSingleBits(bits[i]!)
  return halves
}
