import type { ServiceDefinition } from '@grpc/grpc-js'
import { describe, expect, it } from 'vitest'
import { isServiceError, type ErrorCode } from '../../src/errors.js'
import { loadInferenceProto, SERVICE_NAME } from '../../src/grpc/server.js'
import {
  checkRequestBounds,
  inferRequestRule,
  MAX_DIMS,
  MAX_PARAMETERS,
  MAX_TENSORS,
  MAX_UNKNOWN_FIELDS
} from '../../src/grpc/request-bounds.js'
import { inferWire, lengthDelimited, packedVarints, repeatedField, varint, varintField } from '../helpers/protobuf-wire.js'

/**
 * The ModelInferRequest scan that runs before protobuf decodes a message: each bound holds at its
 * limit and refuses one entry more, malformed wire bytes are refused, and whatever passes decodes.
 * (Through the gRPC door, with the cost of each refusal: test/integration/grpc-admission.test.ts.)
 */

const MAX_ITEMS = 4
const ITEM_ELEMENTS = 3 * 224 * 224
const rule = inferRequestRule({ maxItems: MAX_ITEMS, maxElements: MAX_ITEMS * ITEM_ELEMENTS })
const decode = (loadInferenceProto()[SERVICE_NAME] as ServiceDefinition).ModelInfer!.requestDeserialize

function outcome(message: Buffer): 'passes' | { code: ErrorCode; message: string } {
  try {
    checkRequestBounds(message, rule)
    return 'passes'
  } catch (err) {
    if (isServiceError(err)) return { code: err.code, message: err.message }
    throw err
  }
}

const model = inferWire.modelName('resnet50')
const bytesContents = (count: number): Buffer =>
  Buffer.concat([model, inferWire.input('input', 'BYTES', [count], repeatedField(lengthDelimited(8, 'x'), count))])

describe('checkRequestBounds', () => {
  it('a real request passes, and protobuf then decodes it', () => {
    const message = Buffer.concat([
      model,
      inferWire.input('input', 'BYTES', [2], repeatedField(lengthDelimited(8, 'jpeg'), 2)),
      lengthDelimited(6, lengthDelimited(1, 'logits'))
    ])
    expect(outcome(message)).toBe('passes')
    expect(decode(message)).toMatchObject({
      model_name: 'resnet50',
      inputs: [{ name: 'input', datatype: 'BYTES', shape: [2] }],
      outputs: [{ name: 'logits' }]
    })
  })

  it.each<[string, (n: number) => Buffer, number, ErrorCode]>([
    ['bytes_contents (images)', bytesContents, MAX_ITEMS, 'TOO_MANY_ITEMS'],
    ['inputs', (n) => Buffer.concat([model, repeatedField(inferWire.input('input', 'FP32', [1]), n)]), MAX_TENSORS, 'BAD_REQUEST'],
    ['outputs', (n) => Buffer.concat([model, repeatedField(inferWire.emptyOutput, n)]), MAX_TENSORS, 'BAD_REQUEST'],
    [
      'raw_input_contents',
      (n) => Buffer.concat([model, repeatedField(inferWire.rawInputContents(Buffer.alloc(0)), n)]),
      MAX_TENSORS,
      'BAD_REQUEST'
    ],
    ['request parameters', (n) => Buffer.concat([model, repeatedField(inferWire.emptyParameter, n)]), MAX_PARAMETERS, 'BAD_REQUEST'],
    [
      'shape dimensions',
      (n) => Buffer.concat([model, lengthDelimited(5, packedVarints(3, new Array<number>(n).fill(1)))]),
      MAX_DIMS,
      'BAD_REQUEST'
    ],
    [
      'fp32_contents elements',
      (n) => Buffer.concat([model, inferWire.input('input', 'FP32', [1], lengthDelimited(6, Buffer.alloc(n * 4)))]),
      MAX_ITEMS * ITEM_ELEMENTS,
      'BAD_REQUEST'
    ],
    [
      'fields the proto does not declare',
      (n) => Buffer.concat([model, repeatedField(varintField(99, 1), n)]),
      MAX_UNKNOWN_FIELDS,
      'BAD_REQUEST'
    ]
  ])('%s: %i pass, one more is refused %s', (_name, message, limit, code) => {
    expect(outcome(message(limit))).toBe('passes')
    expect(outcome(message(limit + 1))).toMatchObject({ code })
  })

  it('singular fields occur once; fields no model reads must be empty', () => {
    expect(outcome(Buffer.concat([model, model]))).toMatchObject({
      code: 'BAD_REQUEST',
      message: expect.stringMatching(/model_name occurs more than once/)
    })
    const int64 = Buffer.concat([model, inferWire.input('input', 'INT64', [1], lengthDelimited(3, varint(1)))])
    expect(outcome(int64)).toMatchObject({
      message: expect.stringMatching(/int64_contents must be empty \(no model this server serves takes that datatype\)/)
    })
    expect(outcome(Buffer.concat([model, inferWire.input('input', 'INT64', [1], lengthDelimited(3, Buffer.alloc(0)))]))).toBe('passes')
  })

  it.each<[string, Buffer, RegExp]>([
    ['a varint that runs past the end', Buffer.from([0x0a, 0x80]), /a varint runs past the end/],
    ['a varint longer than 10 bytes', Buffer.concat([Buffer.from([0x08]), Buffer.alloc(11, 0x80)]), /longer than 10 bytes/],
    [
      'a field longer than the message',
      Buffer.concat([Buffer.from([0x0a]), varint(100), Buffer.from('short')]),
      /runs past the end of its message/
    ],
    ['field number 0', Buffer.from([0x00, 0x01]), /holds field number 0/],
    ['a group (not proto3)', varint(99 * 8 + 3), /wire type 3/],
    ['an input that is not a message', Buffer.concat([model, varintField(5, 0)]), /inputs is a message but has wire type 0/],
    [
      'packed varints cut inside a varint',
      Buffer.concat([model, lengthDelimited(5, lengthDelimited(3, Buffer.from([0x01, 0x80])))]),
      /packed varints end inside a varint/
    ],
    [
      'fp32_contents that are not whole floats',
      Buffer.concat([model, inferWire.input('input', 'FP32', [1], lengthDelimited(6, Buffer.alloc(6)))]),
      /not a whole number of 4-byte floats/
    ]
  ])('refuses %s as malformed protobuf', (_name, message, detail) => {
    expect(outcome(message)).toEqual({ code: 'BAD_REQUEST', message: expect.stringMatching(/not valid protobuf/) as string })
    expect(outcome(message)).toMatchObject({ message: expect.stringMatching(detail) })
  })
})
