import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import sharp from 'sharp'
import { ImagePreprocessor } from '../src/core/preprocess.js'
import { createNormalizer } from '../src/core/pixel-normalizer.js'
import { configFromPreset } from '../src/repository/model-config.js'
import { readPhoto } from '../test/helpers/photos.js'

/**
 * What preprocessing costs on this machine, outside the server: decodes per second of a
 * 500×375 JPEG into the 224×224 crop with 1 and with 4 in flight (sharp's parallelism comes from
 * libuv's pool, UV_THREADPOOL_SIZE), and the normaliser's time per image (pixels → float32 CHW).
 * Printed, not asserted: figures on shared cores drift; the ratio of 4 to 1 in flight is the one
 * to compare between runs.
 *
 *   npm run load:preprocess [-- --decodes 100]
 */

const { values } = parseArgs({ options: { decodes: { type: 'string', default: '100' } } })
const decodes = Number(values.decodes)
const TORCHVISION = configFromPreset('torchvision', { synthetic: true }).preprocess
const { crop } = TORCHVISION
const ITEM_ELEMENTS = crop * crop * 3
const preprocessor = new ImagePreprocessor(TORCHVISION, { maxInputPixels: 50_000_000 })

const photo = await readPhoto('hubble-deep-field')
const { width, height } = await sharp(photo).metadata()
for (let i = 0; i < 10; i++) await preprocessor.decode(photo)

async function perSecond(inFlight: number, total: number): Promise<number> {
  let started = 0
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (started < total) {
        started++
        await preprocessor.decode(photo)
      }
    })
  )
  return total / ((performance.now() - t0) / 1000)
}
const one = await perSecond(1, decodes)
const four = await perSecond(4, 2 * decodes)

const normalize = createNormalizer(TORCHVISION)
const pixels = await preprocessor.decode(photo)
const target = new Float32Array(8 * ITEM_ELEMENTS)
for (let i = 0; i < 200; i++) normalize(pixels, target, (i % 8) * ITEM_ELEMENTS)
const runs = 2000
const t0 = performance.now()
for (let i = 0; i < runs; i++) normalize(pixels, target, (i % 8) * ITEM_ELEMENTS)
const normalizeMs = (performance.now() - t0) / runs

console.log(
  `preprocess (${width}×${height} JPEG → ${crop}×${crop}): ${one.toFixed(0)} images/s with 1 in flight, ` +
    `${four.toFixed(0)} images/s with 4 (×${(four / one).toFixed(2)}; UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? 'default 4'}); ` +
    `normaliser ${normalizeMs.toFixed(3)} ms/image`
)
