import { readFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import ort from 'onnxruntime-node'
import { createNormalizer, ImagePreprocessor } from '../src/core/preprocess.js'
import { convertToFp16 } from '../src/models/fp16.js'
import { addUint8Prologue } from '../src/models/prologue.js'
import { configFromPreset } from '../src/repository/model-config.js'
import { syntheticModelRepository } from '../test/helpers/models.js'
import { photoPaths } from '../test/helpers/photos.js'

/**
 * npm run load:uint8 [-- --rounds N --batches N]
 *
 * The float32 model against its UINT8-prologue and FP16 variants, measured in one run so the ratios
 * hold on a noisy machine:
 *   1. host CPU per image: decode + normalise (float path) vs decode only (uint8 path), decode over
 *      the fixture photos and normalise on its own, as process CPU time (sharp's threadpool included);
 *   2. images/s of raw ONNX Runtime CPU sessions at batch 8, the models taking turns batch by batch.
 */

const args = process.argv.slice(2)
const flag = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? Number(args[i + 1]) : fallback
}
const ROUNDS = flag('rounds', 5)
const BATCHES = flag('batches', 6)
const BATCH = 8
const CROP = 224
const PIXELS = CROP * CROP * 3

const preprocess = configFromPreset('torchvision', { synthetic: true }).preprocess
const decoder = new ImagePreprocessor(preprocess, { maxInputPixels: 50_000_000 })
const normalize = createNormalizer(preprocess)
const photos = await Promise.all(photoPaths().map((p) => readFile(p)))

function cpuMs(): number {
  const { user, system } = process.cpuUsage()
  return (user + system) / 1000
}

/** CPU ms per image to decode (resize, crop) every photo, ROUNDS times: the work both paths share. */
async function decodeCpuPerImage(): Promise<number> {
  const start = cpuMs()
  for (let round = 0; round < ROUNDS; round++) for (const photo of photos) await decoder.decode(photo)
  return (cpuMs() - start) / (ROUNDS * photos.length)
}

/**
 * CPU ms per image of createNormalizer (the float path's extra work, in the inference worker),
 * timed on its own: within one decode's run-to-run noise it would not show.
 */
async function normaliseCpuPerImage(): Promise<number> {
  const pixels = await decoder.decode(photos[0]!)
  const target = new Float32Array(PIXELS)
  const repetitions = 400
  const start = cpuMs()
  for (let i = 0; i < repetitions; i++) normalize(pixels, target, 0)
  return (cpuMs() - start) / repetitions
}

console.log(`host: ${availableParallelism()} CPUs, ${photos.length} photos × ${ROUNDS} rounds`)
await decodeCpuPerImage() // warm-up: sharp's first calls load codecs
await normaliseCpuPerImage()
const decodeMs = await decodeCpuPerImage()
const normaliseMs = await normaliseCpuPerImage()
console.log(`host CPU per image: decode ${decodeMs.toFixed(2)} ms, normalise ${normaliseMs.toFixed(3)} ms`)
console.log(
  `  float path (decode + normalise) ${(decodeMs + normaliseMs).toFixed(2)} ms vs uint8 path (decode only) ${decodeMs.toFixed(2)} ms: ratio float/uint8 ${((decodeMs + normaliseMs) / decodeMs).toFixed(3)}`
)
console.log(`bytes per image to the session: float32 ${(PIXELS * 4).toLocaleString('en-US')}, uint8 ${PIXELS.toLocaleString('en-US')} (÷4)`)

const floatModel = await readFile(join(await syntheticModelRepository(), 'resnet50', 'model.onnx'))
const variants = [
  { name: 'float32', bytes: floatModel, uint8: false },
  { name: 'uint8 prologue', bytes: addUint8Prologue(floatModel, preprocess).bytes, uint8: true },
  { name: 'fp16', bytes: convertToFp16(floatModel).bytes, uint8: false }
]
const batchPixels = new Uint8Array(BATCH * PIXELS)
for (let i = 0; i < BATCH; i++) batchPixels.set(await decoder.decode(photos[i % photos.length]!), i * PIXELS)
const batchFloats = new Float32Array(BATCH * PIXELS)
for (let i = 0; i < BATCH; i++) normalize(batchPixels.subarray(i * PIXELS, (i + 1) * PIXELS), batchFloats, i * PIXELS)

const sessions = await Promise.all(
  variants.map(async (v) => {
    const session = await ort.InferenceSession.create(v.bytes, {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      intraOpNumThreads: availableParallelism(),
      interOpNumThreads: 1
    })
    const feeds = {
      [session.inputNames[0]!]: v.uint8 ? new ort.Tensor('uint8', batchPixels, [BATCH, CROP, CROP, 3]) : new ort.Tensor('float32', batchFloats, [BATCH, 3, CROP, CROP])
    }
    await session.run(feeds)
    return { ...v, session, feeds, seconds: 0 }
  })
)
for (let b = 0; b < BATCHES; b++) {
  for (const s of sessions) {
    const t0 = performance.now()
    await s.session.run(s.feeds)
    s.seconds += (performance.now() - t0) / 1000
  }
}
const base = (BATCHES * BATCH) / sessions[0]!.seconds
for (const s of sessions) {
  const rate = (BATCHES * BATCH) / s.seconds
  console.log(`raw session, batch ${BATCH}, ${s.name.padEnd(15)} ${rate.toFixed(1).padStart(6)} images/s  (× ${(rate / base).toFixed(3)} of float32)`)
  await s.session.release()
}
