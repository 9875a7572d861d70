import { mkdir, writeFile } from 'node:fs/promises'
import { availableParallelism, loadavg } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { defaultDecodeConcurrency } from '../src/config.js'
import type { Timings } from '../src/core/classify-service.js'
import { ImagePreprocessor } from '../src/core/preprocess.js'
import { createNormalizer } from '../src/core/pixel-normalizer.js'
import { startBenchServer, type BenchServer } from './kit/bench-server.js'
import { KeepAliveClient } from './kit/keep-alive-client.js'
import { runHttpLoad } from './kit/load-generators.js'
import { armRepository, measureArm, parseArm, startArms, stopArms, type RoundFigure } from './kit/paired-arms.js'
import { decodeRate } from './kit/photos.js'
import { progress } from './kit/progress.js'
import { RawSessionPool } from './kit/raw-session.js'
import { benchModelAndPhoto, photoLabel, photoOfSize } from './kit/scenario-plan.js'
import { median } from './kit/stats.js'
import { RESULTS_DIR } from './kit/suite-results.js'
import { overheadMarkdown, type OverheadResult, type OverheadRound, type StagesAtOne } from './report/benchmark-sections.js'

/**
 * Where /classify's CPU goes, and what a change of the service does to it: in each round, the
 * yardsticks (the raw ONNX Runtime session at the model's largest batch and at batch 1, and sharp's
 * decode of the same photo, each with its CPU per image from this process's own CPU time, which
 * covers its worker threads and libuv's; and the same work without a service: decode a batch of the
 * photo, normalise it, run it on the raw session, repeat), then the concurrency-1 answer split by stage
 * for every arm and for the floor server (load/kit/floor-server.ts: the least a service of this design
 * can be), each answer followed by a raw batch-1 run and a decode alone, then every arm at concurrency
 * 1 and at saturation, the arms' order reversed every other round. The targets, per round:
 *
 * - concurrency 1: median latency ≤ raw batch-1 median + preprocessing median + 3 ms, judged on the
 *   answers paired with the yardsticks taken right after each (the loop yardsticks are a minute away
 *   from the load and drift more than the target between rounds on a shared machine);
 * - saturation: images/s ≥ 0.95 × the pipeline bound, cores ÷ (raw CPU-s per image + decode CPU-s per image).
 *
 *   npm run load:overhead -- --arm 'before@HEAD~1' --arm 'after' [--arm 'label [--flag v] [ENV=v]' …]
 *                            [--rounds 4 --duration 6 --saturation 16 --photo 4000x3000]
 */

const { values } = parseArgs({
  options: {
    arm: { type: 'string', multiple: true, default: [] },
    rounds: { type: 'string', default: '4' },
    duration: { type: 'string', default: '6' },
    saturation: { type: 'string', default: '16' },
    repository: { type: 'string', default: '.cache/bench-models' },
    model: { type: 'string', default: 'resnet50' },
    /** WxH: the fixture photo nearest that size, or a camera-sized one made once (default: the typical 500×375). */
    photo: { type: 'string' },
    out: { type: 'string', default: RESULTS_DIR }
  }
})
const specs = (values.arm.length > 0 ? values.arm : ['service']).map(parseArm)
const rounds = Number(values.rounds)
const duration = Number(values.duration)
const saturation = Number(values.saturation)
const cores = availableParallelism()
/** Requests per arm and round, one at a time, whose answers' timings split the concurrency-1 latency. */
const STAGE_REQUESTS = 40

const startedAt = new Date().toISOString()
const loadAverageAtStart = loadavg()
const bench = await benchModelAndPhoto(values.repository, values.model)
const { model } = bench
const photo = values.photo === undefined ? bench.photo : await photoOfSize(values.photo)
const maxBatch = model.config.batching.maxBatchSize
const preprocessor = new ImagePreprocessor(model.config.preprocess, { maxInputPixels: 50_000_000 })
// As the service decodes: its default --decode-concurrency on these cores.
const decodeInFlight = defaultDecodeConcurrency(process.env, cores)

/** CPU seconds this process (all its threads) spends while `work` runs, and the wall time. */
async function timed<T>(work: () => Promise<T>): Promise<{ value: T; cpuSeconds: number; seconds: number }> {
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  const value = await work()
  const cpu = process.cpuUsage(cpu0)
  return { value, cpuSeconds: (cpu.user + cpu.system) / 1e6, seconds: (performance.now() - t0) / 1000 }
}

async function preprocessMedianMs(n: number): Promise<number> {
  const times: number[] = []
  for (let i = 0; i < n; i++) {
    const t = performance.now()
    await preprocessor.decode(photo.bytes)
    times.push(performance.now() - t)
  }
  return median(times)
}

/**
 * The pipeline without the service, in this process: decode `maxBatch` photos (as many at a time as
 * the service does), normalise them to float32, then run one batch on the raw session; again. What
 * decode and inference give one after another on these cores, with no HTTP, batcher or messages.
 */
async function pipelineRate(seconds: number): Promise<{ imagesPerSecond: number; cpuSecondsPerImage: number }> {
  const normalize = createNormalizer(model.config.preprocess)
  const itemElements = 3 * model.config.preprocess.crop ** 2
  const tensor = new Float32Array(maxBatch * itemElements)
  let images = 0
  const { cpuSeconds, seconds: elapsed } = await timed(async () => {
    const t0 = performance.now()
    while (performance.now() - t0 < seconds * 1000) {
      let next = 0
      await Promise.all(
        Array.from({ length: decodeInFlight }, async () => {
          for (let i = next++; i < maxBatch; i = next++) normalize(await preprocessor.decode(photo.bytes), tensor, i * itemElements)
        })
      )
      await raw.runOnce(maxBatch)
      images += maxBatch
    }
  })
  return { imagesPerSecond: images / elapsed, cpuSecondsPerImage: cpuSeconds / images }
}

/** What every figure sends: the photo as a raw /classify body. */
const classifyRequest = (server: BenchServer) => ({
  url: `${server.url}/classify?model=${values.model}`,
  headers: { 'content-type': 'image/jpeg' },
  body: photo.bytes
})

/** One answer at concurrency 1: its own stage timings, the client's wait, and the yardsticks taken right after it. */
type PairedAnswer = Timings & { clientMs: number; rawMs: number; decodeMs: number }

/** A kept-alive connection per server for the paired answers (a client as light as autocannon). */
const pairedClients = new Map<BenchServer, KeepAliveClient>()

async function pairedAnswer(server: BenchServer): Promise<PairedAnswer> {
  let client = pairedClients.get(server)
  if (client === undefined) {
    const { url, headers, body } = classifyRequest(server)
    client = KeepAliveClient.post(url, headers, body)
    pairedClients.set(server, client)
  }
  const t0 = performance.now()
  const { status, body } = await client.send()
  const answer = JSON.parse(body.toString()) as { timings?: Timings }
  const clientMs = performance.now() - t0
  if (status !== 200 || answer.timings === undefined) throw new Error(`${server.url} answered ${status}: ${body.toString().slice(0, 300)}`)
  const rawMs = await raw.runOnce(1)
  const t1 = performance.now()
  await preprocessor.decode(photo.bytes)
  return { clientMs, rawMs, decodeMs: performance.now() - t1, ...answer.timings }
}

function stagesOf(rows: readonly PairedAnswer[]): StagesAtOne {
  const of = (pick: (row: PairedAnswer) => number): number => median(rows.map(pick))
  return {
    clientMs: of((x) => x.clientMs),
    preprocessMs: of((x) => x.preprocessMs),
    inferenceMs: of((x) => x.inferenceMs),
    queueAndPostprocessMs: of((x) => x.queueMs + x.postprocessMs),
    coreOtherMs: of((x) => x.totalMs - x.preprocessMs - x.queueMs - x.inferenceMs - x.postprocessMs),
    outsideCoreMs: of((x) => x.clientMs - x.totalMs),
    paired: {
      rawBatch1Ms: of((x) => x.rawMs),
      decodeMs: of((x) => x.decodeMs),
      overMs: of((x) => x.clientMs - x.rawMs - x.decodeMs),
      decodeOverMs: of((x) => x.preprocessMs - x.decodeMs),
      modelRunOverMs: of((x) => x.inferenceMs - x.rawMs)
    }
  }
}

/**
 * Where a concurrency-1 answer's time goes, for every server (the arms, then the floor): `n`
 * requests each, one at a time on a kept-alive connection (load/kit/keep-alive-client.ts), the
 * servers taking turns request by request (the order reversed every other turn); each answer is
 * followed by one raw batch-1 run and one decode of the photo alone, so that it is set against
 * yardsticks taken in the same second (and, like it, after a pause rather than in a back-to-back
 * loop). Medians per server.
 */
async function stagesAtOne(servers: readonly BenchServer[], n: number): Promise<StagesAtOne[]> {
  const rows: PairedAnswer[][] = servers.map(() => [])
  await raw.runOnce(1) // the pool last ran the pipeline's batches: the first run of a shape allocates
  for (let i = 0; i < n; i++) {
    const order = servers.map((_, k) => k)
    if (i % 2 === 1) order.reverse()
    for (const k of order) rows[k]!.push(await pairedAnswer(servers[k]!))
  }
  return rows.map(stagesOf)
}

const load = (c: number) => (server: BenchServer) => runHttpLoad({ ...classifyRequest(server), imagesPerRequest: 1 }, c, duration)

const raw = await RawSessionPool.open(model.path, model.config, { provider: 'cpu', inFlight: 1 })
const repository = await armRepository('overhead', values.repository, values.model, (config) => config)
// The least a service of this design can be, on the same model and photo (load/kit/floor-server.ts).
const floor = await startBenchServer(['--model-repository', repository, '--model', values.model], { program: 'load/kit/floor-server' })
const arms = await startArms(specs, ['--model-repository', repository, '--provider', 'cpu']).catch(async (err: unknown) => {
  await floor.stop()
  throw err
})
const results: OverheadRound[] = []
try {
  for (const a of arms) await load(4)(a.server).catch(() => undefined)
  for (let r = 0; r < rounds; r++) {
    progress(`round ${r + 1}/${rounds}: yardsticks`)
    const rawBatch = await timed(() => raw.measure(maxBatch, Math.max(2, duration / 2)))
    const rawOne = await raw.measure(1, Math.max(2, duration / 3))
    const decode = await decodeRate(preprocessor, photo.bytes, Math.max(2, duration / 3), decodeInFlight)
    const preprocessMs = await preprocessMedianMs(30)
    const pipeline = await pipelineRate(Math.max(3, duration / 2))
    const rawCpuSecondsPerImage = rawBatch.cpuSeconds / (rawBatch.value.imagesPerSecond * rawBatch.seconds)
    const loadAverage = loadavg()[0]!
    const order = arms.map((_, i) => i)
    if (r % 2 === 1) order.reverse()
    const stages = await stagesAtOne([...arms.map((a) => a.server), floor], STAGE_REQUESTS)
    const figures: Record<'one' | 'saturated', RoundFigure[]> = { one: [], saturated: [] }
    for (const [key, c] of [
      ['one', 1],
      ['saturated', saturation]
    ] as const) {
      for (const i of order) {
        const figure = await measureArm(arms[i]!.server, load(c))
        figures[key][i] = figure
        progress(
          `  ${arms[i]!.spec.label}, concurrency ${c}: ${figure.imagesPerSecond.toFixed(1)} images/s, p50 ${figure.p50Ms.toFixed(1)} ms, ` +
            `${(1000 * figure.cpuSecondsPerImage).toFixed(1)} CPU ms/image (raw ${(1000 * rawCpuSecondsPerImage).toFixed(1)} + decode ${(1000 * decode.cpuSecondsPerImage).toFixed(1)})`
        )
      }
    }
    results.push({
      loadAverage,
      rawImagesPerSecond: rawBatch.value.imagesPerSecond,
      rawCpuSecondsPerImage,
      rawBatch1MedianMs: rawOne.medianMs,
      decodeImagesPerSecond: decode.imagesPerSecond,
      decodeCpuSecondsPerImage: decode.cpuSecondsPerImage,
      preprocessMedianMs: preprocessMs,
      pipelineImagesPerSecond: pipeline.imagesPerSecond,
      pipelineCpuSecondsPerImage: pipeline.cpuSecondsPerImage,
      arms: arms.map((_, i) => ({ one: figures.one[i]!, saturated: figures.saturated[i]!, stages: stages[i]! })),
      floor: stages[arms.length]!
    })
  }
} finally {
  for (const client of pairedClients.values()) client.close()
  await stopArms(arms)
  await floor.stop()
  await raw.close()
}

const result: OverheadResult = {
  startedAt,
  finishedAt: new Date().toISOString(),
  command: `load/overhead.ts ${process.argv.slice(2).join(' ')}`.trim(),
  cores,
  loadAverageAtStart,
  loadAverageAtEnd: loadavg(),
  durationSeconds: duration,
  saturation,
  stageRequests: STAGE_REQUESTS,
  stageClient: 'keep-alive',
  maxBatch,
  decodeInFlight,
  photo: photoLabel(photo),
  arms: specs.map(
    (s) =>
      `${s.label}${s.ref === undefined ? '' : ` (${s.ref})`}${[...s.args, ...Object.entries(s.env).map(([k, v]) => `${k}=${v}`)].map((a) => ` ${a}`).join('')}`
  ),
  rounds: results
}
console.log(overheadMarkdown(result))
await mkdir(values.out, { recursive: true })
const path = join(values.out, `overhead-${startedAt.replace(/[:.]/g, '-')}.json`)
await writeFile(path, `${JSON.stringify(result, null, 2)}\n`)
progress(`results: ${path}`)
