/**
 * Counts the frames of a GIF without decoding it. libvips counts every frame when it reads the
 * header (three times per request, the first before the decode budget admits the image), and
 * sharp builds a delay per frame on the event loop: 16 MB of 12-byte 1×1 frames (about 1.3 M) took
 * 4–8.6 s per request and held the event loop 200–240 ms. Animations have up to a few thousand
 * frames. The walk skips from block to block (extensions and image data are runs of sub-blocks),
 * so it costs a few reads per sub-block, and stops past `stopAfter` or at the trailer.
 */

/** Frames a GIF may have, as for WebP's chunks. */
export const MAX_GIF_FRAMES = 4096

/** The signature ("GIF87a" or "GIF89a") and the logical screen descriptor. */
const HEADER_BYTES = 13

/** Offset after the sub-blocks starting at `at` (each a length byte and that many bytes; 0 ends them). */
function skipSubBlocks(bytes: Uint8Array, at: number): number {
  while (at < bytes.byteLength) {
    const length = bytes[at]!
    at += 1 + length
    if (length === 0) break
  }
  return at
}

export function countGifFrames(bytes: Uint8Array, stopAfter = MAX_GIF_FRAMES): number {
  if (bytes.byteLength < HEADER_BYTES) return 0
  const packed = bytes[10]!
  let at = HEADER_BYTES + (packed & 0x80 ? 3 << ((packed & 7) + 1) : 0)
  let frames = 0
  while (at < bytes.byteLength && frames <= stopAfter) {
    const introducer = bytes[at]!
    if (introducer === 0x21) {
      // Extension: its label, then sub-blocks.
      at = skipSubBlocks(bytes, at + 2)
    } else if (introducer === 0x2c) {
      // Image: a 9-byte descriptor, a local colour table when flagged, the LZW code size, sub-blocks.
      if (at + 10 > bytes.byteLength) break
      const local = bytes[at + 9]!
      frames++
      at = skipSubBlocks(bytes, at + 10 + (local & 0x80 ? 3 << ((local & 7) + 1) : 0) + 1)
    } else break // the trailer (0x3b), or bytes the decoder stops at too
  }
  return frames
}
