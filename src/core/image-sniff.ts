/**
 * The image format of an encoded body, decided from its first bytes before any decoder sees them.
 * Only the formats named in `AcceptedFormat` ever reach sharp/libvips; libvips would otherwise pick
 * its loader by content, and among its loaders are SVG (librsvg: an XML parser, fonts, external
 * references), PDF and others whose cost is not bounded by the pixel limit. A refusal here costs a
 * few comparisons on at most `MARKUP_WINDOW` bytes, whatever the body's size.
 */

export type AcceptedFormat = 'jpeg' | 'png' | 'webp' | 'gif' | 'tiff' | 'avif'

export type SniffedFormat =
  | { readonly accepted: true; readonly format: AcceptedFormat }
  /** A format the server recognises and refuses (UNSUPPORTED_IMAGE_FORMAT); `name` is for the message. */
  | { readonly accepted: false; readonly name: string }
  /** Bytes of no format the server knows (NOT_AN_IMAGE). */
  | undefined

const ascii = (text: string): number[] => [...text].map((c) => c.charCodeAt(0))

/** WebP (RIFF) and AVIF (ISO-BMFF) need more than a prefix: see sniffImageFormat. */
const ACCEPTED_SIGNATURES: ReadonlyArray<{ readonly format: AcceptedFormat; readonly magic: readonly number[] }> = [
  { format: 'jpeg', magic: [0xff, 0xd8, 0xff] },
  { format: 'png', magic: [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a] },
  { format: 'gif', magic: ascii('GIF87a') },
  { format: 'gif', magic: ascii('GIF89a') },
  // Classic TIFF and BigTIFF, little- and big-endian.
  { format: 'tiff', magic: [0x49, 0x49, 0x2a, 0x00] },
  { format: 'tiff', magic: [0x4d, 0x4d, 0x00, 0x2a] },
  { format: 'tiff', magic: [0x49, 0x49, 0x2b, 0x00] },
  { format: 'tiff', magic: [0x4d, 0x4d, 0x00, 0x2b] }
]

/** Recognised, never decoded. Checked after the accepted signatures. */
const REFUSED_SIGNATURES: ReadonlyArray<{ readonly name: string; readonly magic: readonly number[] }> = [
  { name: 'PDF', magic: ascii('%PDF-') },
  { name: 'PostScript', magic: ascii('%!PS') },
  { name: 'BMP', magic: ascii('BM') },
  { name: 'Photoshop', magic: ascii('8BPS') },
  { name: 'JPEG 2000', magic: [0x00, 0x00, 0x00, 0x0c, 0x6a, 0x50, 0x20, 0x20] },
  { name: 'JPEG 2000', magic: [0xff, 0x4f, 0xff, 0x51] },
  { name: 'JPEG XL', magic: [0xff, 0x0a] },
  { name: 'JPEG XL', magic: [0x00, 0x00, 0x00, 0x0c, 0x4a, 0x58, 0x4c, 0x20] },
  { name: 'ICO', magic: [0x00, 0x00, 0x01, 0x00] },
  { name: 'OpenEXR', magic: [0x76, 0x2f, 0x31, 0x01] },
  { name: 'Radiance HDR', magic: ascii('#?RADIANCE') },
  { name: 'FITS', magic: ascii('SIMPLE  =') },
  { name: 'gzip (SVGZ?)', magic: [0x1f, 0x8b] }
]

/** ISO-BMFF brands: AVIF is accepted, the other HEIF codecs (HEVC) are refused. */
const AVIF_BRANDS: ReadonlySet<string> = new Set(['avif', 'avis'])
const HEIF_BRANDS: ReadonlySet<string> = new Set(['heic', 'heix', 'heim', 'heis', 'hevc', 'hevx', 'hevm', 'hevs', 'mif1', 'msf1', 'mif2'])

/**
 * How far into a body that starts like text markup the sniffer looks for a root element. Enough for
 * an XML declaration, a DOCTYPE and a comment or two; the verdict (refused) does not depend on it.
 */
const MARKUP_WINDOW = 4096

function startsWith(bytes: Uint8Array, magic: readonly number[], at = 0): boolean {
  if (bytes.length < at + magic.length) return false
  for (let i = 0; i < magic.length; i++) if (bytes[at + i] !== magic[i]) return false
  return true
}

function brandAt(bytes: Uint8Array, at: number): string {
  return String.fromCharCode(bytes[at]!, bytes[at + 1]!, bytes[at + 2]!, bytes[at + 3]!)
}

/** An ISO-BMFF `ftyp` box at the start: AVIF, another HEIF, or undefined for anything else (MP4, QuickTime). */
function sniffIsoMedia(bytes: Uint8Array): SniffedFormat {
  if (!startsWith(bytes, ascii('ftyp'), 4) || bytes.length < 16) return undefined
  const boxSize = ((bytes[0]! << 24) | (bytes[1]! << 16) | (bytes[2]! << 8) | bytes[3]!) >>> 0
  const end = Math.min(bytes.length, Math.max(16, boxSize))
  // The major brand, then the compatible brands (after the 4-byte minor version).
  const brands = [brandAt(bytes, 8)]
  for (let at = 16; at + 4 <= end; at += 4) brands.push(brandAt(bytes, at))
  if (brands.some((b) => AVIF_BRANDS.has(b))) return { accepted: true, format: 'avif' }
  if (brands.some((b) => HEIF_BRANDS.has(b))) return { accepted: false, name: 'HEIF/HEVC' }
  return undefined
}

/**
 * Text that opens with `<` after an optional byte-order mark and white space: SVG, HTML or other
 * XML, all refused. UTF-16 text is recognised by its byte-order mark.
 */
function sniffMarkup(bytes: Uint8Array): SniffedFormat {
  let i = 0
  if (startsWith(bytes, [0xef, 0xbb, 0xbf])) i = 3
  else if (startsWith(bytes, [0xff, 0xfe]) || startsWith(bytes, [0xfe, 0xff])) return { accepted: false, name: 'UTF-16 text (XML?)' }
  while (i < bytes.length && (bytes[i] === 0x20 || bytes[i] === 0x09 || bytes[i] === 0x0a || bytes[i] === 0x0d)) i++
  if (bytes[i] !== 0x3c) return undefined
  const head = Buffer.from(bytes.buffer, bytes.byteOffset + i, Math.min(MARKUP_WINDOW, bytes.length - i))
    .toString('latin1')
    .toLowerCase()
  if (head.includes('<svg') || head.includes('<!doctype svg')) return { accepted: false, name: 'SVG' }
  if (head.includes('<html') || head.includes('<!doctype html')) return { accepted: false, name: 'HTML' }
  return { accepted: false, name: 'XML/markup' }
}

/** The format of `bytes` from its signature; cost independent of the body's length. */
export function sniffImageFormat(bytes: Uint8Array): SniffedFormat {
  for (const { format, magic } of ACCEPTED_SIGNATURES) if (startsWith(bytes, magic)) return { accepted: true, format }
  if (startsWith(bytes, ascii('RIFF')) && startsWith(bytes, ascii('WEBP'), 8)) return { accepted: true, format: 'webp' }
  const iso = sniffIsoMedia(bytes)
  if (iso !== undefined) return iso
  for (const { name, magic } of REFUSED_SIGNATURES) if (startsWith(bytes, magic)) return { accepted: false, name }
  return sniffMarkup(bytes)
}
