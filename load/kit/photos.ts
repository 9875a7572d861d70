import { existsSync } from 'node:fs'
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import sharp from 'sharp'
import type { ImagePreprocessor } from '../../src/core/preprocess.js'

/** The photos load runs send: the test fixtures by size, and a camera-sized one made from them. */

const PHOTOS = 'test/fixtures/photos'

export interface BenchPhoto {
  readonly path: string
  readonly width: number
  readonly height: number
  readonly bytes: Buffer
}

async function readPhoto(path: string): Promise<BenchPhoto> {
  const bytes = await readFile(path)
  const { width = 0, height = 0 } = await sharp(bytes).metadata()
  return { path, width, height, bytes }
}

/** The test photo whose size is closest to width×height. */
export async function photoNearest(width: number, height: number): Promise<BenchPhoto> {
  let best: { photo: BenchPhoto; score: number } | undefined
  for (const name of (await readdir(PHOTOS)).filter((f) => f.endsWith('.jpg'))) {
    const photo = await readPhoto(join(PHOTOS, name))
    const score = Math.abs(photo.width - width) + Math.abs(photo.height - height)
    if (best === undefined || score < best.score) best = { photo, score }
  }
  if (best === undefined) throw new Error(`no JPEG in ${PHOTOS}`)
  return best.photo
}

/**
 * A camera-sized JPEG (no fixture is that large): the 1024×768 photo enlarged with sharp, written
 * once under .cache/ so every run sends the same bytes.
 */
export async function largePhoto(width = 4000, height = 3000): Promise<BenchPhoto> {
  const path = `.cache/load/photo-${width}x${height}.jpg`
  if (!existsSync(path)) {
    const source = await photoNearest(1024, 768)
    await mkdir('.cache/load', { recursive: true })
    await writeFile(path, await sharp(source.bytes).resize(width, height, { fit: 'fill' }).jpeg({ quality: 90 }).toBuffer())
  }
  return readPhoto(path)
}

/**
 * Decodes `bytes` over and over for `seconds`, `inFlight` decodes at a time: images/s, and the CPU
 * seconds per image of this process (all its threads, so sharp's pool is counted).
 */
export async function decodeRate(
  preprocessor: ImagePreprocessor,
  bytes: Buffer,
  seconds: number,
  inFlight = 1
): Promise<{ imagesPerSecond: number; cpuSecondsPerImage: number }> {
  let done = 0
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() - t0 < seconds * 1000) {
        await preprocessor.decode(bytes)
        done++
      }
    })
  )
  const cpu = process.cpuUsage(cpu0)
  return { imagesPerSecond: done / ((performance.now() - t0) / 1000), cpuSecondsPerImage: (cpu.user + cpu.system) / 1e6 / done }
}
