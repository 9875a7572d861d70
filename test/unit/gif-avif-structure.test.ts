import sharp from 'sharp'
import { describe, expect, it } from 'vitest'
import { avifItemsRefusal, MAX_AVIF_BOXES, measureAvifItems } from '../../src/core/avif-items.js'
import { gifStructureRefusal, MAX_GIF_FRAMES, measureGif } from '../../src/core/gif-frames.js'

const countGifFrames = (bytes: Uint8Array): number => measureGif(bytes).frames
import { ImagePreprocessor } from '../../src/core/preprocess.js'
import { configFromPreset } from '../../src/repository/model-config.js'
import { manyFrameGif } from '../fixtures/gif-frames.js'

/** The GIF frame count and the AVIF item walk, on files sharp writes and on floods. Unit tier. */

const preprocessor = (): ImagePreprocessor =>
  new ImagePreprocessor(configFromPreset('torchvision', { synthetic: true }).preprocess, { maxInputPixels: 50_000_000 })

describe('countGifFrames', () => {
  it('counts the frames of what sharp writes, and of a GIF of repeated frames libvips reads as pages', async () => {
    expect(countGifFrames(await manyFrameGif(1))).toBe(1)
    const ten = await manyFrameGif(10)
    expect(countGifFrames(ten)).toBe(10)
    expect((await sharp(ten, { pages: -1 }).metadata()).pages).toBe(10)
  })

  it('stops past the limit; the preprocessor refuses such a GIF IMAGE_TOO_COMPLEX and decodes a short animation', async () => {
    const flood = await manyFrameGif(MAX_GIF_FRAMES + 100)
    expect(countGifFrames(flood)).toBe(MAX_GIF_FRAMES + 1)
    await expect(preprocessor().decode(flood)).rejects.toMatchObject({ code: 'IMAGE_TOO_COMPLEX' })
    expect((await preprocessor().decode(await manyFrameGif(50))).byteLength).toBe(224 * 224 * 3)
  })
})

/** An ISO BMFF box: size, type, payload. */
function box(type: string, payload: Buffer): Buffer {
  const head = Buffer.alloc(8)
  head.writeUInt32BE(8 + payload.byteLength, 0)
  head.write(type, 4, 'latin1')
  return Buffer.concat([head, payload])
}

/** An AVIF-shaped file whose `iloc` (version 0, 4-byte offsets and lengths) locates `items` items, each at [0, length). */
function avifWithItems(items: number, length: (fileBytes: number) => number): Buffer {
  const build = (extentLength: number): Buffer => {
    const iloc = Buffer.alloc(4 + 2 + 2 + items * (2 + 2 + 2 + 8))
    iloc.writeUInt16BE(0x4400, 4) // offset_size 4, length_size 4, base_offset_size 0
    iloc.writeUInt16BE(items, 6)
    for (let i = 0; i < items; i++) {
      const at = 8 + i * 14
      iloc.writeUInt16BE(i + 1, at) // item_ID
      iloc.writeUInt16BE(1, at + 4) // extent_count
      iloc.writeUInt32BE(0, at + 6)
      iloc.writeUInt32BE(extentLength, at + 10)
    }
    const ftyp = box('ftyp', Buffer.from('avif\0\0\0\0avifmif1', 'latin1'))
    const meta = box('meta', Buffer.concat([Buffer.alloc(4), box('iloc', iloc)]))
    return Buffer.concat([ftyp, meta, box('mdat', Buffer.alloc(4096))])
  }
  const size = build(0).byteLength
  return build(length(size))
}

describe('measureAvifItems', () => {
  it('what sharp writes locates a few items within the file', async () => {
    const avif = await sharp({ create: { width: 64, height: 48, channels: 4, background: '#48c8' } })
      .withExif({ IFD0: { Copyright: 'test' } })
      .avif()
      .toBuffer()
    const items = measureAvifItems(avif)
    expect(items.items).toBeGreaterThan(0)
    expect(items.items).toBeLessThan(6)
    expect(items.extentBytes).toBeLessThanOrEqual(avif.byteLength)
    expect(avifItemsRefusal(avif)).toBeUndefined()
  })

  it('refuses items whose extents overlap past the file (each Exif item is read in full while the header is read)', () => {
    expect(avifItemsRefusal(avifWithItems(3, () => 1000))).toBeUndefined()
    const shared = avifWithItems(150, (size) => size)
    expect(avifItemsRefusal(shared)).toBe('an AVIF whose items point at more data than the file holds')
  })

  it('refuses more top-level boxes than a file needs', () => {
    const floods = Buffer.concat([
      box('ftyp', Buffer.from('avif\0\0\0\0avifmif1', 'latin1')),
      ...Array.from({ length: MAX_AVIF_BOXES + 10 }, () => box('free', Buffer.alloc(0)))
    ])
    expect(avifItemsRefusal(floods)).toMatch(/more than 1024 boxes/)
  })

  it('the preprocessor refuses the shared extents IMAGE_TOO_COMPLEX before libheif reads them', async () => {
    await expect(preprocessor().decode(avifWithItems(150, (size) => size))).rejects.toMatchObject({ code: 'IMAGE_TOO_COMPLEX' })
  })
})

describe('round 4b: the walks follow the decoders, and refuse what they cannot follow', () => {
  it('GIF: frames after an extension whose first block is empty are counted (libnsgif skips that block whole)', async () => {
    const one = await manyFrameGif(1)
    const frame = one.subarray(one.indexOf(0x2c, 13), one.byteLength - 1)
    // 21 FF, first block of 0 bytes, a 1-byte sub-block, terminator: then 5000 frames.
    const hidden = Buffer.concat([
      one.subarray(0, one.byteLength - 1),
      Buffer.from([0x21, 0xff, 0x00, 0x01, 0x01, 0x00]),
      ...Array.from({ length: 5000 }, () => frame),
      Buffer.from([0x3b])
    ])
    expect(measureGif(hidden).frames).toBe(MAX_GIF_FRAMES + 1)
    expect(gifStructureRefusal(hidden)).toMatch(/more than 4096 frames/)
  })

  it('GIF: a byte where no block starts, bytes left, is refused; so is a flood of tiny sub-blocks', async () => {
    const one = await manyFrameGif(1)
    expect(gifStructureRefusal(one)).toBeUndefined()
    const stray = Buffer.concat([one.subarray(0, one.byteLength - 1), Buffer.from([0x2d, 0, 0, 0, 0, 0x3b])])
    expect(gifStructureRefusal(stray)).toBe('a GIF whose blocks cannot be followed to its end')
    const flood = Buffer.concat([
      one.subarray(0, one.byteLength - 1),
      Buffer.from([0x21, 0xfe]),
      Buffer.alloc(400_000, 0x01),
      Buffer.from([0, 0x3b])
    ])
    expect(gifStructureRefusal(flood)).toMatch(/data sub-blocks/)
  })

  it('AVIF: item locations with a field size the walk does not read as libheif does are refused, not passed', () => {
    const avif = avifWithItems(3, () => 1000)
    const iloc = avif.indexOf(Buffer.from('iloc'))
    avif.writeUInt16BE(0x2400, iloc + 8) // offset_size 2
    expect(measureAvifItems(avif).unreadable).toBe(true)
    expect(avifItemsRefusal(avif)).toBe('an AVIF whose item locations cannot be read')
  })

  it('AVIF: an image sequence whose sample tables have more entries than animations need is refused', () => {
    const table = (type: string, count: number): Buffer => {
      const payload = Buffer.alloc(8 + (type === 'stsz' ? 4 : 0))
      payload.writeUInt32BE(count, type === 'stsz' ? 8 : 4)
      return box(type, payload)
    }
    const moov = (count: number): Buffer =>
      box('moov', box('trak', box('mdia', box('minf', box('stbl', Buffer.concat([table('stsc', count), table('stco', count)]))))))
    const still = avifWithItems(1, () => 1000)
    expect(avifItemsRefusal(Buffer.concat([still, moov(100)]))).toBeUndefined()
    expect(avifItemsRefusal(Buffer.concat([still, moov(60_000)]))).toMatch(/sample table/)
  })
})
