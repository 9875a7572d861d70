/**
 * Walks the blocks of a GIF without decoding it. libvips counts every frame when it reads the
 * header (three times per request, the first before the decode budget admits the image), and
 * sharp builds a delay per frame on the event loop: 16 MB of 12-byte 1×1 frames (about 1.3 M) took
 * 4–8.6 s per request and held the event loop 200–240 ms. Animations have up to a few thousand
 * frames. The walk skips from block to block (extensions and image data are runs of sub-blocks),
 * so it costs a few reads per sub-block, and stops past a bound or at the trailer; it follows the
 * blocks as libnsgif does, and a byte where no block can start, bytes left, is refused.
 */

/** Frames a GIF may have, as for WebP's chunks. */
export const MAX_GIF_FRAMES = 4096
/**
 * Sub-blocks a GIF may have: the walk crosses each, and 1-byte sub-blocks made it cost 13 ms per MB
 * on the event loop. Encoders write 255-byte sub-blocks: a 16 MB GIF has about 66,000, and an
 * animation a few per frame besides.
 */
export const MAX_GIF_SUB_BLOCKS = 1 << 17

/** The signature ("GIF87a" or "GIF89a") and the logical screen descriptor. */
const HEADER_BYTES = 13

export interface GifStructure {
  /** Image blocks, counted no further than MAX_GIF_FRAMES + 1. */
  readonly frames: number
  readonly subBlocks: number
  /**
   * The walk stopped at a byte that starts no block while bytes were left: libnsgif may read on
   * from there differently (it skips an extension's first sub-block without reading it as a
   * terminator), so frames hidden past it would go uncounted. Refused, not guessed.
   */
  readonly lost: boolean
}

export function measureGif(bytes: Uint8Array): GifStructure {
  let subBlocks = 0
  /** Offset after the sub-blocks starting at `at` (each a length byte and that many bytes; 0 ends them). */
  const skipSubBlocks = (at: number): number => {
    while (at < bytes.byteLength && subBlocks <= MAX_GIF_SUB_BLOCKS) {
      const length = bytes[at]!
      subBlocks++
      at += 1 + length
      if (length === 0) break
    }
    return at
  }
  if (bytes.byteLength < HEADER_BYTES) return { frames: 0, subBlocks, lost: false }
  const packed = bytes[10]!
  let at = HEADER_BYTES + (packed & 0x80 ? 3 << ((packed & 7) + 1) : 0)
  let frames = 0
  while (at < bytes.byteLength && frames <= MAX_GIF_FRAMES && subBlocks <= MAX_GIF_SUB_BLOCKS) {
    const introducer = bytes[at]!
    if (introducer === 0x21) {
      // Extension: its label, a first block skipped whole whatever its size (as libnsgif does), then sub-blocks.
      if (at + 2 >= bytes.byteLength) break
      at = skipSubBlocks(at + 3 + bytes[at + 2]!)
    } else if (introducer === 0x2c) {
      // Image: a 9-byte descriptor, a local colour table when flagged, the LZW code size, sub-blocks.
      if (at + 10 > bytes.byteLength) break
      const local = bytes[at + 9]!
      frames++
      at = skipSubBlocks(at + 10 + (local & 0x80 ? 3 << ((local & 7) + 1) : 0) + 1)
    } else if (introducer === 0x3b) {
      break
    } else {
      return { frames, subBlocks, lost: true }
    }
  }
  return { frames, subBlocks, lost: false }
}

/** Why the GIF costs more to open than the server allows, or undefined. */
export function gifStructureRefusal(bytes: Uint8Array): string | undefined {
  const g = measureGif(bytes)
  if (g.frames > MAX_GIF_FRAMES) return `a GIF of more than ${MAX_GIF_FRAMES} frames`
  if (g.subBlocks > MAX_GIF_SUB_BLOCKS) return `a GIF of more than ${MAX_GIF_SUB_BLOCKS} data sub-blocks`
  if (g.lost) return 'a GIF whose blocks cannot be followed to its end'
  return undefined
}
