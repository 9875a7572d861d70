import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { importModel } from '../../src/model-tools/import-model.js'
import type { ModelConfig } from '../../src/repository/model-config.js'
import { tempDir, writeTinyModel, type TinyModel } from './tiny-model.js'

/**
 * A model repository holding one tiny real classifier (see tiny-model.ts), imported as `model:add`
 * does: FP32 input "input" [N, 3, 224, 224], output "logits" [N, 1000], the torchvision preset.
 * It runs in a millisecond, so tests of the doors' plumbing can send hundreds of requests. Removed
 * by removeTempDirs.
 */
export async function tinyModelRepository(
  name = 'tiny',
  batching: Partial<ModelConfig['batching']> = {},
  model: Omit<TinyModel, 'inputs'> = {}
): Promise<string> {
  const work = await tempDir('rs-tiny-src-')
  const repository = await tempDir('rs-tiny-repo-')
  const source = await writeTinyModel(join(work, 'tiny.onnx'), { ...model, inputs: ['input'] })
  const { dir } = await importModel({ source, name, preset: 'torchvision', repository })
  const configPath = join(dir, 'config.json')
  const config = JSON.parse(await readFile(configPath, 'utf8')) as ModelConfig
  await writeFile(configPath, JSON.stringify({ ...config, batching: { ...config.batching, ...batching } }, null, 2))
  return repository
}
