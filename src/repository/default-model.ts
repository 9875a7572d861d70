import type { Logger } from 'pino'
import { writeSyntheticModelFolder } from '../model-tools/model-folder.js'
import { listModelFolders } from './repository.js'

export const DEFAULT_MODEL_NAME = 'resnet50'

/**
 * A fresh checkout has no trained weights (none can be downloaded here), so an empty repository
 * gets the paper's ResNet-50 with synthetic seeded weights: the service can start and be tested,
 * and says loudly that its answers mean nothing.
 */
export async function ensureDefaultModel(root: string, log: Logger): Promise<void> {
  if ((await listModelFolders(root)).length > 0) return
  log.warn(
    { root, model: DEFAULT_MODEL_NAME },
    'model repository is empty: building the synthetic ResNet-50 (seeded random weights, NOT trained)'
  )
  let lastPercent = -10
  const { dir, parameters } = await writeSyntheticModelFolder({
    root,
    name: DEFAULT_MODEL_NAME,
    depth: 50,
    variant: 'v1.5',
    seed: 1,
    onProgress: (done: number, total: number) => {
      const percent = Math.floor((100 * done) / total)
      if (percent >= lastPercent + 10) {
        lastPercent = percent
        log.info({ percent }, 'building default model')
      }
    }
  })
  log.warn({ dir, parameters }, 'built the synthetic default model')
}

export interface DefaultModelChoice {
  readonly name: string | undefined
  /** Why, for the start-up log line. */
  readonly reason: string
}

/**
 * The model a request that names none goes to. The synthetic model is a placeholder: once a real
 * (trained) model is loaded, the default is a real one. `configured` (--default-model) always wins;
 * the caller checks that it names a loaded model.
 */
export function chooseDefaultModel(
  models: ReadonlyArray<{ readonly name: string; readonly synthetic: boolean }>,
  configured: string | undefined
): DefaultModelChoice {
  if (configured !== undefined) return { name: configured, reason: '--default-model' }
  const byName = [...models].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  const real = byName.filter((m) => !m.synthetic)
  if (real.length === 1) return { name: real[0]!.name, reason: 'the only model with real (not synthetic) weights' }
  if (real.length > 1) {
    const name = real.some((m) => m.name === DEFAULT_MODEL_NAME) ? DEFAULT_MODEL_NAME : real[0]!.name
    return { name, reason: `the first of ${real.length} models with real weights (choose with --default-model)` }
  }
  if (byName.some((m) => m.name === DEFAULT_MODEL_NAME)) return { name: DEFAULT_MODEL_NAME, reason: 'no model has real weights yet' }
  return { name: byName[0]?.name, reason: 'no model has real weights yet; the first in name order' }
}
