/**
 * Protocol Buffers wire bytes written by hand, for requests no well-behaved encoder would produce
 * (millions of empty repeated entries, fields in odd places). Written apart from the server's
 * scanner so a test of one does not lean on the other.
 */

const VARINT = 0
const LENGTH_DELIMITED = 2

export function varint(value: number): Buffer {
  const bytes: number[] = []
  let v = value
  while (v >= 0x80) {
    bytes.push((v % 0x80) | 0x80)
    v = Math.floor(v / 0x80)
  }
  bytes.push(v)
  return Buffer.from(bytes)
}

function tag(field: number, wireType: number): Buffer {
  return varint(field * 8 + wireType)
}

/** A length-delimited field: a string, bytes, a sub-message or a packed repeated scalar. */
export function lengthDelimited(field: number, payload: Uint8Array | string): Buffer {
  const bytes = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload
  return Buffer.concat([tag(field, LENGTH_DELIMITED), varint(bytes.byteLength), bytes])
}

export function varintField(field: number, value: number): Buffer {
  return Buffer.concat([tag(field, VARINT), varint(value)])
}

/** `count` copies of one encoded field, as one buffer (the bulk of an attack message). */
export function repeatedField(encoded: Buffer, count: number): Buffer {
  const out = Buffer.allocUnsafe(encoded.byteLength * count)
  for (let i = 0; i < count; i++) encoded.copy(out, i * encoded.byteLength)
  return out
}

/** How many copies of a field of `fieldBytes` fit in `totalBytes`. */
export function copiesIn(totalBytes: number, fieldBytes: number): number {
  return Math.floor(totalBytes / fieldBytes)
}

/** Packed varints (a repeated integer field's usual encoding), as one length-delimited field. */
export function packedVarints(field: number, values: readonly number[]): Buffer {
  return lengthDelimited(field, Buffer.concat(values.map(varint)))
}

/**
 * Pieces of a ModelInferRequest, by the field numbers of src/grpc/inference.proto (the protocol's):
 * model_name 1, parameters 4, inputs 5, outputs 6, raw_input_contents 7; in an input, name 1,
 * datatype 2, shape 3, contents 5.
 */
export const inferWire = {
  modelName: (name: string): Buffer => lengthDelimited(1, name),
  /** One `inputs` entry; `contents` is an InferTensorContents message's bytes. */
  input: (name: string, datatype: string, shape: readonly number[], contents?: Buffer): Buffer =>
    lengthDelimited(
      5,
      Buffer.concat([
        lengthDelimited(1, name),
        lengthDelimited(2, datatype),
        packedVarints(3, shape),
        contents === undefined ? Buffer.alloc(0) : lengthDelimited(5, contents)
      ])
    ),
  emptyOutput: lengthDelimited(6, ''),
  emptyParameter: lengthDelimited(4, ''),
  rawInputContents: (bytes: Uint8Array): Buffer => lengthDelimited(7, bytes)
}
