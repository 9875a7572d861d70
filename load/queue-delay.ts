import { mkdir, writeFile } from 'node:fs/promises'
import { availableParallelism, loadavg } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { pino } from 'pino'
import { ensureDefaultModel } from '../src/repository/default-model.js'
import type { ServerEntry } from './kit/bench-server.js'
import { runHttpLoad } from './kit/load-generators.js'
import { armRepository, pairedRounds, startArms, stopArms, type ArmSpec, type RoundFigure } from './kit/paired-arms.js'
import { typicalPhoto } from './kit/scenario-plan.js'
import { progress } from './kit/progress.js'
import { RESULTS_DIR } from './kit/suite-results.js'
import { queueDelayMarkdown, type QueueDelayResult } from './report/benchmark-sections.js'

/**
 * What the batcher's queue delay does on this machine: POST /classify (the 500×375 photo) at each
 * concurrency against two servers that differ only in the model's `batching.maxQueueDelayMs`
 * (0, the default: an idle session never waits; and 5 ms), in paired rounds.
 *
 *   npm run load:queue-delay [-- --delays 0,5 --concurrency 1,4,16,64 --rounds 3 --duration 5]
 *                            [--provider cuda --sessions-per-model 2 --max-batch 128 --entry dist]   (the GPU host)
 */

const { values } = parseArgs({
  options: {
    delays: { type: 'string', default: '0,5' },
    concurrency: { type: 'string', default: '1,4,16,64' },
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '5' },
    provider: { type: 'string', default: 'cpu' },
    'sessions-per-model': { type: 'string' },
    'max-batch': { type: 'string' },
    entry: { type: 'string', default: 'tsx' },
    repository: { type: 'string', default: '.cache/bench-models' },
    model: { type: 'string', default: 'resnet50' },
    out: { type: 'string', default: RESULTS_DIR }
  }
})
const delays = values.delays.split(',').map(Number)
const concurrency = values.concurrency.split(',').map(Number)
const rounds = Number(values.rounds)
const duration = Number(values.duration)

const startedAt = new Date().toISOString()
const loadAverageAtStart = loadavg()
await ensureDefaultModel(values.repository, pino({ level: 'warn' }))
const photo = await typicalPhoto()
const specs: ArmSpec[] = []
for (const delay of delays) {
  const repository = await armRepository(`queue-delay-${delay}`, values.repository, values.model, (config) => ({
    ...config,
    batching: {
      ...(config.batching as object),
      maxQueueDelayMs: delay,
      ...(values['max-batch'] === undefined
        ? {}
        : { maxBatchSize: Number(values['max-batch']), maxQueueSize: Math.max(256, 4 * Number(values['max-batch'])) })
    }
  }))
  specs.push({ label: `delay ${delay} ms`, args: ['--model-repository', repository], env: {} })
}
const common = ['--provider', values.provider]
if (values['sessions-per-model'] !== undefined) common.push('--sessions-per-model', values['sessions-per-model'])
const arms = await startArms(specs, common, values.entry as ServerEntry)
const levels: Array<{ concurrency: number; arms: RoundFigure[][] }> = []
try {
  const load = (c: number, seconds: number) => (server: { url: string }) =>
    runHttpLoad(
      { url: `${server.url}/classify`, headers: { 'content-type': 'image/jpeg' }, body: photo.bytes, imagesPerRequest: 1 },
      c,
      seconds
    )
  for (const a of arms) await load(4, 1)(a.server) // first runs' allocations
  for (const c of concurrency) {
    progress(`concurrency ${c}: ${rounds} paired rounds of ${duration} s`)
    levels.push({ concurrency: c, arms: await pairedRounds(arms, rounds, load(c, duration), `concurrency ${c}`) })
  }
} finally {
  await stopArms(arms)
}
const result: QueueDelayResult = {
  startedAt,
  finishedAt: new Date().toISOString(),
  command: `load/queue-delay.ts ${process.argv.slice(2).join(' ')}`.trim(),
  cores: availableParallelism(),
  loadAverageAtStart,
  loadAverageAtEnd: loadavg(),
  durationSeconds: duration,
  rounds,
  delaysMs: delays,
  levels
}
console.log(queueDelayMarkdown(result))
await mkdir(values.out, { recursive: true })
const path = join(values.out, `queue-delay-${startedAt.replace(/[:.]/g, '-')}.json`)
await writeFile(path, `${JSON.stringify(result, null, 2)}\n`)
progress(`results: ${path}`)
