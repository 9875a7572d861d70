import { inflateSync } from 'node:zlib'

/**
 * What libpng reads of a PNG before its image data, measured before libpng sees the file. libvips
 * reads a PNG's header three times per request (the header check, then the decode's header and
 * load), outside the decode timeout, the first time before the decode budget admits it, and every
 * chunk before the first IDAT is read each time:
 * - compressed text (zTXt, compressed iTXt) is inflated and discarded: a chunk of 48 KB of zlib
 *   inflates to 48 MiB, and 300 of them (14.7 MB) held a decode thread 21 s for the header;
 * - zlib walks every block of a compressed stream, also blocks that inflate to nothing: 16 MB of
 *   empty dynamic-Huffman blocks took 1.7 s to walk, and as an iCCP profile 3.6 s per header read;
 * - every malformed or repeated ancillary chunk (a zero-length gAMA, a second sRGB) is a libpng
 *   warning, which sharp hands to JavaScript one by one on the event loop: 1.4 M such chunks in
 *   16.7 MB froze it 21.6 s.
 * Real files have a dozen chunks before the image data, a few kilobytes of text and an ICC profile
 * of a few kilobytes (a printer's of a few hundred). So the chunks are counted, the compressed
 * text and profile measured, the text inflated (at most MAX_PNG_COMPRESSED_TEXT_BYTES of it: a few
 * milliseconds) up to a bound, and a file over any bound refused. Chunks after the first IDAT are
 * not read when the image is decoded, and are not measured.
 */

/** Chunks (of any type) a PNG may have before its image data. */
export const MAX_PNG_CHUNKS_BEFORE_IMAGE = 256
/** Compressed text chunks a PNG may have before its image data. */
export const MAX_PNG_TEXT_CHUNKS = 64
/** Bytes of zlib stream those chunks may hold together (what inflating them costs: 12–17 ms here for 128 KiB of empty deflate blocks, the worst). */
export const MAX_PNG_COMPRESSED_TEXT_BYTES = 128 << 10
/** What they may inflate to together. */
export const MAX_PNG_TEXT_BYTES = 1 << 20
/** Bytes of ICC profile chunk (iCCP, compressed) a PNG may have: libpng walks the stream in each header read (1 MiB of empty deflate blocks: 0.7 s a request). */
export const MAX_PNG_ICC_BYTES = 256 << 10

const SIGNATURE_BYTES = 8
/** Length, type; the CRC follows the data. */
const CHUNK_HEADER_BYTES = 8
const CRC_BYTES = 4
/** A keyword is 1–79 bytes, then a NUL. */
const MAX_KEYWORD_BYTES = 80

export interface PngHeader {
  /** Chunks before the first IDAT, IHDR included (counting stops past the limit). */
  readonly chunks: number
  /** zTXt and compressed iTXt chunks among them. */
  readonly textChunks: number
  /** Their zlib streams' bytes. */
  readonly compressedTextBytes: number
  /** What they inflate to, counted no further than MAX_PNG_TEXT_BYTES + 1. */
  readonly inflatedTextBytes: number
  /** iCCP chunks' bytes. */
  readonly iccBytes: number
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

/** Measures the chunks before the image data; stops at the first bound passed (the figures then say which). */
export function measurePngHeader(bytes: Uint8Array): PngHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let chunks = 0
  let textChunks = 0
  let compressedTextBytes = 0
  let inflatedTextBytes = 0
  let iccBytes = 0
  let offset = SIGNATURE_BYTES
  while (offset + CHUNK_HEADER_BYTES <= bytes.byteLength) {
    const length = view.getUint32(offset)
    const type = String.fromCharCode(bytes[offset + 4]!, bytes[offset + 5]!, bytes[offset + 6]!, bytes[offset + 7]!)
    if (type === 'IDAT' || type === 'IEND') break
    if (++chunks > MAX_PNG_CHUNKS_BEFORE_IMAGE) break
    const dataStart = offset + CHUNK_HEADER_BYTES
    const data = bytes.subarray(dataStart, Math.min(dataStart + length, bytes.byteLength))
    if (type === 'iCCP') {
      iccBytes += data.byteLength
      if (iccBytes > MAX_PNG_ICC_BYTES) break
    } else if (type === 'zTXt' || type === 'iTXt') {
      const start = zlibStart(type, data)
      if (start >= 0) {
        if (++textChunks > MAX_PNG_TEXT_CHUNKS) break
        compressedTextBytes += data.byteLength - start
        if (compressedTextBytes > MAX_PNG_COMPRESSED_TEXT_BYTES) break
        inflatedTextBytes += inflatedSize(data.subarray(start), MAX_PNG_TEXT_BYTES - inflatedTextBytes)
        if (inflatedTextBytes > MAX_PNG_TEXT_BYTES) break
      }
    }
    offset = dataStart + length + CRC_BYTES
  }
  return { chunks, textChunks, compressedTextBytes, inflatedTextBytes, iccBytes }
}

/** Why the PNG costs more to open than the server allows, or undefined. */
export function pngHeaderRefusal(bytes: Uint8Array): string | undefined {
  const h = measurePngHeader(bytes)
  if (h.chunks > MAX_PNG_CHUNKS_BEFORE_IMAGE) return `a PNG of more than ${MAX_PNG_CHUNKS_BEFORE_IMAGE} chunks before its image data`
  if (h.iccBytes > MAX_PNG_ICC_BYTES) return `a PNG whose ICC profile is more than ${MAX_PNG_ICC_BYTES} bytes`
  if (h.textChunks > MAX_PNG_TEXT_CHUNKS) return `a PNG of more than ${MAX_PNG_TEXT_CHUNKS} compressed text chunks`
  if (h.compressedTextBytes > MAX_PNG_COMPRESSED_TEXT_BYTES)
    return `a PNG of more than ${MAX_PNG_COMPRESSED_TEXT_BYTES} bytes of compressed text`
  if (h.inflatedTextBytes > MAX_PNG_TEXT_BYTES) return `a PNG whose compressed text inflates to more than ${MAX_PNG_TEXT_BYTES} bytes`
  return undefined
}
