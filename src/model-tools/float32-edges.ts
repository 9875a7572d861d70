import onnxProto from 'onnx-proto'
import type { onnx as OnnxTypes } from 'onnx-proto'
import { decodeModel, graphValueNames, intAttribute, rejectExternalData } from './onnx-edit.js'

/**
 * Float32 edges for a network exported in float16 (`model.half()` before torch.onnx.export): the
 * server feeds float32 and reads float32, so a Cast to float16 goes after each float16 graph input
 * named here and a Cast to float32 before each float16 output named here; the graph keeps its
 * names, and everything inside stays float16. What `model:add` does to such an export.
 */

const { onnx } = onnxProto
const { DataType } = onnx.TensorProto

export const FLOAT32_EDGES_METADATA_KEY = 'resnet_serve.float32_edges'
const SUFFIX = '/float16'

export function addFloat32Edges(
  onnxBytes: Uint8Array,
  names: { readonly inputs: readonly string[]; readonly outputs: readonly string[] }
): Uint8Array {
  const model = decodeModel(onnxBytes)
  const graph = model.graph!
  rejectExternalData(graph)
  const taken = graphValueNames(graph)
  const renamed = new Map<string, string>()
  for (const name of [...names.inputs, ...names.outputs]) {
    const half = `${name}${SUFFIX}`
    if (taken.has(half)) throw new Error(`the graph already has a value "${half}" (float32 edges there already?).`)
    renamed.set(name, half)
  }
  const rename = (list: string[] | null | undefined): string[] => (list ?? []).map((n) => renamed.get(n) ?? n)
  for (const node of graph.node ?? []) {
    node.input = rename(node.input)
    node.output = rename(node.output)
  }
  for (const info of graph.valueInfo ?? []) info.name = renamed.get(info.name ?? '') ?? info.name

  const toFloat32 = (info: OnnxTypes.IValueInfoProto): void => {
    if (info.type?.tensorType?.elemType !== DataType.FLOAT16) throw new Error(`"${info.name ?? ''}" is not a float16 tensor.`)
    info.type.tensorType.elemType = DataType.FLOAT
  }
  const inputCasts: OnnxTypes.INodeProto[] = names.inputs.map((name) => {
    toFloat32((graph.input ?? []).find((i) => i.name === name) ?? missing('input', name))
    return {
      name: `${name}${SUFFIX}`,
      opType: 'Cast',
      input: [name],
      output: [renamed.get(name)!],
      attribute: [intAttribute('to', DataType.FLOAT16)]
    }
  })
  const outputCasts: OnnxTypes.INodeProto[] = names.outputs.map((name) => {
    toFloat32((graph.output ?? []).find((o) => o.name === name) ?? missing('output', name))
    return {
      name: `${name}${SUFFIX}`,
      opType: 'Cast',
      input: [renamed.get(name)!],
      output: [name],
      attribute: [intAttribute('to', DataType.FLOAT)]
    }
  })
  graph.node = [...inputCasts, ...(graph.node ?? []), ...outputCasts]
  model.metadataProps = [
    ...(model.metadataProps ?? []).filter((p) => p.key !== FLOAT32_EDGES_METADATA_KEY),
    { key: FLOAT32_EDGES_METADATA_KEY, value: `float32 ${[...names.inputs, ...names.outputs].join(', ')}; float16 inside` }
  ]
  return onnx.ModelProto.encode(model).finish()
}

function missing(kind: string, name: string): never {
  throw new Error(`the graph has no ${kind} "${name}".`)
}

/** The graph inputs (initializers aside) and outputs that are float16 tensors. */
export function float16Edges(onnxBytes: Uint8Array): { inputs: string[]; outputs: string[] } {
  const graph = decodeModel(onnxBytes).graph!
  const initializers = new Set((graph.initializer ?? []).map((t) => t.name ?? ''))
  const half = (list: OnnxTypes.IValueInfoProto[] | null | undefined): string[] =>
    (list ?? [])
      .filter((v) => v.type?.tensorType?.elemType === DataType.FLOAT16 && !initializers.has(v.name ?? ''))
      .map((v) => v.name ?? '')
  return { inputs: half(graph.input), outputs: half(graph.output) }
}
