import { access } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { writeSyntheticModelFolder } from '../../src/model-tools/model-folder.js'
import { SYNTHETIC_WEIGHTS_REVISION } from '../../src/model-tools/synthetic-weights.js'

/**
 * A model repository holding one model, `resnet50`: the synthetic ResNet-50 v1.5, seed 1, the same
 * one the server builds as its default. Built once into .cache/test-models/ and reused by later
 * runs; the path carries the weights revision, so a change to the generator builds a fresh copy.
 * writeSyntheticModelFolder renames the finished folder into place, so a folder that exists is
 * complete, even when two test processes race to build it.
 */
const REPOSITORY = fileURLToPath(new URL(`../../.cache/test-models/synthetic-r${SYNTHETIC_WEIGHTS_REVISION}`, import.meta.url))
const MODEL_NAME = 'resnet50'

let ready: Promise<string> | undefined

export function syntheticModelRepository(): Promise<string> {
  ready ??= ensureRepository().catch((err: unknown) => {
    ready = undefined
    throw err
  })
  return ready
}

async function ensureRepository(): Promise<string> {
  try {
    await access(join(REPOSITORY, MODEL_NAME, 'model.onnx'))
    return REPOSITORY
  } catch {
    // not built yet
  }
  await writeSyntheticModelFolder({ root: REPOSITORY, name: MODEL_NAME, depth: 50, variant: 'v1.5', seed: 1 })
  return REPOSITORY
}
