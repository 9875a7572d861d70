import { ServiceError, type ErrorCode } from '../errors.js'
import { MAX_LISTED_ELEMENTS } from '../open-inference/tensor-limits.js'

/**
 * Bounds on a ModelInferRequest read off its wire bytes before protobuf decodes it. Decoding
 * allocates per entry (an object for each `outputs` entry, a Buffer for each `bytes_contents`
 * element, a number for each packed varint), so a 16 MB message of 8 M empty entries costs seconds
 * of event loop and a gigabyte of heap. The scan walks the message's own structure (inputs, their
 * contents and parameters) with a cursor and no allocation per field; it stops at the first field
 * over its bound, so refusing an absurd message costs microseconds.
 *
 * Field numbers are those of src/grpc/inference.proto. Fields the scan does not name are skipped as
 * protobuf decoders skip them, at most MAX_UNKNOWN_FIELDS per message.
 */

export interface RequestBounds {
  /** Most images one request may carry (--max-batch-items): the bound on BYTES elements. */
  readonly maxItems: number
  /** Most tensor elements one input may carry: maxItems × the largest model input, per image. */
  readonly maxElements: number
}

/** Inputs, requested outputs and raw contents: the models take one of each; room for more. */
export const MAX_TENSORS = 16
/** Entries of one parameters map. */
export const MAX_PARAMETERS = 64
/** Dimensions of one shape (the models' inputs have 4). */
export const MAX_DIMS = 16
/** Fields a message may carry that the proto does not declare (newer clients), per message. */
export const MAX_UNKNOWN_FIELDS = 64

const enum Wire {
  VARINT = 0,
  FIXED64 = 1,
  LENGTH = 2,
  FIXED32 = 5
}

/** How a field's entries are counted: one per occurrence, or the elements inside packed bytes. */
type Counting = 'occurrences' | 'varints' | 'fixed32'

interface FieldRule {
  readonly name: string
  /** Most entries (or elements) one message may hold; 0 for fields the server never reads. */
  readonly max: number
  readonly counting: Counting
  readonly message: MessageRule | undefined
  /** The code a refusal carries (TOO_MANY_ITEMS for images, else BAD_REQUEST). */
  readonly code: ErrorCode
  /** Why the bound is what it is, for the refusal. */
  readonly reason: string
  /** Typed tensor contents: their elements count towards the request's MAX_LISTED_ELEMENTS. */
  readonly listed: boolean
}

interface MessageRule {
  readonly name: string
  /** Indexed by field number; undefined: not declared. */
  readonly fields: readonly (FieldRule | undefined)[]
}

function field(
  name: string,
  max: number,
  reason: string,
  options: { counting?: Counting; message?: MessageRule; code?: ErrorCode; listed?: boolean } = {}
): FieldRule {
  return {
    name,
    max,
    counting: options.counting ?? 'occurrences',
    message: options.message,
    code: options.code ?? 'BAD_REQUEST',
    reason,
    listed: options.listed ?? false
  }
}

function message(name: string, fields: Record<number, FieldRule>): MessageRule {
  const table: (FieldRule | undefined)[] = []
  for (const [number, rule] of Object.entries(fields)) table[Number(number)] = rule
  return { name, fields: table }
}

const SINGULAR = 'a singular field'
const UNREAD = 'no model this server serves takes that datatype'

const PARAMETER = message('InferParameter', {
  1: field('bool_param', 1, SINGULAR),
  2: field('int64_param', 1, SINGULAR),
  3: field('string_param', 1, SINGULAR),
  4: field('double_param', 1, SINGULAR),
  5: field('uint64_param', 1, SINGULAR)
})

const PARAMETER_ENTRY = message('parameters entry', {
  1: field('key', 1, SINGULAR),
  2: field('value', 1, SINGULAR, { message: PARAMETER })
})

function parameters(number: number): Record<number, FieldRule> {
  return { [number]: field('parameters', MAX_PARAMETERS, 'the server bounds parameters per map', { message: PARAMETER_ENTRY }) }
}

/** The rule for a whole ModelInferRequest under these bounds; built once per door. */
export function inferRequestRule(bounds: RequestBounds): MessageRule {
  const elements = `--max-batch-items (${bounds.maxItems}) images of the largest model input`
  const contents = message('InferTensorContents', {
    1: field('bool_contents', 0, UNREAD, { counting: 'varints' }),
    2: field('int_contents', 0, UNREAD, { counting: 'varints' }),
    3: field('int64_contents', 0, UNREAD, { counting: 'varints' }),
    4: field('uint_contents', bounds.maxElements, elements, { counting: 'varints', listed: true }),
    5: field('uint64_contents', 0, UNREAD, { counting: 'varints' }),
    6: field('fp32_contents', bounds.maxElements, elements, { counting: 'fixed32', listed: true }),
    7: field('fp64_contents', 0, UNREAD, { counting: 'varints' }),
    8: field('bytes_contents', bounds.maxItems, `one element per image, at most --max-batch-items (${bounds.maxItems})`, {
      code: 'TOO_MANY_ITEMS'
    })
  })
  const input = message('InferInputTensor', {
    1: field('name', 1, SINGULAR),
    2: field('datatype', 1, SINGULAR),
    3: field('shape', MAX_DIMS, 'the server bounds dimensions per shape', { counting: 'varints' }),
    ...parameters(4),
    5: field('contents', 1, SINGULAR, { message: contents })
  })
  const output = message('InferRequestedOutputTensor', { 1: field('name', 1, SINGULAR), ...parameters(2) })
  const tensors = 'the server bounds tensors per request'
  return message('ModelInferRequest', {
    1: field('model_name', 1, SINGULAR),
    2: field('model_version', 1, SINGULAR),
    3: field('id', 1, SINGULAR),
    ...parameters(4),
    5: field('inputs', MAX_TENSORS, tensors, { message: input }),
    6: field('outputs', MAX_TENSORS, tensors, { message: output }),
    7: field('raw_input_contents', MAX_TENSORS, tensors)
  })
}

function malformed(detail: string): ServiceError {
  return new ServiceError('BAD_REQUEST', `The message is not valid protobuf: ${detail}.`)
}

/**
 * Typed contents decode to one JavaScript number per element, on the event loop: 9.6 M packed
 * uint_contents (--max-batch-items images, 9.6 MB) took about a second and half a gigabyte of heap
 * a call, 16 such calls froze the loop for 13.8 s; 2^20 elements decode in 0.09–0.19 s here.
 */
function tooManyListed(): ServiceError {
  return new ServiceError(
    'BAD_REQUEST',
    `The request lists more than ${MAX_LISTED_ELEMENTS} tensor elements in typed contents (uint_contents, fp32_contents); send large tensors as raw_input_contents, as tritonclient does (KServe's InferInput.set_data_from_numpy(..., binary_data=True)).`
  )
}

/** A position in the message bytes; each walk of a sub-message reads up to its own end. Throws BAD_REQUEST past `end`. */
export class WireCursor {
  pos: number
  /** Typed tensor elements seen so far in the whole message (FieldRule.listed). */
  listed = 0

  constructor(
    readonly bytes: Uint8Array,
    start: number
  ) {
    this.pos = start
  }

  /** A varint as a number: exact up to 2^53, which covers every tag and length a message can hold. */
  varint(end: number): number {
    let value = 0
    let scale = 1
    for (let i = 0; i < 10; i++) {
      if (this.pos >= end) throw malformed('a varint runs past the end of its message')
      const byte = this.bytes[this.pos++]!
      value += (byte & 0x7f) * scale
      if (byte < 0x80) return value
      scale *= 0x80
    }
    throw malformed('a varint is longer than 10 bytes')
  }

  skip(bytes: number, end: number): void {
    if (bytes > end - this.pos) throw malformed('a field runs past the end of its message')
    this.pos += bytes
  }
}

/** Elements in packed varint bytes: one per byte that ends a varint. */
function packedVarints(bytes: Uint8Array, start: number, end: number): number {
  let count = 0
  for (let i = start; i < end; i++) if (bytes[i]! < 0x80) count++
  if (end > start && bytes[end - 1]! >= 0x80) throw malformed('packed varints end inside a varint')
  return count
}

/** Entries a field adds to its count: packed bytes hold many elements, anything else is one. */
function entriesOf(rule: FieldRule, wire: number, bytes: Uint8Array, start: number, end: number): number {
  if (wire !== Wire.LENGTH || rule.counting === 'occurrences') return 1
  // A field the server never reads: any element at all is one too many, whatever its encoding.
  if (rule.max === 0) return end > start ? 1 : 0
  switch (rule.counting) {
    case 'varints':
      return packedVarints(bytes, start, end)
    case 'fixed32':
      if ((end - start) % 4 !== 0) throw malformed(`packed ${rule.name} is not a whole number of 4-byte floats`)
      return (end - start) / 4
  }
}

/** Walks one message from cursor.pos to end; recursion follows the rule tree (four levels deep), never the input. */
function scanMessage(cursor: WireCursor, end: number, rule: MessageRule): void {
  const counts: number[] = new Array<number>(rule.fields.length).fill(0)
  let unknown = 0
  while (cursor.pos < end) {
    const tag = cursor.varint(end)
    const number = Math.floor(tag / 8)
    const wire = tag % 8
    let start = cursor.pos
    switch (wire) {
      case Wire.VARINT:
        cursor.varint(end)
        break
      case Wire.FIXED64:
        cursor.skip(8, end)
        break
      case Wire.FIXED32:
        cursor.skip(4, end)
        break
      case Wire.LENGTH: {
        const length = cursor.varint(end)
        start = cursor.pos
        cursor.skip(length, end)
        break
      }
      default:
        throw malformed(`field ${number} of ${rule.name} has wire type ${wire} (groups are not proto3)`)
    }
    if (number === 0) throw malformed(`${rule.name} holds field number 0`)
    const fieldRule = rule.fields[number]
    if (fieldRule === undefined) {
      if (++unknown > MAX_UNKNOWN_FIELDS)
        throw malformed(`${rule.name} holds more than ${MAX_UNKNOWN_FIELDS} fields the protocol does not declare`)
      continue
    }
    const entries = entriesOf(fieldRule, wire, cursor.bytes, start, cursor.pos)
    counts[number]! += entries
    if (counts[number]! > fieldRule.max) {
      const bound =
        fieldRule.max === 0
          ? 'must be empty'
          : fieldRule.max === 1
            ? 'occurs more than once'
            : `holds more than ${fieldRule.max} ${fieldRule.counting === 'occurrences' ? 'entries' : 'elements'}`
      throw new ServiceError(fieldRule.code, `${rule.name}.${fieldRule.name} ${bound} (${fieldRule.reason}).`)
    }
    if (fieldRule.listed && (cursor.listed += entries) > MAX_LISTED_ELEMENTS) throw tooManyListed()
    if (fieldRule.message !== undefined) {
      if (wire !== Wire.LENGTH) throw malformed(`${rule.name}.${fieldRule.name} is a message but has wire type ${wire}`)
      const after = cursor.pos
      cursor.pos = start
      scanMessage(cursor, after, fieldRule.message)
    }
  }
}

/**
 * Throws ServiceError (BAD_REQUEST, TOO_MANY_ITEMS) when the bytes of a message are malformed or
 * hold more entries than `rule` allows anywhere; returns when protobuf may decode them.
 */
export function checkRequestBounds(bytes: Uint8Array, rule: MessageRule): void {
  scanMessage(new WireCursor(bytes, 0), bytes.byteLength, rule)
}

export type { MessageRule }
