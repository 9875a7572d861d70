import { execFile, spawnSync } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import onnxProto from 'onnx-proto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadSettings } from '../src/config.js'
import { ClassifyService } from '../src/core/classify-service.js'
import { importModel, ImportError } from '../src/model-tools/import-model.js'
import { testLogger } from './helpers/server.js'

/**
 * `model:add` end to end: real ONNX files (small graphs written here, and torchvision's ResNet-50
 * exported by PyTorch when /usr/bin/python3 has it), imported into a temporary repository and
 * served by the real start-up path.
 */

const run = promisify(execFile)
const { onnx } = onnxProto
const PYTHON = '/usr/bin/python3'
const EXPORT_SCRIPT = 'test/python/export_torchvision.py'
const CLASSES = 1000
const hasTorch = spawnSync(PYTHON, ['-c', 'import torch, torchvision'], { stdio: 'ignore' }).status === 0
if (!hasTorch) console.warn(`model-add.test: skipping the torchvision ResNet-50 cases: ${PYTHON} cannot import torch and torchvision (apt-get install python3-torch python3-torchvision python3-onnx).`)

const temps: string[] = []
let work: string

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  temps.push(dir)
  return dir
}

interface TinyModel {
  /** Image inputs [batch, 3, 224, 224]; a second entry is a [1] gain the output is multiplied by. */
  readonly inputs: readonly string[]
  readonly output?: string
  /** A second output: the pooled [batch, 3] features. */
  readonly featuresOutput?: string
  readonly batch?: number | 'N'
}

/**
 * A real, tiny classifier (global average pool → [3, 1000] matrix), so that import, loading and
 * serving are exercised in milliseconds without Python.
 */
async function writeTinyModel(path: string, model: TinyModel): Promise<string> {
  const FLOAT = onnx.TensorProto.DataType.FLOAT
  const dims = (shape: Array<number | string>): { dim: Array<{ dimValue: number } | { dimParam: string }> } => ({
    dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d }))
  })
  const info = (name: string, shape: Array<number | string>) => ({ name, type: { tensorType: { elemType: FLOAT, shape: dims(shape) } } })
  const batch = model.batch ?? 'N'
  const [image, gain] = model.inputs
  const output = model.output ?? 'logits'
  const weights = new Float32Array(3 * CLASSES).map((_, i) => ((i * 7919) % 1000) / 1000 - 0.5)
  const nodes = [
    { opType: 'GlobalAveragePool', input: [image!], output: ['pooled'] },
    { opType: 'Flatten', input: ['pooled'], output: [model.featuresOutput ?? 'features'] },
    { opType: 'MatMul', input: [model.featuresOutput ?? 'features', 'weights'], output: [gain === undefined ? output : 'scores'] },
    ...(gain === undefined ? [] : [{ opType: 'Mul', input: ['scores', gain], output: [output] }])
  ]
  const proto = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'tiny',
      node: nodes,
      // raw_data is little-endian, as the Float32Array is on every host these tests run on.
      initializer: [{ name: 'weights', dims: [3, CLASSES], dataType: FLOAT, rawData: new Uint8Array(weights.buffer) }],
      input: [info(image!, [batch, 3, 224, 224]), ...(gain === undefined ? [] : [info(gain, [1])])],
      output: [info(output, [batch, CLASSES]), ...(model.featuresOutput === undefined ? [] : [info(model.featuresOutput, [batch, 3])])]
    }
  })
  await writeFile(path, onnx.ModelProto.encode(proto).finish())
  return path
}

async function startService(repository: string): Promise<ClassifyService> {
  return ClassifyService.start(loadSettings(['--model-repository', repository, '--provider', 'cpu'], {}), testLogger())
}

/** A float32 CHW image tensor of the right size, as bytes. */
const zeroImage = (): Uint8Array => new Uint8Array(3 * 224 * 224 * 4)

beforeAll(async () => {
  work = await tempDir('rs-model-add-')
})
afterAll(async () => {
  await Promise.all(temps.map((t) => rm(t, { recursive: true, force: true })))
})

describe('importModel', () => {
  it('writes a folder the server loads and serves, with the real names and the shipped labels', async () => {
    const source = await writeTinyModel(join(work, 'tiny.onnx'), { inputs: ['pixels'], output: 'scores_out' })
    const repository = await tempDir('rs-repo-')
    const imported = await importModel({ source, name: 'tiny', preset: 'torchvision', repository })

    expect(imported.dir).toBe(join(repository, 'tiny'))
    expect(imported.config.input.name).toBe('pixels')
    expect(imported.config.output.name).toBe('scores_out')
    expect(imported.config.batching.maxBatchSize).toBe(16)
    expect(imported.notes.join('\n')).toMatch(/input "pixels" is the model's only input/)
    expect((await readdir(imported.dir)).sort()).toEqual(['config.json', 'labels.txt', 'model.onnx'])
    expect(await readdir(repository)).toEqual(['tiny'])
    const labels = (await readFile(join(imported.dir, 'labels.txt'), 'utf8')).trimEnd().split('\n')
    expect(labels).toHaveLength(CLASSES)
    expect(labels[0]).toMatch(/^tench/)

    const service = await startService(repository)
    try {
      expect(service.model('tiny').sessions.shape!.maxBatchSize).toBe(16)
      const { scores } = await service.inferTensor('tiny', zeroImage())
      expect(scores).toHaveLength(CLASSES)
    } finally {
      await service.close()
    }
  })

  it('refuses a name that is taken unless forced', async () => {
    const source = await writeTinyModel(join(work, 'taken.onnx'), { inputs: ['input'] })
    const repository = await tempDir('rs-repo-')
    await importModel({ source, name: 'taken', preset: 'torchvision', repository })
    const before = await readFile(join(repository, 'taken', 'config.json'), 'utf8')

    const refused = importModel({ source, name: 'taken', preset: 'caffe', repository })
    await expect(refused).rejects.toBeInstanceOf(ImportError)
    await expect(refused).rejects.toThrow(/taken already exists\. Fix: Pick another --name, or pass --force/)
    expect(await readFile(join(repository, 'taken', 'config.json'), 'utf8')).toBe(before)

    const forced = await importModel({ source, name: 'taken', preset: 'caffe', repository, force: true })
    expect(forced.config.preprocess.colorOrder).toBe('BGR')
    expect(await readdir(repository)).toEqual(['taken'])
  })

  it('refuses an input that is neither unique nor the preset\'s, naming the candidates and the flag', async () => {
    const source = await writeTinyModel(join(work, 'two-inputs.onnx'), { inputs: ['pixels', 'gain'] })
    const repository = await tempDir('rs-repo-')
    const refused = importModel({ source, name: 'two', preset: 'torchvision', repository })
    await expect(refused).rejects.toThrow(/has 2 inputs \("pixels", "gain"\) and none is the torchvision preset's "input"\. Fix: Pass --input <name> .*"pixels", "gain"/)
    expect(await refused.catch((err: unknown) => (err as ImportError).usage)).toBe(true)
    // The flag picks the image input, but the server could never feed the other one.
    await expect(importModel({ source, name: 'two', preset: 'torchvision', repository, inputName: 'pixels' })).rejects.toThrow(/also needs the input\(s\) "gain"/)
    expect(await readdir(repository)).toEqual([])
  })

  it('picks among several outputs by the preset\'s name, or by --output', async () => {
    const source = await writeTinyModel(join(work, 'two-outputs.onnx'), { inputs: ['input'], output: 'logits', featuresOutput: 'embedding' })
    const repository = await tempDir('rs-repo-')
    expect((await importModel({ source, name: 'by-preset', preset: 'torchvision', repository })).config.output.name).toBe('logits')
    await expect(importModel({ source, name: 'zoo', preset: 'onnx-zoo', repository })).rejects.toThrow(
      /has 2 outputs \("logits", "embedding"\) and none is the onnx-zoo preset's "resnetv17_dense0_fwd"\. Fix: Pass --output <name>/
    )
    await expect(importModel({ source, name: 'zoo', preset: 'onnx-zoo', repository, outputName: 'nope' })).rejects.toThrow(/has no output "nope"; its outputs are "logits", "embedding"/)
    // The embedding has 3 "classes": the label count check catches the wrong pick before anything is written.
    await expect(importModel({ source, name: 'zoo', preset: 'onnx-zoo', repository, outputName: 'embedding' })).rejects.toThrow(/has 3 classes but .* has 1000 labels/)
    expect((await importModel({ source, name: 'zoo', preset: 'onnx-zoo', repository, outputName: 'logits' })).config.output.name).toBe('logits')
  })
})

describe.skipIf(!hasTorch)('torchvision ResNet-50 exported by PyTorch', () => {
  let exports: string

  beforeAll(async () => {
    exports = await tempDir('rs-tv-export-')
    // The ONNX Model Zoo's v1-7 ResNets: input "data" with a fixed batch of 1, output "resnetv24_dense0_fwd".
    await run(PYTHON, [EXPORT_SCRIPT, '50', '--out-dir', join(exports, 'zoo'), '--input-name', 'data', '--output-name', 'resnetv24_dense0_fwd', '--fixed-batch'])
  })

  it('--preset onnx-zoo accepts input "data" with a fixed batch of 1, and the server runs one image per run', async () => {
    const repository = await tempDir('rs-repo-')
    const imported = await importModel({ source: join(exports, 'zoo', 'resnet50.onnx'), name: 'resnet50-zoo', preset: 'onnx-zoo', repository, synthetic: true })
    expect(imported.input).toEqual({ name: 'data', type: 'float32', shape: [1, 3, 224, 224] })
    expect(imported.config.output.name).toBe('resnetv24_dense0_fwd')
    expect(imported.config.batching.maxBatchSize).toBe(1)
    expect(imported.notes.join('\n')).toMatch(/fixed batch of 1/)

    const batchSizes: number[] = []
    const settings = loadSettings(['--model-repository', repository, '--provider', 'cpu'], {})
    const service = await ClassifyService.start(settings, testLogger(), { onBatch: (_model, size) => batchSizes.push(size) })
    try {
      expect(service.model('resnet50-zoo').sessions.shape!.maxBatchSize).toBe(1)
      const answers = await Promise.all([0, 1, 2].map(() => service.inferTensor('resnet50-zoo', zeroImage())))
      expect(answers.map((a) => a.batchSize)).toEqual([1, 1, 1])
      expect(batchSizes).toEqual([1, 1, 1])
    } finally {
      await service.close()
    }
  })
})

describe('the model:add CLI', () => {
  const cli = (...args: string[]) =>
    run(process.execPath, ['--import', 'tsx', 'src/cli/model-add.ts', ...args]).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr })
    )

  it('prints the summary and exits 0', async () => {
    const source = await writeTinyModel(join(work, 'cli.onnx'), { inputs: ['input'] })
    const repository = await tempDir('rs-repo-')
    const { code, stdout, stderr } = await cli(source, '--name', 'cli-model', '--preset', 'torchvision', '--repository', repository, '--max-batch-size', '8', '--max-queue-delay-ms', '2.5')
    expect(stderr).toBe('')
    expect(code).toBe(0)
    expect(stdout).toMatch(/^Imported cli-model into /)
    expect(stdout).toMatch(/input\s+"input" float32 \[N, 3, 224, 224\], layout NCHW/)
    expect(stdout).toMatch(/output\s+"logits" float32 \[N, 1000\], logits/)
    expect(stdout).toMatch(/preset\s+torchvision/)
    expect(stdout).toMatch(/RGB, \(pixel × 1\/255 − mean\) \/ std, mean \[0\.485, 0\.456, 0\.406\], std \[0\.229, 0\.224, 0\.225\]/)
    expect(stdout).toMatch(/up to 8 images per run, waiting at most 2\.5 ms/)
    const config = JSON.parse(await readFile(join(repository, 'cli-model', 'config.json'), 'utf8')) as { batching: { maxBatchSize: number; maxQueueDelayMs: number } }
    expect(config.batching).toMatchObject({ maxBatchSize: 8, maxQueueDelayMs: 2.5 })
  })

  it('exits 2 on a missing file, and on bad flags', async () => {
    const repository = await tempDir('rs-repo-')
    const missing = await cli(join(work, 'no-such.onnx'), '--name', 'x', '--preset', 'torchvision', '--repository', repository)
    expect(missing.code).toBe(2)
    expect(missing.stderr).toMatch(/no-such\.onnx is not a file\. Fix: Give the path of the exported \.onnx file/)
    const badPreset = await cli(join(work, 'no-such.onnx'), '--name', 'x', '--preset', 'keras')
    expect(badPreset.code).toBe(2)
    expect(badPreset.stderr).toMatch(/unknown --preset "keras"; use one of: torchvision, caffe, onnx-zoo/)
    const unknownFlag = await cli(join(work, 'no-such.onnx'), '--name', 'x', '--preset', 'caffe', '--batch', '4')
    expect(unknownFlag.code).toBe(2)
    expect(unknownFlag.stderr).toMatch(/Unknown option '--batch'/)
    expect(await readdir(repository)).toEqual([])
  })
})
