import { endianness } from 'node:os'
import onnxProto from 'onnx-proto'
import type { onnx as OnnxTypes } from 'onnx-proto'

/**
 * A small builder for ONNX graphs of float32 tensors, on the protobuf types of `onnx-proto`.
 * It writes what ONNX Runtime 1.2x loads: IR version 8, the default-domain opset 17.
 * Initializers are stored as little-endian `raw_data`, which protobufjs copies as one block
 * (float_data would be encoded value by value, ~10× slower for a 240 MB ResNet-152).
 */

const { onnx } = onnxProto

export const ONNX_IR_VERSION = 8
export const ONNX_OPSET = 17

/** A tensor dimension: a fixed size, or a symbolic name such as "N" for a dynamic batch. */
export type Dimension = number | string

/** ONNX attributes are typed; the tag says which field of AttributeProto carries the value. */
export type OnnxAttribute = { readonly int: number } | { readonly ints: readonly number[] } | { readonly float: number }

const FLOAT = onnx.TensorProto.DataType.FLOAT
const HOST_IS_LITTLE_ENDIAN = endianness() === 'LE'

function valueInfo(name: string, dims: readonly Dimension[]): OnnxTypes.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: FLOAT,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) }
      }
    }
  }
}

function attributeProto(name: string, value: OnnxAttribute): OnnxTypes.IAttributeProto {
  const { AttributeType } = onnx.AttributeProto
  if ('int' in value) return { name, type: AttributeType.INT, i: value.int }
  if ('ints' in value) return { name, type: AttributeType.INTS, ints: [...value.ints] }
  return { name, type: AttributeType.FLOAT, f: value.float }
}

/** The bytes of `values` in little-endian order; a view (no copy) on little-endian hosts. */
function littleEndianBytes(values: Float32Array): Uint8Array {
  if (HOST_IS_LITTLE_ENDIAN) return new Uint8Array(values.buffer, values.byteOffset, values.byteLength)
  const bytes = new Uint8Array(values.byteLength)
  const view = new DataView(bytes.buffer)
  for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i]!, true)
  return bytes
}

export class OnnxGraphBuilder {
  private readonly nodes: OnnxTypes.INodeProto[] = []
  private readonly initializers: OnnxTypes.ITensorProto[] = []
  private readonly inputs: OnnxTypes.IValueInfoProto[] = []
  private readonly outputs: OnnxTypes.IValueInfoProto[] = []
  private readonly names = new Set<string>()

  constructor(private readonly graphName: string) {}

  addInput(name: string, dims: readonly Dimension[]): string {
    this.claim(name)
    this.inputs.push(valueInfo(name, dims))
    return name
  }

  /** Declares an existing value (a node's output) as a graph output. */
  addOutput(name: string, dims: readonly Dimension[]): void {
    this.outputs.push(valueInfo(name, dims))
  }

  /**
   * A float32 constant tensor. The builder keeps a view on `values` until `toBytes()`: the caller
   * must not change the array afterwards.
   */
  addInitializer(name: string, dims: readonly number[], values: Float32Array): string {
    const expected = dims.reduce((a, b) => a * b, 1)
    if (values.length !== expected) {
      throw new Error(`initializer ${name}: ${values.length} values for shape [${dims.join(', ')}] (needs ${expected})`)
    }
    this.claim(name)
    this.initializers.push({ name, dims: [...dims], dataType: FLOAT, rawData: littleEndianBytes(values) })
    return name
  }

  /** Adds a node and returns its first output's name, so calls chain. Node names default to that output. */
  addNode(
    opType: string,
    inputs: readonly string[],
    outputs: readonly string[],
    attributes: Readonly<Record<string, OnnxAttribute>> = {},
    name: string = outputs[0] ?? opType
  ): string {
    for (const output of outputs) this.claim(output)
    this.nodes.push({
      name,
      opType,
      input: [...inputs],
      output: [...outputs],
      attribute: Object.entries(attributes).map(([key, value]) => attributeProto(key, value))
    })
    return outputs[0]!
  }

  /** The serialised ModelProto. `metadata` becomes metadata_props (visible in Netron and ORT's modelMetadata). */
  toBytes(options: { producerVersion?: string; docString?: string; metadata?: Readonly<Record<string, string>> } = {}): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: ONNX_IR_VERSION,
      opsetImport: [{ domain: '', version: ONNX_OPSET }],
      producerName: 'resnet-serve',
      producerVersion: options.producerVersion ?? '',
      docString: options.docString ?? '',
      metadataProps: Object.entries(options.metadata ?? {}).map(([key, value]) => ({ key, value })),
      graph: {
        name: this.graphName,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs
      }
    })
    return onnx.ModelProto.encode(model).finish()
  }

  /** ONNX requires every value name in a graph to be produced once (SSA); catching a clash here beats ORT's message. */
  private claim(name: string): void {
    if (this.names.has(name)) throw new Error(`ONNX value name used twice: ${name}`)
    this.names.add(name)
  }
}

export interface OnnxNodeSummary {
  readonly name: string
  readonly opType: string
  readonly inputs: readonly string[]
  readonly outputs: readonly string[]
  /** INT and INTS attributes, both as arrays. */
  readonly intAttributes: ReadonlyMap<string, readonly number[]>
}

export interface OnnxGraphSummary {
  readonly nodes: readonly OnnxNodeSummary[]
  readonly initializers: ReadonlyMap<string, readonly number[]>
  /** The files initializers are stored in outside the model (external data), as written: paths relative to the model's folder. */
  readonly externalFiles: readonly string[]
}

/** The structure of an ONNX graph (nodes, initializer shapes), for tests and tools that inspect one. */
export function inspectOnnxGraph(bytes: Uint8Array): OnnxGraphSummary {
  const graph = onnx.ModelProto.decode(bytes).graph
  if (!graph) throw new Error('the ONNX model has no graph')
  const nodes = (graph.node ?? []).map((node) => ({
    name: node.name ?? '',
    opType: node.opType ?? '',
    inputs: node.input ?? [],
    outputs: node.output ?? [],
    intAttributes: new Map(
      (node.attribute ?? []).flatMap((a): Array<[string, number[]]> => {
        if (a.type === onnx.AttributeProto.AttributeType.INT) return [[a.name ?? '', [Number(a.i)]]]
        if (a.type === onnx.AttributeProto.AttributeType.INTS) return [[a.name ?? '', (a.ints ?? []).map(Number)]]
        return []
      })
    )
  }))
  const initializers = new Map((graph.initializer ?? []).map((t) => [t.name ?? '', (t.dims ?? []).map(Number)]))
  const externalFiles = new Set<string>()
  for (const t of graph.initializer ?? []) {
    if (t.dataLocation !== onnx.TensorProto.DataLocation.EXTERNAL) continue
    const location = (t.externalData ?? []).find((entry) => entry.key === 'location')?.value
    if (location !== undefined && location !== null) externalFiles.add(location)
  }
  return { nodes, initializers, externalFiles: [...externalFiles] }
}

/** Operators that change a tensor's shape or type but not its values: looked through by `computedBySoftmax`. */
const VALUE_PRESERVING_OPS: ReadonlySet<string> = new Set(['Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Identity', 'Cast', 'Dropout'])

/**
 * Whether the graph computes the value `name` with a Softmax, seen through reshapes and casts: an
 * output that is already probabilities (a Caffe "prob", an export with the softmax kept), on which
 * a second softmax would flatten every answer towards 1/classes.
 */
export function computedBySoftmax(graph: OnnxGraphSummary, name: string): boolean {
  const producers = new Map<string, OnnxNodeSummary>()
  for (const node of graph.nodes) for (const output of node.outputs) producers.set(output, node)
  let value = name
  for (let hops = 0; hops < graph.nodes.length; hops++) {
    const node = producers.get(value)
    if (node === undefined) return false
    if (node.opType === 'Softmax') return true
    if (!VALUE_PRESERVING_OPS.has(node.opType) || node.inputs[0] === undefined) return false
    value = node.inputs[0]
  }
  return false
}
