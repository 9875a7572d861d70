import { mkdir, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { configFromPreset, type ModelConfig, type VersionPolicy } from '../../src/repository/model-config.js'
import { CLASSES, tempDir, writeTinyModel } from './tiny-model.js'

/**
 * Model repositories of tiny real classifiers (tiny-model.ts), laid out with version folders as
 * Triton lays them out, for the model management tests: they open in well under a second, so
 * loads and reloads can be exercised many times.
 */

export interface TinyModelFolder {
  /** Numbered version folders to write; absent: a flat folder (model.onnx beside config.json). */
  readonly versions?: readonly number[]
  readonly versionPolicy?: VersionPolicy
  /** Smaller batches keep the batcher busy, so switches happen with work queued. */
  readonly maxBatchSize?: number
}

const LABELS = `${Array.from({ length: CLASSES }, (_, i) => `class ${i}`).join('\n')}\n`

function tinyConfig(folder: TinyModelFolder): ModelConfig {
  const config = configFromPreset('torchvision', { synthetic: true, inputName: 'input', outputName: 'logits' })
  return {
    ...config,
    ...(folder.versionPolicy === undefined ? {} : { versionPolicy: folder.versionPolicy }),
    batching: { ...config.batching, maxBatchSize: folder.maxBatchSize ?? 4 }
  }
}

/** Writes one model folder under `root`, built aside and renamed into place (it appears complete). */
export async function writeTinyModelFolder(root: string, name: string, folder: TinyModelFolder = {}): Promise<string> {
  const staging = await tempDir('rs-tiny-folder-')
  const dir = join(staging, name)
  await mkdir(dir)
  await writeFile(join(dir, 'config.json'), JSON.stringify(tinyConfig(folder), null, 2))
  await writeFile(join(dir, 'labels.txt'), LABELS)
  if (folder.versions === undefined) await writeTinyModel(join(dir, 'model.onnx'), { inputs: ['input'] })
  for (const v of folder.versions ?? []) {
    await mkdir(join(dir, String(v)))
    await writeTinyModel(join(dir, String(v), 'model.onnx'), { inputs: ['input'] })
  }
  await rename(dir, join(root, name))
  return join(root, name)
}

/** Adds a version folder to a model folder, renamed into place complete. */
export async function addTinyVersion(root: string, name: string, version: number): Promise<void> {
  const staging = await tempDir('rs-tiny-version-')
  await writeTinyModel(join(staging, 'model.onnx'), { inputs: ['input'] })
  await rename(staging, join(root, name, String(version)))
}

/** A repository (a fresh temporary folder) holding the given model folders. */
export async function tinyRepository(folders: Readonly<Record<string, TinyModelFolder>>): Promise<string> {
  const root = await tempDir('rs-tiny-repo-')
  for (const [name, folder] of Object.entries(folders)) await writeTinyModelFolder(root, name, folder)
  return root
}

/** Resolves once `check` holds, looking every 50 ms; fails with `what` after `timeoutMs`. */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
