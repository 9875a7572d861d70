import { join, relative } from 'node:path'
import { maxBy } from '../kit/stats.js'
import { highest, type ScenarioResult, type SuiteResult } from '../kit/suite-results.js'

const f1 = (n: number): string => n.toFixed(1)

/** What `npm run load:raw` writes: raw sessions alone, several models, batches and batches in flight. */
export interface RawFile {
  readonly provider: string
  readonly cores: number
  readonly seconds: number
  readonly rows: ReadonlyArray<{
    model: string
    datatype: string
    batch: number
    inFlight: number
    imagesPerSecond: number
    medianMs: number
  }>
}

/**
 * The GPU throughput target for the raw ResNet-50 session (an H200, onnxruntime-node 1.29.0), and
 * the stretch: what PyTorch eager FP16 does on the same GPU.
 */
const GPU_RAW_TARGET = 8500
const PYTORCH_FP16_H200 = 16656

function rawSection(raw: RawFile, source: string): string {
  return [
    `## Raw sessions alone (\`${source}\`)`,
    '',
    `\`npm run load:raw\`, provider ${raw.provider}, ${raw.cores} cores, ${raw.seconds} s per figure; each session in flight runs in its own worker thread.`,
    '',
    '| model | input | batch | in flight | images/s | median run ms |',
    '|---|---|---|---|---|---|',
    ...raw.rows.map((r) => `| ${r.model} | ${r.datatype} | ${r.batch} | ${r.inFlight} | ${f1(r.imagesPerSecond)} | ${f1(r.medianMs)} |`),
    ''
  ].join('\n')
}

function scenarioSection(s: ScenarioResult): string {
  const lines = [`### ${s.name}: ${s.title}`, '']
  if (s.skipped !== undefined) lines.push(`**Not measured (or cut short):** ${s.skipped}`, '')
  if (s.rawSession.length === 0) return lines.join('\n')
  lines.push(
    `Model \`${s.model}\` (${s.inputDatatype} input, max batch ${s.maxBatchSize}). Raw session in the same run: ` +
      s.rawSession
        .map(
          (r) =>
            `batch ${r.batch}${r.inFlight > 1 ? ` × ${r.inFlight} in flight` : ''}: **${f1(r.imagesPerSecond)}** images/s (median run ${f1(r.medianMs)} ms)`
        )
        .join('; ') +
      '.',
    ''
  )
  for (const [name, value] of Object.entries(s.extra)) lines.push(`- ${name}: ${f1(value)}`)
  if (Object.keys(s.extra).length > 0) lines.push('')
  lines.push(
    '| photo / payload | concurrency | images/s | raw images/s just before | × raw | p50 ms | p95 ms | p99 ms | errors | server CPU s per image | mean batch | queue ms | preprocess ms | inference ms | postprocess ms | event-loop p99 ms |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|'
  )
  for (const l of s.levels) {
    const t = l.server.stages
    lines.push(
      `| ${l.group} | ${l.concurrency} | ${f1(l.imagesPerSecond)} | ${f1(l.rawImagesPerSecond)} | ${l.ratioToRaw.toFixed(2)} | ${l.latencyMs.p50.toFixed(0)} | ${l.latencyMs.p95.toFixed(0)} | ${l.latencyMs.p99.toFixed(0)} | ` +
        `${l.errors}${l.firstError === undefined ? '' : ` (${l.firstError})`} | ${l.cpuSecondsPerImage.toFixed(3)} | ${f1(l.server.meanBatchSize)} | ` +
        `${f1(t.queueMs)} | ${f1(t.preprocessMs)} | ${f1(t.inferenceMs)} | ${f1(t.postprocessMs)} | ${f1(l.server.eventLoopDelayP99Ms)} |`
    )
  }
  return lines.join('\n')
}

function targetRows(result: SuiteResult, raw: RawFile | undefined): string[] {
  const rows = ['| performance target | measured | met |', '|---|---|---|']
  const byName = new Map(result.scenarios.map((s) => [s.name, s]))
  if (result.provider === 'cuda') rows.push(...gpuTargetRows(byName, raw))
  const classify = byName.get('classify')
  if (classify !== undefined && classify.levels.length > 0) {
    for (const group of [...new Set(classify.levels.map((l) => l.group))]) {
      const best = maxBy(
        classify.levels.filter((l) => l.group === group),
        (l) => l.ratioToRaw
      )
      rows.push(
        `| /classify at saturation ≥ 0.85× raw session (${group}) | ${f1(best.imagesPerSecond)} / ${f1(best.rawImagesPerSecond)} images/s = **${best.ratioToRaw.toFixed(2)}×** (concurrency ${best.concurrency}) | ${best.ratioToRaw >= 0.85 ? 'yes' : 'no'} |`
      )
    }
  }
  for (const [float, uint8] of [
    ['classify', 'classify-uint8'],
    ['v2-fp32', 'v2-uint8'],
    ['grpc-fp32', 'grpc-uint8']
  ] as const) {
    const a = byName.get(float)
    const b = byName.get(uint8)
    if (a === undefined || b === undefined) continue
    if (a.levels.length === 0 || b.levels.length === 0) {
      rows.push(
        `| UINT8 uses less CPU per image than FP32 (${float} vs ${uint8}) | not measured: ${b.skipped ?? a.skipped ?? 'no levels'} | – |`
      )
      continue
    }
    // The UINT8 /classify scenario sends the 500×375 photo only; compare like with like.
    const group = a.levels.some((l) => l.group === '500×375') ? '500×375' : a.levels[0]!.group
    const fa = highest(a.levels.filter((l) => l.group === group))
    const fb = highest(b.levels)
    rows.push(
      `| UINT8 uses less CPU per image than FP32 (${float} vs ${uint8}, concurrency ${fb.concurrency}; at saturation this is about cores ÷ images/s, so it moves with throughput: \`npm run load:uint8\` pairs the two models turn by turn) | ${fa.cpuSecondsPerImage.toFixed(3)} vs **${fb.cpuSecondsPerImage.toFixed(3)}** CPU s/image | ${fb.cpuSecondsPerImage < fa.cpuSecondsPerImage ? 'yes' : 'no'} |`
    )
  }
  const loaded = result.scenarios.filter((s) => s.levels.length > 0).map((s) => ({ s, top: highest(s.levels) }))
  if (loaded.length > 0) {
    const worst = maxBy(loaded, (x) => x.top.server.eventLoopDelayP99Ms)
    rows.push(
      `| event-loop delay p99 under full load < 50 ms | worst: **${f1(worst.top.server.eventLoopDelayP99Ms)} ms** (${worst.s.name}, concurrency ${worst.top.concurrency}); all: ${loaded.map((x) => `${x.s.name} ${f1(x.top.server.eventLoopDelayP99Ms)}`).join(', ')} | ${worst.top.server.eventLoopDelayP99Ms < 50 ? 'yes' : 'no'} |`
    )
  }
  return rows
}

/** The GPU targets: the fast raw session, /classify against sharp alone, /v2 UINT8 against its raw session. */
function gpuTargetRows(byName: ReadonlyMap<string, ScenarioResult>, raw: RawFile | undefined): string[] {
  const rows: string[] = []
  const fast = raw?.rows.filter((r) => r.model.endsWith('-u8-fp16') && r.inFlight >= 2) ?? []
  if (fast.length === 0)
    rows.push(
      '| raw session, UINT8 prologue + FP16, ≥ 2 batches in flight ≥ 8,500 images/s | not measured (no load:raw figures for a -u8-fp16 model; pass --raw) | – |'
    )
  else {
    const best = maxBy(fast, (r) => r.imagesPerSecond)
    rows.push(
      `| raw session, UINT8 prologue + FP16, ≥ 2 batches in flight ≥ 8,500 images/s (stretch ${PYTORCH_FP16_H200.toLocaleString('en')}) | **${f1(best.imagesPerSecond)}** (${best.model}, batch ${best.batch} × ${best.inFlight}) | ` +
        `${best.imagesPerSecond >= PYTORCH_FP16_H200 ? 'yes, stretch too' : best.imagesPerSecond >= GPU_RAW_TARGET ? 'yes' : 'no'} |`
    )
  }
  for (const name of ['classify', 'classify-uint8']) {
    const s = byName.get(name)
    const sharpKey =
      s === undefined ? undefined : Object.keys(s.extra).find((k) => k.startsWith('sharp alone') && !k.includes(' 1 in flight'))
    const levels = s?.levels.filter((l) => l.group === '500×375') ?? []
    if (s === undefined || sharpKey === undefined || levels.length === 0) continue
    const best = maxBy(levels, (l) => l.imagesPerSecond)
    const ratio = best.imagesPerSecond / s.extra[sharpKey]!
    rows.push(
      `| ${name} end to end, 500×375 JPEGs ≥ 0.9× sharp alone (${sharpKey.replace('sharp alone, images/s, ', '')}) | ${f1(best.imagesPerSecond)} / ${f1(s.extra[sharpKey]!)} = **${ratio.toFixed(2)}×** (concurrency ${best.concurrency}) | ${ratio >= 0.9 ? 'yes' : 'no'} |`
    )
  }
  const v2 = byName.get('v2-uint8')
  if (v2 !== undefined && v2.levels.length > 0) {
    const best = maxBy(v2.levels, (l) => l.ratioToRaw)
    rows.push(
      `| /v2 binary UINT8 ≥ 0.7× raw session | ${f1(best.imagesPerSecond)} / ${f1(best.rawImagesPerSecond)} = **${best.ratioToRaw.toFixed(2)}×** (concurrency ${best.concurrency}) | ${best.ratioToRaw >= 0.7 ? 'yes' : 'no'} |`
    )
  }
  return rows
}

const GPU_SECTION = `## Running it on the GPU host

\`load/gpu/run.sh\` is the one prepared script for the GPU host (see /work/shared/gpu/README.md for the
archives). Here, in the project root:

    npm ci && npm run load:gpu-bundle      # builds, compiles load/ into dist/, writes .gpu/a and .gpu/b

On the GPU host, after both archives arrived (send \`dist/\` with the second: carry \`[".gpu/b", "dist"]\`):

    bash .gpu/a/device.sh a && bash .gpu/b/device.sh b && source .gpu/b/device.sh env
    bash load/gpu/run.sh [models|raw|suite|fp16|firstrun|all]    # writes $OUT/raw.md, $OUT/load-report.md, $OUT/fp16/load-report.md, $OUT/first-run.md

It builds the synthetic ResNet-50 and its UINT8-prologue, FP16 and UINT8+FP16 variants; \`raw\` measures
the four raw sessions at batch 256 with 1 and 2 batches in flight (one worker thread each);
\`suite\` runs every door against \`--provider cuda --sessions-per-model 2\` with max batch 128
(\`GPU_MAX_BATCH\`) at concurrency 16–512 (\`GPU_CONCURRENCY\`, \`GPU_DURATION\`), sharp alone measured
on the host's cores for /classify; \`fp16\` repeats /classify, /v2 and gRPC with the UINT8+FP16 model;
\`firstrun\` times one session's runs per batch size, first runs and shuffled sizes, and two sessions side by side; \`queuedelay\` (not in \`all\`)
runs \`load:queue-delay\` with the UINT8+FP16 model: the batcher's queue delay 0 against 5 ms on the GPU.
\`GPU_PROVIDER=cpu\` with small knobs runs the same script on a CPU machine. It ran on an H200 on
2026-11-30: figures and findings in [gpu-report.md](gpu-report.md).`

/** How far the same raw session drifted during this run: the noise the per-level figures take out of each ratio. */
function noiseLine(result: SuiteResult): string {
  const ranges = result.scenarios
    .filter((s) => s.levels.length > 0)
    .map((s) => {
      const values = s.levels.map((l) => l.rawImagesPerSecond)
      return `${s.name} ${f1(Math.min(...values))}–${f1(Math.max(...values))}`
    })
  return ranges.length === 0 ? '' : `In this run the raw session measured before each level ranged: ${ranges.join(', ')} images/s.`
}

/** The report's Markdown: how the figures are taken, the targets, the raw sessions, the charts, every scenario. */
export function reportMarkdown(
  result: SuiteResult,
  source: string,
  chartDir: string,
  reportPath: string,
  chartNames: readonly string[],
  raw: { file: RawFile; source: string } | undefined,
  /** Sections of the paired benchmarks (benchmark-sections.ts), after the suite's scenarios. */
  benchmarks: readonly string[] = []
): string {
  const rel = (name: string): string => relative(join(reportPath, '..'), join(chartDir, `${name}.svg`))
  const loadAverage = result.host.loadAverageAtStart.map((n) => n.toFixed(2)).join(' ')
  return [
    '# Load report',
    '',
    `Generated by \`npm run load:report\` from \`${source}\` (suite command: \`${result.command}\`), ${result.startedAt} → ${result.finishedAt}.`,
    '',
    `Machine: ${result.host.cores} cores (${result.host.cpu}), Node ${result.host.node}, provider **${result.provider}**${result.sessionsPerModel === undefined ? '' : `, ${result.sessionsPerModel} sessions per model`}, ${result.durationSeconds} s per level; load average at start ${loadAverage}.`,
    '',
    "Model: the synthetic ResNet-50 (seeded random weights; its speed is a real ResNet-50's, its answers mean nothing).",
    '',
    '**Read the ratios, not the absolute figures.** Every scenario keeps the raw ONNX Runtime session of its model open',
    '(same model, same batches in flight, in worker threads as in the service) and measures it again just before each',
    'level, with the service idle; the level\'s "× raw" divides by that figure. On a shared machine other work moves the',
    'absolute figures (it has slowed ONNX Runtime 3–5× on the 2-core development machines) but the two figures of a level',
    'are taken seconds apart. The load generator (autocannon or the gRPC loop) runs on the same cores as the service, and',
    'takes CPU from it; so do the decoders, which the raw session does not have.',
    '',
    noiseLine(result),
    '',
    'How each figure is taken: images/s and latencies at the client (successful requests only); server CPU from',
    '`/proc/<pid>/stat` (user + system, all threads) before and after the level, divided by the images answered; batch sizes,',
    'stage times and the event-loop delay p99 from `/metrics` scraped before and after (histograms differenced;',
    '`nodejs_eventloop_lag_p99_seconds` is reset by each scrape, so it covers the level; 10 ms resolution). Inference time',
    'is per model execution, which every image in the batch waits for.',
    '',
    '## Targets',
    '',
    ...targetRows(result, raw?.file),
    '',
    ...(raw === undefined ? [] : [rawSection(raw.file, raw.source)]),
    '## Charts',
    '',
    ...chartNames.map((name) => `![${name}](${rel(name)})\n`),
    '## Scenarios',
    '',
    ...result.scenarios.map((s) => `${scenarioSection(s)}\n`),
    ...benchmarks,
    GPU_SECTION,
    ''
  ].join('\n')
}
