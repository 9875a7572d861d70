import { availableParallelism } from 'node:os'
import { existsSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Provider } from '../src/config.js'
import { createNormalizer, ImagePreprocessor } from '../src/core/preprocess.js'
import type { ModelConfig } from '../src/repository/model-config.js'
import { loadModelFolder } from '../src/repository/repository.js'
import { latencySummary, largePhoto, maxBy, median, photoNearest, progress, startBenchServer, type BenchPhoto, type BenchServer, type ServerEntry } from './bench-kit.js'
import { inferenceClient, runGrpcLoad, runHttpLoad, type LoadOutcome } from './load-generators.js'
import { RawSessionPool, type RawSessionFigure } from './raw-session.js'
import { serverWindow, snapshotServer } from './server-observation.js'
import type { LevelResult, ScenarioResult } from './suite-results.js'

/**
 * The load scenarios. Each one, in this order: measures the raw ONNX Runtime session for its
 * model (no server running, so nothing competes), starts the service in its own process, puts one
 * door under load level after level with /proc and /metrics read around each level, and stops
 * the service. Ratios are taken against the raw figure of the same run.
 */

export const SCENARIO_NAMES = ['classify', 'classify-uint8', 'batch', 'v2-fp32', 'v2-uint8', 'grpc-fp32', 'grpc-uint8'] as const
export type ScenarioName = (typeof SCENARIO_NAMES)[number]

export interface SuiteOptions {
  readonly scenarios: readonly ScenarioName[]
  readonly repository: string
  readonly floatModel: string
  readonly uint8Model: string
  readonly provider: Provider
  readonly sessionsPerModel: number | undefined
  readonly entry: ServerEntry
  readonly durationSeconds: number
  readonly concurrency: readonly number[]
  /** Photo sizes for /classify, "WxH"; one not among the fixtures is generated (4000x3000). */
  readonly photoSizes: readonly string[]
  readonly batchItems: number
  readonly extraServerArgs: readonly string[]
}

interface ModelUnderTest {
  readonly name: string
  readonly path: string
  readonly config: ModelConfig
}

interface Level {
  readonly group: string
  readonly concurrency: number
  run(server: BenchServer, seconds: number): Promise<LoadOutcome>
}

interface ScenarioPlan {
  readonly name: ScenarioName
  readonly title: string
  readonly model: ModelUnderTest
  readonly levels: readonly Level[]
  readonly extra?: () => Promise<Record<string, number>>
}

async function modelUnderTest(repository: string, name: string): Promise<ModelUnderTest | undefined> {
  if (!existsSync(join(repository, name, 'config.json'))) return undefined
  const entry = await loadModelFolder(repository, name)
  return { name, path: entry.modelPath, config: entry.config }
}

async function photoOfSize(size: string): Promise<BenchPhoto> {
  const [width, height] = size.split('x').map(Number) as [number, number]
  const nearest = await photoNearest(width, height)
  return Math.abs(nearest.width - width) + Math.abs(nearest.height - height) <= 64 ? nearest : largePhoto(width, height)
}

/** One photo in the model's input layout: float32 CHW normalised, or the uint8 HWC pixels. */
async function photoTensor(model: ModelUnderTest, photo: BenchPhoto): Promise<Buffer> {
  const pixels = await new ImagePreprocessor(model.config.preprocess, { maxInputPixels: 50_000_000 }).decode(photo.bytes)
  if (model.config.input.datatype === 'uint8') return pixels
  const target = new Float32Array(pixels.length)
  createNormalizer(model.config.preprocess)(pixels, target, 0)
  return Buffer.from(target.buffer)
}

function tensorShape(model: ModelUnderTest, batch: number): number[] {
  const crop = model.config.preprocess.crop
  return model.config.input.layout === 'NCHW' ? [batch, 3, crop, crop] : [batch, crop, crop, 3]
}

/** The Open Inference Protocol's binary extension: the JSON header, then the tensor bytes. */
function v2BinaryBody(model: ModelUnderTest, tensor: Buffer): { headers: Record<string, string>; body: Buffer } {
  const header = Buffer.from(
    JSON.stringify({
      inputs: [
        {
          name: model.config.input.name,
          shape: tensorShape(model, 1),
          datatype: model.config.input.datatype === 'uint8' ? 'UINT8' : 'FP32',
          parameters: { binary_data_size: tensor.length }
        }
      ]
    })
  )
  return {
    headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(header.length) },
    body: Buffer.concat([header, tensor])
  }
}

function label(photo: BenchPhoto): string {
  return `${photo.width}×${photo.height}`
}

/** Sharp's decode + resize + crop alone, `inFlight` at a time in this process (the libuv pool). */
async function sharpImagesPerSecond(model: ModelUnderTest, photo: BenchPhoto, inFlight: number, seconds: number): Promise<number> {
  const pre = new ImagePreprocessor(model.config.preprocess, { maxInputPixels: 50_000_000 })
  let done = 0
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() - t0 < seconds * 1000) {
        await pre.decode(photo.bytes)
        done++
      }
    })
  )
  return done / ((performance.now() - t0) / 1000)
}

async function planScenario(name: ScenarioName, options: SuiteOptions): Promise<ScenarioPlan | string> {
  const uint8 = name.endsWith('uint8')
  const modelName = uint8 ? options.uint8Model : options.floatModel
  const model = await modelUnderTest(options.repository, modelName)
  if (model === undefined) return `no model "${modelName}" in ${options.repository}${uint8 ? ' (build the UINT8 prologue variant first)' : ''}`
  const typical = await photoNearest(500, 375)
  const levelsAt = (group: string, run: (server: BenchServer, concurrency: number, seconds: number) => Promise<LoadOutcome>, concurrency = options.concurrency): Level[] =>
    concurrency.map((c) => ({ group, concurrency: c, run: (server, seconds) => run(server, c, seconds) }))

  switch (name) {
    case 'classify':
    case 'classify-uint8': {
      const photos = name === 'classify' ? await Promise.all(options.photoSizes.map(photoOfSize)) : [typical]
      const path = `/classify?model=${encodeURIComponent(model.name)}`
      return {
        name,
        title: `POST /classify, one JPEG per request (${model.config.input.datatype} model)`,
        model,
        levels: photos.flatMap((photo) =>
          levelsAt(label(photo), (server, c, s) => runHttpLoad({ url: `${server.url}${path}`, headers: { 'content-type': 'image/jpeg' }, body: photo.bytes, imagesPerRequest: 1 }, c, s))
        ),
        extra: async () => {
          // What one request at concurrency 1 pays before inference, and what the cores can decode at most.
          const pre = new ImagePreprocessor(model.config.preprocess, { maxInputPixels: 50_000_000 })
          const times: number[] = []
          for (let i = 0; i < 40; i++) {
            const t = performance.now()
            await pre.decode(typical.bytes)
            times.push(performance.now() - t)
          }
          const seconds = Math.max(2, options.durationSeconds / 4)
          return {
            'preprocess alone, median ms (500×375)': median(times),
            'sharp alone, images/s, 1 in flight (500×375)': await sharpImagesPerSecond(model, typical, 1, seconds),
            [`sharp alone, images/s, ${availableParallelism() * 2} in flight (500×375)`]: await sharpImagesPerSecond(model, typical, availableParallelism() * 2, seconds)
          }
        }
      }
    }
    case 'batch': {
      const items = Math.min(options.batchItems, 64)
      const body = Buffer.from(JSON.stringify({ instances: Array.from({ length: items }, () => ({ b64: typical.bytes.toString('base64') })), topk: 5 }))
      // Each request queues `items` images at once; past the model's queue bound they would be refused.
      const concurrency = options.concurrency.filter((c) => c * items <= model.config.batching.maxQueueSize)
      return {
        name,
        title: `POST /v1/models/{model}:classify, ${items} base64 JPEGs (${label(typical)}) per request`,
        model,
        levels: levelsAt(
          `${items} per request`,
          (server, c, s) =>
            runHttpLoad({ url: `${server.url}/v1/models/${model.name}:classify`, headers: { 'content-type': 'application/json' }, body, imagesPerRequest: items }, c, s),
          concurrency.length > 0 ? concurrency : [1]
        )
      }
    }
    case 'v2-fp32':
    case 'v2-uint8': {
      const { headers, body } = v2BinaryBody(model, await photoTensor(model, typical))
      return {
        name,
        title: `POST /v2/models/{model}/infer, binary ${model.config.input.datatype === 'uint8' ? 'UINT8' : 'FP32'} tensor [${tensorShape(model, 1).join(',')}]`,
        model,
        levels: levelsAt('1 image per request', (server, c, s) => runHttpLoad({ url: `${server.url}/v2/models/${model.name}/infer`, headers, body, imagesPerRequest: 1 }, c, s))
      }
    }
    case 'grpc-fp32':
    case 'grpc-uint8': {
      const bytes = await photoTensor(model, typical)
      const input = { name: model.config.input.name, datatype: model.config.input.datatype === 'uint8' ? ('UINT8' as const) : ('FP32' as const), shape: tensorShape(model, 1), bytes }
      return {
        name,
        title: `gRPC ModelInfer, raw_input_contents ${input.datatype} [${input.shape.join(',')}], N streams of unary calls`,
        model,
        levels: levelsAt('1 image per call', async (server, c, s) => {
          if (server.grpcAddress === undefined) throw new Error('the service logged no gRPC address')
          const client = inferenceClient(server.grpcAddress)
          try {
            return await runGrpcLoad(client, model.name, input, c, s)
          } finally {
            client.close()
          }
        })
      }
    }
  }
}

function skippedScenario(name: ScenarioName, reason: string): ScenarioResult {
  return { name, title: name, model: '', inputDatatype: 'float32', maxBatchSize: 0, rawSession: [], rawBestImagesPerSecond: 0, levels: [], extra: {}, skipped: reason }
}

export async function runScenario(name: ScenarioName, options: SuiteOptions): Promise<ScenarioResult> {
  const plan = await planScenario(name, options)
  if (typeof plan === 'string') {
    progress(`${name}: skipped: ${plan}`)
    return skippedScenario(name, plan)
  }
  const { model } = plan
  const maxBatch = model.config.batching.maxBatchSize
  const batches = [...new Set([1, maxBatch])]
  progress(`${name}: raw ONNX Runtime session, ${model.name}, batch ${batches.join(' and ')}`)
  const raw = await RawSessionPool.open(model.path, model.config, { provider: options.provider === 'auto' ? 'cpu' : options.provider, inFlight: options.sessionsPerModel ?? 1 })
  try {
    const rawSession: RawSessionFigure[] = []
    for (const batch of batches) rawSession.push(await raw.measure(batch, Math.max(3, options.durationSeconds / 2)))
    const rawBest = maxBy(rawSession, (r) => r.imagesPerSecond)
    const extra = plan.extra === undefined ? {} : await plan.extra()

    progress(`${name}: starting the service`)
    const serverArgs = ['--model-repository', options.repository, '--provider', options.provider, ...options.extraServerArgs]
    if (options.sessionsPerModel !== undefined) serverArgs.push('--sessions-per-model', String(options.sessionsPerModel))
    const server = await startBenchServer(serverArgs, options.entry)
    let run: { levels: LevelResult[]; skipped?: string }
    try {
      run = await runLevels(plan, server, () => raw.measure(rawBest.batch, Math.max(2, options.durationSeconds / 3)), options.durationSeconds)
    } finally {
      await server.stop()
    }
    return {
      name,
      title: plan.title,
      model: model.name,
      inputDatatype: model.config.input.datatype,
      maxBatchSize: maxBatch,
      rawSession,
      rawBestImagesPerSecond: rawBest.imagesPerSecond,
      levels: run.levels,
      extra,
      ...(run.skipped === undefined ? {} : { skipped: run.skipped })
    }
  } finally {
    await raw.close()
  }
}

/**
 * Puts the service under each level of the plan in turn, /proc and /metrics read around each one.
 * `rawNow` takes the yardstick again just before every level (the service idle meanwhile), so drift
 * on a shared machine cancels out of the level's ratio. Stops early, saying why, when a door fails.
 */
async function runLevels(plan: ScenarioPlan, server: BenchServer, rawNow: () => Promise<RawSessionFigure>, seconds: number): Promise<{ levels: LevelResult[]; skipped?: string }> {
  const levels: LevelResult[] = []
  try {
    // One short warm-up request stream so the first level does not pay the first runs' allocations.
    await plan.levels[0]!.run(server, 1).catch(() => undefined)
    for (const level of plan.levels) {
      const raw = (await rawNow()).imagesPerSecond
      progress(`${plan.name}: ${level.group}, concurrency ${level.concurrency}, ${seconds} s (raw session just before: ${raw.toFixed(1)} images/s)`)
      const before = await snapshotServer(server)
      const outcome = await level.run(server, seconds)
      const window = serverWindow(before, await snapshotServer(server))
      const imagesPerSecond = outcome.images / outcome.seconds
      const result: LevelResult = {
        group: level.group,
        concurrency: level.concurrency,
        seconds: outcome.seconds,
        imagesPerSecond,
        requestsPerSecond: outcome.requests / outcome.seconds,
        latencyMs: latencySummary(outcome.latenciesMs),
        errors: outcome.errors,
        ...(outcome.firstError === undefined ? {} : { firstError: outcome.firstError }),
        cpuSecondsPerImage: outcome.images > 0 ? window.cpuSeconds / outcome.images : 0,
        rawImagesPerSecond: raw,
        ratioToRaw: imagesPerSecond / raw,
        server: window
      }
      levels.push(result)
      progress(
        `  ${imagesPerSecond.toFixed(1)} images/s (${result.ratioToRaw.toFixed(2)}× raw), p50 ${result.latencyMs.p50.toFixed(0)} ms, p99 ${result.latencyMs.p99.toFixed(0)} ms, ` +
          `errors ${outcome.errors}${outcome.firstError === undefined ? '' : ` (${outcome.firstError})`}, mean batch ${window.meanBatchSize.toFixed(1)}`
      )
      if (outcome.requests === 0 && outcome.errors > 0) return { levels, skipped: `every request failed (${outcome.firstError ?? 'no answer'}): the door may not exist yet` }
    }
    return { levels }
  } catch (err) {
    const skipped = (err as Error).message
    progress(`${plan.name}: stopped: ${skipped}`)
    return { levels, skipped }
  }
}

/**
 * Sets every model's dynamic batching bounds in the bench repository (a config override for
 * GPU-sized runs); the queue bound grows with it so the highest concurrency is not refused.
 */
export async function overrideMaxBatch(repository: string, models: readonly string[], maxBatchSize: number): Promise<void> {
  for (const name of models) {
    const path = join(repository, name, 'config.json')
    if (!existsSync(path)) continue
    const config = JSON.parse(await readFile(path, 'utf8')) as { batching?: { maxBatchSize?: number; maxQueueSize?: number } }
    const queue = Math.max(config.batching?.maxQueueSize ?? 256, 4 * maxBatchSize)
    config.batching = { ...config.batching, maxBatchSize, maxQueueSize: queue }
    await writeFile(path, `${JSON.stringify(config, null, 2)}\n`)
  }
}
