import sharp from 'sharp'
import { describe, expect, it } from 'vitest'
import { MAX_WEBP_CHUNKS, countWebpChunks } from '../../src/core/webp-chunks.js'
import { extendedWebp, withJunkChunks } from '../fixtures/webp-chunks.js'

/** The WebP chunk counter on files sharp writes and on chunk floods. Unit tier. */

describe('countWebpChunks', () => {
  it('what encoders write has a handful: one for a simple lossy file, VP8X + ICCP + VP8 with a profile', async () => {
    const plain = await sharp({ create: { width: 32, height: 32, channels: 3, background: '#888' } })
      .webp()
      .toBuffer()
    expect(countWebpChunks(plain)).toBe(1)
    expect(countWebpChunks(await extendedWebp())).toBe(3)
  })

  it('counts every chunk of a flood, and stops once past the limit', async () => {
    const webp = await extendedWebp()
    expect(countWebpChunks(withJunkChunks(webp, 5_000), Infinity)).toBe(3 + 5_000)
    expect(countWebpChunks(withJunkChunks(webp, 5_000))).toBe(MAX_WEBP_CHUNKS + 1)
  })

  it('the flood is a WebP libvips decodes (so the count, not a decoder error, is what stops it)', async () => {
    const { info } = await sharp(withJunkChunks(await extendedWebp(), 2_000))
      .raw()
      .toBuffer({ resolveWithObject: true })
    expect([info.width, info.height]).toEqual([96, 64])
  })

  it('a chunk header cut short, or a size running past the end, ends the count', async () => {
    const webp = await extendedWebp()
    expect(countWebpChunks(webp.subarray(0, 12 + 8 + 10 + 4))).toBe(1)
    const lying = Buffer.from(webp)
    lying.writeUInt32LE(0xfffffff0, 16)
    expect(countWebpChunks(lying)).toBe(1)
  })
})
