/**
 * What libheif reads of an AVIF's items, measured without decoding it. libheif reads every item's
 * data that describes the primary image (Exif, XMP) while libvips reads the header, three times per
 * request, outside the decode timeout, the first time before the decode budget admits the image;
 * item locations (`iloc`) may all point at one extent, so the data read is not bounded by the file:
 * 150 Exif items over one 16 MB extent took the process from 0.9 to 2.9 GB for one request, and a
 * 17 KB gzipped V2 request did the same. Real files have a few items (the image, its alpha, Exif,
 * XMP, a thumbnail; a grid has one per tile), each its own part of the file. So the walk finds the
 * `meta` box's `iloc`, counts the items and adds up their extents' lengths; more than the file
 * holds means shared, overlapping extents, and is refused.
 */

/** Items an AVIF may locate (libheif reads at most 256 per grid). */
export const MAX_AVIF_ITEMS = 1024
/** Boxes at the top of an AVIF (ftyp, meta, mdat, maybe free: a handful); libheif walks them all, 2 M in 16 MB took 1 s. */
export const MAX_AVIF_BOXES = 1024
/**
 * Entries a sample table of an image sequence (`moov`) may have: libheif looks every chunk up in
 * the sample-to-chunk table from its start, so C chunks × E entries is its work per header read
 * (60,000 of each in 960 KB took 5.6 s). Animations have a frame per sample, a few hundred.
 */
export const MAX_AVIF_SAMPLE_ENTRIES = 4096
/** Bytes the extents may add up to beyond the file's own size. */
const SHARED_EXTENT_SLACK_BYTES = 64 << 10

export interface AvifItems {
  /** Top-level boxes, counted no further than MAX_AVIF_BOXES + 1. */
  readonly boxes: number
  /** The largest entry count of an image sequence's sample tables (stsc, stco, co64, stsz, stts). */
  readonly sampleEntries: number
  /** The item locations could not be read as libheif reads them (a field size other than 0, 4 or 8, a box cut short): refused, not guessed. */
  readonly unreadable: boolean
  readonly items: number
  /** Bytes of every item's extents, added up (an extent of length 0 runs to the end of the file). */
  readonly extentBytes: number
}

interface Box {
  readonly type: string
  /** Where its payload starts and ends in the file. */
  readonly start: number
  readonly end: number
}

/** The boxes laid one after another in [from, to). A box whose size runs past `to` ends at `to`. */
function boxes(view: DataView, from: number, to: number): Box[] {
  const out: Box[] = []
  let at = from
  while (at + 8 <= to && out.length <= MAX_AVIF_BOXES) {
    let size = view.getUint32(at)
    const type = String.fromCharCode(view.getUint8(at + 4), view.getUint8(at + 5), view.getUint8(at + 6), view.getUint8(at + 7))
    let header = 8
    if (size === 1) {
      if (at + 16 > to) break
      size = Number(view.getBigUint64(at + 8))
      header = 16
    } else if (size === 0) size = to - at
    if (size < header) break
    out.push({ type, start: at + header, end: Math.min(at + size, to) })
    at += size
  }
  return out
}

/** An unsigned integer of 0, 4 or 8 bytes at `at`. */
function uint(view: DataView, at: number, bytes: number): number {
  if (bytes === 0) return 0
  if (bytes === 4) return view.getUint32(at)
  if (bytes === 8) return Number(view.getBigUint64(at))
  throw new RangeError(`a field of ${bytes} bytes`)
}

/** Boxes that hold other boxes on the way from `moov` to its sample tables. */
const SEQUENCE_CONTAINERS: ReadonlySet<string> = new Set(['moov', 'trak', 'mdia', 'minf', 'stbl', 'edts', 'dinf'])
/** Sample tables, each a full box whose entry count is the u32 after version and flags (stsz: after its sample size). */
const SAMPLE_TABLES: ReadonlySet<string> = new Set(['stsc', 'stco', 'co64', 'stsz', 'stts', 'stss', 'ctts'])

/** The largest entry count of the sample tables under `box`, walked through the sequence containers. */
function largestSampleTable(view: DataView, box: Box, depth = 0): number {
  if (SAMPLE_TABLES.has(box.type)) {
    const at = box.start + 4 + (box.type === 'stsz' ? 4 : 0)
    return at + 4 <= box.end ? view.getUint32(at) : 0
  }
  if (!SEQUENCE_CONTAINERS.has(box.type) || depth > 8) return 0
  return boxes(view, box.start, box.end).reduce((m, child) => Math.max(m, largestSampleTable(view, child, depth + 1)), 0)
}

export function measureAvifItems(bytes: Uint8Array): AvifItems {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const top = boxes(view, 0, bytes.byteLength)
  const sampleEntries = top.reduce((m, box) => Math.max(m, largestSampleTable(view, box)), 0)
  const meta = top.find((b) => b.type === 'meta')
  // meta is a full box: version and flags, then its children.
  const iloc = meta === undefined ? undefined : boxes(view, meta.start + 4, meta.end).find((b) => b.type === 'iloc')
  const measured = (items: number, extentBytes: number, unreadable = false): AvifItems => ({
    boxes: top.length,
    sampleEntries,
    unreadable,
    items,
    extentBytes
  })
  if (iloc === undefined) return measured(0, 0)
  let items = 0
  let extentBytes = 0
  try {
    let at = iloc.start
    const version = view.getUint8(at)
    at += 4
    const sizes = view.getUint16(at)
    at += 2
    const offsetSize = sizes >> 12
    const lengthSize = (sizes >> 8) & 0xf
    const baseOffsetSize = (sizes >> 4) & 0xf
    const indexSize = version === 1 || version === 2 ? sizes & 0xf : 0
    if (![offsetSize, lengthSize, baseOffsetSize, indexSize].every((size) => size === 0 || size === 4 || size === 8)) {
      return measured(0, 0, true)
    }
    const count = version < 2 ? view.getUint16(at) : view.getUint32(at)
    at += version < 2 ? 2 : 4
    for (; items < count && items <= MAX_AVIF_ITEMS && at < iloc.end; items++) {
      at += version < 2 ? 2 : 4 // item_ID
      if (version === 1 || version === 2) at += 2 // construction_method
      at += 2 + baseOffsetSize // data_reference_index, base_offset
      const extents = view.getUint16(at)
      at += 2
      for (let e = 0; e < extents && at < iloc.end; e++) {
        at += indexSize
        const offset = uint(view, at, offsetSize)
        at += offsetSize
        const length = uint(view, at, lengthSize)
        at += lengthSize
        extentBytes += length === 0 ? Math.max(0, bytes.byteLength - offset) : length
      }
      if (extentBytes > bytes.byteLength + SHARED_EXTENT_SLACK_BYTES) return measured(items + 1, extentBytes)
    }
    // Fewer items read than declared: the box ends early, or the walk lost its place.
    if (items < count && items <= MAX_AVIF_ITEMS) return measured(items, extentBytes, true)
  } catch {
    // A box cut short (DataView past its end) or a field size the walk does not read as libheif
    // does (libheif takes sizes other than 4 and 8 as 0, so every extent starts at its base).
    return measured(items, extentBytes, true)
  }
  return measured(items, extentBytes)
}

/** Why the AVIF costs more to open than the server allows, or undefined. */
export function avifItemsRefusal(bytes: Uint8Array): string | undefined {
  const a = measureAvifItems(bytes)
  if (a.boxes > MAX_AVIF_BOXES) return `an AVIF of more than ${MAX_AVIF_BOXES} boxes`
  if (a.unreadable) return 'an AVIF whose item locations cannot be read'
  if (a.sampleEntries > MAX_AVIF_SAMPLE_ENTRIES) return `an AVIF sequence of more than ${MAX_AVIF_SAMPLE_ENTRIES} entries in a sample table`
  if (a.items > MAX_AVIF_ITEMS) return `an AVIF of more than ${MAX_AVIF_ITEMS} items`
  if (a.extentBytes > bytes.byteLength + SHARED_EXTENT_SLACK_BYTES) return 'an AVIF whose items point at more data than the file holds'
  return undefined
}
