import sharp, { type Sharp } from 'sharp'
import { describe, expect, it } from 'vitest'
import { sniffImageFormat, type SniffedFormat } from '../../src/core/image-sniff.js'
import { readPhoto } from '../helpers/photos.js'

/** The format sniffer on real encodings (written by sharp) and on hand-made text and headers. Unit tier: no server. */

const tiny = (): Sharp => sharp({ create: { width: 16, height: 12, channels: 3, background: '#48c' } })
const text = (s: string): Buffer => Buffer.from(s, 'utf8')

/** An ISO-BMFF file start: ftyp box with a major brand and compatible brands. */
function ftyp(major: string, compatible: string[]): Buffer {
  const body = Buffer.concat([Buffer.from(major, 'latin1'), Buffer.alloc(4), ...compatible.map((b) => Buffer.from(b, 'latin1'))])
  const size = Buffer.alloc(4)
  size.writeUInt32BE(8 + body.length)
  return Buffer.concat([size, Buffer.from('ftyp', 'latin1'), body, Buffer.alloc(32)])
}

describe('sniffImageFormat: the accepted formats, as encoders write them', () => {
  it.each<[string, () => Promise<Buffer>, string]>([
    ['JPEG (a real photo)', () => readPhoto('chelsea'), 'jpeg'],
    ['progressive JPEG', () => tiny().jpeg({ progressive: true }).toBuffer(), 'jpeg'],
    ['PNG', () => tiny().png().toBuffer(), 'png'],
    ['WebP', () => tiny().webp().toBuffer(), 'webp'],
    ['lossless WebP', () => tiny().webp({ lossless: true }).toBuffer(), 'webp'],
    ['GIF', () => tiny().gif().toBuffer(), 'gif'],
    ['TIFF', () => tiny().tiff().toBuffer(), 'tiff'],
    ['big-endian TIFF', async () => Buffer.concat([Buffer.from([0x4d, 0x4d, 0x00, 0x2a]), Buffer.alloc(12)]), 'tiff'],
    ['AVIF', () => tiny().avif().toBuffer(), 'avif']
  ])('%s → %s', async (_name, bytes, format) => {
    expect(sniffImageFormat(await bytes())).toEqual({ accepted: true, format })
  })

  it('AVIF named only among the compatible brands (major brand mif1) is AVIF', () => {
    expect(sniffImageFormat(ftyp('mif1', ['mif1', 'miaf', 'avif']))).toEqual({ accepted: true, format: 'avif' })
  })
})

describe('sniffImageFormat: formats recognised and refused', () => {
  const refused = (name: string): SniffedFormat => ({ accepted: false, name })

  it.each<[string, Buffer, string]>([
    ['SVG', text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>'), 'SVG'],
    [
      'SVG after an XML declaration, a comment and a DOCTYPE',
      text(
        '<?xml version="1.0"?>\n<!-- drawn by hand -->\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n<svg/>'
      ),
      'SVG'
    ],
    [
      'SVG after a UTF-8 byte-order mark and white space',
      Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), text('\r\n\t <SVG></SVG>')]),
      'SVG'
    ],
    ['HTML', text('<!doctype html><html><body><img src=x></body></html>'), 'HTML'],
    ['other XML', text('<?xml version="1.0"?><plist><dict/></plist>'), 'XML/markup'],
    ['UTF-16 XML', Buffer.from('\ufeff<svg/>', 'utf16le'), 'UTF-16 text (XML?)'],
    ['PDF', text('%PDF-1.7\n%âãÏÓ\n1 0 obj'), 'PDF'],
    ['PostScript', text('%!PS-Adobe-3.0\n'), 'PostScript'],
    ['BMP', Buffer.concat([text('BM'), Buffer.alloc(60)]), 'BMP'],
    ['Photoshop', Buffer.concat([text('8BPS'), Buffer.alloc(30)]), 'Photoshop'],
    ['JPEG XL codestream', Buffer.from([0xff, 0x0a, 0xfa, 0x7f]), 'JPEG XL'],
    ['HEIC', ftyp('heic', ['mif1', 'heic']), 'HEIF/HEVC'],
    ['gzip (SVGZ)', Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0]), 'gzip (SVGZ?)']
  ])('%s → refused as %s', (_name, bytes, name) => {
    expect(sniffImageFormat(bytes)).toEqual(refused(name))
  })

  it('a markup body is judged from its first 4 KiB, whatever its length (a 14.7 MB SVG sent as image/png)', () => {
    const huge = Buffer.concat([
      text('<svg xmlns="http://www.w3.org/2000/svg">'),
      Buffer.alloc(14_700_000, '<rect width="1" height="1"/>'),
      text('</svg>')
    ])
    expect(sniffImageFormat(huge)).toEqual(refused('SVG'))
    // The root element beyond the window: still refused, only named less precisely.
    const late = Buffer.concat([text('<!--'), Buffer.alloc(10_000, ' '), text('--><svg/>')])
    expect(sniffImageFormat(late)).toEqual(refused('XML/markup'))
  })
})

describe('sniffImageFormat: anything else is no image at all', () => {
  it.each<[string, Buffer]>([
    ['empty', Buffer.alloc(0)],
    ['plain text', text('hello, this is not an image')],
    ['JSON', text('{"image": "x"}')],
    ['an MP4 (ftyp isom)', ftyp('isom', ['isom', 'mp41'])],
    ['RIFF that is not WebP (WAV)', Buffer.concat([text('RIFF'), Buffer.alloc(4), text('WAVEfmt ')])],
    ['a JPEG signature cut short', Buffer.from([0xff, 0xd8])],
    ['a PNG signature cut short', Buffer.from([0x89, 0x50, 0x4e, 0x47])]
  ])('%s → undefined', (_name, bytes) => {
    expect(sniffImageFormat(bytes)).toBeUndefined()
  })
})
