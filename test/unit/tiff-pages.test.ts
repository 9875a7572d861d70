import sharp from 'sharp'
import { describe, expect, it } from 'vitest'
import { MAX_TIFF_PAGES, countTiffPages } from '../../src/core/tiff-ifds.js'
import { ImagePreprocessor } from '../../src/core/preprocess.js'
import { configFromPreset } from '../../src/repository/model-config.js'
import { multiPageTiff } from '../fixtures/tiff-pages.js'

/** The TIFF page counter on files sharp writes and on directory chains. Unit tier. */

describe('countTiffPages', () => {
  it('what sharp writes has one page, little- or big-endian; BigTIFF too', async () => {
    const image = sharp({ create: { width: 32, height: 24, channels: 3, background: '#48c' } })
    expect(countTiffPages(await image.clone().tiff().toBuffer())).toBe(1)
    expect(countTiffPages(await image.clone().tiff({ bigtiff: true }).toBuffer())).toBe(1)
  })

  it('counts a chain of pages, stops past the limit, and stops where the chain loops back', () => {
    expect(countTiffPages(multiPageTiff(5))).toBe(5)
    expect(countTiffPages(multiPageTiff(5_000))).toBe(MAX_TIFF_PAGES + 1)
    expect(countTiffPages(multiPageTiff(3, true))).toBe(3)
  })

  it('the chain is a TIFF libvips reads, page by page (so the count, not a decoder error, is what stops it)', async () => {
    expect((await sharp(multiPageTiff(40)).metadata()).pages).toBe(40)
  })

  it('the preprocessor refuses more pages IMAGE_TOO_COMPLEX before libvips reads them, and decodes a few', async () => {
    const pre = new ImagePreprocessor(configFromPreset('torchvision', { synthetic: true }).preprocess, { maxInputPixels: 50_000_000 })
    await expect(pre.decode(multiPageTiff(MAX_TIFF_PAGES + 1))).rejects.toMatchObject({ code: 'IMAGE_TOO_COMPLEX' })
    expect((await pre.decode(multiPageTiff(3))).byteLength).toBe(224 * 224 * 3)
  })
})
