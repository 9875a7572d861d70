import { WireCursor } from './request-bounds.js'

/**
 * The model name, version and id of a ModelInferRequest read off its wire bytes without decoding
 * the rest: a streamed request that was refused before or during decoding is still answered with
 * the id it carried, so the client can tell which request failed. Only top-level fields are
 * walked (length-delimited ones are skipped, not read), so the cost is a few steps per field; a
 * malformed message yields what was read before the fault.
 */

export interface RequestHead {
  model_name: string
  model_version: string
  id: string
}

/** Field numbers of src/grpc/inference.proto's ModelInferRequest. */
const MODEL_NAME = 1
const MODEL_VERSION = 2
const ID = 3
/**
 * Longer model names and versions are not ones a client meant; they are left out of the answer.
 * The id is echoed whole, as a successful answer echoes it (the message was admitted at its size).
 */
const MAX_NAME_BYTES = 1024

export function requestHead(bytes: Uint8Array): RequestHead {
  const head: RequestHead = { model_name: '', model_version: '', id: '' }
  const end = bytes.byteLength
  const cursor = new WireCursor(bytes, 0)
  try {
    while (cursor.pos < end) {
      const tag = cursor.varint(end)
      const field = Math.floor(tag / 8)
      const wire = tag % 8
      if (wire === 0) {
        cursor.varint(end)
      } else if (wire === 1) {
        cursor.skip(8, end)
      } else if (wire === 5) {
        cursor.skip(4, end)
      } else if (wire === 2) {
        const length = cursor.varint(end)
        const start = cursor.pos
        cursor.skip(length, end)
        if (field === ID || ((field === MODEL_NAME || field === MODEL_VERSION) && length <= MAX_NAME_BYTES)) {
          const text = Buffer.from(bytes.buffer, bytes.byteOffset + start, length).toString('utf8')
          if (field === MODEL_NAME) head.model_name = text
          else if (field === MODEL_VERSION) head.model_version = text
          else head.id = text
        }
      } else {
        break
      }
    }
  } catch {
    // The cursor's BAD_REQUEST for a malformed message: the head keeps what was read before it.
  }
  return head
}
