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
/** Bytes the extents may add up to beyond the file's own size. */
const SHARED_EXTENT_SLACK_BYTES = 64 << 10

export interface AvifItems {
  /** Top-level boxes, counted no further than MAX_AVIF_BOXES + 1. */
  readonly boxes: number
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

export function measureAvifItems(bytes: Uint8Array): AvifItems {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const top = boxes(view, 0, bytes.byteLength)
  const meta = top.find((b) => b.type === 'meta')
  // meta is a full box: version and flags, then its children.
  const iloc = meta === undefined ? undefined : boxes(view, meta.start + 4, meta.end).find((b) => b.type === 'iloc')
  if (iloc === undefined) return { boxes: top.length, items: 0, extentBytes: 0 }
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
      if (extentBytes > bytes.byteLength + SHARED_EXTENT_SLACK_BYTES) return { boxes: top.length, items: items + 1, extentBytes }
    }
  } catch {
    // A box cut short (DataView past its end) or a field size ISO BMFF does not have: libheif refuses the file itself.
  }
  return { boxes: top.length, items, extentBytes }
}

/** Why the AVIF costs more to open than the server allows, or undefined. */
export function avifItemsRefusal(bytes: Uint8Array): string | undefined {
  const a = measureAvifItems(bytes)
  if (a.boxes > MAX_AVIF_BOXES) return `an AVIF of more than ${MAX_AVIF_BOXES} boxes`
  if (a.items > MAX_AVIF_ITEMS) return `an AVIF of more than ${MAX_AVIF_ITEMS} items`
  if (a.extentBytes > bytes.byteLength + SHARED_EXTENT_SLACK_BYTES) return 'an AVIF whose items point at more data than the file holds'
  return undefined
}
