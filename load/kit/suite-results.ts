import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { maxBy, type LatencySummary } from './stats.js'
import type { RawSessionFigure } from './raw-session.js'
import type { ServerWindow } from './server-observation.js'

/** The JSON a suite run writes under load/results/, and the report reads back. */

export const RESULTS_DIR = 'load/results'

export interface LevelResult {
  /** What varies besides concurrency, e.g. the photo ("500×375"); the same for every level otherwise. */
  readonly group: string
  readonly concurrency: number
  readonly seconds: number
  readonly imagesPerSecond: number
  readonly requestsPerSecond: number
  readonly latencyMs: LatencySummary
  readonly errors: number
  readonly firstError?: string
  /** Server process CPU (user + system, all threads) per image answered. */
  readonly cpuSecondsPerImage: number
  /** The raw session(s), same model and batch size as the scenario's best raw figure, measured just before this level. */
  readonly rawImagesPerSecond: number
  /** imagesPerSecond / rawImagesPerSecond. */
  readonly ratioToRaw: number
  readonly server: ServerWindow
}

export interface ScenarioResult {
  readonly name: string
  readonly title: string
  readonly model: string
  readonly inputDatatype: 'float32' | 'uint8'
  readonly maxBatchSize: number
  readonly rawSession: readonly RawSessionFigure[]
  readonly rawBestImagesPerSecond: number
  readonly levels: readonly LevelResult[]
  /** Named figures particular to a scenario (preprocessing alone, sharp alone, …), each with its unit in the name. */
  readonly extra: Readonly<Record<string, number>>
  /** Why the scenario did not run (e.g. the model variant or the door is missing). */
  readonly skipped?: string
}

export interface SuiteResult {
  readonly startedAt: string
  readonly finishedAt: string
  readonly command: string
  readonly host: { readonly cores: number; readonly cpu: string; readonly node: string; readonly loadAverageAtStart: readonly number[] }
  readonly provider: string
  readonly sessionsPerModel: number | undefined
  readonly durationSeconds: number
  readonly scenarios: readonly ScenarioResult[]
}

/** The newest suite-*.json in the results folder. */
export async function latestResultFile(dir = RESULTS_DIR): Promise<string> {
  // The results are not committed: a fresh clone has no folder until a suite has run.
  const files = (await readdir(dir).catch(() => [] as string[])).filter((f) => /^suite-.*\.json$/.test(f)).sort()
  if (files.length === 0) throw new Error(`no suite-*.json in ${dir}; run npm run load:all first`)
  return join(dir, files[files.length - 1]!)
}

export async function readSuiteResult(path: string): Promise<SuiteResult> {
  const result = JSON.parse(await readFile(path, 'utf8')) as SuiteResult
  // Runs before the raw figure was retaken per level divided every level by the scenario's best.
  return {
    ...result,
    scenarios: result.scenarios.map((s) => ({
      ...s,
      levels: s.levels.map((l) => ({ ...l, rawImagesPerSecond: l.rawImagesPerSecond ?? s.rawBestImagesPerSecond }))
    }))
  }
}

/** The level with the highest concurrency: where a door is at its busiest. */
export function highest(levels: readonly LevelResult[]): LevelResult {
  return maxBy(levels, (l) => l.concurrency)
}
