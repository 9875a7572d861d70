import { randomBytes } from 'node:crypto'
import { access, copyFile, mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { configFromPreset } from '../repository/model-config.js'
import { buildResNet, countResNet, type ResNetDepth, type ResNetVariant } from './resnet.js'

/**
 * A model-repository folder holding a ResNet with synthetic weights: model.onnx, config.json
 * (torchvision preset, `synthetic: true`) and labels.txt (the ImageNet-1k class names).
 */

export interface SyntheticModelFolderOptions {
  readonly root: string
  readonly name: string
  readonly depth: ResNetDepth
  readonly variant: ResNetVariant
  readonly seed: number
  readonly onProgress?: (done: number, total: number) => void
}

export interface SyntheticModelFolder {
  readonly dir: string
  readonly parameters: number
  readonly multiplyAdds: number
}

/**
 * data/ sits at the repository root: two levels above this module under tsx (src/model-tools/), three
 * after tsc (dist/src/model-tools/).
 */
const LABEL_CANDIDATES = ['../../data/imagenet1k-labels.txt', '../../../data/imagenet1k-labels.txt'].map((relative) =>
  fileURLToPath(new URL(relative, import.meta.url))
)

export async function imagenetLabelsPath(): Promise<string> {
  for (const candidate of LABEL_CANDIDATES) {
    try {
      await access(candidate)
      return candidate
    } catch {
      // try the next layout
    }
  }
  throw new Error(
    `data/imagenet1k-labels.txt not found (looked at ${LABEL_CANDIDATES.join(', ')}). Fix: run from a full checkout, or regenerate it with npx tsx scripts/make-labels.ts`
  )
}

/**
 * Writes `<root>/<name>/`. The folder is assembled in a hidden staging folder (the repository skips
 * names starting with '.') and renamed into place, so a crash or a concurrent reader never sees a
 * half-written model. If `<root>/<name>` already exists, each file is renamed over its old version
 * instead, model.onnx last, so every file is always whole.
 */
export async function writeSyntheticModelFolder(options: SyntheticModelFolderOptions): Promise<SyntheticModelFolder> {
  const { root, name, depth, variant, seed, onProgress } = options
  const dir = join(root, name)
  const labels = await imagenetLabelsPath()
  const { parameters, multiplyAdds } = countResNet({ depth, variant })
  const config = configFromPreset('torchvision', {
    synthetic: true,
    inputName: 'input',
    outputName: 'logits',
    description: `ResNet-${depth} ${variant} with SYNTHETIC seeded random weights (seed ${seed}): not trained, answers mean nothing`
  })
  const bytes = buildResNet({ depth, variant, seed, inputName: config.input.name, outputName: config.output.name, onProgress })

  await mkdir(root, { recursive: true })
  const staging = join(root, `.${name}.staging-${process.pid}-${randomBytes(4).toString('hex')}`)
  await mkdir(staging)
  try {
    await copyFile(labels, join(staging, config.labels))
    await writeFile(join(staging, 'config.json'), JSON.stringify(config, null, 2) + '\n')
    await writeFile(join(staging, config.file), bytes)
    try {
      await rename(staging, dir)
      return { dir, parameters, multiplyAdds }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err
    }
    await mkdir(dir, { recursive: true })
    for (const file of [config.labels, 'config.json', config.file]) await rename(join(staging, file), join(dir, file))
    return { dir, parameters, multiplyAdds }
  } finally {
    await rm(staging, { recursive: true, force: true })
  }
}
