import { describe, expect, it } from 'vitest'
import { isServiceError, type ErrorCode } from '../../src/errors.js'
import type { ModelContract } from '../../src/open-inference/metadata.js'
import type { InferInput, RequestedOutput } from '../../src/open-inference/types.js'
import { prepareInput, prepareOutputs } from '../../src/open-inference/validation.js'
import { configFromPreset, type ModelConfig } from '../../src/repository/model-config.js'
import { lengthPrefixed, tensorBytes } from '../helpers/v2-bytes.js'

/**
 * A V2 inference request checked against the model before any image runs: the one input, its
 * datatype and shape against the data, the items cut per image, the outputs and their
 * classification k. The models are configs only: validation never needs a session.
 */

const CROP = 224
const ITEM = 3 * CROP * CROP
const MAX_ITEMS = 4

function model(config: ModelConfig, classes = 1000): ModelContract {
  const itemBytes = config.input.datatype === 'float32' ? ITEM * 4 : ITEM
  return { entry: { name: 'm', dir: '', version: '1', modelPath: '', config, labels: [] }, numClasses: classes, tensorItemBytes: itemBytes }
}

const floatModel = model(configFromPreset('torchvision', { synthetic: true }))
const uint8Config = configFromPreset('torchvision', { synthetic: true, inputName: 'pixels' })
const uint8Model = model({ ...uint8Config, input: { name: 'pixels', layout: 'NHWC', datatype: 'uint8' } })

const bytesInput = (shape: number[], data: InferInput['data']): InferInput => ({ name: 'input', datatype: 'BYTES', shape, data })
const fp32Input = (shape: number[], data: InferInput['data']): InferInput => ({ name: 'input', datatype: 'FP32', shape, data })

function refusal(run: () => unknown): { code: ErrorCode; message: string } {
  try {
    run()
  } catch (err) {
    if (isServiceError(err)) return { code: err.code, message: err.message }
    throw err
  }
  throw new Error('accepted')
}

describe('prepareInput: encoded images (BYTES)', () => {
  const images = [Buffer.from('one'), Buffer.from('two')]

  it('[N] and [N, 1], as byte strings or length-prefixed raw bytes, give the N images in order', () => {
    for (const prepared of [
      prepareInput(floatModel, [bytesInput([2], { form: 'elements', values: images })], MAX_ITEMS),
      prepareInput(floatModel, [bytesInput([2, 1], { form: 'elements', values: images })], MAX_ITEMS),
      prepareInput(floatModel, [bytesInput([2], { form: 'raw', bytes: lengthPrefixed(...images) })], MAX_ITEMS)
    ]) {
      expect(prepared.encoded).toBe(true)
      expect(prepared.items.map((b) => Buffer.from(b).toString())).toEqual(['one', 'two'])
    }
  })

  it.each<[string, InferInput, ErrorCode, RegExp]>([
    ['[2, 2]', bytesInput([2, 2], { form: 'elements', values: images }), 'BAD_REQUEST', /shape \[N\] or \[N, 1\]; got \[2, 2\]/],
    [
      'a count the data does not hold',
      bytesInput([3], { form: 'elements', values: images }),
      'BAD_REQUEST',
      /holds 2 elements; its shape says 3/
    ],
    ['numbers', bytesInput([2], { form: 'numbers', values: [1, 2] }), 'BAD_REQUEST', /byte strings \(JSON: base64 strings\), not numbers/],
    ['no images', bytesInput([0], { form: 'elements', values: [] }), 'BAD_REQUEST', /first dimension is 0/],
    [
      'more images than one request may carry',
      bytesInput([5], { form: 'elements', values: [] }),
      'TOO_MANY_ITEMS',
      /Got 5; the maximum is 4/
    ],
    ['a negative dimension', bytesInput([-1], { form: 'elements', values: [] }), 'BAD_REQUEST', /not a non-negative integer/]
  ])('refuses %s', (_name, input, code, message) => {
    expect(refusal(() => prepareInput(floatModel, [input], MAX_ITEMS))).toEqual({ code, message: expect.stringMatching(message) as string })
  })
})

describe("prepareInput: the model's own tensor", () => {
  const two = new Float32Array(2 * ITEM).map((_, i) => (i % 97) / 97)

  it('FP32 [N, 3, 224, 224] for a float32 NCHW model, as numbers or raw bytes: one view per image', () => {
    const fromNumbers = prepareInput(floatModel, [fp32Input([2, 3, CROP, CROP], { form: 'numbers', values: two })], MAX_ITEMS)
    const fromRaw = prepareInput(floatModel, [fp32Input([2, 3, CROP, CROP], { form: 'raw', bytes: tensorBytes(two) })], MAX_ITEMS)
    for (const prepared of [fromNumbers, fromRaw]) {
      expect(prepared.encoded).toBe(false)
      expect(prepared.items.map((b) => b.byteLength)).toEqual([ITEM * 4, ITEM * 4])
      expect(Buffer.from(prepared.items[1]!).equals(tensorBytes(two.subarray(ITEM)))).toBe(true)
    }
  })

  it('UINT8 [N, 224, 224, 3] for a uint8 NHWC model; values must be bytes', () => {
    const values = new Array<number>(ITEM).fill(255)
    expect(
      prepareInput(
        uint8Model,
        [{ name: 'pixels', datatype: 'UINT8', shape: [1, CROP, CROP, 3], data: { form: 'numbers', values } }],
        MAX_ITEMS
      ).items[0]
    ).toHaveLength(ITEM)
    values[9] = 256
    expect(
      refusal(() =>
        prepareInput(
          uint8Model,
          [{ name: 'pixels', datatype: 'UINT8', shape: [1, CROP, CROP, 3], data: { form: 'numbers', values } }],
          MAX_ITEMS
        )
      ).message
    ).toMatch(/UINT8 element 9 is 256; it must be an integer from 0 to 255/)
  })

  it('refuses NaN and ±Infinity, naming the image and the element', () => {
    const bad = two.slice()
    bad[ITEM + 7] = NaN
    expect(
      refusal(() => prepareInput(floatModel, [fp32Input([2, 3, CROP, CROP], { form: 'raw', bytes: tensorBytes(bad) })], MAX_ITEMS)).message
    ).toMatch(/image 1, element 7 is NaN/)
    bad[ITEM + 7] = -Infinity
    expect(
      refusal(() => prepareInput(floatModel, [fp32Input([2, 3, CROP, CROP], { form: 'numbers', values: bad })], MAX_ITEMS)).message
    ).toMatch(/image 1, element 7 is -Infinity/)
  })

  it.each<[string, InferInput, RegExp]>([
    [
      'the other layout',
      fp32Input([1, CROP, CROP, 3], { form: 'numbers', values: two.subarray(0, ITEM) }),
      /takes FP32 \[N, 3, 224, 224\]; got \[1, 224, 224, 3\]/
    ],
    [
      'fewer numbers than the shape',
      fp32Input([2, 3, CROP, CROP], { form: 'numbers', values: two.subarray(1) }),
      /has 301056 elements; the data holds 301055/
    ],
    [
      'raw bytes of another size',
      fp32Input([2, 3, CROP, CROP], { form: 'raw', bytes: tensorBytes(two.subarray(1)) }),
      /is 1204224 bytes of data; got 1204220/
    ],
    ['byte strings', fp32Input([1, 3, CROP, CROP], { form: 'elements', values: [] }), /carries numbers, not byte strings/],
    [
      'the datatype of another model',
      { name: 'input', datatype: 'UINT8', shape: [1, CROP, CROP, 3], data: { form: 'numbers', values: [] } },
      /takes BYTES \[N\] \(encoded images\) or FP32 \[N, 3, 224, 224\]; got UINT8/
    ],
    [
      'a datatype the protocol does not define',
      { name: 'input', datatype: 'FP8', shape: [1], data: { form: 'numbers', values: [] } },
      /Unknown datatype "FP8"/
    ],
    [
      'an input of another name',
      { name: 'image', datatype: 'BYTES', shape: [1], data: { form: 'elements', values: [] } },
      /has no input "image"; its input is "input"/
    ]
  ])('refuses %s', (_name, input, message) => {
    expect(refusal(() => prepareInput(floatModel, [input], MAX_ITEMS))).toEqual({
      code: 'BAD_REQUEST',
      message: expect.stringMatching(message) as string
    })
  })

  it('refuses anything but exactly one input', () => {
    expect(refusal(() => prepareInput(floatModel, [], MAX_ITEMS)).message).toMatch(/takes one input, "input" .*; got 0/)
  })
})

describe('prepareOutputs', () => {
  const output = (name: string, classification?: number): RequestedOutput => ({ name, classification })

  it('none asked for: the raw output tensor', () => {
    expect(prepareOutputs(floatModel, undefined, 100)).toEqual([{ name: 'logits', classification: undefined }])
    expect(prepareOutputs(floatModel, [], 100)).toEqual([{ name: 'logits', classification: undefined }])
  })

  it('classification k ≥ 1, answered with at most the smaller of --max-topk and the classes (as Triton clamps to the classes; 101 was refused)', () => {
    expect(prepareOutputs(floatModel, [output('logits', 5)], 100)).toEqual([output('logits', 5)])
    expect(prepareOutputs(floatModel, [output('logits', 101)], 100)).toEqual([output('logits', 100)])
    expect(prepareOutputs(model(floatModel.entry.config, 10), [output('logits', 1000)], 100)).toEqual([output('logits', 10)])
    for (const k of [0, -1, 1.5, NaN]) {
      expect(refusal(() => prepareOutputs(floatModel, [output('logits', k)], 100))).toEqual({
        code: 'INVALID_TOPK',
        message: expect.stringMatching(/must be an integer ≥ 1/) as string
      })
    }
  })

  it('refuses an output the model lacks, and one asked for twice', () => {
    expect(refusal(() => prepareOutputs(floatModel, [output('probs')], 100)).message).toMatch(
      /has no output "probs"; its output is "logits"/
    )
    expect(refusal(() => prepareOutputs(floatModel, [output('logits'), output('logits', 3)], 100)).message).toMatch(/requested twice/)
  })
})
