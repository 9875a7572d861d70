import { endianness } from 'node:os'
import onnxProto from 'onnx-proto'
import type { onnx as OnnxTypes } from 'onnx-proto'

/**
 * What the graph rewrites (prologue.ts, fp16.ts) share: decoding a ModelProto, reading and writing
 * initializers whatever field holds their values, the set of value names.
 */

const { onnx } = onnxProto
const { DataType, DataLocation } = onnx.TensorProto
const HOST_IS_LITTLE_ENDIAN = endianness() === 'LE'

export function decodeModel(bytes: Uint8Array): OnnxTypes.ModelProto {
  const model = onnx.ModelProto.decode(bytes)
  if (!model.graph) throw new Error('the ONNX model has no graph')
  return model
}

/** Weights in a side file would not travel with the rewritten model.onnx. */
export function rejectExternalData(graph: OnnxTypes.IGraphProto): void {
  const external = (graph.initializer ?? []).find((t) => t.dataLocation === DataLocation.EXTERNAL)
  if (external !== undefined) {
    throw new Error(
      `initializer "${external.name ?? ''}" is stored in an external file. Fix: save the model as one file (onnx.save(onnx.load(path), out, save_as_external_data=False)).`
    )
  }
}

/** Every name a value already has in the graph (node outputs and inputs, initializers, graph inputs and outputs). */
export function graphValueNames(graph: OnnxTypes.IGraphProto): Set<string> {
  const names = new Set<string>()
  for (const node of graph.node ?? []) {
    for (const n of node.input ?? []) names.add(n)
    for (const n of node.output ?? []) names.add(n)
  }
  for (const t of graph.initializer ?? []) names.add(t.name ?? '')
  for (const v of [...(graph.input ?? []), ...(graph.output ?? []), ...(graph.valueInfo ?? [])]) names.add(v.name ?? '')
  names.delete('')
  return names
}

/** The little-endian bytes of `values`; a view on little-endian hosts. */
export function littleEndianBytes(values: Float32Array | Uint16Array | BigInt64Array): Uint8Array {
  if (HOST_IS_LITTLE_ENDIAN) return new Uint8Array(values.buffer, values.byteOffset, values.byteLength)
  const bytes = new Uint8Array(values.byteLength)
  const view = new DataView(bytes.buffer)
  for (let i = 0; i < values.length; i++) {
    if (values instanceof Float32Array) view.setFloat32(i * 4, values[i]!, true)
    else if (values instanceof Uint16Array) view.setUint16(i * 2, values[i]!, true)
    else view.setBigInt64(i * 8, values[i]!, true)
  }
  return bytes
}

export function float32Initializer(name: string, dims: readonly number[], values: Float32Array): OnnxTypes.ITensorProto {
  return { name, dims: [...dims], dataType: DataType.FLOAT, rawData: littleEndianBytes(values) }
}

export function int64Initializer(name: string, dims: readonly number[], values: readonly number[]): OnnxTypes.ITensorProto {
  return { name, dims: [...dims], dataType: DataType.INT64, rawData: littleEndianBytes(BigInt64Array.from(values, (v) => BigInt(v))) }
}

export function elementCount(tensor: OnnxTypes.ITensorProto): number {
  return (tensor.dims ?? []).reduce<number>((n, d) => n * Number(d), 1)
}

/**
 * A FLOAT tensor's values, from raw_data (little-endian) or float_data. A fresh array the caller
 * may change: raw_data decoded by protobufjs is a view into the file, possibly unaligned.
 */
export function readFloat32(tensor: OnnxTypes.ITensorProto): Float32Array {
  if (tensor.dataType !== DataType.FLOAT) throw new Error(`initializer "${tensor.name ?? ''}" is not FLOAT`)
  const count = elementCount(tensor)
  const raw = tensor.rawData
  if (raw && raw.length > 0) {
    if (raw.length !== count * 4)
      throw new Error(`initializer "${tensor.name ?? ''}" has ${raw.length} bytes of raw_data for ${count} floats`)
    const values = new Float32Array(count)
    if (HOST_IS_LITTLE_ENDIAN) new Uint8Array(values.buffer).set(raw)
    else {
      const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength)
      for (let i = 0; i < count; i++) values[i] = view.getFloat32(i * 4, true)
    }
    return values
  }
  const data = tensor.floatData ?? []
  if (data.length !== count)
    throw new Error(`initializer "${tensor.name ?? ''}" has ${data.length} float_data values for ${count} elements`)
  return Float32Array.from(data)
}

export function intAttribute(name: string, value: number): OnnxTypes.IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INT, i: value }
}

export function intsAttribute(name: string, values: readonly number[]): OnnxTypes.IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INTS, ints: [...values] }
}
