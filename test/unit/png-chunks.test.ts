import sharp from 'sharp'
import { describe, expect, it } from 'vitest'
import { MAX_PNG_TEXT_BYTES, MAX_PNG_TEXT_CHUNKS, pngCompressedText } from '../../src/core/png-chunks.js'
import { ImagePreprocessor } from '../../src/core/preprocess.js'
import { configFromPreset } from '../../src/repository/model-config.js'
import { afterImageData, iTXt, smallPng, withChunks, zTXt } from '../fixtures/png-chunks.js'

/** The PNG compressed-text measure, on files sharp writes and on text floods. Unit tier. */

describe('pngCompressedText', () => {
  it('what sharp writes has none; a few kilobytes of XMP or comments are measured as they inflate', async () => {
    const png = await smallPng()
    expect(pngCompressedText(png)).toEqual({ chunks: 0, inflatedBytes: 0 })
    const tagged = withChunks(png, [zTXt(3000), iTXt(20_000, true), iTXt(50_000, false)])
    // The uncompressed iTXt costs nothing to read: it is not counted.
    expect(pngCompressedText(tagged)).toEqual({ chunks: 2, inflatedBytes: 23_000 })
  })

  it('a chunk that inflates past the bound stops the count there, without inflating the rest', async () => {
    const bomb = withChunks(await smallPng(), [zTXt(48 << 20)])
    expect(bomb.byteLength).toBeLessThan(100_000)
    expect(pngCompressedText(bomb).inflatedBytes).toBe(MAX_PNG_TEXT_BYTES + 1)
    const many = withChunks(
      await smallPng(),
      Array.from({ length: MAX_PNG_TEXT_CHUNKS + 10 }, () => zTXt(10))
    )
    expect(pngCompressedText(many).chunks).toBe(MAX_PNG_TEXT_CHUNKS + 1)
  })

  it('text after the image data is not read by the decoder, and not measured', async () => {
    expect(pngCompressedText(afterImageData(await smallPng(), zTXt(48 << 20)))).toEqual({ chunks: 0, inflatedBytes: 0 })
  })

  it('the flood is a PNG libvips decodes (so the measure, not a decoder error, is what stops it)', async () => {
    const { info } = await sharp(withChunks(await smallPng(), [zTXt(4 << 20)]))
      .raw()
      .toBuffer({ resolveWithObject: true })
    expect([info.width, info.height]).toEqual([64, 48])
  })

  it('the preprocessor refuses a text bomb IMAGE_TOO_COMPLEX before libvips sees it, and decodes a PNG with ordinary text', async () => {
    const pre = new ImagePreprocessor(configFromPreset('torchvision', { synthetic: true }).preprocess, { maxInputPixels: 50_000_000 })
    const png = await smallPng()
    await expect(pre.decode(withChunks(png, [zTXt(48 << 20)]))).rejects.toMatchObject({ code: 'IMAGE_TOO_COMPLEX' })
    const decoded = await pre.decode(withChunks(png, [zTXt(3000), iTXt(20_000, true)]))
    expect(decoded.byteLength).toBe(224 * 224 * 3)
  })
})
