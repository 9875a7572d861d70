import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { parseArgs } from 'node:util'
import sharp from 'sharp'
import { ImagePreprocessor } from '../src/core/preprocess.js'
import { createNormalizer } from '../src/core/pixel-normalizer.js'
import { configFromPreset, type PreprocessConfig } from '../src/repository/model-config.js'
import { photoPaths } from '../test/helpers/photos.js'
import { torchvisionReference } from '../test/helpers/torchvision-reference.js'
import { decodeRate, largePhoto } from './kit/photos.js'
import { progress } from './kit/progress.js'
import { RESULTS_DIR } from './kit/suite-results.js'
import { decodeParityMarkdown, type DecodeParityResult, type ParityRow } from './report/benchmark-sections.js'

/**
 * The two JPEG decodes of `preprocess.decode` side by side: how far each is from torchvision
 * (mean and largest |difference| in 0–255 units against test/python/torchvision_preprocess.py, on
 * the parity test's 18 images: the fixture photos and one small PNG that is enlarged), and how
 * fast each decodes a camera-sized photo, in paired rounds (exact, fast, fast, exact, …) so that
 * other work on the cores falls on both.
 *
 *   npm run load:decode-parity [-- --rounds 6 --seconds 2 --large 4000x3000]
 */

const MODES = ['exact', 'fast'] as const
type Mode = (typeof MODES)[number]

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '6' },
    seconds: { type: 'string', default: '2' },
    large: { type: 'string', default: '4000x3000' },
    out: { type: 'string', default: RESULTS_DIR }
  }
})
const rounds = Number(values.rounds)
const seconds = Number(values.seconds)
const [largeWidth, largeHeight] = values.large.split('x').map(Number) as [number, number]

const base = configFromPreset('torchvision', { synthetic: true }).preprocess
const configs: Record<Mode, PreprocessConfig> = { exact: { ...base, decode: 'exact' }, fast: { ...base, decode: 'fast' } }
const preprocessors = {
  exact: new ImagePreprocessor(configs.exact, { maxInputPixels: 50_000_000 }),
  fast: new ImagePreprocessor(configs.fast, { maxInputPixels: 50_000_000 })
}
const itemElements = 3 * base.crop * base.crop
const plane = base.crop * base.crop
const normalize = createNormalizer(base)
const toPixelUnits = base.std.map((s) => (s * 255) / (base.scale * 255))

const startedAt = new Date().toISOString()
const loadAverageAtStart = loadavg()
const work = await mkdtemp(join(tmpdir(), 'rs-decode-parity-'))
try {
  const photos = photoPaths()
  // The parity test's 18th image: chelsea made small, so that the enlargement path is measured too.
  const small = join(work, 'chelsea-48x32.png')
  await sharp(await readFile(photos.find((p) => basename(p) === 'chelsea.jpg')!))
    .resize(48, 32)
    .png()
    .toFile(small)
  photos.push(small)
  const large = await largePhoto(largeWidth, largeHeight)
  photos.push(large.path)

  progress(`torchvision reference for ${photos.length} images`)
  const reference = await torchvisionReference(work, photos, base.resize, base.crop)

  const ours = new Float32Array(itemElements)
  const rows: ParityRow[] = []
  for (const [n, path] of photos.entries()) {
    const bytes = await readFile(path)
    const { width, height } = await sharp(bytes).metadata()
    const mean = { exact: 0, fast: 0 }
    const max = { exact: 0, fast: 0 }
    for (const mode of MODES) {
      normalize(await preprocessors[mode].decode(bytes), ours, 0)
      let sum = 0
      for (let c = 0; c < 3; c++) {
        const unit = toPixelUnits[c]!
        for (let i = 0; i < plane; i++) {
          const d = Math.abs(ours[c * plane + i]! - reference[n * itemElements + c * plane + i]!) * unit
          sum += d
          if (d > max[mode]) max[mode] = d
        }
      }
      mean[mode] = sum / itemElements
    }
    rows.push({ photo: basename(path), size: `${width}×${height}`, mean, max })
  }
  const largeRow = rows.pop()!
  const overallMean = {
    exact: rows.reduce((s, r) => s + r.mean.exact, 0) / rows.length,
    fast: rows.reduce((s, r) => s + r.mean.fast, 0) / rows.length
  }

  progress(`decode speed of the ${values.large} photo, ${rounds} paired rounds of ${seconds} s per mode`)
  const perRound: Record<Mode, number[]> = { exact: [], fast: [] }
  const cpuMsPerImage: Record<Mode, number[]> = { exact: [], fast: [] }
  for (const mode of MODES) for (let i = 0; i < 3; i++) await preprocessors[mode].decode(large.bytes)
  for (let r = 0; r < rounds; r++) {
    for (const mode of r % 2 === 0 ? MODES : ([...MODES].reverse() as Mode[])) {
      const rate = await decodeRate(preprocessors[mode], large.bytes, seconds)
      perRound[mode].push(rate.imagesPerSecond)
      cpuMsPerImage[mode].push(1000 * rate.cpuSecondsPerImage)
    }
  }

  const result: DecodeParityResult = {
    startedAt,
    loadAverageAtStart,
    command: `load/decode-parity.ts ${process.argv.slice(2).join(' ')}`.trim(),
    rows,
    overallMean,
    large: largeRow,
    speed: { photo: values.large, perRound, cpuMsPerImage }
  }
  console.log(decodeParityMarkdown(result))
  await mkdir(values.out, { recursive: true })
  const path = join(values.out, `decode-parity-${startedAt.replace(/[:.]/g, '-')}.json`)
  await writeFile(path, `${JSON.stringify(result, null, 2)}\n`)
  progress(`results: ${path}`)
} finally {
  await rm(work, { recursive: true, force: true })
}
