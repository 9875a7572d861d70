import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { pino } from 'pino'
import type { Provider } from '../../src/config.js'
import { ImagePreprocessor } from '../../src/core/preprocess.js'
import { createNormalizer } from '../../src/core/pixel-normalizer.js'
import { ensureDefaultModel } from '../../src/repository/default-model.js'
import type { ModelConfig } from '../../src/repository/model-config.js'
import { loadModelFolder } from '../../src/repository/repository.js'
import type { BenchServer, ServerEntry } from './bench-server.js'
import type { LoadOutcome } from './load-generators.js'
import { largePhoto, photoNearest, type BenchPhoto } from './photos.js'

/**
 * What a scenario of the load suite is: one door of the service, the model it serves, and the
 * load levels to put it under. Each file of load/scenarios/ plans one door; the runner
 * (scenario-runner.ts) measures every plan the same way.
 */

export interface SuiteOptions {
  readonly scenarios: readonly string[]
  readonly repository: string
  readonly floatModel: string
  readonly uint8Model: string
  readonly provider: Provider
  readonly sessionsPerModel: number | undefined
  readonly entry: ServerEntry
  readonly durationSeconds: number
  readonly concurrency: readonly number[]
  /** Photo sizes for /classify, "WxH"; one not among the fixtures is generated (4000x3000). */
  readonly photoSizes: readonly string[]
  readonly batchItems: number
  readonly extraServerArgs: readonly string[]
}

export interface ModelUnderTest {
  readonly name: string
  readonly path: string
  readonly config: ModelConfig
}

export interface Level {
  readonly group: string
  readonly concurrency: number
  run(server: BenchServer, seconds: number): Promise<LoadOutcome>
}

export interface ScenarioPlan {
  readonly name: string
  readonly title: string
  readonly model: ModelUnderTest
  readonly levels: readonly Level[]
  /** Figures measured once, before the service starts (what the door's own work costs alone). */
  readonly extra?: () => Promise<Record<string, number>>
}

/** A scenario's plan for one door and model. */
export type PlanScenario = (name: string, model: ModelUnderTest, options: SuiteOptions) => Promise<ScenarioPlan>

export async function modelUnderTest(repository: string, name: string): Promise<ModelUnderTest | undefined> {
  if (!existsSync(join(repository, name, 'config.json'))) return undefined
  const entry = await loadModelFolder(repository, name)
  return { name, path: entry.modelPath, config: entry.config }
}

/** A paired benchmark's model (the default one fetched first when missing) and the typical photo it sends. */
export async function benchModelAndPhoto(repository: string, name: string): Promise<{ model: ModelUnderTest; photo: BenchPhoto }> {
  await ensureDefaultModel(repository, pino({ level: 'warn' }))
  const model = await modelUnderTest(repository, name)
  if (model === undefined) throw new Error(`no model ${name} in ${repository}`)
  return { model, photo: await typicalPhoto() }
}

/** One level per concurrency of the run, all in one group (one line of the report's charts). */
export function levelsAt(
  group: string,
  concurrency: readonly number[],
  run: (server: BenchServer, concurrency: number, seconds: number) => Promise<LoadOutcome>
): Level[] {
  return concurrency.map((c) => ({ group, concurrency: c, run: (server, seconds) => run(server, c, seconds) }))
}

/** The fixture photo nearest the size, or a camera-sized one made from them when none is near. */
export async function photoOfSize(size: string): Promise<BenchPhoto> {
  const [width, height] = size.split('x').map(Number) as [number, number]
  const nearest = await photoNearest(width, height)
  return Math.abs(nearest.width - width) + Math.abs(nearest.height - height) <= 64 ? nearest : largePhoto(width, height)
}

/** The photo most scenarios send: 500×375, the size of a typical web image. */
export function typicalPhoto(): Promise<BenchPhoto> {
  return photoNearest(500, 375)
}

export function photoLabel(photo: BenchPhoto): string {
  return `${photo.width}×${photo.height}`
}

/** One photo in the model's input layout: float32 CHW normalised, or the uint8 HWC pixels. */
export async function photoTensor(model: ModelUnderTest, photo: BenchPhoto): Promise<Buffer> {
  const pixels = await new ImagePreprocessor(model.config.preprocess, { maxInputPixels: 50_000_000 }).decode(photo.bytes)
  if (model.config.input.datatype === 'uint8') return pixels
  const target = new Float32Array(pixels.length)
  createNormalizer(model.config.preprocess)(pixels, target, 0)
  return Buffer.from(target.buffer)
}

export function tensorShape(model: ModelUnderTest, batch: number): number[] {
  const crop = model.config.preprocess.crop
  return model.config.input.layout === 'NCHW' ? [batch, 3, crop, crop] : [batch, crop, crop, 3]
}

/** The protocol's name for the model's input datatype. */
export function tensorDatatype(model: ModelUnderTest): 'UINT8' | 'FP32' {
  return model.config.input.datatype === 'uint8' ? 'UINT8' : 'FP32'
}
