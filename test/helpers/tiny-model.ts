import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, dirname, join } from 'node:path'
import onnxProto from 'onnx-proto'
import { float32ArrayToFloat16Bits } from '../../src/model-tools/fp16.js'
import { littleEndianBytes } from '../../src/model-tools/onnx-edit.js'

/** Small real ONNX classifiers for the import tests: loaded and served in milliseconds, no Python needed. */

const { onnx } = onnxProto
export const CLASSES = 1000

const temps: string[] = []

/** A fresh temporary folder, removed by removeTempDirs. */
export async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  temps.push(dir)
  return dir
}

export async function removeTempDirs(): Promise<void> {
  await Promise.all(temps.splice(0).map((t) => rm(t, { recursive: true, force: true })))
}

/** A float32 CHW image tensor of the right size, as bytes. */
export const zeroImage = (): Uint8Array => new Uint8Array(3 * 224 * 224 * 4)

export interface TinyModel {
  /** Image inputs [batch, 3, 224, 224]; a second entry is a [1] gain the output is multiplied by. */
  readonly inputs: readonly string[]
  readonly output?: string
  /** A second output: the pooled [batch, 3] features. */
  readonly featuresOutput?: string
  readonly batch?: number | 'N'
  /** The scores go through a Softmax (and an Identity after it) before the output: probabilities. */
  readonly softmax?: boolean
  /** The weights are stored in a file beside the model (`<file>.data`), as onnx.save(save_as_external_data=True) writes. */
  readonly externalData?: boolean
  /** The image input is [batch, side, side, 3] (TensorFlow/Keras), transposed inside. */
  readonly channelsLast?: boolean
  /** The image input's fixed side (default 224). */
  readonly side?: number
  /** Exported in float16 (model.half()): input, weights and output float16. */
  readonly float16?: boolean
  /** Broken at run time, valid at load: answers only the batch's first row, whatever its size. */
  readonly firstRowOnly?: boolean
  /** The square root of the scores: NaN for every negative one (a zero image's are all 0). */
  readonly sqrt?: boolean
  /** Adds a constant [rows, 1000]: ONNX Runtime refuses to run any batch but 1 and `rows` images. */
  readonly addRows?: number
}

/**
 * A real, tiny classifier (global average pool → [3, 1000] matrix), so that import, loading and
 * serving are exercised in milliseconds without Python.
 */
export async function writeTinyModel(path: string, model: TinyModel): Promise<string> {
  const FLOAT = model.float16 ? onnx.TensorProto.DataType.FLOAT16 : onnx.TensorProto.DataType.FLOAT
  const dims = (shape: Array<number | string>): { dim: Array<{ dimValue: number } | { dimParam: string }> } => ({
    dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d }))
  })
  const info = (name: string, shape: Array<number | string>) => ({ name, type: { tensorType: { elemType: FLOAT, shape: dims(shape) } } })
  const batch = model.batch ?? 'N'
  const [image, gain] = model.inputs
  const output = model.output ?? 'logits'
  const weights = new Float32Array(3 * CLASSES).map((_, i) => ((i * 7919) % 1000) / 1000 - 0.5)
  const side = model.side ?? 224
  const nodes = [
    ...(model.channelsLast
      ? [
          {
            opType: 'Transpose',
            input: [image!],
            output: ['nchw'],
            attribute: [{ name: 'perm', type: onnx.AttributeProto.AttributeType.INTS, ints: [0, 3, 1, 2] }]
          }
        ]
      : []),
    { opType: 'GlobalAveragePool', input: [model.channelsLast ? 'nchw' : image!], output: ['pooled'] },
    { opType: 'Flatten', input: ['pooled'], output: [model.featuresOutput ?? 'features'] },
    {
      opType: 'MatMul',
      input: [model.featuresOutput ?? 'features', 'weights'],
      output: [gain === undefined && !model.softmax ? output : 'scores']
    },
    ...(gain === undefined ? [] : [{ opType: 'Mul', input: ['scores', gain], output: [model.softmax ? 'gained' : output] }]),
    ...(model.softmax
      ? [
          { opType: 'Softmax', input: [gain === undefined ? 'scores' : 'gained'], output: ['softmaxed'] },
          { opType: 'Identity', input: ['softmaxed'], output: [output] }
        ]
      : [])
  ]
  // Run-time faults, after everything else, each fed the one before: the last node's output is renamed.
  const faultOps: Array<{ opType: string; operands: string[] }> = [
    ...(model.sqrt ? [{ opType: 'Sqrt', operands: [] }] : []),
    ...(model.addRows === undefined ? [] : [{ opType: 'Add', operands: ['rows'] }]),
    ...(model.firstRowOnly ? [{ opType: 'Slice', operands: ['zero', 'one', 'zero'] }] : [])
  ]
  const faults = faultOps.map(({ opType, operands }, i) => ({
    opType,
    input: [`fault-${i}`, ...operands],
    output: [i === faultOps.length - 1 ? output : `fault-${i + 1}`]
  }))
  if (faults.length > 0) nodes[nodes.length - 1]!.output = ['fault-0']
  const weightBytes = model.float16 ? littleEndianBytes(float32ArrayToFloat16Bits(weights)) : new Uint8Array(weights.buffer)
  const dataFile = `${basename(path)}.data`
  // raw_data is little-endian, as the Float32Array is on every host these tests run on.
  const initializer = model.externalData
    ? {
        name: 'weights',
        dims: [3, CLASSES],
        dataType: FLOAT,
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: 'location', value: dataFile },
          { key: 'offset', value: '0' },
          { key: 'length', value: String(weightBytes.byteLength) }
        ]
      }
    : { name: 'weights', dims: [3, CLASSES], dataType: FLOAT, rawData: weightBytes }
  if (model.externalData) await writeFile(join(dirname(path), dataFile), weightBytes)
  const proto = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'tiny',
      node: [...nodes, ...faults],
      initializer: [
        initializer,
        ...(model.firstRowOnly
          ? [
              { name: 'zero', dims: [1], dataType: onnx.TensorProto.DataType.INT64, int64Data: [0] },
              { name: 'one', dims: [1], dataType: onnx.TensorProto.DataType.INT64, int64Data: [1] }
            ]
          : []),
        ...(model.addRows === undefined
          ? []
          : [{ name: 'rows', dims: [model.addRows, CLASSES], dataType: FLOAT, rawData: new Uint8Array(model.addRows * CLASSES * 4) }])
      ],
      input: [
        info(image!, model.channelsLast ? [batch, side, side, 3] : [batch, 3, side, side]),
        ...(gain === undefined ? [] : [info(gain, [1])])
      ],
      output: [info(output, [batch, CLASSES]), ...(model.featuresOutput === undefined ? [] : [info(model.featuresOutput, [batch, 3])])]
    }
  })
  await writeFile(path, onnx.ModelProto.encode(proto).finish())
  return path
}
