/**
 * POST /classify under autocannon at several concurrency levels, against the raw ONNX Runtime
 * session for the same model on the same machine, measured in one run. Absolute figures drift on a
 * shared 2-core machine; the ratios are what to read.
 *
 *   npm run load:classify -- [--duration 15] [--image test/fixtures/photos/<file>.jpg] [--concurrency 1,4,16,64]
 */
import autocannon from 'autocannon'
import { readFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { parseArgs } from 'node:util'
import { pino } from 'pino'
import { openSession } from '../src/core/onnx-session.js'
import { ImagePreprocessor } from '../src/core/preprocess.js'
import { loadModelFolder } from '../src/repository/repository.js'
import { DEFAULT_MODEL_NAME, ensureDefaultModel } from '../src/repository/default-model.js'
import { benchImage, median, progress, startBenchServer } from './bench-kit.js'

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '15' },
    image: { type: 'string' },
    concurrency: { type: 'string', default: '1,4,16,64' },
    repository: { type: 'string', default: '.cache/bench-models' }
  }
})
const duration = Number(values.duration)
const levels = values.concurrency!.split(',').map(Number)
const repository = values.repository!

await ensureDefaultModel(repository, pino({ level: 'warn' }))
const entry = await loadModelFolder(repository, DEFAULT_MODEL_NAME)
const image = await readFile(values.image ?? (await benchImage()))
const maxBatch = entry.config.batching.maxBatchSize

// 1. The raw session: the same model, fed ready tensors, no server.
progress('raw ONNX Runtime session')
const { session, Tensor } = await openSession(entry.modelPath, { provider: 'cpu', cudaDeviceId: 0, threads: availableParallelism() })
const per = 3 * 224 * 224
async function rawImagesPerSecond(batch: number, seconds: number): Promise<{ imagesPerSecond: number; medianMs: number }> {
  const input = new Tensor('float32', new Float32Array(batch * per).fill(0.1), [batch, 3, 224, 224])
  await session.run({ [entry.config.input.name]: input })
  const times: number[] = []
  const t0 = performance.now()
  while (performance.now() - t0 < seconds * 1000 || times.length < 3) {
    const t = performance.now()
    await session.run({ [entry.config.input.name]: input })
    times.push(performance.now() - t)
  }
  const elapsed = (performance.now() - t0) / 1000
  return { imagesPerSecond: (times.length * batch) / elapsed, medianMs: median(times) }
}
const raw1 = await rawImagesPerSecond(1, Math.max(3, duration / 3))
const rawMax = await rawImagesPerSecond(maxBatch, Math.max(5, duration / 2))
await session.release()
const rawBest = Math.max(raw1.imagesPerSecond, rawMax.imagesPerSecond)

// 2. Preprocessing alone, one at a time (what a request at concurrency 1 pays before inference).
progress('preprocessing alone')
const pre = new ImagePreprocessor(entry.config.preprocess, { maxInputPixels: 50_000_000 })
const preTimes: number[] = []
for (let i = 0; i < 40; i++) {
  const t = performance.now()
  await pre.decode(image)
  preTimes.push(performance.now() - t)
}
const preMs = median(preTimes)

// 3. The service, in its own process, under autocannon.
progress('starting the service')
const server = await startBenchServer(['--model-repository', repository, '--provider', 'cpu'])
const rows: Array<{ concurrency: number; imagesPerSecond: number; p50: number; p99: number; errors: number }> = []
try {
  for (const connections of levels) {
    progress(`autocannon: ${connections} connections for ${duration} s`)
    const result = await autocannon({
      url: `${server.url}/classify`,
      method: 'POST',
      headers: { 'content-type': 'image/jpeg' },
      body: image,
      connections,
      duration
    })
    rows.push({ concurrency: connections, imagesPerSecond: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, errors: result.errors + result.non2xx })
  }
} finally {
  await server.stop()
}

const best = Math.max(...rows.map((r) => r.imagesPerSecond))
const c1 = rows.find((r) => r.concurrency === 1)
console.log(`\nResNet-50 (synthetic), CPU, ${availableParallelism()} cores, image ${values.image ?? 'test photo'} (${image.length} bytes), ${duration} s per level`)
console.log(`raw session: batch 1 ${raw1.imagesPerSecond.toFixed(1)} images/s (median ${raw1.medianMs.toFixed(1)} ms); batch ${maxBatch} ${rawMax.imagesPerSecond.toFixed(1)} images/s`)
console.log(`preprocessing alone: median ${preMs.toFixed(1)} ms per image`)
console.log('\n| connections | images/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|')
for (const r of rows) console.log(`| ${r.concurrency} | ${r.imagesPerSecond.toFixed(1)} | ${r.p50} | ${r.p99} | ${r.errors} |`)
console.log(`\nsaturation: service ${best.toFixed(1)} images/s / raw session ${rawBest.toFixed(1)} images/s = ${(best / rawBest).toFixed(3)} (target ≥ 0.85)`)
if (c1 !== undefined) {
  const budget = raw1.medianMs + preMs
  console.log(`concurrency 1: median ${c1.p50} ms vs raw run + preprocessing ${budget.toFixed(1)} ms: overhead ${(c1.p50 - budget).toFixed(1)} ms (target ≤ 15 ms)`)
}
