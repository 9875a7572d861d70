import { execFile, spawnSync } from 'node:child_process'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadSettings } from '../../src/config.js'
import { ClassifyService } from '../../src/core/classify-service.js'
import { importModel } from '../../src/model-tools/import-model.js'
import { testLogger } from '../helpers/server.js'
import { removeTempDirs, tempDir, writeTinyModel, zeroImage } from '../helpers/tiny-model.js'

/**
 * `npm run model:add` as a user runs it (the command in its own process: its output and exit
 * codes), and torchvision's ResNet-50 exported by PyTorch when /usr/bin/python3 has it.
 */

const run = promisify(execFile)
const PYTHON = '/usr/bin/python3'
const EXPORT_SCRIPT = 'test/python/export_torchvision.py'
const hasTorch = spawnSync(PYTHON, ['-c', 'import torch, torchvision'], { stdio: 'ignore' }).status === 0
if (!hasTorch)
  console.warn(
    `model-add-cli.test: skipping the torchvision ResNet-50 cases: ${PYTHON} cannot import torch and torchvision (apt-get install python3-torch python3-torchvision python3-onnx).`
  )

let work: string

beforeAll(async () => {
  work = await tempDir('rs-model-add-')
})
afterAll(removeTempDirs)

describe.skipIf(!hasTorch)('torchvision ResNet-50 exported by PyTorch', () => {
  let exports: string

  beforeAll(async () => {
    exports = await tempDir('rs-tv-export-')
    // The ONNX Model Zoo's v1-7 ResNets: input "data" with a fixed batch of 1, output "resnetv24_dense0_fwd".
    await run(PYTHON, [
      EXPORT_SCRIPT,
      '50',
      '--out-dir',
      join(exports, 'zoo'),
      '--input-name',
      'data',
      '--output-name',
      'resnetv24_dense0_fwd',
      '--fixed-batch'
    ])
  })

  it('--preset onnx-zoo accepts input "data" with a fixed batch of 1, and the server runs one image per run', async () => {
    const repository = await tempDir('rs-repo-')
    const imported = await importModel({
      source: join(exports, 'zoo', 'resnet50.onnx'),
      name: 'resnet50-zoo',
      preset: 'onnx-zoo',
      repository,
      synthetic: true
    })
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
    const { code, stdout, stderr } = await cli(
      source,
      '--name',
      'cli-model',
      '--preset',
      'torchvision',
      '--repository',
      repository,
      '--max-batch-size',
      '8',
      '--max-queue-delay-ms',
      '2.5'
    )
    expect(stderr).toBe('')
    expect(code).toBe(0)
    expect(stdout).toMatch(/^Imported cli-model into /)
    expect(stdout).toMatch(/input\s+"input" float32 \[N, 3, 224, 224\], layout NCHW/)
    expect(stdout).toMatch(/output\s+"logits" float32 \[N, 1000\], logits/)
    expect(stdout).toMatch(/preset\s+torchvision/)
    expect(stdout).toMatch(/RGB, \(pixel × 1\/255 − mean\) \/ std, mean \[0\.485, 0\.456, 0\.406\], std \[0\.229, 0\.224, 0\.225\]/)
    expect(stdout).toMatch(/up to 8 images per run, waiting at most 2\.5 ms/)
    // Run as a file (as in the image, which has no npm), it says how to start the server without npm.
    expect(stdout).toContain(`Serve it: node dist/src/main.js --model-repository ${repository}`)
    const config = JSON.parse(await readFile(join(repository, 'cli-model', 'config.json'), 'utf8')) as {
      batching: { maxBatchSize: number; maxQueueDelayMs: number }
    }
    expect(config.batching).toMatchObject({ maxBatchSize: 8, maxQueueDelayMs: 2.5 })
  })

  it.skipIf(!hasTorch)(
    'regression: a PyTorch checkpoint (.pth, .pt) crashed model:add with a protobufjs stack trace ("invalid wire type 6"); it is refused naming what it is and how to export it',
    async () => {
      await run(PYTHON, [
        '-c',
        [
          'import sys, torch, torchvision',
          'm = torchvision.models.resnet18(weights=None).eval()',
          'torch.save(m.state_dict(), sys.argv[1] + "/resnet18.pth")',
          'torch.save(m.state_dict(), sys.argv[1] + "/old.pth", _use_new_zipfile_serialization=False)',
          'torch.jit.save(torch.jit.trace(m, torch.zeros(1, 3, 224, 224)), sys.argv[1] + "/resnet18.pt")'
        ].join('\n'),
        work
      ])
      const repository = await tempDir('rs-repo-')
      for (const [file, what] of [
        ['resnet18.pth', /is not an ONNX model: it is a zip archive, as PyTorch's torch\.save and torch\.jit\.save write a \.pth or \.pt/],
        ['resnet18.pt', /is not an ONNX model: it is a zip archive/],
        ['old.pth', /is not an ONNX model: it is a Python pickle \(torch\.save before PyTorch 1\.6\)/]
      ] as const) {
        const { code, stderr } = await cli(join(work, file), '--name', 'x', '--preset', 'torchvision', '--repository', repository)
        expect(code, file).toBe(1)
        expect(stderr, file).toMatch(what)
        expect(stderr, file).toMatch(/Fix: Load the weights into their torchvision model and export it with torch\.onnx\.export/)
        expect(stderr, file).not.toMatch(/\n\s+at /)
      }
      expect(await readdir(repository)).toEqual([])
    }
  )

  it('a truncated ONNX file is refused, not a stack trace', async () => {
    const whole = await readFile(await writeTinyModel(join(work, 'whole.onnx'), { inputs: ['input'] }))
    const truncated = join(work, 'truncated.onnx')
    await writeFile(truncated, whole.subarray(0, Math.floor(whole.length / 2)))
    const { code, stderr } = await cli(truncated, '--name', 'x', '--preset', 'torchvision', '--repository', await tempDir('rs-repo-'))
    expect(code).toBe(1)
    expect(stderr).toMatch(
      /truncated\.onnx (cannot be read as an ONNX model .*: it is truncated, or not an ONNX file|ONNX Runtime cannot load)/
    )
    expect(stderr).not.toMatch(/\n\s+at /)
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
