import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { formatSpread, ratioSpread, spreadOf, type RoundFigure, type Spread } from '../kit/paired-arms.js'

/**
 * The JSON written by the paired benchmarks (queue delay, overhead, decode parity, open loop, the
 * Python peer) and its Markdown: each script prints it, and the load report puts the newest of each
 * under its own heading. Every figure is a median over rounds with its range.
 */

const f = (n: number, d = 1): string => n.toFixed(d)
const loads = (l: readonly number[]): string => l.map((x) => x.toFixed(2)).join(' ')

interface RunInfo {
  readonly startedAt: string
  readonly command: string
  readonly loadAverageAtStart: readonly number[]
}

export interface QueueDelayResult extends RunInfo {
  readonly finishedAt: string
  readonly cores: number
  readonly loadAverageAtEnd: readonly number[]
  readonly durationSeconds: number
  readonly rounds: number
  readonly delaysMs: readonly number[]
  /** Per concurrency, per delay (in the order of delaysMs), one figure per round. */
  readonly levels: ReadonlyArray<{ readonly concurrency: number; readonly arms: readonly RoundFigure[][] }>
}

/** Per concurrency, each delay's median (range) over the rounds, and the last delay ÷ the first per round. */
export function queueDelayMarkdown(r: QueueDelayResult): string {
  const header = r.delaysMs.flatMap((d) => [`${d} ms: images/s`, `${d} ms: p50 ms`, `${d} ms: p99 ms`])
  const last = r.delaysMs.length - 1
  const lines = [
    `| concurrency | ${header.join(' | ')} | images/s, ${r.delaysMs[last]} ÷ ${r.delaysMs[0]} | p50, ${r.delaysMs[last]} ÷ ${r.delaysMs[0]} |`,
    `|---|${header.map(() => '---|').join('')}---|---|`
  ]
  for (const level of r.levels) {
    const cells = level.arms.flatMap((rounds) => [
      formatSpread(spreadOf(rounds.map((x) => x.imagesPerSecond))),
      formatSpread(spreadOf(rounds.map((x) => x.p50Ms)), 0),
      formatSpread(spreadOf(rounds.map((x) => x.p99Ms)), 0)
    ])
    const a = level.arms[0]!
    const b = level.arms[last]!
    const ips = ratioSpread(
      a.map((x) => x.imagesPerSecond),
      b.map((x) => x.imagesPerSecond)
    )
    const p50 = ratioSpread(
      a.map((x) => x.p50Ms),
      b.map((x) => x.p50Ms)
    )
    lines.push(`| ${level.concurrency} | ${cells.join(' | ')} | ${formatSpread(ips, 2)} | ${formatSpread(p50, 2)} |`)
  }
  lines.push(
    '',
    `${r.rounds} paired rounds of ${r.durationSeconds} s per level, ${r.cores} cores, load average ${loads(r.loadAverageAtStart)} at the start and ${loads(r.loadAverageAtEnd)} at the end (\`${r.command}\`, ${r.startedAt}).`
  )
  return lines.join('\n')
}

export interface OverheadRound {
  readonly loadAverage: number
  readonly rawImagesPerSecond: number
  readonly rawCpuSecondsPerImage: number
  readonly rawBatch1MedianMs: number
  readonly decodeImagesPerSecond: number
  readonly decodeCpuSecondsPerImage: number
  readonly preprocessMedianMs: number
  /** The same work without the service: decode a batch, normalise it, run it, again (absent in runs before 2026-12-01). */
  readonly pipelineImagesPerSecond?: number
  readonly pipelineCpuSecondsPerImage?: number
  /** Per arm: concurrency 1 and saturation, and the concurrency-1 answer split by stage (absent in runs before 2026-12-02; rendered only when paired). */
  readonly arms: ReadonlyArray<{ readonly one: RoundFigure; readonly saturated: RoundFigure; readonly stages?: StagesAtOne }>
  /** The same split for the floor server, load/kit/floor-server.ts (absent in runs before 2026-12-02's second split). */
  readonly floor?: StagesAtOne
}

/**
 * A concurrency-1 answer split by where its time went, medians over requests sent one after
 * another (by the client `OverheadResult.stageClient` names): the client's wait, the stage times
 * the answer reports (preprocessing is the decode in the service; inference the model run in its
 * worker), the rest of the core's own time (decode admission, batcher, messages to and from the
 * inference worker, normalising the pixels), and what lies outside the core (HTTP on both sides,
 * fastify's hooks, parsing and serialising).
 */
export interface StagesAtOne {
  readonly clientMs: number
  readonly preprocessMs: number
  readonly inferenceMs: number
  readonly queueAndPostprocessMs: number
  readonly coreOtherMs: number
  readonly outsideCoreMs: number
  /** Against yardsticks taken after each answer (absent in runs before 2026-12-02's second split). */
  readonly paired?: PairedAtOne
}

/**
 * The same requests, each followed by one raw batch-1 run and one decode of the photo alone: medians
 * of the yardsticks and of each answer's differences from its own pair.
 */
export interface PairedAtOne {
  readonly rawBatch1Ms: number
  readonly decodeMs: number
  /** The client's wait − (raw batch 1 + decode alone): the concurrency-1 target's figure. */
  readonly overMs: number
  readonly decodeOverMs: number
  readonly modelRunOverMs: number
}

export interface OverheadResult extends RunInfo {
  readonly finishedAt: string
  readonly cores: number
  readonly loadAverageAtEnd: readonly number[]
  readonly durationSeconds: number
  readonly saturation: number
  /** Requests per arm and round whose answers' timings split the concurrency-1 latency (absent in runs before 2026-12-02). */
  readonly stageRequests?: number
  /**
   * How those requests were sent: one kept-alive connection per server with the request's bytes built
   * once (load/kit/keep-alive-client.ts), or fetch (absent: runs before 2026-12-02's third session).
   */
  readonly stageClient?: 'keep-alive' | 'fetch'
  readonly maxBatch: number
  readonly decodeInFlight: number
  /** The photo sent, W×H (absent in runs before 2026-12-01: the typical 500×375). */
  readonly photo?: string
  readonly arms: readonly string[]
  readonly rounds: readonly OverheadRound[]
}

/**
 * cores ÷ (raw CPU-s per image + decode CPU-s per image): images/s if the cores did nothing else.
 * `cores` is the machine's, or what the service gets of it: less the load generator's share.
 */
function pipelineBound(round: OverheadRound, cores: number): number {
  return cores / (round.rawCpuSecondsPerImage + round.decodeCpuSecondsPerImage)
}

export function overheadMarkdown(r: OverheadResult): string {
  const per = <T>(pick: (round: OverheadRound) => T): T[] => r.rounds.map(pick)
  const ms = (s: Spread): string => formatSpread({ median: 1000 * s.median, min: 1000 * s.min, max: 1000 * s.max })
  const withPipeline = r.rounds.every((x) => x.pipelineImagesPerSecond !== undefined)
  const paired = pairedStages(r)
  const lines = [
    `Photo ${r.photo ?? '500×375'}. Yardsticks, per round (median, range): raw session batch ${r.maxBatch} ${formatSpread(spreadOf(per((x) => x.rawImagesPerSecond)))} images/s at ` +
      `${ms(spreadOf(per((x) => x.rawCpuSecondsPerImage)))} CPU ms/image; raw batch 1 median run ${formatSpread(spreadOf(per((x) => x.rawBatch1MedianMs)))} ms; ` +
      `sharp's decode of the photo, ${r.decodeInFlight} in flight, ${formatSpread(spreadOf(per((x) => x.decodeImagesPerSecond)))} images/s at ` +
      `${ms(spreadOf(per((x) => x.decodeCpuSecondsPerImage)))} CPU ms/image, one at a time ${formatSpread(spreadOf(per((x) => x.preprocessMedianMs)))} ms; ` +
      `pipeline bound ${r.cores} ÷ (raw + decode CPU-s per image) ${formatSpread(spreadOf(per((x) => pipelineBound(x, r.cores))))} images/s ` +
      `= ${formatSpread(spreadOf(per((x) => pipelineBound(x, r.cores) / x.rawImagesPerSecond)), 2)}× the raw session (the most of raw any service decoding this photo could reach here). ` +
      `The raw session alone kept ${formatSpread(spreadOf(per((x) => (x.rawImagesPerSecond * x.rawCpuSecondsPerImage) / r.cores)), 2)} of the ${r.cores} cores busy.` +
      (withPipeline
        ? ` The pipeline without the service (decode ${r.maxBatch} photos, normalise, run them as one batch, again, in one process): ` +
          `${formatSpread(spreadOf(per((x) => x.pipelineImagesPerSecond!)))} images/s at ${ms(spreadOf(per((x) => x.pipelineCpuSecondsPerImage!)))} CPU ms/image, ` +
          `${formatSpread(spreadOf(per((x) => x.pipelineImagesPerSecond! / pipelineBound(x, r.cores))), 2)}× the pipeline bound.`
        : ''),
    '',
    `| arm | c=1 p50 ms | c=1 p50 − (raw batch-1 + preprocess) ms${paired ? ', loop yardsticks | c=1 over, paired per request (below)' : ''} | c=1 target (≤ 3 ms${paired ? ', paired' : ''}) | c=${r.saturation} images/s | × raw | × pipeline bound, all ${r.cores} cores | × bound on the cores the service gets | c=${r.saturation} target (≥ 0.95) |${withPipeline ? ' × the pipeline without the service |' : ''} c=${r.saturation} server CPU ms/image | of which neither raw nor decode | (raw + decode) ÷ server CPU per image | cores the server used | load generator, cores |`,
    `|---|---|---|---|---|---|---|---|---|---|---|---|---|---|${withPipeline ? '---|' : ''}${paired ? '---|' : ''}`
  ]
  for (const [i, label] of r.arms.entries()) {
    const one = per((x) => x.arms[i]!.one)
    const sat = per((x) => x.arms[i]!.saturated)
    const overhead = spreadOf(r.rounds.map((x) => x.arms[i]!.one.p50Ms - x.rawBatch1MedianMs - x.preprocessMedianMs))
    const ofBound = spreadOf(r.rounds.map((x) => x.arms[i]!.saturated.imagesPerSecond / pipelineBound(x, r.cores)))
    const ofServiceBound = spreadOf(
      r.rounds.map((x) => x.arms[i]!.saturated.imagesPerSecond / pipelineBound(x, r.cores - x.arms[i]!.saturated.generatorCores))
    )
    const other = spreadOf(
      r.rounds.map((x) => x.arms[i]!.saturated.cpuSecondsPerImage - x.rawCpuSecondsPerImage - x.decodeCpuSecondsPerImage)
    )
    const efficiency = spreadOf(
      r.rounds.map((x) => (x.rawCpuSecondsPerImage + x.decodeCpuSecondsPerImage) / x.arms[i]!.saturated.cpuSecondsPerImage)
    )
    const coresUsed = spreadOf(sat.map((x) => x.imagesPerSecond * x.cpuSecondsPerImage))
    // With answers paired to yardsticks taken beside them, the target is judged on those: the loop
    // yardsticks are taken minutes apart from the load and move with the machine's other work.
    const judged = paired ? spreadOf(r.rounds.map((x) => x.arms[i]!.stages!.paired!.overMs)) : overhead
    lines.push(
      `| ${label} | ${formatSpread(spreadOf(one.map((x) => x.p50Ms)))} | ${formatSpread(overhead)} | ${paired ? `${formatSpread(judged, 2)} | ` : ''}${judged.median <= 3 ? 'met' : 'not met'} | ` +
        `${formatSpread(spreadOf(sat.map((x) => x.imagesPerSecond)))} | ${formatSpread(spreadOf(r.rounds.map((x) => x.arms[i]!.saturated.imagesPerSecond / x.rawImagesPerSecond)), 2)} | ${formatSpread(ofBound, 2)} | ${formatSpread(ofServiceBound, 2)} | ` +
        `${ofBound.median >= 0.95 ? 'met' : ofServiceBound.median >= 0.95 ? 'met on the cores the service gets' : 'not met'} | ` +
        (withPipeline
          ? `${formatSpread(spreadOf(r.rounds.map((x) => x.arms[i]!.saturated.imagesPerSecond / x.pipelineImagesPerSecond!)), 2)} | `
          : '') +
        `${ms(spreadOf(sat.map((x) => x.cpuSecondsPerImage)))} | ${ms(other)} | ${formatSpread(efficiency, 2)} | ${formatSpread(coresUsed, 2)} | ` +
        `${formatSpread(spreadOf(sat.map((x) => x.generatorCores)), 2)} |`
    )
  }
  // Runs that paired the split record how many requests it took, and every arm's stages with it.
  if (r.stageRequests !== undefined && paired) lines.push('', ...stagesMarkdown(r, r.stageRequests))
  if (r.arms.length > 1) {
    lines.push('', `Per round, each arm ÷ ${r.arms[0]} (median, range):`, '')
    lines.push(`| arm | c=1 p50 | c=${r.saturation} images/s | c=${r.saturation} CPU per image |`, '|---|---|---|---|')
    for (let i = 1; i < r.arms.length; i++) {
      const ratio = (pick: (x: OverheadRound, arm: number) => number): string =>
        formatSpread(
          ratioSpread(
            r.rounds.map((x) => pick(x, 0)),
            r.rounds.map((x) => pick(x, i))
          ),
          3
        )
      lines.push(
        `| ${r.arms[i]} | ${ratio((x, a) => x.arms[a]!.one.p50Ms)} | ${ratio((x, a) => x.arms[a]!.saturated.imagesPerSecond)} | ${ratio((x, a) => x.arms[a]!.saturated.cpuSecondsPerImage)} |`
      )
    }
  }
  lines.push(
    '',
    `${r.rounds.length} rounds, ${r.durationSeconds} s per figure, ${r.cores} cores, load average ${loads(r.loadAverageAtStart)} at the start, ` +
      `${formatSpread(spreadOf(per((x) => x.loadAverage)), 2)} (1-minute) over the rounds, ${loads(r.loadAverageAtEnd)} at the end (\`${r.command}\`, ${r.startedAt}).`
  )
  return lines.join('\n')
}

/** Whether every arm of every round has its concurrency-1 answers paired with yardsticks beside them. */
function pairedStages(r: OverheadResult): boolean {
  return r.rounds.every((x) => x.arms.every((a) => a.stages?.paired !== undefined))
}

/**
 * Where the concurrency-1 latency over raw batch 1 + preprocessing goes, per arm and for the floor
 * (median, range over rounds). Only runs whose answers were paired with yardsticks have it.
 */
function stagesMarkdown(r: OverheadResult, requests: number): string[] {
  const withFloor = r.rounds.every((x) => x.floor !== undefined)
  const keptAlive = r.stageClient === 'keep-alive'
  const lines = [
    `Where the concurrency-1 time over raw batch 1 + preprocessing goes: ${requests} requests one after another per arm and round (${keptAlive ? 'one kept-alive connection per server, the request written whole as autocannon does: load/kit/keep-alive-client.ts' : 'fetch'}), the`,
    `servers taking turns request by request, each answer followed by one raw batch-1 run and one decode of the photo alone in the load process,`,
    "so that each answer's own stage timings and the client's wait are set against yardsticks taken in the same second (medians over the",
    `requests; the parts are medians of their own, so they add up only roughly; the client here is ${keptAlive ? 'in' : 'fetch in'} the load process, so its cost is`,
    'in the last column).' +
      (withFloor
        ? ' The floor is the least a service of this design can be: one fastify route that decodes the body with the same preprocessing and' +
          ' hands the pixels to one worker thread holding the same model (load/kit/floor-server.ts); an arm over the floor is its own cost.'
        : ''),
    '',
    '| arm | client ms | raw batch 1 beside it ms | decode alone beside it ms | client − (raw batch 1 + decode), paired | decode in the service − decode alone | model run in the service − raw batch 1 | queue + postprocess | rest of the core (admission, batcher, worker messages, normalising) | outside the core (HTTP both sides, fastify) |',
    '|---|---|---|---|---|---|---|---|---|---|'
  ]
  const rows: Array<[string, (x: OverheadRound) => StagesAtOne]> = r.arms.map((label, i) => [label, (x) => x.arms[i]!.stages!])
  if (withFloor) rows.push(['floor: fastify + the preprocessing + one worker, nothing else', (x) => x.floor!])
  for (const [label, stagesOfRound] of rows) {
    const spread = (pick: (s: StagesAtOne, paired: PairedAtOne) => number): string =>
      formatSpread(spreadOf(r.rounds.map((x) => pick(stagesOfRound(x), stagesOfRound(x).paired!))), 2)
    lines.push(
      `| ${label} | ${spread((s) => s.clientMs)} | ${spread((_, p) => p.rawBatch1Ms)} | ${spread((_, p) => p.decodeMs)} | ${spread((_, p) => p.overMs)} | ` +
        `${spread((_, p) => p.decodeOverMs)} | ${spread((_, p) => p.modelRunOverMs)} | ${spread((s) => s.queueAndPostprocessMs)} | ${spread((s) => s.coreOtherMs)} | ${spread((s) => s.outsideCoreMs)} |`
    )
  }
  if (withFloor) {
    lines.push('', 'Per round, each arm over the floor, paired (median, range):', '')
    lines.push('| arm | client − (raw batch 1 + decode), arm − floor, ms |', '|---|---|')
    for (const [i, label] of r.arms.entries()) {
      const own = spreadOf(r.rounds.map((x) => x.arms[i]!.stages!.paired!.overMs - x.floor!.paired!.overMs))
      lines.push(`| ${label} | ${formatSpread(own, 2)} |`)
    }
  }
  return lines
}

type Mode = 'exact' | 'fast'

export interface ParityRow {
  readonly photo: string
  readonly size: string
  readonly mean: Record<Mode, number>
  readonly max: Record<Mode, number>
}

export interface DecodeParityResult extends RunInfo {
  /** The parity test's 18 images. */
  readonly rows: readonly ParityRow[]
  readonly overallMean: Record<Mode, number>
  /** The camera-sized photo, apart: it is not one of the 18. */
  readonly large: ParityRow
  /** Decodes per second of the large photo, one in flight, per round. */
  readonly speed: { readonly photo: string; readonly perRound: Record<Mode, number[]>; readonly cpuMsPerImage?: Record<Mode, number[]> }
}

export function decodeParityMarkdown(r: DecodeParityResult): string {
  const ratios = r.speed.perRound.fast.map((fast, i) => fast / r.speed.perRound.exact[i]!)
  return [
    '| image | size | exact: mean | exact: max | fast: mean | fast: max |',
    '|---|---|---|---|---|---|',
    ...[...r.rows, r.large].map(
      (row) =>
        `| ${row.photo} | ${row.size} | ${f(row.mean.exact, 3)} | ${f(row.max.exact)} | ${f(row.mean.fast, 3)} | ${f(row.max.fast)} |`
    ),
    `| **the 18 images** | | **${f(r.overallMean.exact, 3)}** | | **${f(r.overallMean.fast, 3)}** | |`,
    '',
    `${r.speed.photo} decodes per second, one in flight, ${ratios.length} paired rounds: exact ${formatSpread(spreadOf(r.speed.perRound.exact))}, ` +
      `fast ${formatSpread(spreadOf(r.speed.perRound.fast))}; fast ÷ exact per round ${formatSpread(spreadOf(ratios), 2)}` +
      (r.speed.cpuMsPerImage === undefined
        ? ' '
        : `; CPU ms per decode: exact ${formatSpread(spreadOf(r.speed.cpuMsPerImage.exact))}, fast ${formatSpread(spreadOf(r.speed.cpuMsPerImage.fast))} `) +
      `(load average at the start ${loads(r.loadAverageAtStart)}; \`${r.command}\`, ${r.startedAt}).`
  ].join('\n')
}

export interface OpenLoopRow {
  readonly targetRate: number
  readonly share: number
  readonly sent: number
  readonly answeredPerSecond: number
  readonly errors: number
  readonly unanswered: number
  readonly p50: number
  readonly p99: number
  readonly p999: number
  readonly p99FromSend: number
  readonly goodput: number
  readonly withinObjective: number
  readonly maxInFlight: number
  readonly autocannon:
    { readonly connections: number; readonly achievedRate: number; readonly p50: number; readonly p99: number } | undefined
}

export interface OpenLoopResult extends RunInfo {
  readonly loadAverageAtEnd: readonly number[]
  readonly cores: number
  readonly durationSeconds: number
  readonly objectiveMs: number
  readonly rawImagesPerSecond: number
  readonly rows: readonly OpenLoopRow[]
}

export function openLoopMarkdown(r: OpenLoopResult): string {
  const lines = [
    `Objective: answered within ${r.objectiveMs} ms. Raw session before the run: ${f(r.rawImagesPerSecond)} images/s; rates are shares of it.`,
    '',
    `| rate /s (× raw) | sent | answered /s | errors, unanswered | p50 ms | p99 ms | p99.9 ms | p99 from the send ms | goodput /s | within ${r.objectiveMs} ms | most in flight | autocannon overallRate: answered /s, p50, p99 ms |`,
    '|---|---|---|---|---|---|---|---|---|---|---|---|'
  ]
  for (const row of r.rows) {
    const ac =
      row.autocannon === undefined
        ? '–'
        : `${f(row.autocannon.achievedRate)}, ${f(row.autocannon.p50, 0)}, ${f(row.autocannon.p99, 0)} (${row.autocannon.connections} connections)`
    lines.push(
      `| ${f(row.targetRate)} (${f(row.share, 2)}) | ${row.sent} | ${f(row.answeredPerSecond)} | ${row.errors}, ${row.unanswered} | ${f(row.p50, 0)} | ${f(row.p99, 0)} | ${f(row.p999, 0)} | ` +
        `${f(row.p99FromSend, 0)} | ${f(row.goodput)} | ${f(100 * row.withinObjective, 0)} % | ${row.maxInFlight} | ${ac} |`
    )
  }
  lines.push(
    '',
    `${r.durationSeconds} s per rate, ${r.cores} cores, load average ${loads(r.loadAverageAtStart)} at the start and ${loads(r.loadAverageAtEnd)} at the end (\`${r.command}\`, ${r.startedAt}).`
  )
  return lines.join('\n')
}

export interface PeerResult extends RunInfo {
  readonly loadAverageAtEnd: readonly number[]
  readonly cores: number
  readonly durationSeconds: number
  readonly rounds: number
  /** resnet-serve first, the peer second. */
  readonly arms: readonly [string, string]
  readonly peerThreads: number
  readonly levels: ReadonlyArray<{ readonly concurrency: number; readonly arms: readonly RoundFigure[][] }>
}

export function peerMarkdown(r: PeerResult): string {
  const lines = [
    `| concurrency | ${r.arms[0]}: images/s | p50 ms | p99 ms | CPU ms/image | ${r.arms[1]}: images/s | p50 ms | p99 ms | CPU ms/image | images/s ratio | p50 ratio (peer ÷ resnet-serve) |`,
    '|---|---|---|---|---|---|---|---|---|---|---|'
  ]
  for (const level of r.levels) {
    const [ours, peer] = level.arms as [RoundFigure[], RoundFigure[]]
    const cells = (rounds: RoundFigure[]): string =>
      [
        formatSpread(spreadOf(rounds.map((x) => x.imagesPerSecond))),
        formatSpread(spreadOf(rounds.map((x) => x.p50Ms)), 0),
        formatSpread(spreadOf(rounds.map((x) => x.p99Ms)), 0),
        formatSpread(spreadOf(rounds.map((x) => 1000 * x.cpuSecondsPerImage)))
      ].join(' | ')
    const ips = ratioSpread(
      peer.map((x) => x.imagesPerSecond),
      ours.map((x) => x.imagesPerSecond)
    )
    const p50 = ratioSpread(
      ours.map((x) => x.p50Ms),
      peer.map((x) => x.p50Ms)
    )
    lines.push(`| ${level.concurrency} | ${cells(ours)} | ${cells(peer)} | **${formatSpread(ips, 2)}** | ${formatSpread(p50, 2)} |`)
  }
  lines.push(
    '',
    `${r.rounds} paired rounds of ${r.durationSeconds} s per level; PyTorch threads in the peer: ${r.peerThreads}; ${r.cores} cores, load average ${loads(r.loadAverageAtStart)} at the start and ${loads(r.loadAverageAtEnd)} at the end (\`${r.command}\`, ${r.startedAt}).`
  )
  return lines.join('\n')
}

/** The newest `<prefix>-*.json` in `dir`, parsed, or undefined when there is none. */
/** The JSON files a paired benchmark wrote in `dir`, oldest first (their names start with the time). */
async function resultFiles(dir: string, prefix: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((f) => f.startsWith(`${prefix}-`) && f.endsWith('.json')).sort()
}

async function readResult<T>(dir: string, file: string): Promise<{ result: T; file: string }> {
  return { result: JSON.parse(await readFile(join(dir, file), 'utf8')) as T, file }
}

async function newest<T>(dir: string, prefix: string): Promise<{ result: T; file: string } | undefined> {
  const file = (await resultFiles(dir, prefix)).at(-1)
  return file === undefined ? undefined : readResult<T>(dir, file)
}

/** The newest result of each kind per `key` (e.g. per photo), in the order of `key`'s first appearance from the oldest. */
async function newestEach<T>(dir: string, prefix: string, key: (result: T) => string): Promise<Array<{ result: T; file: string }>> {
  const byKey = new Map<string, { result: T; file: string }>()
  for (const file of await resultFiles(dir, prefix)) {
    const read = await readResult<T>(dir, file)
    byKey.set(key(read.result), read)
  }
  return [...byKey.values()]
}

/**
 * The load report's sections for the paired benchmarks, each from the newest JSON of its kind in
 * `dir` (absent kinds are left out), with the command that writes it.
 */
export async function benchmarkSections(dir: string): Promise<string[]> {
  const sections: string[] = []
  const queueDelay = await newest<QueueDelayResult>(dir, 'queue-delay')
  if (queueDelay !== undefined)
    sections.push(
      [
        `## The batcher's queue delay (\`npm run load:queue-delay\`, \`${queueDelay.file}\`)`,
        '',
        "POST /classify with the 500×375 photo against two servers that differ only in the model's `batching.maxQueueDelayMs`:",
        '0 (the default: an idle session takes what is queued at once) and 5 ms (an idle session waits up to 5 ms for a fuller',
        'batch). Paired rounds, the order reversed every other round; median (range) over the rounds, and per-round ratios.',
        '',
        queueDelayMarkdown(queueDelay.result),
        ''
      ].join('\n')
    )
  const overheads = await newestEach<OverheadResult>(dir, 'overhead', (r) => r.photo ?? '500×375')
  if (overheads.length > 0)
    sections.push(
      [
        `## Where the CPU goes: the service against its pipeline (\`npm run load:overhead\`, ${overheads.map((o) => `\`${o.file}\``).join(', ')})`,
        '',
        "Each round measures the yardsticks (the raw session and sharp's decode, CPU per image from the load process's own",
        'CPU time, which covers their threads; then the same work without a service: decode a batch of the photo, normalise',
        "it, run it on the raw session, again) and then every arm of the service at concurrency 1 and at saturation, the arms'",
        'order reversed every other round. Targets: at concurrency 1, median latency ≤ raw batch-1 median + preprocessing',
        'median + 3 ms; at saturation, images/s ≥ 0.95 × the pipeline bound, cores ÷ (raw + decode CPU-s per image). The load',
        'generator runs on the same cores (its share is in the last column) and the bound does not leave room for it. The',
        'last columns tell apart the two reasons the service falls short of the bound: CPU it spends per image beyond the',
        "pipeline's own, and cores it did not get (on a shared machine, other work's).",
        '',
        'How far the bound is from what these cores can give: it counts every core-second as usable, but the raw session',
        "alone does not keep every core busy (ONNX Runtime's two threads meet at the end of every operator and one waits",
        'for the other: its share is in each yardstick line), and decoding and inference do not add up: the pipeline',
        'without the service, with no HTTP, batcher or thread hop, does not reach the bound either (same line). "× the',
        'pipeline without the service" is therefore the service\'s own cost. For a camera-sized photo the bound itself, as',
        '× raw in its yardstick line, falls below 0.85: libjpeg must entropy-decode every coefficient even when it scales',
        "by 8 (docs/models.md has what PIL's libjpeg-turbo takes for the same photo, and the command).",
        '',
        ...overheads.flatMap((o) => [overheadMarkdown(o.result), '']),
        'Earlier runs on other machines, one-off probes and what was tried and not adopted: [performance-log.md](performance-log.md).',
        ''
      ].join('\n')
    )
  const parity = await newest<DecodeParityResult>(dir, 'decode-parity')
  if (parity !== undefined)
    sections.push(
      [
        `## Large photos: exact and fast JPEG decoding (\`npm run load:decode-parity\`, \`${parity.file}\`)`,
        '',
        "Mean and largest |difference| from torchvision (0–255 units) on the parity test's 18 images and a camera-sized photo,",
        "per decode mode, and the decode speed of the camera-sized photo in paired rounds. The suite's `classify` scenario",
        'measures /classify with the default (fast) decode against the raw session, `classify-exact` with the exact one.',
        '',
        decodeParityMarkdown(parity.result),
        ''
      ].join('\n')
    )
  const openLoop = await newest<OpenLoopResult>(dir, 'open-loop')
  if (openLoop !== undefined)
    sections.push(
      [
        `## Open-loop load: requests at a fixed rate (\`npm run load:open-loop\`, \`${openLoop.file}\`)`,
        '',
        'Requests arrive at evenly spaced intended times whatever the service does; latency is measured from the intended',
        'time, so a request that had to wait to be sent counts its wait (no coordinated omission); goodput is the answers',
        "within the objective per second. The last column is autocannon's `overallRate` at the same rate on a fixed number of",
        'connections: it sends only when a connection is free and times from the actual send, so above capacity it sends',
        'less and reports the latency of the requests it did send.',
        '',
        openLoopMarkdown(openLoop.result),
        ''
      ].join('\n')
    )
  const peer = await newest<PeerResult>(dir, 'peer')
  if (peer !== undefined)
    sections.push(
      [
        `## A Python peer side by side (\`npm run load:peer\`, \`${peer.file}\`)`,
        '',
        'What a Python user would build (`load/peer/fastapi_resnet50.py`: FastAPI + uvicorn, PIL + torchvision transforms,',
        "PyTorch ResNet-50 with random weights, one request per model run, the model in Starlette's thread pool) against",
        'resnet-serve, same photo (500×375), same cores, paired rounds. The ratio is resnet-serve ÷ peer for images/s and',
        "peer ÷ resnet-serve for the median latency. What biases it: the engine most of all (ONNX Runtime against Debian's",
        'PyTorch 1.13, built without MKL), then threads (the peer gets as many PyTorch threads as there are cores, see below;',
        "PyTorch's own default on these machines is one, which makes the peer about twice as slow at concurrency 1: run with",
        '`--peer-threads 0` to see it), then batching (resnet-serve batches under load, the peer never does: at concurrency 64',
        "its thread pool runs up to 40 requests at once, each with its own threads) and decoding (sharp's libvips against PIL).",
        '',
        peerMarkdown(peer.result),
        ''
      ].join('\n')
    )
  return sections
}
