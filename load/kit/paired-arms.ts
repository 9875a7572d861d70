import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { startBenchServer, type BenchServer, type ServerEntry } from './bench-server.js'
import type { LoadOutcome } from './load-generators.js'
import { progress } from './progress.js'
import { latencySummary, median } from './stats.js'

/**
 * A/B runs on shared cores: two (or more) configurations of the service, each in its own process,
 * all started before the first measurement and measured in turn, round after round, the order
 * reversed every other round (A B, B A, A B, …). Other work on the machine then falls on every arm
 * alike, and the per-round ratio B ÷ A, with its spread over the rounds, is the figure to read.
 * The arms that are not being measured sit idle (no CPU), so they do not disturb the one that is.
 */

export interface ArmSpec {
  readonly label: string
  /** A git commit of the service to run instead of the working tree (its sources are exported under .cache/ab/). */
  readonly ref?: string
  /** Server flags added to the common ones. */
  readonly args: readonly string[]
  readonly env: Readonly<Record<string, string>>
}

/**
 * One arm from the command line: `label[@gitref] [--server-flag value …] [NAME=value …]`, e.g.
 * `before@HEAD~1`, `one-thread --threads-per-session 1`, `pool2 UV_THREADPOOL_SIZE=2`.
 */
export function parseArm(text: string): ArmSpec {
  const [head = '', ...rest] = text.trim().split(/\s+/)
  const [label = '', ref] = head.split('@')
  if (label === '') throw new Error(`--arm "${text}": give it a label first`)
  const env: Record<string, string> = {}
  const args: string[] = []
  for (const token of rest) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(token)
    if (m !== null) env[m[1]!] = m[2]!
    else args.push(token)
  }
  return { label, ...(ref === undefined || ref === '' ? {} : { ref }), args, env }
}

/**
 * The service's sources at a commit, exported once under .cache/ab/<sha> with the working tree's
 * node_modules linked in: a past commit runs beside the present one without touching the checkout.
 */
export async function sourceTreeAt(ref: string): Promise<string> {
  const sha = execFileSync('git', ['rev-parse', '--verify', `${ref}^{commit}`], { encoding: 'utf8' }).trim()
  const dir = resolve('.cache/ab', sha.slice(0, 12))
  if (!existsSync(resolve(dir, 'src/main.ts'))) {
    await rm(dir, { recursive: true, force: true })
    await mkdir(dir, { recursive: true })
    execFileSync('bash', ['-c', `git archive ${sha} src package.json tsconfig.json | tar -x -C "${dir}"`])
    await symlink(resolve('node_modules'), resolve(dir, 'node_modules'))
  }
  return dir
}

export interface ArmServer {
  readonly spec: ArmSpec
  readonly server: BenchServer
}

/** Starts every arm's server (one after the other: start-up is CPU-heavy); stops them all if one fails. */
export async function startArms(
  specs: readonly ArmSpec[],
  commonArgs: readonly string[],
  entry: ServerEntry = 'tsx'
): Promise<ArmServer[]> {
  const started: ArmServer[] = []
  try {
    for (const spec of specs) {
      const cwd = spec.ref === undefined ? undefined : await sourceTreeAt(spec.ref)
      progress(`starting arm ${spec.label}${spec.ref === undefined ? '' : ` (${spec.ref})`} ${[...spec.args].join(' ')}`)
      started.push({ spec, server: await startBenchServer([...commonArgs, ...spec.args], { entry, env: { ...spec.env }, cwd }) })
    }
    return started
  } catch (err) {
    await stopArms(started)
    throw err
  }
}

export async function stopArms(arms: readonly ArmServer[]): Promise<void> {
  await Promise.all(arms.map((a) => a.server.stop()))
}

/** One arm's figures in one round. */
export interface RoundFigure {
  readonly imagesPerSecond: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly errors: number
  /** Server process CPU (all threads) per image answered. */
  readonly cpuSecondsPerImage: number
  /** The server's main thread's CPU per image answered. */
  readonly mainThreadCpuSecondsPerImage: number
  /** CPU the load generator (this process) used meanwhile, in cores. */
  readonly generatorCores: number
}

/** Measures `run` on one server, /proc read around it. */
export async function measureArm(server: BenchServer, run: (server: BenchServer) => Promise<LoadOutcome>): Promise<RoundFigure> {
  const cpu0 = await server.cpuSeconds()
  const main0 = await server.mainThreadCpuSeconds()
  const own0 = process.cpuUsage()
  const outcome = await run(server)
  const own = process.cpuUsage(own0)
  const cpu = (await server.cpuSeconds()) - cpu0
  const main = (await server.mainThreadCpuSeconds()) - main0
  const latency = latencySummary(outcome.latenciesMs)
  return {
    imagesPerSecond: outcome.images / outcome.seconds,
    p50Ms: latency.p50,
    p99Ms: latency.p99,
    errors: outcome.errors,
    cpuSecondsPerImage: outcome.images > 0 ? cpu / outcome.images : 0,
    mainThreadCpuSecondsPerImage: outcome.images > 0 ? main / outcome.images : 0,
    generatorCores: (own.user + own.system) / 1e6 / outcome.seconds
  }
}

/**
 * `rounds` rounds of every arm under the same load, the order reversed every other round.
 * Returns the figures per arm (in the order of `arms`), one per round.
 */
export async function pairedRounds(
  arms: readonly ArmServer[],
  rounds: number,
  run: (server: BenchServer) => Promise<LoadOutcome>,
  describe: string,
  beforeRound?: (round: number) => Promise<void>
): Promise<RoundFigure[][]> {
  const figures: RoundFigure[][] = arms.map(() => [])
  for (let r = 0; r < rounds; r++) {
    await beforeRound?.(r)
    const order = arms.map((_, i) => i)
    if (r % 2 === 1) order.reverse()
    for (const i of order) {
      const figure = await measureArm(arms[i]!.server, run)
      figures[i]!.push(figure)
      progress(
        `  ${describe}, round ${r + 1}/${rounds}, ${arms[i]!.spec.label}: ${figure.imagesPerSecond.toFixed(1)} images/s, ` +
          `p50 ${figure.p50Ms.toFixed(0)} ms, p99 ${figure.p99Ms.toFixed(0)} ms, ${(figure.cpuSecondsPerImage * 1000).toFixed(1)} CPU ms/image` +
          (figure.errors > 0 ? `, ${figure.errors} errors` : '')
      )
    }
  }
  return figures
}

/** The median of a figure over rounds and its range. */
export interface Spread {
  readonly median: number
  readonly min: number
  readonly max: number
}

export function spreadOf(values: readonly number[]): Spread {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) }
}

/** Per-round ratios b[i] ÷ a[i], summarised. */
export function ratioSpread(a: readonly number[], b: readonly number[]): Spread {
  return spreadOf(b.map((v, i) => v / a[i]!))
}

/** "12.3 (11.8–12.9)" */
export function formatSpread(s: Spread, digits = 1): string {
  return `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}–${s.max.toFixed(digits)})`
}

/**
 * A repository of one model for one arm: the bench model's files linked (not copied: 100 MB each)
 * under .cache/ab-repos/<label>/<model>, its config.json changed by `patch`. Returns the absolute
 * repository path (arms may run from another source tree).
 */
export async function armRepository(
  label: string,
  sourceRepository: string,
  model: string,
  patch: (config: Record<string, unknown>) => Record<string, unknown>
): Promise<string> {
  const repository = resolve('.cache/ab-repos', label)
  const dir = resolve(repository, model)
  await rm(repository, { recursive: true, force: true })
  await mkdir(dir, { recursive: true })
  const source = resolve(sourceRepository, model)
  for (const file of await readdir(source)) if (file !== 'config.json') await symlink(resolve(source, file), resolve(dir, file))
  const config = JSON.parse(await readFile(resolve(source, 'config.json'), 'utf8')) as Record<string, unknown>
  await writeFile(resolve(dir, 'config.json'), `${JSON.stringify(patch(config), null, 2)}\n`)
  return repository
}
