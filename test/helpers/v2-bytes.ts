/**
 * The Open Inference Protocol's raw BYTES layout (each element: 4-byte little-endian length, then
 * the bytes), written independently of the server's own code so the tests check it rather than
 * agree with it.
 */

export function lengthPrefixed(...elements: Uint8Array[]): Buffer {
  return Buffer.concat(
    elements.flatMap((e) => {
      const length = Buffer.alloc(4)
      length.writeUInt32LE(e.byteLength)
      return [length, e]
    })
  )
}

export function splitLengthPrefixed(raw: Buffer): string[] {
  const out: string[] = []
  for (let offset = 0; offset < raw.byteLength;) {
    const length = raw.readUInt32LE(offset)
    out.push(raw.toString('utf8', offset + 4, offset + 4 + length))
    offset += 4 + length
  }
  return out
}

/** A float32 tensor's bytes as raw contents carry them (little-endian, as on every supported host). */
export function tensorBytes(values: Float32Array): Buffer {
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength)
}
