import { spawnSync } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import sharp from 'sharp'
import { afterAll, describe, expect, it } from 'vitest'
import { ImagePreprocessor } from '../../src/core/preprocess.js'
import { createNormalizer } from '../../src/core/pixel-normalizer.js'
import { configFromPreset } from '../../src/repository/model-config.js'
import { photoPaths } from '../helpers/photos.js'
import { PYTHON, torchvisionReference } from '../helpers/torchvision-reference.js'

/**
 * The server's preprocessing for the torchvision preset against torchvision itself
 * (`Resize(256) + CenterCrop(224) + ToTensor() + Normalize` on PIL's convert('RGB')) on every
 * fixture photo, plus one small image that is enlarged. Differences are reported in 0–255 pixel units (normalised difference × std × 255),
 * so the numbers read as grey levels whatever the preset's mean and std.
 */

/** This pipeline is about 0.17 off on average (docs/models.md); the obvious sharp pipeline (cover, lanczos3) about 8. */
const MAX_OVERALL_MEAN_ABS_DIFF = 0.5
/** Per photo too, so that one broken path (enlargement, greyscale) cannot hide in the average. */
const MAX_PHOTO_MEAN_ABS_DIFF = 0.5

const hasTorchvision = spawnSync(PYTHON, ['-c', 'import torch, torchvision, PIL'], { stdio: 'ignore' }).status === 0
if (!hasTorchvision) {
  console.warn(
    `preprocess-parity.test: SKIPPED: ${PYTHON} cannot import torch, torchvision and PIL (apt-get install python3-torch python3-torchvision python3-pil; .ci/run does).`
  )
}

const config = configFromPreset('torchvision', { synthetic: true }).preprocess
const itemElements = 3 * config.crop * config.crop
let work: string | undefined

afterAll(async () => {
  if (work !== undefined) await rm(work, { recursive: true, force: true })
})

describe.skipIf(!hasTorchvision)('preprocessing parity with torchvision', () => {
  it(`every fixture photo within a mean of ${MAX_PHOTO_MEAN_ABS_DIFF} grey levels, ${MAX_OVERALL_MEAN_ABS_DIFF} overall`, async () => {
    const photos = photoPaths()
    expect(photos.length).toBeGreaterThanOrEqual(16)

    work = await mkdtemp(join(tmpdir(), 'rs-preprocess-parity-'))
    // Small images take the enlargement path; one enlarged about 7× (PNG, so no JPEG decoder differences).
    const small = join(work, 'chelsea-48x32.png')
    await sharp(await readFile(photos[photos.findIndex((p) => basename(p) === 'chelsea.jpg')]!))
      .resize(48, 32)
      .png()
      .toFile(small)
    photos.push(small)
    const reference = await torchvisionReference(work, photos, config.resize, config.crop)
    expect(reference).toHaveLength(photos.length * itemElements)

    const preprocessor = new ImagePreprocessor(config, { maxInputPixels: 50_000_000 })
    const normalize = createNormalizer(config)
    const ours = new Float32Array(photos.length * itemElements)
    for (const [i, photo] of photos.entries()) normalize(await preprocessor.decode(await readFile(photo)), ours, i * itemElements)

    const plane = config.crop * config.crop
    const toPixelUnits = config.std.map((s) => (s * 255) / (config.scale * 255))
    let totalSum = 0
    const rows: string[] = []
    const photoMeans: Record<string, number> = {}
    for (let n = 0; n < photos.length; n++) {
      let sum = 0
      let max = 0
      for (let c = 0; c < 3; c++) {
        const base = n * itemElements + c * plane
        const unit = toPixelUnits[c]!
        for (let i = 0; i < plane; i++) {
          const d = Math.abs(ours[base + i]! - reference[base + i]!) * unit
          sum += d
          if (d > max) max = d
        }
      }
      totalSum += sum
      photoMeans[basename(photos[n]!)] = sum / itemElements
      rows.push(`  ${basename(photos[n]!).padEnd(24)} mean ${(sum / itemElements).toFixed(3)}  max ${max.toFixed(1)}`)
    }
    const overall = totalSum / ours.length
    console.log(
      `preprocessing vs torchvision, |difference| in 0–255 units, ${photos.length} photos:\n${rows.join('\n')}\n  overall mean ${overall.toFixed(3)}`
    )
    expect(overall).toBeLessThanOrEqual(MAX_OVERALL_MEAN_ABS_DIFF)
    for (const [photo, mean] of Object.entries(photoMeans)) expect(mean, photo).toBeLessThanOrEqual(MAX_PHOTO_MEAN_ABS_DIFF)
  })
})
