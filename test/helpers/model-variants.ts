import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ModelConfig } from '../../src/repository/model-config.js'
import { syntheticModelRepository } from './models.js'

/**
 * Repositories of variants of the synthetic ResNet-50: each model folder symlinks its model.onnx,
 * copies its labels and writes its config.json with the batching changed, or (broken) holds a
 * model.onnx ONNX Runtime cannot load. Remove them with `removeVariantRepositories()`.
 */

export interface ModelVariant {
  readonly batching?: Partial<ModelConfig['batching']>
  /** A model.onnx of garbage: the folder validates, the session does not open. */
  readonly broken?: boolean
  /** Mark the folder as holding real (not synthetic) weights, as an imported export is. */
  readonly real?: boolean
}

const created: string[] = []

export async function variantRepository(variants: Readonly<Record<string, ModelVariant>>): Promise<string> {
  const good = join(await syntheticModelRepository(), 'resnet50')
  const config = JSON.parse(await readFile(join(good, 'config.json'), 'utf8')) as { batching: Record<string, unknown> }
  const root = await mkdtemp(join(tmpdir(), 'rs-variants-'))
  created.push(root)
  for (const [name, variant] of Object.entries(variants)) {
    const dir = join(root, name)
    await mkdir(dir)
    const synthetic = variant.real === true ? { synthetic: false } : {}
    await writeFile(
      join(dir, 'config.json'),
      JSON.stringify({ ...config, ...synthetic, batching: { ...config.batching, ...variant.batching } })
    )
    await copyFile(join(good, 'labels.txt'), join(dir, 'labels.txt'))
    if (variant.broken === true) await writeFile(join(dir, 'model.onnx'), Buffer.from('this is not an ONNX model'))
    else await symlink(join(good, 'model.onnx'), join(dir, 'model.onnx'))
  }
  return root
}

export async function removeVariantRepositories(): Promise<void> {
  await Promise.all(created.splice(0).map((root) => rm(root, { recursive: true, force: true })))
}
