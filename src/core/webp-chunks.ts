/**
 * Counts the chunks of a WebP file (RIFF: "RIFF", size, "WEBP", then chunks of a FourCC, a
 * little-endian 32-bit size and that many bytes, padded to an even length) without decoding it.
 * libwebp's demuxer keeps a record of every chunk it reads: 16 MB of empty unknown chunks (about
 * 2 million) in front of a 300×300 image took 260–270 MB and 1.5–1.9 s per request, outside the
 * decode budget, which charges for pixels. Files that encoders write have a handful of chunks
 * (VP8X, ICCP, ALPH, VP8/VP8L, EXIF, XMP), animations one ANMF per frame. The walk jumps from
 * header to header, so it costs a few reads per chunk, and stops once past `stopAfter`.
 */

/** Chunks a WebP may have: room for animations of thousands of frames, a bound on what the demuxer keeps. */
export const MAX_WEBP_CHUNKS = 4096

/** The RIFF header: "RIFF", the file size, "WEBP". */
const RIFF_HEADER_BYTES = 12
/** A chunk header: FourCC and payload size. */
const CHUNK_HEADER_BYTES = 8

/**
 * The chunks after the RIFF header of `bytes`, counting no further than `stopAfter` + 1. A chunk
 * whose header is cut short ends the count, as it ends the decoder's reading.
 */
export function countWebpChunks(bytes: Uint8Array, stopAfter = MAX_WEBP_CHUNKS): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let chunks = 0
  let offset = RIFF_HEADER_BYTES
  while (offset + CHUNK_HEADER_BYTES <= bytes.byteLength && chunks <= stopAfter) {
    const size = view.getUint32(offset + 4, true)
    chunks++
    offset += CHUNK_HEADER_BYTES + size + (size & 1)
  }
  return chunks
}
