import sharp from 'sharp'
import { describe, expect, it } from 'vitest'
import { MAX_TIFF_ENTRIES_PER_PAGE, MAX_TIFF_PAGES, measureTiff, tiffStructureRefusal } from '../../src/core/tiff-ifds.js'
import { ImagePreprocessor } from '../../src/core/preprocess.js'
import { configFromPreset } from '../../src/repository/model-config.js'
import { multiPageTiff, sharedArrayTiff, tiffWithTags } from '../fixtures/tiff-pages.js'

/** The TIFF structure walk on files sharp writes, on directory chains, tag floods and shared arrays. Unit tier. */

describe('measureTiff', () => {
  it('what sharp writes has one page of a few tags, its arrays within the file; little- or big-endian, BigTIFF too', async () => {
    const image = sharp({ create: { width: 300, height: 200, channels: 3, background: '#48c' } })
    for (const tiff of [
      await image.clone().tiff().toBuffer(),
      await image.clone().tiff({ bigtiff: true }).toBuffer(),
      await image.clone().tiff({ compression: 'jpeg', tile: true, tileWidth: 64, tileHeight: 64 }).toBuffer()
    ]) {
      const t = measureTiff(tiff)
      expect(t.pages).toBe(1)
      expect(t.largestDirectory).toBeLessThan(30)
      expect(t.arrayBytes).toBeLessThanOrEqual(tiff.byteLength)
      expect(tiffStructureRefusal(tiff)).toBeUndefined()
    }
  })

  it('counts a chain of pages, stops past the limit, and stops where the chain loops back', () => {
    expect(measureTiff(multiPageTiff(5)).pages).toBe(5)
    expect(measureTiff(multiPageTiff(5_000)).pages).toBe(MAX_TIFF_PAGES + 1)
    expect(measureTiff(multiPageTiff(3, true)).pages).toBe(3)
    expect(tiffStructureRefusal(multiPageTiff(MAX_TIFF_PAGES + 1))).toMatch(/more than 256 pages/)
  })

  it('refuses a page of more tags than real files have (libtiff registers each unknown one against the others)', () => {
    expect(tiffStructureRefusal(tiffWithTags(40))).toBeUndefined()
    expect(measureTiff(tiffWithTags(4000)).largestDirectory).toBe(4009)
    expect(tiffStructureRefusal(tiffWithTags(MAX_TIFF_ENTRIES_PER_PAGE))).toMatch(/a TIFF page of more than 256 tags/)
  })

  it('refuses pages whose arrays point at one shared place, adding up to more than the file holds', () => {
    const shared = sharedArrayTiff(64, 200_000)
    expect(shared.byteLength).toBeLessThan(10_000)
    expect(tiffStructureRefusal(shared)).toBe('a TIFF whose tags point at more data than the file holds')
  })

  it('the chain and the tag flood are TIFFs libvips reads (so the walk, not a decoder error, is what stops them)', async () => {
    expect((await sharp(multiPageTiff(40)).metadata()).pages).toBe(40)
    expect((await sharp(tiffWithTags(300)).metadata()).width).toBe(8)
  })

  it('the preprocessor refuses them IMAGE_TOO_COMPLEX before libvips reads them, and decodes a few pages', async () => {
    const pre = new ImagePreprocessor(configFromPreset('torchvision', { synthetic: true }).preprocess, { maxInputPixels: 50_000_000 })
    for (const tiff of [multiPageTiff(MAX_TIFF_PAGES + 1), tiffWithTags(300), sharedArrayTiff(16, 100_000)]) {
      await expect(pre.decode(tiff)).rejects.toMatchObject({ code: 'IMAGE_TOO_COMPLEX' })
    }
    expect((await pre.decode(multiPageTiff(3))).byteLength).toBe(224 * 224 * 3)
  })
})

describe("measureTiff: the first page's strips", () => {
  it('refuses strips whose byte counts add up to more than the file (every strip reading one shared stream)', () => {
    // One page of 8 rows, one strip each, every strip declared 1 MiB at offset 8.
    const tiff = multiPageTiff(1)
    const first = tiff.readUInt32LE(4)
    const counts = Buffer.alloc(8 * 4)
    const offsets = Buffer.alloc(8 * 4)
    for (let i = 0; i < 8; i++) {
      counts.writeUInt32LE(1 << 20, i * 4)
      offsets.writeUInt32LE(8, i * 4)
    }
    const arrays = tiff.byteLength
    const shared = Buffer.concat([tiff, offsets, counts])
    for (const [index, at] of [
      [5, arrays],
      [8, arrays + 32]
    ] as const) {
      const entry = first + 2 + index * 12
      shared.writeUInt32LE(8, entry + 4)
      shared.writeUInt32LE(at, entry + 8)
    }
    shared.writeUInt16LE(1, first + 2 + 7 * 12 + 8) // RowsPerStrip 1
    expect(measureTiff(shared).blockBytes).toBe(8 << 20)
    expect(tiffStructureRefusal(shared)).toMatch(/strips or tiles share data/)
    expect(tiffStructureRefusal(tiff)).toBeUndefined()
  })
})
