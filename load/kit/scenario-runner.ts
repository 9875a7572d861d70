import { startBenchServer, type BenchServer } from './bench-server.js'
import { progress } from './progress.js'
import { RawSessionPool, type RawSessionFigure } from './raw-session.js'
import type { ScenarioPlan, SuiteOptions } from './scenario-plan.js'
import { serverWindow, snapshotServer } from './server-observation.js'
import { latencySummary, maxBy } from './stats.js'
import type { LevelResult, ScenarioResult } from './suite-results.js'

/**
 * Every scenario is measured the same way, against the raw session of the same model in the same
 * run: ratios hold on a noisy machine where absolute figures drift.
 */

/** A scenario that could not run, with the reason, so the report still lists it. */
export function skippedScenario(name: string, reason: string): ScenarioResult {
  return {
    name,
    title: name,
    model: '',
    inputDatatype: 'float32',
    maxBatchSize: 0,
    rawSession: [],
    rawBestImagesPerSecond: 0,
    levels: [],
    extra: {},
    skipped: reason
  }
}

/**
 * Measures one scenario, in this order: the raw ONNX Runtime session for its model (no server
 * running, so nothing competes), then the service in its own process under each load level, with
 * /proc and /metrics read around each level; then the service stops.
 */
export async function runScenario(plan: ScenarioPlan, options: SuiteOptions): Promise<ScenarioResult> {
  const { name, model } = plan
  const maxBatch = model.config.batching.maxBatchSize
  const batches = [...new Set([1, maxBatch])]
  progress(`${name}: raw ONNX Runtime session, ${model.name}, batch ${batches.join(' and ')}`)
  const raw = await RawSessionPool.open(model.path, model.config, {
    provider: options.provider === 'auto' ? 'cpu' : options.provider,
    inFlight: options.sessionsPerModel ?? 1
  })
  try {
    const rawSession: RawSessionFigure[] = []
    for (const batch of batches) rawSession.push(await raw.measure(batch, Math.max(3, options.durationSeconds / 2)))
    const rawBest = maxBy(rawSession, (r) => r.imagesPerSecond)
    const extra = plan.extra === undefined ? {} : await plan.extra()

    progress(`${name}: starting the service`)
    const serverArgs = ['--model-repository', options.repository, '--provider', options.provider, ...options.extraServerArgs]
    if (options.sessionsPerModel !== undefined) serverArgs.push('--sessions-per-model', String(options.sessionsPerModel))
    const server = await startBenchServer(serverArgs, { entry: options.entry })
    let run: { levels: LevelResult[]; skipped?: string }
    try {
      run = await runLevels(
        plan,
        server,
        () => raw.measure(rawBest.batch, Math.max(2, options.durationSeconds / 3)),
        options.durationSeconds
      )
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
async function runLevels(
  plan: ScenarioPlan,
  server: BenchServer,
  rawNow: () => Promise<RawSessionFigure>,
  seconds: number
): Promise<{ levels: LevelResult[]; skipped?: string }> {
  const levels: LevelResult[] = []
  try {
    // One short warm-up request stream so the first level does not pay the first runs' allocations.
    await plan.levels[0]!.run(server, 1).catch(() => undefined)
    for (const level of plan.levels) {
      const raw = (await rawNow()).imagesPerSecond
      progress(
        `${plan.name}: ${level.group}, concurrency ${level.concurrency}, ${seconds} s (raw session just before: ${raw.toFixed(1)} images/s)`
      )
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
      if (outcome.requests === 0 && outcome.errors > 0)
        return { levels, skipped: `every request failed (${outcome.firstError ?? 'no answer'}): the door may not exist yet` }
    }
    return { levels }
  } catch (err) {
    const skipped = (err as Error).message
    progress(`${plan.name}: stopped: ${skipped}`)
    return { levels, skipped }
  }
}
