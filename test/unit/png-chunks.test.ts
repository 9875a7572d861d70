import { randomBytes } from 'node:crypto'
import { deflateSync } from 'node:zlib'
import sharp from 'sharp'
import { describe, expect, it } from 'vitest'
import {
  MAX_PNG_CHUNKS_BEFORE_IMAGE,
  MAX_PNG_COMPRESSED_TEXT_BYTES,
  MAX_PNG_ICC_BYTES,
  MAX_PNG_TEXT_BYTES,
  MAX_PNG_TEXT_CHUNKS,
  measurePngHeader,
  pngHeaderRefusal
} from '../../src/core/png-chunks.js'
import { ImagePreprocessor } from '../../src/core/preprocess.js'
import { configFromPreset } from '../../src/repository/model-config.js'
import { afterImageData, chunk, iTXt, smallPng, withChunks, zTXt } from '../fixtures/png-chunks.js'

/** What libpng reads before a PNG's image data, measured on files sharp writes and on floods. Unit tier. */

/** A zTXt chunk whose stream is `bytes` of incompressible data: costly to walk, whatever it inflates to. */
const randomZTXt = (bytes: number): Buffer =>
  chunk('zTXt', Buffer.concat([Buffer.from('Comment\0\0', 'latin1'), deflateSync(randomBytes(bytes), { level: 0 })]))

describe('measurePngHeader', () => {
  it('what sharp writes has a few chunks and no text; a few kilobytes of XMP or comments are measured as they inflate', async () => {
    const png = await smallPng()
    const plain = measurePngHeader(png)
    expect(plain).toMatchObject({ textChunks: 0, compressedTextBytes: 0, inflatedTextBytes: 0, iccBytes: 0 })
    expect(plain.chunks).toBeLessThan(5)
    const tagged = withChunks(png, [zTXt(3000), iTXt(20_000, true), iTXt(50_000, false)])
    // The uncompressed iTXt costs nothing to inflate: it is counted as a chunk only.
    expect(measurePngHeader(tagged)).toMatchObject({ chunks: plain.chunks + 3, textChunks: 2, inflatedTextBytes: 23_000 })
    expect(pngHeaderRefusal(tagged)).toBeUndefined()
  })

  it('a chunk that inflates past the bound stops the count there, without inflating the rest', async () => {
    const bomb = withChunks(await smallPng(), [zTXt(48 << 20)])
    expect(bomb.byteLength).toBeLessThan(100_000)
    expect(measurePngHeader(bomb).inflatedTextBytes).toBe(MAX_PNG_TEXT_BYTES + 1)
    expect(pngHeaderRefusal(bomb)).toMatch(/inflates to more than/)
    const many = withChunks(
      await smallPng(),
      Array.from({ length: MAX_PNG_TEXT_CHUNKS + 10 }, () => zTXt(10))
    )
    expect(measurePngHeader(many).textChunks).toBe(MAX_PNG_TEXT_CHUNKS + 1)
    expect(pngHeaderRefusal(many)).toMatch(/more than 64 compressed text chunks/)
  })

  it('compressed text is bounded by its own bytes too: zlib walks a stream that inflates to little as long as one that inflates to much', async () => {
    const png = await smallPng()
    expect(pngHeaderRefusal(withChunks(png, [randomZTXt(MAX_PNG_COMPRESSED_TEXT_BYTES / 2)]))).toBeUndefined()
    const walked = withChunks(png, [randomZTXt(MAX_PNG_COMPRESSED_TEXT_BYTES + 1000)])
    expect(pngHeaderRefusal(walked)).toMatch(/more than 131072 bytes of compressed text/)
    // Refused from the chunk's length, before any of it is inflated.
    expect(measurePngHeader(walked).inflatedTextBytes).toBe(0)
  })

  it('more chunks before the image data than real files have (zero-length gAMA: one libpng warning each) are refused', async () => {
    const png = await smallPng()
    const gama = chunk('gAMA', Buffer.alloc(0))
    expect(
      pngHeaderRefusal(
        withChunks(
          png,
          Array.from({ length: 20 }, () => gama)
        )
      )
    ).toBeUndefined()
    const flood = withChunks(
      png,
      Array.from({ length: 5000 }, () => gama)
    )
    expect(measurePngHeader(flood).chunks).toBe(MAX_PNG_CHUNKS_BEFORE_IMAGE + 1)
    expect(pngHeaderRefusal(flood)).toMatch(/more than 256 chunks before its image data/)
  })

  it('an ICC profile chunk over the bound is refused', async () => {
    const iccp = (bytes: number): Buffer => chunk('iCCP', Buffer.concat([Buffer.from('icc\0\0', 'latin1'), randomBytes(bytes)]))
    expect(pngHeaderRefusal(withChunks(await smallPng(), [iccp(4000)]))).toBeUndefined()
    expect(pngHeaderRefusal(withChunks(await smallPng(), [iccp(MAX_PNG_ICC_BYTES + 10)]))).toMatch(/ICC profile is more than/)
  })

  it('chunks after the image data are not read by the decoder, and not measured', async () => {
    const png = await smallPng()
    const after = afterImageData(png, zTXt(48 << 20))
    expect(measurePngHeader(after)).toEqual(measurePngHeader(png))
  })

  it('the floods are PNGs libvips decodes (so the measure, not a decoder error, is what stops them)', async () => {
    for (const extra of [[zTXt(4 << 20)], Array.from({ length: 1000 }, () => chunk('gAMA', Buffer.alloc(0)))]) {
      const { info } = await sharp(withChunks(await smallPng(), extra))
        .raw()
        .toBuffer({ resolveWithObject: true })
      expect([info.width, info.height]).toEqual([64, 48])
    }
  })

  it('the preprocessor refuses each flood IMAGE_TOO_COMPLEX, naming it, before libvips sees it, and decodes a PNG with ordinary text', async () => {
    const pre = new ImagePreprocessor(configFromPreset('torchvision', { synthetic: true }).preprocess, { maxInputPixels: 50_000_000 })
    const png = await smallPng()
    await expect(pre.decode(withChunks(png, [zTXt(48 << 20)]))).rejects.toMatchObject({ code: 'IMAGE_TOO_COMPLEX' })
    await expect(
      pre.decode(
        withChunks(
          png,
          Array.from({ length: 300 }, () => chunk('gAMA', Buffer.alloc(0)))
        )
      )
    ).rejects.toThrow(/IMAGE_TOO_COMPLEX|more than 256 chunks before its image data/)
    const decoded = await pre.decode(withChunks(png, [zTXt(3000), iTXt(20_000, true)]))
    expect(decoded.byteLength).toBe(224 * 224 * 3)
  })
})

describe('ICC profiles', () => {
  it('a profile with a float transform (D2B0, multi-process elements) is refused before lcms builds it; ordinary profiles pass', async () => {
    const { iccProfileRefusal } = await import('../../src/core/icc-profile.js')
    const profile = (tags: Array<[string, string]>): Buffer => {
      const table = Buffer.alloc(4 + tags.length * 12)
      table.writeUInt32BE(tags.length, 0)
      const data = tags.map(([, type]) => Buffer.concat([Buffer.from(type, 'latin1'), Buffer.alloc(12)]))
      let offset = 128 + table.byteLength
      tags.forEach(([sig], i) => {
        table.write(sig, 4 + i * 12, 'latin1')
        table.writeUInt32BE(offset, 8 + i * 12)
        table.writeUInt32BE(16, 12 + i * 12)
        offset += 16
      })
      const icc = Buffer.concat([Buffer.alloc(128), table, ...data])
      icc.writeUInt32BE(icc.byteLength, 0)
      return icc
    }
    expect(
      iccProfileRefusal(
        profile([
          ['rXYZ', 'XYZ '],
          ['rTRC', 'curv'],
          ['A2B0', 'mAB ']
        ])
      )
    ).toBeUndefined()
    expect(iccProfileRefusal(profile([['D2B0', 'mpet']]))).toMatch(/float transforms/)
    expect(iccProfileRefusal(profile([['A2B0', 'mpet']]))).toMatch(/float transforms/)
    expect(iccProfileRefusal(Buffer.alloc((1 << 20) + 1))).toMatch(/ICC profile of more than/)
    // The sRGB profile sharp embeds passes.
    const withProfile = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#48c' } })
      .withIccProfile('p3')
      .jpeg()
      .toBuffer()
    const icc = (await sharp(withProfile).metadata()).icc!
    expect(iccProfileRefusal(icc)).toBeUndefined()
  })
})
