/**
 * The load suite: each scenario against the raw ONNX Runtime session of the same model, in one run.
 * Progress goes to stderr, a summary to stdout, everything to load/results/suite-<time>.json.
 *
 *   npm run load:all -- [--duration 10] [--concurrency 1,4,16,64] [--provider cpu|cuda]
 *                       [--sessions-per-model N] [--max-batch N] [--photos 300x450,500x375,1024x768,4000x3000]
 *                       [--batch-items 16] [--entry tsx|dist] [--out DIR] [--server-arg=--flag ...]
 *   npm run load:classify | load:batch | load:v2 | load:grpc   (one door each, same flags)
 */
import { existsSync } from 'node:fs'
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises'
import { availableParallelism, cpus, loadavg } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { pino } from 'pino'
import type { Provider } from '../src/config.js'
import { ensureDefaultModel } from '../src/repository/default-model.js'
import { defaultVariantName, writeModelVariant } from '../src/model-tools/model-variant.js'
import type { ServerEntry } from './kit/bench-server.js'
import { progress } from './kit/progress.js'
import type { SuiteOptions } from './kit/scenario-plan.js'
import { runScenario, skippedScenario } from './kit/scenario-runner.js'
import { RESULTS_DIR, type ScenarioResult, type SuiteResult } from './kit/suite-results.js'
import { exactDecodeModel, planScenario, SCENARIO_NAMES, type ScenarioName } from './scenarios/index.js'

export function parseSuiteArgs(argv: string[]): { options: SuiteOptions; outDir: string; maxBatch: number | undefined } {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      scenarios: { type: 'string', default: 'all' },
      duration: { type: 'string', default: '10' },
      concurrency: { type: 'string', default: '1,4,16,64' },
      provider: { type: 'string', default: 'cpu' },
      'sessions-per-model': { type: 'string' },
      'max-batch': { type: 'string' },
      photos: { type: 'string', default: '300x450,500x375,1024x768,4000x3000' },
      'batch-items': { type: 'string', default: '16' },
      repository: { type: 'string', default: '.cache/bench-models' },
      'float-model': { type: 'string', default: 'resnet50' },
      'uint8-model': { type: 'string', default: defaultVariantName('resnet50', true, false) },
      entry: { type: 'string', default: 'tsx' },
      out: { type: 'string', default: RESULTS_DIR },
      'server-arg': { type: 'string', multiple: true, default: [] }
    }
  })
  const scenarios = values.scenarios === 'all' ? [...SCENARIO_NAMES] : values.scenarios.split(',')
  for (const s of scenarios)
    if (!(SCENARIO_NAMES as readonly string[]).includes(s))
      throw new Error(`--scenarios: unknown "${s}"; use all or some of ${SCENARIO_NAMES.join(', ')}`)
  const positive = (flag: string, raw: string): number => {
    const n = Number(raw)
    if (!(n > 0)) throw new Error(`--${flag} must be a positive number, got "${raw}"`)
    return n
  }
  if (!['cpu', 'cuda', 'auto'].includes(values.provider)) throw new Error(`--provider: cpu, cuda or auto, got "${values.provider}"`)
  if (!['tsx', 'dist'].includes(values.entry)) throw new Error(`--entry: tsx or dist, got "${values.entry}"`)
  return {
    options: {
      scenarios,
      repository: values.repository,
      floatModel: values['float-model'],
      uint8Model: values['uint8-model'],
      provider: values.provider as Provider,
      sessionsPerModel:
        values['sessions-per-model'] === undefined ? undefined : positive('sessions-per-model', values['sessions-per-model']),
      entry: values.entry as ServerEntry,
      durationSeconds: positive('duration', values.duration),
      concurrency: values.concurrency.split(',').map((c) => positive('concurrency', c)),
      photoSizes: values.photos.split(','),
      batchItems: positive('batch-items', values['batch-items']),
      extraServerArgs: values['server-arg']
    },
    outDir: values.out,
    maxBatch: values['max-batch'] === undefined ? undefined : positive('max-batch', values['max-batch'])
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

function printScenario(result: ScenarioResult): void {
  console.log(`\n## ${result.name}: ${result.title}`)
  if (result.skipped !== undefined) console.log(`skipped: ${result.skipped}`)
  if (result.rawSession.length === 0) return
  console.log(
    `raw session (${result.model}): ${result.rawSession.map((r) => `batch ${r.batch} × ${r.inFlight} in flight ${r.imagesPerSecond.toFixed(1)} images/s`).join('; ')}`
  )
  for (const [name, value] of Object.entries(result.extra)) console.log(`${name}: ${value.toFixed(1)}`)
  console.log(
    '| group | concurrency | images/s | raw just before | × raw | p50 ms | p95 ms | p99 ms | errors | CPU s/image | mean batch | loop p99 ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|'
  )
  for (const l of result.levels) {
    console.log(
      `| ${l.group} | ${l.concurrency} | ${l.imagesPerSecond.toFixed(1)} | ${l.rawImagesPerSecond.toFixed(1)} | ${l.ratioToRaw.toFixed(3)} | ${l.latencyMs.p50.toFixed(0)} | ${l.latencyMs.p95.toFixed(0)} | ${l.latencyMs.p99.toFixed(0)} | ${l.errors} | ` +
        `${l.cpuSecondsPerImage.toFixed(4)} | ${l.server.meanBatchSize.toFixed(1)} | ${l.server.eventLoopDelayP99Ms.toFixed(1)} |`
    )
  }
}

/**
 * The uint8 scenarios need the float model's UINT8-prologue variant. When it is missing under its
 * default name, the suite writes it (as `npm run model:prologue` would) instead of skipping them.
 */
async function ensureUint8Variant(options: SuiteOptions): Promise<void> {
  if (!options.scenarios.some((s) => s.endsWith('uint8'))) return
  if (existsSync(join(options.repository, options.uint8Model, 'config.json'))) return
  if (options.uint8Model !== defaultVariantName(options.floatModel, true, false)) return
  progress(`writing ${options.uint8Model}: ${options.floatModel} with the UINT8 prologue`)
  await writeModelVariant({ repository: options.repository, name: options.floatModel, uint8Input: true, fp16: false })
}

/**
 * classify-exact needs the float model with `preprocess.decode: "exact"`: when it is missing, the
 * suite writes it beside the float model, its files linked, its config.json changed in that one field.
 */
async function ensureExactDecodeVariant(options: SuiteOptions): Promise<void> {
  if (!options.scenarios.includes('classify-exact')) return
  const name = exactDecodeModel(options.floatModel)
  const dir = join(options.repository, name)
  if (existsSync(join(dir, 'config.json'))) return
  progress(`writing ${name}: ${options.floatModel} with preprocess.decode "exact"`)
  const source = resolve(options.repository, options.floatModel)
  await mkdir(dir, { recursive: true })
  for (const file of await readdir(source)) if (file !== 'config.json') await symlink(join(source, file), join(dir, file))
  const config = JSON.parse(await readFile(join(source, 'config.json'), 'utf8')) as { preprocess: Record<string, unknown> }
  await writeFile(
    join(dir, 'config.json'),
    `${JSON.stringify({ ...config, preprocess: { ...config.preprocess, decode: 'exact' } }, null, 2)}\n`
  )
}

/** Runs the scenarios one after the other and writes the JSON; returns it and its path. */
export async function runSuite(argv: string[]): Promise<{ result: SuiteResult; path: string }> {
  const { options, outDir, maxBatch } = parseSuiteArgs(argv)
  const startedAt = new Date().toISOString()
  const loadAverageAtStart = loadavg()
  await ensureDefaultModel(options.repository, pino({ level: 'warn' }))
  await ensureUint8Variant(options)
  await ensureExactDecodeVariant(options)
  if (maxBatch !== undefined) await overrideMaxBatch(options.repository, [options.floatModel, options.uint8Model], maxBatch)
  const scenarios: ScenarioResult[] = []
  // parseSuiteArgs let only known names through.
  for (const name of options.scenarios as readonly ScenarioName[]) {
    const plan = await planScenario(name, options)
    if (typeof plan === 'string') progress(`${name}: skipped: ${plan}`)
    const result = typeof plan === 'string' ? skippedScenario(name, plan) : await runScenario(plan, options)
    scenarios.push(result)
    printScenario(result)
  }
  const result: SuiteResult = {
    startedAt,
    finishedAt: new Date().toISOString(),
    command: `load/suite.ts ${argv.join(' ')}`.trim(),
    host: { cores: availableParallelism(), cpu: cpus()[0]?.model ?? 'unknown', node: process.version, loadAverageAtStart },
    provider: options.provider,
    sessionsPerModel: options.sessionsPerModel,
    durationSeconds: options.durationSeconds,
    scenarios
  }
  await mkdir(outDir, { recursive: true })
  const path = join(outDir, `suite-${startedAt.replace(/[:.]/g, '-')}.json`)
  await writeFile(path, `${JSON.stringify(result, null, 2)}\n`)
  progress(`results: ${path}`)
  return { result, path }
}

const invokedDirectly = process.argv[1] !== undefined && /suite\.(ts|js)$/.test(process.argv[1])
if (invokedDirectly) {
  try {
    await runSuite(process.argv.slice(2))
  } catch (err) {
    console.error(`load suite: ${(err as Error).message}`)
    process.exitCode = 1
  }
}
