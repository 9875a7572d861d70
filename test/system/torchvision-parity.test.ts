import { execFile, spawnSync } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadSettings } from '../../src/config.js'
import { ClassifyService } from '../../src/core/classify-service.js'
import { ImagePreprocessor } from '../../src/core/preprocess.js'
import { createNormalizer } from '../../src/core/pixel-normalizer.js'
import { importModel } from '../../src/model-tools/import-model.js'
import { PRESETS } from '../../src/repository/model-config.js'
import { photoPaths } from '../helpers/photos.js'
import { testLogger } from '../helpers/server.js'

/**
 * Reference parity: torchvision's ResNet-50/101/152 (seeded random weights, exported by PyTorch),
 * imported with model:add and served through the project's own loading and inference path (worker
 * threads, the real batcher), give the logits PyTorch computes for the same input tensor.
 *
 * Random deep ResNets have logits up to ~1e7 and nearly the same top-1 for every photo, so the
 * check is on the logits themselves, relative to the largest |logit| of each image, plus the top-5
 * order. The input is 3 real photos through the project's own preprocessing, so the tensor is the
 * one the server would build.
 */

const PYTHON = '/usr/bin/python3'
const EXPORT_SCRIPT = 'test/python/export_torchvision.py'
const DEPTHS = [50, 101, 152] as const
const IMAGES = 3
const CLASSES = 1000
const RELATIVE_TOLERANCE = 1e-4

const hasTorch = spawnSync(PYTHON, ['-c', 'import torch, torchvision, onnx'], { stdio: 'ignore' }).status === 0
if (!hasTorch) {
  console.warn(
    `torchvision-parity.test: SKIPPED: ${PYTHON} cannot import torch, torchvision and onnx (apt-get install python3-torch python3-torchvision python3-onnx; .ci/run does).`
  )
}

const preprocess = PRESETS.torchvision.preprocess
const itemElements = 3 * preprocess.crop * preprocess.crop
let work: string
let inputs: Float32Array

function topIndices(row: Float32Array, k: number): number[] {
  return [...row.keys()].sort((a, b) => row[b]! - row[a]!).slice(0, k)
}

describe.skipIf(!hasTorch)('torchvision ResNets served by resnet-serve match PyTorch', () => {
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rs-parity-'))
    const photos = photoPaths().slice(0, IMAGES)
    expect(photos).toHaveLength(IMAGES)
    const preprocessor = new ImagePreprocessor(preprocess, { maxInputPixels: 50_000_000 })
    const normalize = createNormalizer(preprocess)
    inputs = new Float32Array(IMAGES * itemElements)
    for (const [i, photo] of photos.entries()) normalize(await preprocessor.decode(await readFile(photo)), inputs, i * itemElements)
    // The script reads little-endian float32; every host these tests run on is little-endian.
    await writeFile(join(work, 'inputs.f32'), inputs)

    const t0 = performance.now()
    await promisify(execFile)(PYTHON, [
      EXPORT_SCRIPT,
      ...DEPTHS.map(String),
      '--out-dir',
      work,
      '--seed',
      '0',
      '--inputs',
      join(work, 'inputs.f32'),
      '--count',
      String(IMAGES)
    ])
    console.log(
      `torchvision export + PyTorch reference logits for ResNet-${DEPTHS.join('/')}: ${((performance.now() - t0) / 1000).toFixed(1)} s`
    )
  })
  afterAll(async () => {
    if (work !== undefined) await rm(work, { recursive: true, force: true })
  })

  it.each(DEPTHS)('ResNet-%i: logits within 1e-4 of the largest |logit|, same top-5', async (depth) => {
    const repository = join(work, `repository-${depth}`)
    const name = `tv-resnet${depth}`
    await importModel({ source: join(work, `resnet${depth}.onnx`), name, preset: 'torchvision', repository, synthetic: true })
    const reference = new Float32Array((await readFile(join(work, `resnet${depth}.logits.f32`))).buffer.slice(0))
    expect(reference).toHaveLength(IMAGES * CLASSES)

    const t0 = performance.now()
    const service = await ClassifyService.start(loadSettings(['--model-repository', repository, '--provider', 'cpu'], {}), testLogger())
    const t1 = performance.now()
    let served
    try {
      served = await Promise.all(
        Array.from({ length: IMAGES }, (_, i) => {
          const tensor = inputs.slice(i * itemElements, (i + 1) * itemElements)
          return service.inferTensor(name, new Uint8Array(tensor.buffer))
        })
      )
    } finally {
      await service.close()
    }
    const t2 = performance.now()

    const differences: number[] = []
    for (let i = 0; i < IMAGES; i++) {
      const expected = reference.subarray(i * CLASSES, (i + 1) * CLASSES)
      const actual = served[i]!.scores
      expect(actual).toHaveLength(CLASSES)
      let largest = 0
      let worst = 0
      for (let c = 0; c < CLASSES; c++) {
        largest = Math.max(largest, Math.abs(expected[c]!))
        worst = Math.max(worst, Math.abs(actual[c]! - expected[c]!))
      }
      differences.push(worst / largest)
      expect(topIndices(actual, 5)).toEqual(topIndices(expected, 5))
    }
    const maxRelative = Math.max(...differences)
    console.log(
      `ResNet-${depth}: max |served − PyTorch| / max |logit| = ${maxRelative.toExponential(2)} over ${IMAGES} photos ` +
        `(largest |logit| ${Math.max(...reference.map(Math.abs)).toExponential(2)}); top-5 identical; ` +
        `start ${((t1 - t0) / 1000).toFixed(1)} s, ${IMAGES} images ${((t2 - t1) / 1000).toFixed(2)} s (batch sizes ${served.map((s) => s.batchSize).join(', ')})`
    )
    expect(maxRelative).toBeLessThan(RELATIVE_TOLERANCE)
  })
})
