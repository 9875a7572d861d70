import { cp, mkdtemp, readFile, rm } from 'node:fs/promises'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import ort from 'onnxruntime-node'
import { ImagePreprocessor } from '../src/core/preprocess.js'
import { createNormalizer } from '../src/core/pixel-normalizer.js'
import { convertToFp16 } from '../src/model-tools/fp16.js'
import { writeModelVariant } from '../src/model-tools/model-variant.js'
import { addUint8Prologue } from '../src/model-tools/prologue.js'
import { configFromPreset } from '../src/repository/model-config.js'
import { syntheticModelRepository } from '../test/helpers/models.js'
import { photoPaths } from '../test/helpers/photos.js'
import { startBenchServer, type BenchServer } from './kit/bench-server.js'
import { photoNearest } from './kit/photos.js'
import { median } from './kit/stats.js'

/**
 * npm run load:uint8 [-- --rounds N --batches N]
 *
 * The float32 model against its UINT8-prologue and FP16 variants, measured in one run so the ratios
 * hold on a noisy machine:
 *   1. host CPU per image: decode + normalise (float path) vs decode only (uint8 path), decode over
 *      the fixture photos and normalise on its own, as process CPU time (sharp's threadpool included);
 *   2. images/s of raw ONNX Runtime CPU sessions at batch 8, the models taking turns batch by batch;
 *   3. through the service: one server process serving resnet50 and resnet50-u8, the same 500×375 JPEG
 *      sent to each in turn (--images per turn, --concurrency at once, turns in ABBA order), server
 *      CPU seconds per image from /proc (all its threads: HTTP, sharp, worker, ONNX Runtime).
 */

const args = process.argv.slice(2)
const flag = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? Number(args[i + 1]) : fallback
}
const ROUNDS = flag('rounds', 5)
const BATCHES = flag('batches', 6)
const SERVER_IMAGES = flag('images', 120)
const SERVER_CONCURRENCY = flag('concurrency', 4)
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
      [session.inputNames[0]!]: v.uint8
        ? new ort.Tensor('uint8', batchPixels, [BATCH, CROP, CROP, 3])
        : new ort.Tensor('float32', batchFloats, [BATCH, 3, CROP, CROP])
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
  console.log(
    `raw session, batch ${BATCH}, ${s.name.padEnd(15)} ${rate.toFixed(1).padStart(6)} images/s  (× ${(rate / base).toFixed(3)} of float32)`
  )
  await s.session.release()
}

/** Sends `images` POST /classify requests, `concurrency` at a time; returns the server CPU seconds they cost, per image. */
async function serverCpuPerImage(server: BenchServer, model: string, jpeg: Buffer, images: number, concurrency: number): Promise<number> {
  let next = 0
  const before = await server.cpuSeconds()
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next++ < images) {
        const res = await fetch(`${server.url}/classify?model=${model}`, {
          method: 'POST',
          headers: { 'content-type': 'image/jpeg' },
          body: jpeg
        })
        if (res.status !== 200) throw new Error(`${model}: HTTP ${res.status} ${await res.text()}`)
        await res.arrayBuffer()
      }
    })
  )
  return ((await server.cpuSeconds()) - before) / images
}

// 3. Through the service. A repository of its own: a copy of the float model and its prologue variant.
const abRepository = await mkdtemp(join(tmpdir(), 'uint8-ab-'))
try {
  await cp(join(await syntheticModelRepository(), 'resnet50'), join(abRepository, 'resnet50'), { recursive: true })
  await writeModelVariant({ repository: abRepository, name: 'resnet50', uint8Input: true, fp16: false })
  const jpeg = (await photoNearest(500, 375)).bytes
  const server = await startBenchServer(['--model-repository', abRepository, '--provider', 'cpu'])
  try {
    type Model = 'resnet50' | 'resnet50-u8'
    const models: readonly Model[] = ['resnet50', 'resnet50-u8']
    for (const model of models) await serverCpuPerImage(server, model, jpeg, 20, SERVER_CONCURRENCY) // warm-up
    const perImage: Record<Model, number[]> = { resnet50: [], 'resnet50-u8': [] }
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? models : [...models].reverse()
      for (const model of order) perImage[model].push(await serverCpuPerImage(server, model, jpeg, SERVER_IMAGES, SERVER_CONCURRENCY))
    }
    const floatMs = median(perImage.resnet50) * 1000
    const uint8Ms = median(perImage['resnet50-u8']) * 1000
    console.log(
      `through the service (/classify, 500×375 JPEG, ${SERVER_IMAGES} images × ${ROUNDS} turns each, concurrency ${SERVER_CONCURRENCY}), server CPU per image, median of turns:`
    )
    console.log(
      `  float32 model ${floatMs.toFixed(1)} ms, uint8 prologue model ${uint8Ms.toFixed(1)} ms: ratio float/uint8 ${(floatMs / uint8Ms).toFixed(3)}`
    )
    const turns = (xs: number[]): string => xs.map((x) => (x * 1000).toFixed(1)).join(' ')
    console.log(`  turns (ms): float32 ${turns(perImage.resnet50)}; uint8 ${turns(perImage['resnet50-u8'])}`)
    // Turns of one round ran back to back: their ratio cancels the machine's slower drift.
    const ratios = perImage.resnet50.map((f, i) => f / perImage['resnet50-u8'][i]!)
    console.log(
      `  per round float/uint8: median ${median(ratios).toFixed(3)}; uint8 cheaper in ${ratios.filter((r) => r > 1).length} of ${ratios.length} rounds`
    )
  } finally {
    await server.stop()
  }
} finally {
  await rm(abRepository, { recursive: true, force: true })
}
