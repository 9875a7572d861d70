import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { availableParallelism, loadavg } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { importModel } from '../src/model-tools/import-model.js'
import { writeModelVariant } from '../src/model-tools/model-variant.js'
import { writeTinyModel } from '../test/helpers/tiny-model.js'
import { startBenchServer, type BenchServer } from './kit/bench-server.js'
import { inferenceClient, runGrpcLoad, runHttpLoad, type LoadOutcome } from './kit/load-generators.js'
import {
  formatSpread,
  pairedRounds,
  parseArm,
  ratioSpread,
  spreadOf,
  startArms,
  stopArms,
  type ArmServer,
  type RoundFigure
} from './kit/paired-arms.js'
import { progress } from './kit/progress.js'
import { RESULTS_DIR } from './kit/suite-results.js'

/**
 * What the doors cost per request, with the model's cost taken out: V2 inference requests of one
 * UINT8 224×224×3 tensor (the binary extension over HTTP, raw_input_contents over gRPC) to a model
 * that runs in microseconds (a global average pool and a 3×1000 matrix behind the UINT8 prologue),
 * so that images/s is the most the service's doors answer on these cores, whatever the accelerator:
 * on a GPU host, one image per request cannot go faster than this. The `json` door (not in the
 * default list) sends the same tensor as JSON numbers (0.5 MB), as KServe's examples do: its
 * "main thread CPU ms/request" is what a JSON tensor costs the event loop. Beside every arm of the service,
 * the door floor (load/kit/door-floor.ts: fastify and grpc-js answering the same requests with
 * nothing behind them), in paired rounds, so that "× floor" is the service's own share.
 *
 *   npm run load:doors [-- --arm 'before@HEAD~1' --arm after] [--concurrency 16 --rounds 3 --duration 5]
 */

const { values } = parseArgs({
  options: {
    arm: { type: 'string', multiple: true, default: [] },
    concurrency: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '5' },
    doors: { type: 'string', default: 'http,grpc' },
    entry: { type: 'string', default: 'tsx' },
    out: { type: 'string', default: RESULTS_DIR }
  }
})
const specs = (values.arm.length > 0 ? values.arm : ['service']).map(parseArm)
const concurrency = values.concurrency.split(',').map(Number)
const rounds = Number(values.rounds)
const duration = Number(values.duration)
const doors = values.doors.split(',') as Array<'http' | 'grpc' | 'json'>

const MODEL = 'tiny-u8'
const SIDE = 224
const TENSOR_BYTES = SIDE * SIDE * 3

/** The tiny classifier, imported as `model:add` does, and its UINT8 prologue variant, written once under .cache. */
async function tinyRepository(): Promise<string> {
  const repository = resolve('.cache/door-models')
  if (existsSync(join(repository, MODEL, 'config.json'))) return repository
  await mkdir(repository, { recursive: true })
  const source = await writeTinyModel(join(repository, 'tiny-source.onnx'), { inputs: ['input'] })
  await importModel({ source, name: 'tiny', preset: 'torchvision', repository })
  await writeModelVariant({ repository, name: 'tiny', uint8Input: true, fp16: false, outName: MODEL })
  // The batcher's bounds of a GPU-sized run: the queue never refuses at these concurrencies.
  const configPath = join(repository, MODEL, 'config.json')
  const config = JSON.parse(await readFile(configPath, 'utf8')) as { batching: Record<string, unknown> }
  config.batching = { ...config.batching, maxBatchSize: 64, maxQueueSize: 4096 }
  await writeFile(configPath, `${JSON.stringify(config, null, 2)}\n`)
  return repository
}

const pixels = Buffer.alloc(TENSOR_BYTES, 7)
const v2Header = Buffer.from(
  JSON.stringify({
    inputs: [{ name: 'pixels', datatype: 'UINT8', shape: [1, SIDE, SIDE, 3], parameters: { binary_data_size: TENSOR_BYTES } }],
    outputs: [{ name: 'logits', parameters: { binary_data: true } }]
  })
)
const v2Body = Buffer.concat([v2Header, pixels])
const jsonBody = Buffer.from(
  JSON.stringify({
    inputs: [{ name: 'pixels', datatype: 'UINT8', shape: [1, SIDE, SIDE, 3], data: Array.from(pixels) }],
    outputs: [{ name: 'logits', parameters: { binary_data: true } }]
  })
)

function load(door: 'http' | 'grpc' | 'json', c: number, seconds: number): (server: BenchServer) => Promise<LoadOutcome> {
  if (door === 'json') {
    return (server) =>
      runHttpLoad(
        {
          url: `${server.url}/v2/models/${MODEL}/infer`,
          headers: { 'content-type': 'application/json' },
          body: jsonBody,
          imagesPerRequest: 1
        },
        c,
        seconds
      )
  }
  if (door === 'http') {
    return (server) =>
      runHttpLoad(
        {
          url: `${server.url}/v2/models/${MODEL}/infer`,
          headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(v2Header.length) },
          body: v2Body,
          imagesPerRequest: 1
        },
        c,
        seconds
      )
  }
  return async (server) => {
    const client = inferenceClient(server.grpcAddress!)
    try {
      return await runGrpcLoad(client, MODEL, { name: 'pixels', datatype: 'UINT8', shape: [1, SIDE, SIDE, 3], bytes: pixels }, c, seconds)
    } finally {
      client.close()
    }
  }
}

const startedAt = new Date().toISOString()
const loadAverageAtStart = loadavg()
const repository = await tinyRepository()
const arms = await startArms(specs, ['--model-repository', repository], values.entry === 'dist' ? 'dist' : 'tsx')
const floor = await startBenchServer([], { program: 'load/kit/door-floor', entry: values.entry === 'dist' ? 'dist' : 'tsx' })
const everyone: ArmServer[] = [...arms, { spec: { label: 'door floor', args: [], env: {} }, server: floor }]
const levels: Array<{ door: string; concurrency: number; figures: Awaited<ReturnType<typeof pairedRounds>> }> = []
try {
  for (const door of doors) {
    for (const a of everyone) await load(door, 4, 1)(a.server) // first runs' allocations and compilations
    for (const c of concurrency) {
      progress(`${door}, concurrency ${c}: ${rounds} paired rounds of ${duration} s`)
      levels.push({ door, concurrency: c, figures: await pairedRounds(everyone, rounds, load(door, c, duration), `${door} c=${c}`) })
    }
  }
} finally {
  await stopArms(arms)
  await floor.stop()
}

const rows: string[] = [
  `| door | concurrency | server | requests/s | × floor | server CPU ms/request | main thread CPU ms/request | × floor | × ${everyone[0]!.spec.label} | p50 ms | p99 ms | load generator, cores |`,
  '|---|---|---|---|---|---|---|---|---|---|---|---|'
]
for (const level of levels) {
  const floorFigures = level.figures[everyone.length - 1]!
  const door = { http: 'HTTP /v2 binary', grpc: 'gRPC ModelInfer raw', json: 'HTTP /v2 JSON numbers' }[
    level.door as 'http' | 'grpc' | 'json'
  ]
  everyone.forEach((a, i) => {
    const f = level.figures[i]!
    const isFloor = i === everyone.length - 1
    /** This arm's figure over the same round's of `base`, per round; `same` for the floor itself. */
    const over = (base: readonly RoundFigure[], figure: (r: RoundFigure) => number, same: string): string =>
      isFloor ? same : formatSpread(ratioSpread(base.map(figure), f.map(figure)), 2)
    const spread = (figure: (r: RoundFigure) => number, digits?: number): string => formatSpread(spreadOf(f.map(figure)), digits)
    const rps = (r: RoundFigure): number => r.imagesPerSecond
    const mainMs = (r: RoundFigure): number => r.mainThreadCpuSecondsPerImage * 1000
    rows.push(
      `| ${door} | ${level.concurrency} | ${a.spec.label} | ${spread(rps)} | ${over(floorFigures, rps, '1')} | ` +
        `${spread((r) => r.cpuSecondsPerImage * 1000, 3)} | ${spread(mainMs, 3)} | ${over(floorFigures, mainMs, '1')} | ` +
        `${over(level.figures[0]!, mainMs, '–')} | ${spread((r) => r.p50Ms, 0)} | ${spread((r) => r.p99Ms, 0)} | ${spread((r) => r.generatorCores, 2)} |`
    )
  })
}
const command = `load/doors.ts ${process.argv.slice(2).join(' ')}`.trim()
const summary =
  `${rows.join('\n')}\n\nOne UINT8 [1,${SIDE},${SIDE},3] tensor per request (binary, or JSON numbers for the json door) to ${MODEL} (runs in microseconds), ${rounds} paired rounds, ${duration} s per figure, ` +
  `${availableParallelism()} cores, load average ${loadAverageAtStart.map((l) => l.toFixed(2)).join(' ')} at the start (\`${command}\`, ${startedAt}).`
console.log(summary)
await mkdir(values.out, { recursive: true })
const path = join(values.out, `doors-${startedAt.replace(/[:.]/g, '-')}.json`)
await writeFile(
  path,
  `${JSON.stringify({ startedAt, finishedAt: new Date().toISOString(), command, cores: availableParallelism(), loadAverageAtStart, loadAverageAtEnd: loadavg(), rounds, duration, arms: everyone.map((a) => a.spec), levels }, null, 2)}\n`
)
progress(`results: ${path}`)
