import sharp, { type Sharp } from 'sharp'
import { describe, expect, it } from 'vitest'
import { MAX_JPEG_SEGMENTS, MAX_JPEG_STOPS, countJpegSegments } from '../../src/core/jpeg-scans.js'
import { progressiveJpeg, withSegments, withExtraScans } from '../fixtures/jpeg-scan-bomb.js'
import { readPhoto } from '../helpers/photos.js'

/** The JPEG scan counter on files written by sharp (mozjpeg) and on hand-made marker sequences. Unit tier. */

const photo = (): Sharp =>
  sharp({ create: { width: 96, height: 64, channels: 3, background: '#808080', noise: { type: 'gaussian', mean: 128, sigma: 40 } } })

/** A marker segment: FF, marker, 16-bit length (itself included), payload. */
function segment(marker: number, payload: number[]): number[] {
  const length = payload.length + 2
  return [0xff, marker, length >> 8, length & 0xff, ...payload]
}

describe('countJpegSegments on what encoders write', () => {
  it('a baseline JPEG has one scan (the fixture photos, and sharp)', async () => {
    expect(countJpegSegments(await readPhoto('chelsea')).scans).toBe(1)
    expect(countJpegSegments(await photo().jpeg().toBuffer()).scans).toBe(1)
  })

  it('the other segments of what encoders write number a handful (APPn, DQT, SOF, DHT)', async () => {
    const { segments } = countJpegSegments(await readPhoto('chelsea'))
    expect(segments).toBeGreaterThanOrEqual(4)
    expect(segments).toBeLessThan(20)
    expect(countJpegSegments(await photo().toColourspace('cmyk').jpeg({ progressive: true }).toBuffer()).segments).toBeLessThan(40)
  })

  it("libjpeg's progressive script: 10 scans for YCbCr, 18 for CMYK (2 + 4 per component)", async () => {
    expect(countJpegSegments(await photo().jpeg({ progressive: true }).toBuffer()).scans).toBe(10)
    expect(countJpegSegments(await photo().toColourspace('cmyk').jpeg({ progressive: true }).toBuffer()).scans).toBe(18)
  })

  it("mozjpeg's optimised scan script stays well under the default limit of 32", async () => {
    const scans = countJpegSegments(await photo().jpeg({ mozjpeg: true }).toBuffer()).scans
    expect(scans).toBeGreaterThan(1)
    expect(scans).toBeLessThanOrEqual(12)
  })
})

describe('countJpegSegments walks markers as libjpeg reads them', () => {
  const soi = [0xff, 0xd8]
  const eoi = [0xff, 0xd9]
  const sos = segment(0xda, [0x01, 0x01, 0x00, 0x00, 0x3f, 0x00])

  it('skips segment payloads, byte stuffing, fill bytes and restart markers; stops at EOI', () => {
    const bytes = Uint8Array.from([
      ...soi,
      // An APP1 payload holding the bytes of an SOS marker: not a scan.
      ...segment(0xe1, [0x45, 0x78, 0xff, 0xda, 0x00, 0x08, 0xff, 0xda]),
      ...segment(0xdb, new Array(65).fill(1)),
      ...sos,
      // Entropy-coded data: stuffed 0xFF 0x00, restart markers, then fill bytes before the next marker.
      0x12,
      0xff,
      0x00,
      0x34,
      0xff,
      0xd0,
      0x56,
      0xff,
      0x00,
      0xff,
      0xd1,
      0x78,
      0xff,
      0xff,
      0xff,
      ...sos,
      0xff,
      0x00,
      0xff,
      0x00,
      ...eoi,
      // After EOI nothing is decoded.
      ...sos,
      ...sos
    ])
    expect(countJpegSegments(bytes).scans).toBe(2)
  })

  it('counts scans behind bytes that are not a marker, which libjpeg skips with a warning', () => {
    const bytes = Uint8Array.from([...soi, ...sos, 0x00, 0x11, 0x22, ...sos, 0x33, ...sos, ...eoi])
    expect(countJpegSegments(bytes).scans).toBe(3)
  })

  it('a length running past the end, or under 2, ends the walk', () => {
    expect(countJpegSegments(Uint8Array.from([...soi, ...sos, 0xff, 0xda, 0x7f, 0xff, 0x01])).scans).toBe(2)
    expect(countJpegSegments(Uint8Array.from([...soi, ...sos, 0xff, 0xe0, 0x00, 0x01, ...sos])).scans).toBe(1)
    expect(countJpegSegments(Uint8Array.from([...soi, 0xff])).scans).toBe(0)
    expect(countJpegSegments(Uint8Array.from(soi)).scans).toBe(0)
  })
})

describe('countJpegSegments on scan bombs', () => {
  it('counts every extra scan of a bomb, and stops once past stopAfter', async () => {
    const base = await progressiveJpeg(512)
    const bomb = withExtraScans(base, 512, 5_000)
    expect(bomb.length).toBeLessThan(base.length + 5_000 * 20)
    expect(countJpegSegments(bomb).scans).toBe(10 + 5_000)
    expect(countJpegSegments(bomb, 32).scans).toBe(33)
  })

  it('the bomb is a JPEG libvips decodes (so the count, not a decoder error, is what stops it)', async () => {
    const bomb = withExtraScans(await progressiveJpeg(256), 256, 50)
    const { info } = await sharp(bomb, { failOn: 'truncated' }).raw().toBuffer({ resolveWithObject: true })
    expect([info.width, info.height]).toEqual([256, 256])
  })
})

describe('countJpegSegments on segment floods', () => {
  it('counts every empty APPn or COM segment in front of the image, and stops once past the limit', async () => {
    const base = await progressiveJpeg(64)
    const baseSegments = countJpegSegments(base).segments
    expect(countJpegSegments(withSegments(base, 0xe2, 5_000), 32, Infinity).segments).toBe(baseSegments + 5_000)
    expect(countJpegSegments(withSegments(base, 0xfe, 5_000), 32, Infinity).segments).toBe(baseSegments + 5_000)
    expect(countJpegSegments(withSegments(base, 0xe1, 5_000)).segments).toBe(MAX_JPEG_SEGMENTS + 1)
    // The scans behind the flood are still counted when the segments are within their limit.
    expect(countJpegSegments(withSegments(base, 0xe2, 500)).scans).toBe(10)
  })
})

describe('countJpegSegments: stops on the event loop', () => {
  it('counts stuffed bytes and restart markers, stopping past MAX_JPEG_STOPS; a photo has far fewer', async () => {
    const photo = await readPhoto('retina')
    expect(countJpegSegments(photo).stops).toBeLessThan(20_000)
    // FF 00 pairs and RST markers between SOI and the first segment: stray bytes libjpeg skips, one walk stop each.
    const filler = Buffer.alloc(2 * (MAX_JPEG_STOPS + 10))
    for (let i = 0; i < filler.byteLength; i += 4) filler.set([0xff, 0x00, 0xff, 0xd0], i)
    const flooded = Buffer.concat([photo.subarray(0, 2), filler, photo.subarray(2)])
    expect(countJpegSegments(flooded).stops).toBe(MAX_JPEG_STOPS + 1)
  })
})
