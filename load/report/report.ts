/**
 * Writes docs/load-report.md and its charts (docs/load-report/*.svg, vega-lite rendered headless)
 * from one load-suite run: a fresh one (flags after -- go to the suite), or a saved JSON.
 *
 *   npm run load:report -- [suite flags]                     run the suite, then write the report
 *   npm run load:report -- --from [load/results/suite-….json | latest]
 *   npm run load:report -- --from latest --report-dir $OUT   write elsewhere (the GPU run)
 *   npm run load:report -- … --raw load/results/raw.json      add the raw-session table of npm run load:raw
 *
 * The newest result of each paired benchmark in the suite JSON's folder (load:queue-delay,
 * load:overhead, load:decode-parity, load:open-loop, load:peer) gets a section of its own.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { progress } from '../kit/progress.js'
import { latestResultFile, readSuiteResult, type SuiteResult } from '../kit/suite-results.js'
import { runSuite } from '../suite.js'
import { charts, renderSvg } from './charts.js'
import { benchmarkSections } from './benchmark-sections.js'
import { reportMarkdown, type RawFile } from './markdown.js'

function takeOption(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name)
  if (i < 0) return undefined
  const value = argv[i + 1]
  argv.splice(i, 2)
  return value
}

async function main(argv: string[]): Promise<void> {
  const args = [...argv]
  const from = takeOption(args, '--from')
  const reportDir = takeOption(args, '--report-dir')
  const rawPath = takeOption(args, '--raw')
  const raw =
    rawPath === undefined ? undefined : { file: JSON.parse(await readFile(rawPath, 'utf8')) as RawFile, source: basename(rawPath) }
  const reportPath = reportDir === undefined ? 'docs/load-report.md' : join(reportDir, 'load-report.md')
  const chartDir = reportDir === undefined ? 'docs/load-report' : join(reportDir, 'load-report')
  let result: SuiteResult
  let source: string
  if (from === undefined) {
    const run = await runSuite(args)
    result = run.result
    source = run.path
  } else {
    source = from === 'latest' ? await latestResultFile(takeOption(args, '--results') ?? undefined) : from
    result = await readSuiteResult(source)
  }
  await mkdir(chartDir, { recursive: true })
  const specs = charts(result)
  for (const [name, spec] of Object.entries(specs)) {
    await writeFile(join(chartDir, `${name}.svg`), await renderSvg(spec))
    progress(`chart ${join(chartDir, `${name}.svg`)}`)
  }
  const benchmarks = await benchmarkSections(dirname(source))
  await writeFile(reportPath, reportMarkdown(result, basename(source), chartDir, reportPath, Object.keys(specs), raw, benchmarks))
  progress(`report ${reportPath}`)
}

await main(process.argv.slice(2)).catch((err: unknown) => {
  console.error(`load:report: ${(err as Error).message}`)
  process.exitCode = 1
})
