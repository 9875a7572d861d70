/**
 * What libtiff reads of a TIFF's structure, measured without decoding it. libvips reads every page's
 * directory when it reads the header (to count the pages), three times per request, outside the
 * decode timeout, the first time before the decode budget admits the image; and the cost of a
 * directory grows with its entries and with the arrays they point at, not with the file's size:
 * - 100,000 directories in 12.6 MB took 1.6 s for the header and 3.4 s more for the decode;
 * - 4095 distinct unknown tags in one directory (53 KB) took 2.6 s for the header (libtiff
 *   registers each unknown tag against all the others), and 16 directories 12 bytes apart sharing
 *   one entry array (still 53 KB) 34 s per request;
 * - 1024 directories declaring 2 M strips each, all pointing at one shared array (8 MB), held a
 *   thread over 70 s for the header.
 * Real files (scans, faxes, camera and GIS TIFFs) have up to a few hundred pages of a few dozen
 * entries each, and their arrays are distinct parts of the file. So the walk follows the chain of
 * "next directory" offsets (classic TIFF: 4-byte offsets, 12-byte entries; BigTIFF: 8-byte offsets,
 * 20-byte entries), counts pages and entries, and adds up the bytes of the arrays stored outside the
 * entries; it stops past a bound, at an offset out of the file, or where the chain loops back
 * (which libtiff refuses too). Arrays that add up to more than the file hold shared, overlapping
 * data: that is refused too.
 */

/** Pages a TIFF may have. */
export const MAX_TIFF_PAGES = 256
/** Entries one page's directory may have. */
export const MAX_TIFF_ENTRIES_PER_PAGE = 256
/** Entries all the directories may have together. */
export const MAX_TIFF_ENTRIES = 4096
/**
 * Strips or tiles the first page (the one decoded) may have: per-block work dominates below that
 * (16×16 tiles at 49 MP took 1.8 s against 0.24 s in 256×256 tiles). One-row strips of a
 * 40,000-row image, or 64×64 tiles of 50 MP, fit.
 */
export const MAX_TIFF_BLOCKS = 65536
/** Strip and tile byte counts, the tags whose values libtiff reads (and inflates) for the first page. */
const BYTE_COUNT_TAGS: ReadonlySet<number> = new Set([279, 325])
/** Bytes the arrays may hold beyond the file's own size (slack for writers that share a small array between pages). */
const SHARED_ARRAY_SLACK_BYTES = 64 << 10

/** Bytes of one value of each TIFF field type (1–18); an unknown type counts 1. */
const TYPE_BYTES: readonly number[] = [1, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4, 1, 1, 8, 8, 8]

export interface TiffStructure {
  readonly pages: number
  /** The most entries in one directory. */
  readonly largestDirectory: number
  readonly entries: number
  /** Bytes of the values stored outside their entries, added up over every directory. */
  readonly arrayBytes: number
  /** The first page's strips or tiles. */
  readonly blocks: number
  /**
   * What its strip or tile byte counts add up to: the compressed data libtiff reads to decode it.
   * More than the file holds means blocks sharing one range (each read and inflated again: 2048
   * rows of one 1 MiB stream of empty deflate blocks took minutes, past the decode timeout).
   */
  readonly blockBytes: number
}

export function measureTiff(bytes: Uint8Array): TiffStructure {
  const empty = { pages: 0, largestDirectory: 0, entries: 0, arrayBytes: 0, blocks: 0, blockBytes: 0 }
  if (bytes.byteLength < 8) return empty
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const little = bytes[0] === 0x49
  const big = view.getUint16(2, little) === 43
  const headerBytes = big ? 16 : 8
  if (bytes.byteLength < headerBytes) return empty
  const offsetAt = (at: number): number => (big ? Number(view.getBigUint64(at, little)) : view.getUint32(at, little))
  const countBytes = big ? 8 : 2
  const entryBytes = big ? 20 : 12
  const inline = big ? 8 : 4
  const seen = new Set<number>()
  let pages = 0
  let largestDirectory = 0
  let entries = 0
  let arrayBytes = 0
  let blocks = 0
  let blockBytes = 0
  /** The values of a SHORT, LONG or LONG8 entry at `at`, added up (at most MAX_TIFF_BLOCKS + 1 of them). */
  const sumOfValues = (at: number, type: number, count: number): number => {
    const size = TYPE_BYTES[type] ?? 1
    const start = count * size > inline ? offsetAt(at + (big ? 12 : 8)) : at + (big ? 12 : 8)
    let sum = 0
    for (let i = 0; i < Math.min(count, MAX_TIFF_BLOCKS + 1); i++) {
      const v = start + i * size
      if (v + size > bytes.byteLength) break
      sum += type === 3 ? view.getUint16(v, little) : type === 16 ? Number(view.getBigUint64(v, little)) : view.getUint32(v, little)
    }
    return sum
  }
  let offset = offsetAt(big ? 8 : 4)
  while (offset >= headerBytes && !seen.has(offset) && offset + countBytes <= bytes.byteLength) {
    seen.add(offset)
    const count = big ? Number(view.getBigUint64(offset, little)) : view.getUint16(offset, little)
    pages++
    largestDirectory = Math.max(largestDirectory, count)
    entries += count
    if (pages > MAX_TIFF_PAGES || count > MAX_TIFF_ENTRIES_PER_PAGE || entries > MAX_TIFF_ENTRIES) break
    const first = offset + countBytes
    for (let i = 0; i < count && first + (i + 1) * entryBytes <= bytes.byteLength; i++) {
      const at = first + i * entryBytes
      const type = view.getUint16(at + 2, little)
      const values = big ? Number(view.getBigUint64(at + 4, little)) : view.getUint32(at + 4, little)
      const size = values * (TYPE_BYTES[type] ?? 1)
      if (size > inline) arrayBytes += size
      if (pages === 1 && BYTE_COUNT_TAGS.has(view.getUint16(at, little))) {
        blocks = Math.max(blocks, values)
        blockBytes = Math.max(blockBytes, sumOfValues(at, type, values))
      }
    }
    if (arrayBytes > bytes.byteLength + SHARED_ARRAY_SLACK_BYTES) break
    const next = first + count * entryBytes
    if (next + inline > bytes.byteLength) break
    offset = offsetAt(next)
  }
  return { pages, largestDirectory, entries, arrayBytes, blocks, blockBytes }
}

/** Why the TIFF costs more to open than the server allows, or undefined. */
export function tiffStructureRefusal(bytes: Uint8Array): string | undefined {
  const t = measureTiff(bytes)
  if (t.pages > MAX_TIFF_PAGES) return `a TIFF of more than ${MAX_TIFF_PAGES} pages`
  if (t.largestDirectory > MAX_TIFF_ENTRIES_PER_PAGE) return `a TIFF page of more than ${MAX_TIFF_ENTRIES_PER_PAGE} tags`
  if (t.entries > MAX_TIFF_ENTRIES) return `a TIFF of more than ${MAX_TIFF_ENTRIES} tags over its pages`
  if (t.arrayBytes > bytes.byteLength + SHARED_ARRAY_SLACK_BYTES) return 'a TIFF whose tags point at more data than the file holds'
  if (t.blocks > MAX_TIFF_BLOCKS) return `a TIFF page of more than ${MAX_TIFF_BLOCKS} strips or tiles`
  if (t.blockBytes > bytes.byteLength + SHARED_ARRAY_SLACK_BYTES)
    return 'a TIFF whose strips or tiles share data (their sizes add up to more than the file)'
  return undefined
}
