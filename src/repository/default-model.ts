import type { Logger } from 'pino'
import { writeSyntheticModelFolder } from '../models/model-folder.js'
import { listModelFolders } from './repository.js'

export const DEFAULT_MODEL_NAME = 'resnet50'

/**
 * A fresh checkout has no trained weights (none can be downloaded here), so an empty repository
 * gets the paper's ResNet-50 with synthetic seeded weights: the service can start and be tested,
 * and says loudly that its answers mean nothing.
 */
export async function ensureDefaultModel(root: string, log: Logger): Promise<void> {
  if ((await listModelFolders(root)).length > 0) return
  log.warn({ root, model: DEFAULT_MODEL_NAME }, 'model repository is empty: building the synthetic ResNet-50 (seeded random weights, NOT trained)')
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
