import { mkdir, writeFile } from 'node:fs/promises'
import { availableParallelism, loadavg } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { startBenchServer } from './kit/bench-server.js'
import { autocannonAtRate, runOpenLoop } from './kit/open-loop.js'
import { armRepository, sourceTreeAt } from './kit/paired-arms.js'
import { progress } from './kit/progress.js'
import { RawSessionPool } from './kit/raw-session.js'
import { benchModelAndPhoto } from './kit/scenario-plan.js'
import { latencySummary } from './kit/stats.js'
import { RESULTS_DIR } from './kit/suite-results.js'
import { openLoopMarkdown, type OpenLoopResult, type OpenLoopRow } from './report/benchmark-sections.js'

/**
 * /classify under open-loop load, beside the suite's closed-loop concurrency levels: requests of the
 * 500×375 photo arrive at fixed rates (shares of the raw session's images/s, measured first),
 * latency percentiles from each request's intended send time, and goodput: answers within the
 * latency objective per second. After each rate, autocannon's `overallRate` at the same rate with
 * a fixed number of connections, to show what a closed-loop tool reports there.
 *
 *   npm run load:open-loop [-- --shares 0.5,0.7,0.8,0.9,1.0,1.2 --duration 10 --objective-ms 500 --connections 16 [--ref GITREF]]
 */

const { values } = parseArgs({
  options: {
    shares: { type: 'string', default: '0.5,0.7,0.8,0.9,1.0,1.2' },
    duration: { type: 'string', default: '10' },
    'objective-ms': { type: 'string', default: '500' },
    connections: { type: 'string', default: '16' },
    autocannon: { type: 'boolean', default: true },
    ref: { type: 'string' },
    repository: { type: 'string', default: '.cache/bench-models' },
    model: { type: 'string', default: 'resnet50' },
    out: { type: 'string', default: RESULTS_DIR }
  },
  allowNegative: true
})
const shares = values.shares.split(',').map(Number)
const duration = Number(values.duration)
const objectiveMs = Number(values['objective-ms'])
const connections = Number(values.connections)

const startedAt = new Date().toISOString()
const loadAverageAtStart = loadavg()
const { model, photo } = await benchModelAndPhoto(values.repository, values.model)

progress('raw session, largest batch')
const raw = await RawSessionPool.open(model.path, model.config, { provider: 'cpu', inFlight: 1 })
const rawImagesPerSecond = (await raw.measure(model.config.batching.maxBatchSize, Math.max(3, duration / 2))).imagesPerSecond
await raw.close()

const cwd = values.ref === undefined ? undefined : await sourceTreeAt(values.ref)
const server = await startBenchServer(
  ['--model-repository', await armRepository('open-loop', values.repository, values.model, (config) => config), '--provider', 'cpu'],
  { cwd }
)
const rows: OpenLoopRow[] = []
try {
  const load = {
    url: `${server.url}/classify?model=${values.model}`,
    headers: { 'content-type': 'image/jpeg' },
    body: photo.bytes,
    imagesPerRequest: 1
  }
  await runOpenLoop(load, 4, 2, objectiveMs) // first runs' allocations
  for (const share of shares) {
    const rate = share * rawImagesPerSecond
    progress(`${rate.toFixed(1)} requests/s (${share} × raw), ${duration} s, open loop`)
    const o = await runOpenLoop(load, rate, duration, objectiveMs)
    const fromIntended = latencySummary(o.latenciesMs)
    const sorted = Float64Array.from(o.latenciesMs).sort()
    const p999 = sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil(0.999 * sorted.length) - 1)]!
    let ac: OpenLoopRow['autocannon']
    if (values.autocannon) {
      progress(`  autocannon overallRate ${rate.toFixed(1)}, ${connections} connections`)
      ac = await autocannonAtRate(load, rate, connections, duration)
    }
    const row: OpenLoopRow = {
      targetRate: rate,
      share,
      sent: o.sent,
      answeredPerSecond: o.answered / o.elapsedSeconds,
      errors: o.errors,
      unanswered: o.unanswered,
      p50: fromIntended.p50,
      p99: fromIntended.p99,
      p999,
      p99FromSend: latencySummary(o.latenciesFromSendMs).p99,
      goodput: o.goodput,
      withinObjective: o.withinObjective,
      maxInFlight: o.maxInFlight,
      autocannon: ac
    }
    rows.push(row)
    progress(
      `  answered ${row.answeredPerSecond.toFixed(1)}/s, p50 ${row.p50.toFixed(0)} ms, p99 ${row.p99.toFixed(0)} ms, goodput ${row.goodput.toFixed(1)}/s` +
        (ac === undefined ? '' : `; autocannon answered ${ac.achievedRate.toFixed(1)}/s, p99 ${ac.p99.toFixed(0)} ms`)
    )
  }
} finally {
  await server.stop()
}
const result: OpenLoopResult = {
  startedAt,
  command: `load/open-loop.ts ${process.argv.slice(2).join(' ')}`.trim(),
  loadAverageAtStart,
  loadAverageAtEnd: loadavg(),
  cores: availableParallelism(),
  durationSeconds: duration,
  objectiveMs,
  rawImagesPerSecond,
  rows
}
console.log(openLoopMarkdown(result))
await mkdir(values.out, { recursive: true })
const path = join(values.out, `open-loop-${startedAt.replace(/[:.]/g, '-')}.json`)
await writeFile(path, `${JSON.stringify(result, null, 2)}\n`)
progress(`results: ${path}`)
