import { readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadSettings } from '../../src/config.js'
import { ClassifyService } from '../../src/core/classify-service.js'
import { importModel, ImportError } from '../../src/model-tools/import-model.js'
import { photoPaths, readPhoto } from '../helpers/photos.js'
import { testLogger } from '../helpers/server.js'
import { CLASSES, removeTempDirs, tempDir, writeTinyModel, zeroImage } from '../helpers/tiny-model.js'

/**
 * importModel (what `model:add` runs): real ONNX files, small graphs written here, imported into a
 * temporary repository and served by the real start-up path. (The command itself, and torchvision's
 * ResNet-50 exported by PyTorch: test/system/model-add-cli.test.ts.)
 */

let work: string

async function startService(repository: string): Promise<ClassifyService> {
  return ClassifyService.start(loadSettings(['--model-repository', repository, '--provider', 'cpu'], {}), testLogger())
}

beforeAll(async () => {
  work = await tempDir('rs-model-add-')
})
afterAll(removeTempDirs)

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

  it('regression: takes TorchServe\'s index_to_name.json and Keras\' imagenet_class_index.json as --labels (each was read as one line: "has 1 labels")', async () => {
    const source = await writeTinyModel(join(work, 'json-labels.onnx'), { inputs: ['input'] })
    const names = Array.from({ length: CLASSES }, (_, i) => `class ${i}, "quoted"`)
    const forms: Record<string, unknown> = {
      'index_to_name.json': Object.fromEntries(names.map((n, i) => [String(i), n])),
      'imagenet_class_index.json': Object.fromEntries(names.map((n, i) => [String(i), [`n${String(i).padStart(8, '0')}`, n]])),
      'array.json': names
    }
    for (const [file, json] of Object.entries(forms)) {
      const labelsPath = join(work, file)
      await writeFile(labelsPath, JSON.stringify(json, null, 1))
      const repository = await tempDir('rs-repo-')
      const imported = await importModel({ source, name: 'json', preset: 'torchvision', repository, labels: labelsPath })
      expect(await readFile(join(imported.dir, 'labels.txt'), 'utf8'), file).toBe(names.join('\n') + '\n')
      const service = await startService(repository)
      try {
        const answer = await service.classify('json', await readPhoto('chelsea'), 3)
        for (const p of answer.predictions) expect(p.label, file).toBe(names[p.index])
      } finally {
        await service.close()
      }
    }
    // A folder written by hand with the JSON as its labels file serves the same names.
    const repository = await tempDir('rs-repo-')
    const imported = await importModel({ source, name: 'by-hand', preset: 'torchvision', repository })
    await writeFile(join(imported.dir, 'labels.txt'), JSON.stringify(forms['index_to_name.json']))
    const service = await startService(repository)
    try {
      const answer = await service.classify('by-hand', await readPhoto('chelsea'), 3)
      for (const p of answer.predictions) expect(p.label).toBe(names[p.index])
    } finally {
      await service.close()
    }
    // JSON that does not name every index from 0 is refused with what is wrong, before anything is written.
    const labelsPath = join(work, 'gap.json')
    await writeFile(labelsPath, JSON.stringify({ 0: 'a', 2: 'c' }))
    const empty = await tempDir('rs-repo-')
    await expect(importModel({ source, name: 'gap', preset: 'torchvision', repository: empty, labels: labelsPath })).rejects.toThrow(
      /gap\.json is JSON with 2 entries but a class index 2 \(its indexes must run from 0 without gaps\)\. Fix: .*index_to_name\.json/
    )
    expect(await readdir(empty)).toEqual([])
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

  it("refuses an input that is neither unique nor the preset's, naming the candidates and the flag", async () => {
    const source = await writeTinyModel(join(work, 'two-inputs.onnx'), { inputs: ['pixels', 'gain'] })
    const repository = await tempDir('rs-repo-')
    const refused = importModel({ source, name: 'two', preset: 'torchvision', repository })
    await expect(refused).rejects.toThrow(
      /has 2 inputs \("pixels", "gain"\) and none is the torchvision preset's "input"\. Fix: Pass --input <name> .*"pixels", "gain"/
    )
    expect(await refused.catch((err: unknown) => (err as ImportError).usage)).toBe(true)
    // The flag picks the image input, but the server could never feed the other one.
    await expect(importModel({ source, name: 'two', preset: 'torchvision', repository, inputName: 'pixels' })).rejects.toThrow(
      /also needs the input\(s\) "gain"/
    )
    expect(await readdir(repository)).toEqual([])
  })

  it("picks among several outputs by the preset's name, or by --output", async () => {
    const source = await writeTinyModel(join(work, 'two-outputs.onnx'), {
      inputs: ['input'],
      output: 'logits',
      featuresOutput: 'embedding'
    })
    const repository = await tempDir('rs-repo-')
    expect((await importModel({ source, name: 'by-preset', preset: 'torchvision', repository })).config.output.name).toBe('logits')
    await expect(importModel({ source, name: 'zoo', preset: 'onnx-zoo', repository })).rejects.toThrow(
      /has 2 outputs \("logits", "embedding"\) and none is the onnx-zoo preset's "resnetv17_dense0_fwd"\. Fix: Pass --output <name>/
    )
    await expect(importModel({ source, name: 'zoo', preset: 'onnx-zoo', repository, outputName: 'nope' })).rejects.toThrow(
      /has no output "nope"; its outputs are "logits", "embedding"/
    )
    // The embedding has 3 "classes": the label count check catches the wrong pick before anything is written.
    await expect(importModel({ source, name: 'zoo', preset: 'onnx-zoo', repository, outputName: 'embedding' })).rejects.toThrow(
      /has 3 classes but .* has 1000 labels/
    )
    expect((await importModel({ source, name: 'zoo', preset: 'onnx-zoo', repository, outputName: 'logits' })).config.output.name).toBe(
      'logits'
    )
  })
})

describe('importModel: what the output holds', () => {
  it('marks an output computed by a Softmax (seen through an Identity) as probabilities, so the server does not apply a second softmax', async () => {
    const source = await writeTinyModel(join(work, 'softmax.onnx'), { inputs: ['input'], output: 'probs', softmax: true })
    const repository = await tempDir('rs-repo-')
    const imported = await importModel({ source, name: 'probs', preset: 'torchvision', repository })
    expect(imported.config.output.kind).toBe('probabilities')
    expect(imported.notes.join('\n')).toMatch(/output "probs" is computed by a Softmax: its values are used as probabilities/)
    // The caffe preset's "prob" is no exception: what the graph computes decides.
    expect((await importModel({ source, name: 'caffe-probs', preset: 'caffe', repository })).config.output.kind).toBe('probabilities')
    const overridden = await importModel({ source, name: 'as-logits', preset: 'torchvision', repository, outputKind: 'logits' })
    expect(overridden.config.output.kind).toBe('logits')

    // Served: the answers are the model's own probabilities, not a softmax of them (all close to 1/1000).
    const photo = await readFile(photoPaths().find((p) => p.endsWith('/coffee.jpg'))!)
    const service = await startService(repository)
    try {
      const { scores } = await service.inferImage('probs', photo)
      const best = (await service.classify('probs', photo, 1)).predictions[0]!
      expect(best.probability).toBeCloseTo(Math.max(...scores), 6)
      expect(best.probability).toBeGreaterThan(0.0015)
      const twice = (await service.classify('as-logits', photo, 1)).predictions[0]!
      expect(twice.probability).toBeLessThan(0.0011)
    } finally {
      await service.close()
    }
  })

  it('marks plain scores as the preset says (logits)', async () => {
    const source = await writeTinyModel(join(work, 'plain.onnx'), { inputs: ['input'] })
    const imported = await importModel({ source, name: 'plain', preset: 'caffe', repository: await tempDir('rs-repo-') })
    expect(imported.config.output.kind).toBe('logits')
  })
})

describe('importModel: weights stored beside the model (external data)', () => {
  it('copies the data file with the model, and the folder loads and serves', async () => {
    const dir = await tempDir('rs-external-')
    const source = await writeTinyModel(join(dir, 'ext.onnx'), { inputs: ['input'], externalData: true })
    const repository = await tempDir('rs-repo-')
    const imported = await importModel({ source, name: 'ext', preset: 'torchvision', repository })
    expect((await readdir(imported.dir)).sort()).toEqual(['config.json', 'ext.onnx.data', 'labels.txt', 'model.onnx'])
    expect(imported.notes.join('\n')).toMatch(/weights stored beside the model \(ext\.onnx\.data\) were copied/)
    const service = await startService(repository)
    try {
      const { scores } = await service.inferTensor('ext', zeroImage())
      expect(scores).toHaveLength(CLASSES)
    } finally {
      await service.close()
    }
  })

  it('refuses a model whose data file is missing, writing nothing', async () => {
    const dir = await tempDir('rs-external-')
    const source = await writeTinyModel(join(dir, 'lost.onnx'), { inputs: ['input'], externalData: true })
    await rm(join(dir, 'lost.onnx.data'))
    const repository = await tempDir('rs-repo-')
    await expect(importModel({ source, name: 'lost', preset: 'torchvision', repository })).rejects.toThrow(
      /ONNX Runtime cannot load|keeps weights in "lost\.onnx\.data", which is not there/
    )
    expect(await readdir(repository).catch(() => [])).toEqual([])
  })
})

describe('importModel: the input the model declares', () => {
  it('takes a channels-last input as NHWC, and a 299×299 one with its crop and resize, and the folder serves a photo', async () => {
    const repository = await tempDir('rs-repo-')
    const nhwc = await importModel({
      source: await writeTinyModel(join(work, 'keras.onnx'), { inputs: ['images'], channelsLast: true }),
      name: 'keras',
      preset: 'torchvision',
      repository
    })
    expect(nhwc.config.input.layout).toBe('NHWC')
    expect(nhwc.notes.join('\n')).toMatch(/input "images" is channels last .*: layout NHWC/)
    const big = await importModel({
      source: await writeTinyModel(join(work, 'inception-sized.onnx'), { inputs: ['input'], side: 299 }),
      name: 'side299',
      preset: 'torchvision',
      repository
    })
    expect(big.config.preprocess).toMatchObject({ crop: 299, resize: 342 })
    expect(big.notes.join('\n')).toMatch(/takes 299×299 images: shorter side resized to 342, centre crop 299/)
    const photo = await readFile(photoPaths().find((p) => p.endsWith('/coffee.jpg'))!)
    const service = await startService(repository)
    try {
      for (const name of ['keras', 'side299']) expect((await service.classify(name, photo, 5)).predictions).toHaveLength(5)
    } finally {
      await service.close()
    }
  })
})

describe('importModel: a float16 export', () => {
  it('gets a Cast at its float16 input and output, so the server feeds and reads float32; it answers as the float32 model does', async () => {
    const repository = await tempDir('rs-repo-')
    const half = await importModel({
      source: await writeTinyModel(join(work, 'half.onnx'), { inputs: ['input'], float16: true }),
      name: 'half',
      preset: 'torchvision',
      repository
    })
    expect(half.notes.join('\n')).toMatch(/"input" and "logits" are float16: a Cast was added at each/)
    expect(half.signature.inputs[0]!.type).toBe('float32')
    await importModel({
      source: await writeTinyModel(join(work, 'single.onnx'), { inputs: ['input'] }),
      name: 'single',
      preset: 'torchvision',
      repository
    })
    const photo = await readFile(photoPaths().find((p) => p.endsWith('/coffee.jpg'))!)
    const service = await startService(repository)
    try {
      const [h, s] = [await service.classify('half', photo, 5), await service.classify('single', photo, 5)]
      expect(h.predictions.map((p) => p.index)).toEqual(s.predictions.map((p) => p.index))
      for (const [i, p] of h.predictions.entries()) expect(Math.abs(p.probability - s.predictions[i]!.probability)).toBeLessThan(1e-3)
    } finally {
      await service.close()
    }
  })
})
