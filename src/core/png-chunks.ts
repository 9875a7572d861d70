import { inflateSync } from 'node:zlib'

/**
 * The compressed text of a PNG, measured before libpng reads it. libpng inflates every zTXt chunk
 * and every compressed iTXt chunk it meets before the image data, and discards the text: a chunk
 * of 48 KB of zlib inflates to 48 MiB, and 300 of them (a 14.7 MB file) held a decode thread 21 s
 * for the header and 29 s more for the pixels, twice per request, outside the decode timeout
 * (libvips is still opening the file) and outside the decode budget (it charges for pixels). Real
 * files carry a few kilobytes of text (XMP, an EXIF "raw profile"), so the text is inflated here
 * up to a bound, a few milliseconds at most, and a file over it is refused. Chunks after the first
 * IDAT are not read when the image is decoded, and are not measured.
 */

/** Compressed text chunks a PNG may have before its image data. */
export const MAX_PNG_TEXT_CHUNKS = 64
/** What they may inflate to together. */
export const MAX_PNG_TEXT_BYTES = 1 << 20

const SIGNATURE_BYTES = 8
/** Length, type; the CRC follows the data. */
const CHUNK_HEADER_BYTES = 8
const CRC_BYTES = 4
/** A keyword is 1–79 bytes, then a NUL. */
const MAX_KEYWORD_BYTES = 80

export interface PngText {
  /** zTXt and compressed iTXt chunks before the first IDAT (counting stops past the limit). */
  readonly chunks: number
  /** What they inflate to, counted no further than MAX_PNG_TEXT_BYTES + 1. */
  readonly inflatedBytes: number
}

/** Where a text chunk's zlib stream starts in `data`, or -1 when the chunk holds none. */
function zlibStart(type: string, data: Uint8Array): number {
  const nul = data.subarray(0, MAX_KEYWORD_BYTES).indexOf(0)
  if (nul < 0) return -1
  // zTXt: keyword, NUL, method, stream.
  if (type === 'zTXt') return nul + 2
  // iTXt: keyword, NUL, compression flag, method, language tag, NUL, translated keyword, NUL, text.
  if (data[nul + 1] !== 1) return -1
  const language = data.indexOf(0, nul + 3)
  const translated = language < 0 ? -1 : data.indexOf(0, language + 1)
  return translated < 0 ? -1 : translated + 1
}

/** Bytes `stream` inflates to, up to `cap` + 1; a stream zlib cannot read counts 0 (libpng drops it). */
function inflatedSize(stream: Uint8Array, cap: number): number {
  try {
    return inflateSync(stream, { maxOutputLength: cap + 1 }).byteLength
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' ? cap + 1 : 0
  }
}

export function pngCompressedText(bytes: Uint8Array): PngText {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let chunks = 0
  let inflatedBytes = 0
  let offset = SIGNATURE_BYTES
  while (offset + CHUNK_HEADER_BYTES <= bytes.byteLength) {
    const length = view.getUint32(offset)
    const type = String.fromCharCode(bytes[offset + 4]!, bytes[offset + 5]!, bytes[offset + 6]!, bytes[offset + 7]!)
    if (type === 'IDAT' || type === 'IEND') break
    const dataStart = offset + CHUNK_HEADER_BYTES
    if (type === 'zTXt' || type === 'iTXt') {
      const data = bytes.subarray(dataStart, Math.min(dataStart + length, bytes.byteLength))
      const start = zlibStart(type, data)
      if (start >= 0) {
        if (++chunks > MAX_PNG_TEXT_CHUNKS) break
        inflatedBytes += inflatedSize(data.subarray(start), MAX_PNG_TEXT_BYTES - inflatedBytes)
        if (inflatedBytes > MAX_PNG_TEXT_BYTES) break
      }
    }
    offset = dataStart + length + CRC_BYTES
  }
  return { chunks, inflatedBytes }
}
