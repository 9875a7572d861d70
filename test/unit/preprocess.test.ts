import { deflateSync } from 'node:zlib'
import sharp, { type Metadata, type Sharp } from 'sharp'
import { describe, expect, it } from 'vitest'
import { DecodeBudget } from '../../src/core/decode-budget.js'
import { MAX_JPEG_SEGMENTS, countJpegSegments } from '../../src/core/jpeg-scans.js'
import { MAX_WEBP_CHUNKS } from '../../src/core/webp-chunks.js'
import { centreCropOffset, decodeCostBytes, ImagePreprocessor, resizedSize } from '../../src/core/preprocess.js'
import { createNormalizer } from '../../src/core/pixel-normalizer.js'
import { isServiceError, type ErrorCode, type ServiceError } from '../../src/errors.js'
import { configFromPreset, type PreprocessConfig } from '../../src/repository/model-config.js'
import { progressiveJpeg, scanBomb, withExtraScans, withSegments } from '../fixtures/jpeg-scan-bomb.js'
import { extendedWebp, withJunkChunks } from '../fixtures/webp-chunks.js'
import { readPhoto } from '../helpers/photos.js'

/** The decoder and the normaliser on real sharp and real image bytes, built here or read from the fixtures. */

const TORCHVISION = configFromPreset('torchvision', { synthetic: true }).preprocess
const CAFFE = configFromPreset('caffe', { synthetic: true }).preprocess
const CROP = TORCHVISION.crop
const PIXEL_BYTES = CROP * CROP * 3
const preprocessor = new ImagePreprocessor(TORCHVISION, { maxInputPixels: 50_000_000 })

async function decodeError(bytes: Uint8Array, pre = preprocessor): Promise<ErrorCode> {
  return (await decodeFailure(bytes, pre)).code
}

async function decodeFailure(bytes: Uint8Array, pre = preprocessor, options: { signal?: AbortSignal } = {}): Promise<ServiceError> {
  try {
    await pre.decode(bytes, options)
  } catch (err) {
    if (isServiceError(err)) return err
    throw err
  }
  throw new Error('decoded without an error')
}

function meanAbsDiff(a: Uint8Array, b: Uint8Array): number {
  let sum = 0
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i]! - b[i]!)
  return sum / a.length
}

/** A 320×240 upright picture no rotation or mirror maps onto itself: gradients plus a red block top-left. */
function uprightPixels(width: number, height: number): Buffer {
  const px = Buffer.alloc(width * height * 3)
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3
      const block = x < width / 3 && y < height / 3
      px[i] = block ? 230 : Math.round((x / width) * 200)
      px[i + 1] = block ? 20 : Math.round((y / height) * 200)
      px[i + 2] = block ? 20 : 90
    }
  }
  return px
}

/** For EXIF orientation n: the upright (x, y) shown at stored column c, row r of an upright width×height image. */
const STORED_TO_UPRIGHT: Readonly<Record<number, (c: number, r: number, width: number, height: number) => [number, number]>> = {
  1: (c, r) => [c, r],
  2: (c, r, width) => [width - 1 - c, r],
  3: (c, r, width, height) => [width - 1 - c, height - 1 - r],
  4: (c, r, _width, height) => [c, height - 1 - r],
  5: (c, r) => [r, c],
  6: (c, r, width) => [width - 1 - r, c],
  7: (c, r, width, height) => [width - 1 - r, height - 1 - c],
  8: (c, r, _width, height) => [r, height - 1 - c]
}

/**
 * The stored pixels of an image shown upright under EXIF orientation n (EXIF 2.3 Table: row 0 and
 * column 0 of the stored image are the displayed top/left, top/right, bottom/right, bottom/left,
 * left/top, right/top, right/bottom, left/bottom for n = 1 … 8).
 */
function storedForOrientation(
  upright: Buffer,
  width: number,
  height: number,
  n: number
): { pixels: Buffer; width: number; height: number } {
  const swaps = n >= 5
  const sw = swaps ? height : width
  const sh = swaps ? width : height
  const source = STORED_TO_UPRIGHT[n]
  if (source === undefined) throw new Error(`orientation ${n}`)
  const stored = Buffer.alloc(upright.length)
  for (let r = 0; r < sh; r++) {
    for (let c = 0; c < sw; c++) {
      const [x, y] = source(c, r, width, height)
      upright.copy(stored, (r * sw + c) * 3, (y * width + x) * 3, (y * width + x) * 3 + 3)
    }
  }
  return { pixels: stored, width: sw, height: sh }
}

function rawImage(pixels: Buffer, width: number, height: number, channels: 1 | 2 | 3 | 4 = 3): Sharp {
  return sharp(pixels, { raw: { width, height, channels } })
}

/** A PNG chunk: length, type, data, CRC-32 over type and data. */
function pngChunk(type: string, data: Buffer): Buffer {
  const typeAndData = Buffer.concat([Buffer.from(type, 'ascii'), data])
  const out = Buffer.alloc(8 + data.length + 4)
  out.writeUInt32BE(data.length, 0)
  typeAndData.copy(out, 4)
  out.writeUInt32BE(crc32(typeAndData), 8 + data.length)
  return out
}

function crc32(bytes: Buffer): number {
  let crc = 0xffffffff
  for (const byte of bytes) {
    crc ^= byte
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1
  }
  return (crc ^ 0xffffffff) >>> 0
}

/** A valid-looking PNG whose IHDR declares width×height RGB but whose IDAT holds almost nothing: a decompression bomb's header. */
function pngDeclaring(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(width, 0)
  ihdr.writeUInt32BE(height, 4)
  ihdr.writeUInt8(8, 8) // bit depth
  ihdr.writeUInt8(2, 9) // colour type: RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', deflateSync(Buffer.alloc(1 + width * 3))),
    pngChunk('IEND', Buffer.alloc(0))
  ])
}

describe('torchvision geometry', () => {
  it('shorter side → resize, longer side truncated, as torchvision 0.14 computes it', () => {
    expect(resizedSize(500, 375, 256)).toEqual({ width: 341, height: 256 })
    expect(resizedSize(375, 500, 256)).toEqual({ width: 256, height: 341 })
    expect(resizedSize(741, 500, 256)).toEqual({ width: 379, height: 256 }) // 379.39 → 379
    expect(resizedSize(1, 1, 256)).toEqual({ width: 256, height: 256 })
    expect(resizedSize(512, 512, 256)).toEqual({ width: 256, height: 256 })
  })

  it('centre-crop offsets round half to even, as Python round() does', () => {
    expect(centreCropOffset(341, 256, 224)).toEqual({ left: 58, top: 16 }) // 58.5 → 58
    expect(centreCropOffset(379, 256, 224)).toEqual({ left: 78, top: 16 }) // 77.5 → 78
    expect(centreCropOffset(224, 224, 224)).toEqual({ left: 0, top: 0 })
  })
})

describe('ImagePreprocessor.decode', () => {
  it('gives crop×crop×3 bytes, the same bytes every time', async () => {
    const photo = await readPhoto('chelsea')
    const a = await preprocessor.decode(photo)
    const b = await preprocessor.decode(photo)
    expect(a).toHaveLength(PIXEL_BYTES)
    expect(Buffer.compare(a, b)).toBe(0)
    // A real photo, not a flat fill.
    expect(new Set(a).size).toBeGreaterThan(100)
  })

  it("decode 'fast' (the default) shrinks large JPEGs further while decoding than 'exact': the same crop, nearly the same pixels; small ones are untouched", async () => {
    const exact = new ImagePreprocessor({ ...TORCHVISION, decode: 'exact' }, { maxInputPixels: 50_000_000 })
    const fast = new ImagePreprocessor({ ...TORCHVISION, decode: 'fast' }, { maxInputPixels: 50_000_000 })
    // 1024×768: a shrink of 3, which 'fast' starts with a decoder shrink by 2 and 'exact' leaves whole to the kernel.
    const large = await readPhoto('retina')
    const [exactPixels, fastPixels] = [await exact.decode(large), await fast.decode(large)]
    expect(fastPixels).toHaveLength(PIXEL_BYTES)
    expect(Buffer.compare(exactPixels, fastPixels)).not.toBe(0)
    expect(meanAbsDiff(exactPixels, fastPixels)).toBeLessThan(1)
    expect(Buffer.compare(await preprocessor.decode(large), fastPixels), 'the default').toBe(0)
    // 451×300 needs less than a factor of 2: no shrink on load either way.
    const small = await readPhoto('chelsea')
    expect(Buffer.compare(await exact.decode(small), await fast.decode(small))).toBe(0)
  })

  it('uses the configured resize and crop', async () => {
    const small = new ImagePreprocessor({ ...TORCHVISION, resize: 160, crop: 128 }, { maxInputPixels: 50_000_000 })
    expect(await small.decode(await readPhoto('coffee'))).toHaveLength(128 * 128 * 3)
  })

  it('honours every EXIF orientation 1–8: all decode to the crop of the upright image', async () => {
    const width = 320
    const height = 240
    const upright = uprightPixels(width, height)
    const reference = await preprocessor.decode(await rawImage(upright, width, height).jpeg({ quality: 95 }).toBuffer())
    for (let n = 1; n <= 8; n++) {
      const stored = storedForOrientation(upright, width, height, n)
      const jpeg = await rawImage(stored.pixels, stored.width, stored.height)
        .withMetadata({ orientation: n })
        .jpeg({ quality: 95 })
        .toBuffer()
      expect((await sharp(jpeg).metadata()).orientation).toBe(n)
      const decoded = await preprocessor.decode(jpeg)
      // JPEG blocks fall differently on rotated pixels, hence "nearly".
      expect(meanAbsDiff(decoded, reference), `orientation ${n}`).toBeLessThan(1.5)
      if (n !== 1) {
        // The check has teeth: the same pixels without the orientation tag differ a lot.
        const unrotated = await preprocessor.decode(
          await rawImage(stored.pixels, stored.width, stored.height).jpeg({ quality: 95 }).toBuffer()
        )
        expect(meanAbsDiff(unrotated, reference), `orientation ${n} ignored`).toBeGreaterThan(10)
      }
    }
  })

  it('turns greyscale into three equal channels', async () => {
    const photo = await readPhoto('camera')
    expect((await sharp(photo).metadata()).channels).toBe(1)
    const px = await preprocessor.decode(photo)
    expect(px).toHaveLength(PIXEL_BYTES)
    for (let i = 0; i < px.length; i += 3) {
      if (px[i] !== px[i + 1] || px[i] !== px[i + 2]) throw new Error(`pixel ${i / 3} is not grey`)
    }
  })

  it('turns CMYK JPEG into sRGB', async () => {
    const cmyk = await sharp(await readPhoto('coffee'))
      .toColourspace('cmyk')
      .jpeg()
      .toBuffer()
    expect((await sharp(cmyk).metadata()).space).toBe('cmyk')
    const fromCmyk = await preprocessor.decode(cmyk)
    expect(fromCmyk).toHaveLength(PIXEL_BYTES)
    // A round trip through a CMYK profile is not exact, but it is the same picture.
    expect(meanAbsDiff(fromCmyk, await preprocessor.decode(await readPhoto('coffee')))).toBeLessThan(12)
  })

  it('turns 16-bit PNG into 8-bit', async () => {
    const png16 = await sharp(await readPhoto('chelsea'))
      .toColourspace('rgb16')
      .png()
      .toBuffer()
    expect((await sharp(png16).metadata()).depth).toBe('ushort')
    const px = await preprocessor.decode(png16)
    expect(px).toHaveLength(PIXEL_BYTES)
    expect(meanAbsDiff(px, await preprocessor.decode(await readPhoto('chelsea')))).toBeLessThan(1)
  })

  it.each([
    [64, 48, 'enlarged'],
    [400, 300, 'reduced']
  ])("drops alpha the way PIL's convert('RGB') does: a transparent pixel keeps its stored colour (%i×%i, %s)", async (width, height) => {
    const rgba = Buffer.alloc(width * height * 4)
    for (let i = 0; i < rgba.length; i += 4) rgba.set([200, 100, 50, i % 8 === 0 ? 0 : 128], i)
    const png = await rawImage(rgba, width, height, 4).png().toBuffer()
    expect((await sharp(png).metadata()).hasAlpha).toBe(true)
    const px = await preprocessor.decode(png)
    expect(px).toHaveLength(PIXEL_BYTES)
    for (let i = 0; i < px.length; i += 3) {
      if (px[i] !== 200 || px[i + 1] !== 100 || px[i + 2] !== 50) throw new Error(`pixel ${i / 3} is ${px[i]},${px[i + 1]},${px[i + 2]}`)
    }
  })

  it('enlarging clamps at the edges as PIL does: a flat image stays flat up to its border', async () => {
    // resize = crop, so the crop reaches the resized image's edges.
    const edgeToEdge = new ImagePreprocessor({ ...TORCHVISION, resize: 224, crop: 224 }, { maxInputPixels: 50_000_000 })
    const flat = await sharp({ create: { width: 7, height: 5, channels: 3, background: { r: 10, g: 200, b: 30 } } })
      .png()
      .toBuffer()
    const px = await edgeToEdge.decode(flat)
    for (let i = 0; i < px.length; i += 3) {
      if (px[i] !== 10 || px[i + 1] !== 200 || px[i + 2] !== 30) throw new Error(`pixel ${i / 3} is ${px[i]},${px[i + 1]},${px[i + 2]}`)
    }
  })

  it('enlarging samples at pixel centres: a left/right split image stays symmetric', async () => {
    const width = 10
    const height = 10
    const split = Buffer.alloc(width * height * 3)
    for (let y = 0; y < height; y++) for (let x = width / 2; x < width; x++) split.fill(255, (y * width + x) * 3, (y * width + x) * 3 + 3)
    const px = await preprocessor.decode(await rawImage(split, width, height).png().toBuffer())
    const row = 100 * CROP * 3
    for (let x = 0; x < CROP; x++) {
      // Mirror symmetry about the centre: pixel x and CROP−1−x sum to white, give or take rounding.
      // A quarter-pixel shift (libvips' own enlargement) would be 5 grey levels off at the edge.
      expect(Math.abs(px[row + x * 3]! + px[row + (CROP - 1 - x) * 3]! - 255), `column ${x}`).toBeLessThanOrEqual(1)
    }
  })

  it('decodes GIF, WebP, AVIF, TIFF and PNG of a photo to nearly the same pixels', async () => {
    const photo = await readPhoto('rocket')
    const fromJpeg = await preprocessor.decode(photo)
    const encodings: Array<[string, Buffer, number]> = [
      ['png', await sharp(photo).png().toBuffer(), 0.01],
      ['tiff', await sharp(photo).tiff({ compression: 'lzw' }).toBuffer(), 0.01],
      ['webp', await sharp(photo).webp({ quality: 90 }).toBuffer(), 3],
      ['avif', await sharp(photo).avif({ quality: 80 }).toBuffer(), 4],
      ['gif', await sharp(photo).gif().toBuffer(), 8]
    ]
    for (const [format, bytes, tolerance] of encodings) {
      expect((await sharp(bytes).metadata()).format, format).toBe(format === 'avif' ? 'heif' : format)
      const px = await preprocessor.decode(bytes)
      expect(px, format).toHaveLength(PIXEL_BYTES)
      expect(meanAbsDiff(px, fromJpeg), format).toBeLessThanOrEqual(tolerance)
    }
  })

  it('decodes only the first frame of an animated GIF and WebP, and the first page of a multi-page TIFF', async () => {
    const side = 32
    const frames = Buffer.alloc(side * side * 3 * 2)
    for (let i = 0; i < side * side; i++) frames.set([255, 0, 0], i * 3) // frame 1: red
    for (let i = side * side; i < 2 * side * side; i++) frames.set([0, 0, 255], i * 3) // frame 2: blue
    const source = (): Sharp => sharp(frames, { raw: { width: side, height: side * 2, channels: 3, pageHeight: side } })
    const files: Array<[string, Buffer]> = [
      ['gif', await source().gif().toBuffer()],
      ['webp', await source().webp({ lossless: true }).toBuffer()],
      ['tiff', await source().tiff({ compression: 'lzw' }).toBuffer()]
    ]
    for (const [format, bytes] of files) {
      expect((await sharp(bytes).metadata()).pages, format).toBe(2)
      const px = await preprocessor.decode(bytes)
      expect(px, format).toHaveLength(PIXEL_BYTES)
      expect([px[0], px[1], px[2]], format).toEqual([255, 0, 0])
      expect([px[PIXEL_BYTES - 3], px[PIXEL_BYTES - 2], px[PIXEL_BYTES - 1]], format).toEqual([255, 0, 0])
    }
  })

  it('scales a 1×1 image up to the full crop', async () => {
    const px = await preprocessor.decode(
      await rawImage(Buffer.from([10, 20, 30]), 1, 1)
        .png()
        .toBuffer()
    )
    expect(px).toHaveLength(PIXEL_BYTES)
    expect([px[0], px[1], px[2], px[PIXEL_BYTES - 1]]).toEqual([10, 20, 30, 30])
  })

  it('accepts a 32:1 strip', async () => {
    const strip = await sharp({ create: { width: 3200, height: 100, channels: 3, background: '#808080' } })
      .png()
      .toBuffer()
    expect(await preprocessor.decode(strip)).toHaveLength(PIXEL_BYTES)
  })
})

describe('ImagePreprocessor.decode rejects what it cannot or must not decode', () => {
  it.each<[string, ErrorCode, () => Promise<Uint8Array>]>([
    ['zero bytes', 'EMPTY_BODY', async () => new Uint8Array(0)],
    ['random bytes', 'NOT_AN_IMAGE', async () => Uint8Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) % 251)],
    ['text', 'NOT_AN_IMAGE', async () => Buffer.from('hello, this is not an image')],
    [
      'SVG',
      'UNSUPPORTED_IMAGE_FORMAT',
      async () =>
        Buffer.from(
          '<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><image href="http://example.invalid/x.png" width="100" height="100"/></svg>'
        )
    ],
    ['a PDF header', 'UNSUPPORTED_IMAGE_FORMAT', async () => Buffer.from('%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n')],
    [
      'a JPEG signature and nothing decodable behind it',
      'CORRUPT_IMAGE',
      async () => Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x02, 0x00])
    ],
    ['BMP', 'UNSUPPORTED_IMAGE_FORMAT', async () => Buffer.concat([Buffer.from('BM'), Buffer.alloc(60)])],
    [
      'truncated JPEG',
      'CORRUPT_IMAGE',
      async () => {
        const p = await readPhoto('chelsea')
        return p.subarray(0, p.length >> 1)
      }
    ],
    ['JPEG cut after its header', 'CORRUPT_IMAGE', async () => (await readPhoto('chelsea')).subarray(0, 700)],
    [
      'truncated PNG',
      'CORRUPT_IMAGE',
      async () => {
        const p = await sharp(await readPhoto('chelsea'))
          .png()
          .toBuffer()
        return p.subarray(0, p.length >> 1)
      }
    ],
    ['a PNG header declaring 30000×30000', 'IMAGE_TOO_LARGE', async () => pngDeclaring(30000, 30000)],
    [
      'a 10000×10 strip',
      'IMAGE_ASPECT_RATIO',
      async () =>
        sharp({ create: { width: 10000, height: 10, channels: 3, background: '#808080' } })
          .png()
          .toBuffer()
    ],
    [
      'a 10×10000 strip',
      'IMAGE_ASPECT_RATIO',
      async () =>
        sharp({ create: { width: 10, height: 10000, channels: 3, background: '#808080' } })
          .jpeg()
          .toBuffer()
    ]
  ])('%s → %s', async (_name, code, bytes) => {
    expect(await decodeError(await bytes())).toBe(code)
  })

  it('IMAGE_TOO_LARGE names the limit and its flag; CORRUPT_IMAGE of a photo without CR or LF (curl -d strips them) says to send --data-binary', async () => {
    expect((await decodeFailure(pngDeclaring(30000, 30000))).message).toMatch(/more than 50000000 pixels, --max-input-pixels/)
    const photo = await readPhoto('chelsea')
    const stripped = Buffer.from(photo.filter((b) => b !== 0x0a && b !== 0x0d))
    const mangled = await decodeFailure(stripped)
    expect(mangled.code).toBe('CORRUPT_IMAGE')
    expect(mangled.message).toMatch(/curl -d\/--data .*--data-binary @file/)
    // A file merely cut short keeps its line breaks and gets no such hint.
    expect((await decodeFailure(photo.subarray(0, photo.length >> 1))).message).not.toMatch(/--data-binary/)
  })

  it('a PNG declaring a size within the limit but holding no pixels → CORRUPT_IMAGE', async () => {
    expect(await decodeError(pngDeclaring(3000, 3000))).toBe('CORRUPT_IMAGE')
  })

  it('applies maxInputPixels from the limits given', async () => {
    const tight = new ImagePreprocessor(TORCHVISION, { maxInputPixels: 200_000 })
    expect(await decodeError(await readPhoto('coffee'), tight)).toBe('IMAGE_TOO_LARGE') // 600×400
    expect(await tight.decode(await readPhoto('chelsea'))).toHaveLength(PIXEL_BYTES) // 451×300
  })
})

describe('ImagePreprocessor.decode: admission before any pixel is decoded', () => {
  const svg = (body: string, side = 4096): Buffer =>
    Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="${side}" height="${side}">${body}</svg>`)

  it.each<[string, Buffer]>([
    // Regression: a 14.7 MB SVG sent as image/png took 10.6 s and +1.2 GB in librsvg before its 415;
    // DOCTYPE SVGs answered 400 CORRUPT_IMAGE and huge ones 413.
    ['a 14.7 MB SVG', svg('<rect width="9" height="9" fill="#123"/>'.repeat(14_700_000 / 39))],
    [
      'an SVG with a DOCTYPE',
      Buffer.from(
        '<?xml version="1.0"?><!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd"><svg xmlns="http://www.w3.org/2000/svg" width="30000" height="30000"/>'
      )
    ],
    ['an SVG declaring 30000×30000', svg('', 30_000)],
    ['XML', Buffer.from('<?xml version="1.0"?><note><to>x</to></note>')],
    ['HTML', Buffer.from('<!DOCTYPE html><html><body><svg width="10" height="10"></svg></body></html>')],
    ['PDF', Buffer.from('%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n')]
  ])('%s → UNSUPPORTED_IMAGE_FORMAT from its bytes alone: libvips never sees it', async (_name, bytes) => {
    const err = await decodeFailure(bytes)
    expect(err.code).toBe('UNSUPPORTED_IMAGE_FORMAT')
    // An error out of sharp would be its cause.
    expect(err.cause).toBeUndefined()
  })

  it('a progressive JPEG as encoders write it (10 scans) decodes', async () => {
    const jpeg = await sharp(await readPhoto('chelsea'))
      .jpeg({ progressive: true })
      .toBuffer()
    expect(await preprocessor.decode(jpeg)).toHaveLength(PIXEL_BYTES)
    // …and so does one at the limit exactly.
    const atLimit = new ImagePreprocessor(TORCHVISION, { maxInputPixels: 50_000_000, maxJpegScans: 12 })
    expect(await atLimit.decode(withExtraScans(await progressiveJpeg(512), 512, 2))).toHaveLength(PIXEL_BYTES)
  })

  it('regression: a progressive JPEG with 10,000 empty scans (53 s of decoding) is refused from its markers: IMAGE_TOO_COMPLEX', async () => {
    const bomb = await scanBomb(1024, 10_000)
    const err = await decodeFailure(bomb)
    expect(err.code).toBe('IMAGE_TOO_COMPLEX')
    expect(err.cause).toBeUndefined()
    const tight = new ImagePreprocessor(TORCHVISION, { maxInputPixels: 50_000_000, maxJpegScans: 11 })
    expect(await decodeError(withExtraScans(await progressiveJpeg(512), 512, 2), tight)).toBe('IMAGE_TOO_COMPLEX')
  })

  it('regression: a JPEG behind 4 M empty APP2 segments (16 MB; 1.1 GB and 7 s in libjpeg, outside the decode budget) is refused from its markers: IMAGE_TOO_COMPLEX', async () => {
    const small = await progressiveJpeg(64)
    const err = await decodeFailure(withSegments(small, 0xe2, 4_000_000))
    expect(err.code).toBe('IMAGE_TOO_COMPLEX')
    expect(err.message).toMatch(/more than 1024 marker segments/)
    // Refused by the walk, before libvips (whose error would be the cause; it decodes the file).
    expect(err.cause).toBeUndefined()
    // At the limit it decodes, as do about 250 APP2 chunks of 64 KB (a 16 MB ICC profile's worth).
    const segments = countJpegSegments(small).segments
    expect(await preprocessor.decode(withSegments(small, 0xe2, MAX_JPEG_SEGMENTS - segments))).toHaveLength(PIXEL_BYTES)
    expect(await decodeError(withSegments(small, 0xe2, MAX_JPEG_SEGMENTS - segments + 1))).toBe('IMAGE_TOO_COMPLEX')
    expect(await preprocessor.decode(withSegments(small, 0xe2, 250, 65_000))).toHaveLength(PIXEL_BYTES)
  })

  it('regression: a WebP behind 2 M empty chunks (16 MB; 260 MB and 1.5 s in libwebp, outside the decode budget) is refused from its chunk headers: IMAGE_TOO_COMPLEX', async () => {
    const webp = await extendedWebp()
    const err = await decodeFailure(withJunkChunks(webp, 2_000_000))
    expect(err.code).toBe('IMAGE_TOO_COMPLEX')
    expect(err.message).toMatch(/a WebP of more than 4096 chunks/)
    expect(err.cause).toBeUndefined()
    expect(await preprocessor.decode(withJunkChunks(webp, MAX_WEBP_CHUNKS - 3))).toHaveLength(PIXEL_BYTES)
    expect(await decodeError(withJunkChunks(webp, MAX_WEBP_CHUNKS - 2))).toBe('IMAGE_TOO_COMPLEX')
  })

  it('a decode that runs over the decode timeout is stopped by libvips: IMAGE_TOO_COMPLEX', async () => {
    // The scan limit lifted, so only the timeout stands in the way (several seconds of decoding on an idle core).
    const unlimited = new ImagePreprocessor(TORCHVISION, { maxInputPixels: 50_000_000, maxJpegScans: 100_000, decodeTimeoutSeconds: 1 })
    const err = await decodeFailure(await scanBomb(3000, 5_000), unlimited)
    expect(err.code).toBe('IMAGE_TOO_COMPLEX')
    expect(String((err.cause as Error).message)).toMatch(/timeout/)
  })

  it('a client that has gone gets no decode: CLIENT_CLOSED before libvips decodes a pixel', async () => {
    const gone = new AbortController()
    gone.abort()
    const err = await decodeFailure(await readPhoto('chelsea'), preprocessor, { signal: gone.signal })
    expect(err.code).toBe('CLIENT_CLOSED')
  })

  it('takes a share of the decode budget sized from the header, and gives it back, whatever the outcome', async () => {
    const budget = new DecodeBudget({ maxConcurrent: 2, budgetBytes: 64 * 2 ** 20, maxQueued: 8 })
    const pre = new ImagePreprocessor(TORCHVISION, { maxInputPixels: 50_000_000, budget })
    const photos = await Promise.all(['chelsea', 'coffee', 'astronaut', 'rocket'].map((name) => readPhoto(name)))
    const decoded = await Promise.all(photos.map((p) => pre.decode(p)))
    expect(decoded.every((px) => px.length === PIXEL_BYTES)).toBe(true)
    expect(await decodeError(pngDeclaring(3000, 3000), pre)).toBe('CORRUPT_IMAGE')
    expect([budget.running, budget.queued, budget.bytesInFlight]).toEqual([0, 0, 0])
  })

  it('an image whose decode alone would exceed the budget is refused before decoding: IMAGE_TOO_LARGE', async () => {
    const budget = new DecodeBudget({ maxConcurrent: 2, budgetBytes: 64 * 2 ** 20, maxQueued: 8 })
    const pre = new ImagePreprocessor(TORCHVISION, { maxInputPixels: 50_000_000, budget })
    // 4000×4000 RGBA: its full-size RGB copy alone is 48 MB, over the 56 MiB one decode may take with its rows.
    const rgba = await sharp({ create: { width: 4000, height: 4000, channels: 4, background: { r: 1, g: 2, b: 3, alpha: 0.5 } } })
      .png()
      .toBuffer()
    const err = await decodeFailure(rgba, pre)
    expect(err.code).toBe('IMAGE_TOO_LARGE')
    expect(err.message).toMatch(/decode budget/)
  })
})

describe('decodeCostBytes', () => {
  const metadataOf = async (image: Sharp): Promise<Metadata> => sharp(await image.toBuffer()).metadata()
  const side = 1000
  const noise = (channels: 3 | 4): Sharp =>
    sharp({ create: { width: side, height: side, channels, background: '#808080', noise: { type: 'gaussian', mean: 128, sigma: 20 } } })
  const perPixel = async (image: Sharp, enlarging = false): Promise<number> =>
    decodeCostBytes(await metadataOf(image), enlarging) / (side * side)

  it('counts what each loader holds per pixel: nothing but rows for streamed formats, the whole image for the others', async () => {
    const rows = (5 * 1024 * side) / (side * side)
    expect(await perPixel(noise(3).jpeg())).toBeCloseTo(rows, 6)
    expect(await perPixel(noise(3).png())).toBeCloseTo(rows, 6)
    expect(await perPixel(noise(3).png({ progressive: true }))).toBeCloseTo(3 + rows, 6)
    // 4:2:0 coefficients: 2 bytes × (1 + ¼ + ¼); 4:4:4: 2 × 3.
    expect(await perPixel(noise(3).jpeg({ progressive: true }))).toBeCloseTo(3 + rows, 6)
    expect(await perPixel(noise(3).jpeg({ progressive: true, chromaSubsampling: '4:4:4' }))).toBeCloseTo(6 + rows, 6)
    expect(await perPixel(noise(3).webp())).toBeCloseTo(8 + rows, 6)
    expect(await perPixel(noise(3).tiff())).toBeCloseTo(3 + rows, 6)
  })

  it('alpha and 16-bit images cost more than plain 8-bit RGB (the RGB copy; wider rows and samples)', async () => {
    const rgb = await perPixel(noise(3).png())
    const rgba = await perPixel(noise(4).png())
    const rgba16 = await perPixel(noise(4).toColourspace('rgb16').png({ progressive: true }))
    expect(rgba).toBeCloseTo(rgb + 3, 6)
    // Interlaced 16-bit RGBA: the whole image at 8 bytes a pixel, plus the RGB copy, plus rows twice as wide.
    expect(rgba16).toBeCloseTo(8 + 3 + 2 * rgb, 6)
  })

  it('an enlargement, and a rotated or flipped orientation, hold the image too', async () => {
    const rows = (5 * 1024 * side) / (side * side)
    expect(await perPixel(noise(3).png(), true)).toBeCloseTo(3 + rows, 6)
    expect(await perPixel(noise(3).withMetadata({ orientation: 6 }).jpeg())).toBeCloseTo(3 + rows, 6)
  })
})

describe('createNormalizer', () => {
  const identity: PreprocessConfig = { resize: 2, crop: 2, colorOrder: 'RGB', scale: 1, mean: [0, 0, 0], std: [1, 1, 1] }
  // 2×2 HWC pixels: (R, G, B) = (10·k + 1, 10·k + 2, 10·k + 3) for pixel k.
  const pixels = Uint8Array.from([1, 2, 3, 11, 12, 13, 21, 22, 23, 31, 32, 33])

  it('writes CHW planes at the offset and leaves the rest of the target alone', () => {
    const target = new Float32Array(2 + 12 + 2).fill(-7)
    createNormalizer(identity)(pixels, target, 2)
    expect([...target]).toEqual([-7, -7, 1, 11, 21, 31, 2, 12, 22, 32, 3, 13, 23, 33, -7, -7])
  })

  it('BGR swaps the first and last planes of RGB', () => {
    const rgb = new Float32Array(12)
    const bgr = new Float32Array(12)
    createNormalizer(identity)(pixels, rgb, 0)
    createNormalizer({ ...identity, colorOrder: 'BGR' })(pixels, bgr, 0)
    expect([...bgr.subarray(0, 4)]).toEqual([...rgb.subarray(8, 12)])
    expect([...bgr.subarray(4, 8)]).toEqual([...rgb.subarray(4, 8)])
    expect([...bgr.subarray(8, 12)]).toEqual([...rgb.subarray(0, 4)])
  })

  it('caffe preset: BGR, pixel minus the per-channel mean, no scaling', () => {
    const plane = CAFFE.crop * CAFFE.crop
    const px = new Uint8Array(plane * 3)
    px.set([10, 20, 30]) // first pixel R=10, G=20, B=30
    const out = new Float32Array(plane * 3)
    createNormalizer(CAFFE)(px, out, 0)
    expect(out[0]).toBeCloseTo(30 - 103.939, 4) // B
    expect(out[plane]).toBeCloseTo(20 - 116.779, 4) // G
    expect(out[2 * plane]).toBeCloseTo(10 - 123.68, 4) // R
  })

  it('torchvision preset: (p / 255 − mean) / std, RGB', () => {
    const plane = CROP * CROP
    const px = new Uint8Array(plane * 3)
    px.set([10, 128, 255])
    const out = new Float32Array(plane * 3)
    createNormalizer(TORCHVISION)(px, out, 0)
    expect(out[0]).toBeCloseTo((10 / 255 - 0.485) / 0.229, 5)
    expect(out[plane]).toBeCloseTo((128 / 255 - 0.456) / 0.224, 5)
    expect(out[2 * plane]).toBeCloseTo((255 / 255 - 0.406) / 0.225, 5)
  })

  it('refuses a target too small for the image at that offset', () => {
    expect(() => createNormalizer(identity)(pixels, new Float32Array(12), 1)).toThrow(RangeError)
  })
})
