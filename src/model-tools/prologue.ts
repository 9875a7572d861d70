import onnxProto from 'onnx-proto'
import type { onnx as OnnxTypes } from 'onnx-proto'
import type { PreprocessConfig } from '../repository/model-config.js'
import {
  decodeModel,
  float32Initializer,
  graphValueNames,
  int64Initializer,
  intAttribute,
  intsAttribute,
  rejectExternalData
} from './onnx-edit.js'

/**
 * The UINT8 prologue: a float NCHW ResNet becomes one that takes the decoder's pixels as they are,
 * uint8 NHWC RGB [N, H, W, 3] (after resize and crop), and normalises on the device:
 *
 *     pixels ─(Gather c: 2,1,0, BGR models only)─ Transpose NCHW ─ Cast float ─ Mul a ─ Add b → original input
 *
 * with a[c] = scale / std[c] and b[c] = −mean[c] / std[c] in the model's colour order: the same
 * p · a + b that createNormalizer tabulates on the host. The channel reversal and the transpose run
 * on the bytes, before the Cast, where they move a quarter of the data; ONNX Runtime's CPU transpose
 * of uint8 is also much faster than of float (prologue alone at batch 16: 0.37 against 2.3 ms of CPU
 * per image with the transpose last). Everything else in the graph is kept as it
 * is (nodes, initializers, outputs, opset); the host then sends a quarter of the bytes (uint8, not
 * float32) and skips normalising.
 */

const { onnx } = onnxProto
const { DataType } = onnx.TensorProto

export const DEFAULT_PIXELS_INPUT = 'pixels'
/** Every value the prologue adds is named under this prefix, so it reads as one block in Netron. */
const PREFIX = 'prologue/'
/** metadata_props key recording the normalisation the graph now does, for people and tools. */
export const PROLOGUE_METADATA_KEY = 'resnet_serve.uint8_prologue'

export interface PrologueOptions {
  /** The float image input to replace; default: the graph's only input that is not an initializer. */
  readonly inputName?: string
  /** The new uint8 input's name; default "pixels". */
  readonly pixelsName?: string
}

export interface PrologueResult {
  readonly bytes: Uint8Array
  /** The input that was replaced (it is now an internal value fed by the prologue). */
  readonly replacedInput: string
  readonly pixelsInput: string
}

/**
 * Rewrites `onnxBytes` so that it takes uint8 NHWC RGB pixels. Throws, naming the fix, for graphs
 * it cannot rewrite: no single float rank-4 image input with 3 channels in axis 1, a name clash with
 * the prologue's values, initializers in external files.
 *
 * Memory: the decoded model's raw_data are views into `onnxBytes` (protobufjs subarrays), so apart
 * from the input the only large allocation is the encoded result.
 */
export function addUint8Prologue(onnxBytes: Uint8Array, preprocess: PreprocessConfig, options: PrologueOptions = {}): PrologueResult {
  const model = decodeModel(onnxBytes)
  const graph = model.graph!
  rejectExternalData(graph)
  const pixelsName = options.pixelsName ?? DEFAULT_PIXELS_INPUT

  const initializerNames = new Set((graph.initializer ?? []).map((t) => t.name ?? ''))
  const imageInputs = (graph.input ?? []).filter((i) => !initializerNames.has(i.name ?? ''))
  const original = pickImageInput(imageInputs, options.inputName)
  const originalName = original.name!
  const tensorType = original.type?.tensorType
  if (tensorType?.elemType !== DataType.FLOAT) {
    throw new Error(
      `input "${originalName}" is ${DataType[tensorType?.elemType ?? 0] ?? 'not a tensor'}, not FLOAT: it already takes something other than normalised floats.`
    )
  }
  const dims = tensorType.shape?.dim ?? []
  if (dims.length !== 4) throw new Error(`input "${originalName}" has rank ${dims.length}; the prologue feeds a rank-4 NCHW image.`)
  const channels = dims[1]!.dimValue
  if (channels !== undefined && channels !== null && Number(channels) !== 3) {
    throw new Error(`input "${originalName}" has ${String(channels)} channels in axis 1; the prologue feeds NCHW with 3.`)
  }

  const taken = graphValueNames(graph)
  const names = {
    pixels: pixelsName,
    indices: `${PREFIX}model_channel_order`,
    reordered: `${PREFIX}pixels_model_order`,
    nchw: `${PREFIX}pixels_nchw`,
    float: `${PREFIX}pixels_float`,
    a: `${PREFIX}a`,
    b: `${PREFIX}b`,
    scaled: `${PREFIX}scaled`
  }
  for (const name of Object.values(names)) {
    if (taken.has(name)) {
      throw new Error(
        `the graph already has a value "${name}"${name.startsWith(PREFIX) ? ' (a uint8 prologue is there already?)' : ''}. Pass another pixels input name.`
      )
    }
  }

  // Model channel c reads decoded (RGB) channel sourceChannel[c]; a and b are indexed by model channel.
  const bgr = preprocess.colorOrder === 'BGR'
  const a = Float32Array.from([0, 1, 2], (c) => preprocess.scale / preprocess.std[c]!)
  const b = Float32Array.from([0, 1, 2], (c) => -preprocess.mean[c]! / preprocess.std[c]!)
  // Shaped [3, 1, 1]: they broadcast over N, H and W of the NCHW tensor.
  const newInitializers = [float32Initializer(names.a, [3, 1, 1], a), float32Initializer(names.b, [3, 1, 1], b)]
  const nodes: OnnxTypes.INodeProto[] = []
  let pixels = names.pixels
  if (bgr) {
    newInitializers.push(int64Initializer(names.indices, [3], [2, 1, 0]))
    nodes.push({
      name: `${PREFIX}rgb_to_bgr`,
      opType: 'Gather',
      input: [pixels, names.indices],
      output: [names.reordered],
      attribute: [intAttribute('axis', 3)]
    })
    pixels = names.reordered
  }
  nodes.push(
    {
      name: `${PREFIX}to_nchw`,
      opType: 'Transpose',
      input: [pixels],
      output: [names.nchw],
      attribute: [intsAttribute('perm', [0, 3, 1, 2])]
    },
    { name: `${PREFIX}cast`, opType: 'Cast', input: [names.nchw], output: [names.float], attribute: [intAttribute('to', DataType.FLOAT)] },
    { name: `${PREFIX}scale`, opType: 'Mul', input: [names.float, names.a], output: [names.scaled] },
    { name: `${PREFIX}shift`, opType: 'Add', input: [names.scaled, names.b], output: [originalName] }
  )

  const [batch, , height, width] = dims
  const pixelsInput: OnnxTypes.IValueInfoProto = {
    name: names.pixels,
    type: { tensorType: { elemType: DataType.UINT8, shape: { dim: [batch!, height!, width!, { dimValue: 3 }] } } }
  }
  graph.input = (graph.input ?? []).map((i) => (i === original ? pixelsInput : i))
  // Before IR version 4 every initializer had to be declared as a graph input as well.
  if (Number(model.irVersion ?? 0) < 4) {
    for (const t of newInitializers) {
      graph.input.push({
        name: t.name,
        type: { tensorType: { elemType: t.dataType, shape: { dim: (t.dims ?? []).map((d) => ({ dimValue: d })) } } }
      })
    }
  }
  graph.initializer = [...newInitializers, ...(graph.initializer ?? [])]
  // Nodes must be in topological order: the prologue feeds everything that read the old input.
  graph.node = [...nodes, ...(graph.node ?? [])]

  const description = `uint8 NHWC RGB "${names.pixels}" → ${bgr ? 'BGR, ' : ''}(p × ${preprocess.scale} − mean [${preprocess.mean.join(', ')}]) / std [${preprocess.std.join(', ')}] → NCHW "${originalName}"`
  model.metadataProps = [
    ...(model.metadataProps ?? []).filter((p) => p.key !== PROLOGUE_METADATA_KEY),
    { key: PROLOGUE_METADATA_KEY, value: description }
  ]
  return { bytes: onnx.ModelProto.encode(model).finish(), replacedInput: originalName, pixelsInput: names.pixels }
}

function pickImageInput(inputs: readonly OnnxTypes.IValueInfoProto[], requested: string | undefined): OnnxTypes.IValueInfoProto {
  const list = inputs.map((i) => `"${i.name ?? ''}"`).join(', ')
  if (requested !== undefined) {
    const named = inputs.find((i) => i.name === requested)
    if (named === undefined) throw new Error(`the graph has no input "${requested}"; its inputs are ${list}.`)
    return named
  }
  if (inputs.length !== 1) throw new Error(`the graph has ${inputs.length} inputs (${list}); name the image input.`)
  return inputs[0]!
}
