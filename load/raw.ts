/**
 * The raw ONNX Runtime session alone, for several models, batch sizes and batches in flight (one
 * worker thread per session): the figure the GPU throughput target is stated in. Writes a Markdown table
 * to stdout and the figures as JSON.
 *
 *   npm run load:raw -- [--models resnet50,resnet50-u8-fp16] [--batches 1,64,256] [--in-flight 1,2]
 *                       [--provider cpu|cuda] [--seconds 5] [--threads N] [--repository DIR] [--out FILE]
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { dirname } from 'node:path'
import { parseArgs } from 'node:util'
import type { Provider } from '../src/config.js'
import { loadModelFolder } from '../src/repository/repository.js'
import { progress } from './kit/progress.js'
import { measureRawSession, type RawSessionFigure } from './kit/raw-session.js'

const list = (raw: string): string[] => raw.split(',').filter((s) => s.length > 0)
const numbers = (flag: string, raw: string): number[] =>
  list(raw).map((s) => {
    const n = Number(s)
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${flag}: positive integers, got "${s}"`)
    return n
  })

const { values } = parseArgs({
  strict: true,
  options: {
    models: { type: 'string', default: 'resnet50' },
    batches: { type: 'string', default: '1,16' },
    'in-flight': { type: 'string', default: '1,2' },
    provider: { type: 'string', default: 'cpu' },
    seconds: { type: 'string', default: '5' },
    threads: { type: 'string' },
    repository: { type: 'string', default: '.cache/bench-models' },
    out: { type: 'string', default: 'load/results/raw.json' }
  }
})

try {
  if (!['cpu', 'cuda'].includes(values.provider)) throw new Error(`--provider: cpu or cuda, got "${values.provider}"`)
  const seconds = Number(values.seconds)
  if (!(seconds > 0)) throw new Error(`--seconds: a positive number, got "${values.seconds}"`)
  const threads = values.threads === undefined ? undefined : numbers('threads', values.threads)[0]
  const batches = numbers('batches', values.batches)
  const inFlights = numbers('in-flight', values['in-flight'])
  const rows: Array<RawSessionFigure & { model: string; datatype: string }> = []
  for (const name of list(values.models)) {
    const entry = await loadModelFolder(values.repository, name)
    for (const inFlight of inFlights) {
      progress(`${name}: ${inFlight} in flight, batches ${values.batches}, ${seconds} s each`)
      const figures = await measureRawSession(entry.modelPath, entry.config, {
        provider: values.provider as Provider,
        batches,
        seconds,
        inFlight,
        ...(threads === undefined ? {} : { threads })
      })
      for (const f of figures) {
        rows.push({ model: name, datatype: entry.config.input.datatype, ...f })
        progress(`  batch ${f.batch}: ${f.imagesPerSecond.toFixed(1)} images/s (median run ${f.medianMs.toFixed(1)} ms)`)
      }
    }
  }
  console.log(
    `Raw ONNX Runtime sessions, provider ${values.provider}, ${availableParallelism()} cores, ${seconds} s per figure, one worker thread per session in flight.\n`
  )
  console.log('| model | input | batch | in flight | images/s | median run ms |\n|---|---|---|---|---|---|')
  for (const r of rows)
    console.log(`| ${r.model} | ${r.datatype} | ${r.batch} | ${r.inFlight} | ${r.imagesPerSecond.toFixed(1)} | ${r.medianMs.toFixed(1)} |`)
  await mkdir(dirname(values.out), { recursive: true })
  await writeFile(values.out, `${JSON.stringify({ provider: values.provider, cores: availableParallelism(), seconds, rows }, null, 2)}\n`)
  progress(`results: ${values.out}`)
} catch (err) {
  console.error(`load:raw: ${(err as Error).message}`)
  process.exitCode = 1
}
