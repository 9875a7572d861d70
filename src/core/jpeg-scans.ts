/**
 * Counts the scans (SOS segments) and the other marker segments of a JPEG without decoding it.
 *
 * Scans: a progressive JPEG's decoder makes one pass over every block of the image per scan, so its
 * decode time grows with scans × pixels, and a scan can be a few bytes long (an end-of-band run
 * covers 32767 blocks): a 1 MB file can ask for tens of thousands of passes over a large image.
 *
 * Other segments (APPn, COM, DQT, DHT, …): libjpeg keeps every APPn segment it is asked to save
 * (libvips asks, for EXIF, ICC and XMP) in a list, some 270 bytes each even when empty, and libvips
 * reads the file twice (header, then pixels): 16 MB of empty 4-byte APP2 segments took 1.1 GB and
 * 7 s around a 64×64 image, outside the decode budget, which charges for pixels. Files that encoders
 * write have tens (a 16 MB ICC profile split in APP2 chunks: about 250).
 *
 * Both counts are taken before any pixel is decoded, so such a file is refused in about the time
 * memchr takes to cross it.
 *
 * The walk follows what libjpeg does when it reads a file, so a segment it would read is a segment
 * counted here:
 * - marker segments (APPn, COM, DQT, DHT, SOF, SOS headers…) are skipped by their length field, so
 *   bytes inside them are never taken for markers;
 * - between markers, and inside a scan's entropy-coded data, only 0xFF followed by a byte other
 *   than 0x00 (byte stuffing) or 0xFF (fill) is a marker; restart markers RST0–7 and the other
 *   stand-alone markers carry no length and do not end the walk;
 * - bytes that are not a marker where one is expected are skipped up to the next 0xFF, as libjpeg
 *   skips "extraneous bytes before marker" with a warning;
 * - EOI ends the image: scans after it are never decoded.
 * The walk is a loop over marker positions (no recursion) and stops as soon as either count passes
 * its limit.
 */

/** Marker segments other than scans a JPEG may have; encoders write tens. Not a setting: no real file comes near. */
export const MAX_JPEG_SEGMENTS = 1024

/**
 * Stuffed bytes (FF 00) and standalone markers (RSTn, TEM) a JPEG may have: the walk stops at
 * each, on the event loop, and 16 MB of them took it 290 ms. Entropy-coded data stuffs about one
 * byte in 256 (65,000 in 16 MB); a restart marker per MCU of a 50 MP image is 200,000.
 */
export const MAX_JPEG_STOPS = 1 << 19

const EOI = 0xd9
const SOS = 0xda
const TEM = 0x01

/** Markers that stand alone (no length field): TEM, RST0–7, SOI, EOI. */
function isStandalone(marker: number): boolean {
  return marker === TEM || (marker >= 0xd0 && marker <= 0xd9)
}

export interface JpegSegments {
  /** SOS segments, counted no further than the scan limit + 1. */
  readonly scans: number
  /** Other segments with a length field, counted no further than the segment limit + 1. */
  readonly segments: number
  /** Stuffed bytes and standalone markers, counted no further than MAX_JPEG_STOPS + 1. */
  readonly stops: number
}

/**
 * The scans and other marker segments libjpeg would read in `bytes` (a JPEG starting with SOI); the
 * walk stops once either count passes its limit. A malformed structure (a length running past the
 * end, a length under 2) ends the count where the decoder itself would fail.
 */
export function countJpegSegments(bytes: Uint8Array, maxScans = Infinity, maxSegments = MAX_JPEG_SEGMENTS): JpegSegments {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let scans = 0
  let segments = 0
  let stops = 0
  // Past SOI (FF D8).
  let i = 2
  while (i < buf.length) {
    const ff = buf.indexOf(0xff, i)
    if (ff < 0) break
    let m = ff + 1
    while (m < buf.length && buf[m] === 0xff) m++
    if (m >= buf.length) break
    const marker = buf[m]!
    if (marker === 0x00) {
      // Stuffed 0xFF inside entropy-coded data (or stray bytes libjpeg would discard).
      if (++stops > MAX_JPEG_STOPS) break
      i = m + 1
      continue
    }
    if (marker === EOI) break
    if (isStandalone(marker)) {
      if (++stops > MAX_JPEG_STOPS) break
      i = m + 1
      continue
    }
    if (m + 2 >= buf.length) break
    const length = (buf[m + 1]! << 8) | buf[m + 2]!
    if (length < 2) break
    if (marker === SOS) {
      if (++scans > maxScans) break
    } else if (++segments > maxSegments) break
    // The segment's payload is skipped whole; for SOS the entropy-coded data follows it and is
    // crossed by the indexOf above.
    i = m + 1 + length
  }
  return { scans, segments, stops }
}

/** Why the JPEG costs more to open than the server allows (more scans than `maxScans`), or undefined. */
export function jpegStructureRefusal(bytes: Uint8Array, maxScans: number): string | undefined {
  const { scans, segments, stops } = countJpegSegments(bytes, maxScans)
  if (stops > MAX_JPEG_STOPS) return `a JPEG of more than ${MAX_JPEG_STOPS} restart markers and stuffed bytes`
  if (scans > maxScans) return `a JPEG of more than ${maxScans} scans`
  if (segments > MAX_JPEG_SEGMENTS) return `a JPEG of more than ${MAX_JPEG_SEGMENTS} marker segments besides its scans`
  return undefined
}
