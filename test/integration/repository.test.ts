import { execFileSync } from 'node:child_process'
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { importModel } from '../../src/model-tools/import-model.js'
import { loadSettings } from '../../src/config.js'
import { ClassifyService } from '../../src/core/classify-service.js'
import {
  checkModelSignature,
  listModelFolders,
  loadModelFolder,
  type ModelEntry,
  type ModelSignature
} from '../../src/repository/repository.js'
import { syntheticModelRepository } from '../helpers/models.js'
import { testLogger } from '../helpers/server.js'

/**
 * Every malformed model folder stops start-up with its own message naming the file, the problem
 * and the fix. Each case goes through the real start-up path (loader, worker, ONNX Runtime session).
 */

let good: string
let goodConfig: Record<string, unknown>
const temps: string[] = []

beforeAll(async () => {
  good = join(await syntheticModelRepository(), 'resnet50')
  goodConfig = JSON.parse(await readFile(join(good, 'config.json'), 'utf8')) as Record<string, unknown>
})
afterAll(async () => {
  await Promise.all(temps.map((t) => rm(t, { recursive: true, force: true })))
})

interface Variant {
  config?: unknown
  configText?: string
  noConfig?: boolean
  model?: 'link' | 'missing' | 'fifo' | Buffer
  labels?: string | 'missing'
}

/** A repository with one folder "bad", built from the good model with one thing changed. */
async function repositoryWith(v: Variant): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'rs-repo-'))
  temps.push(root)
  const dir = join(root, 'bad')
  await mkdir(dir)
  if (!v.noConfig) await writeFile(join(dir, 'config.json'), v.configText ?? JSON.stringify(v.config ?? goodConfig))
  const model = v.model ?? 'link'
  if (model === 'link') await symlink(join(good, 'model.onnx'), join(dir, 'model.onnx'))
  else if (model === 'fifo') execFileSync('mkfifo', [join(dir, 'model.onnx')])
  else if (model !== 'missing') await writeFile(join(dir, 'model.onnx'), model)
  if (v.labels === undefined) await copyFile(join(good, 'labels.txt'), join(dir, 'labels.txt'))
  else if (v.labels !== 'missing') await writeFile(join(dir, 'labels.txt'), v.labels)
  return root
}

async function startFails(root: string): Promise<string> {
  const settings = loadSettings(['--model-repository', root, '--provider', 'cpu'], {})
  try {
    const service = await ClassifyService.start(settings, testLogger())
    await service.close()
  } catch (err) {
    return (err as Error).message
  }
  throw new Error('start-up succeeded but should have failed')
}

/** A config draft is JSON being broken on purpose, so it is typed loosely. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see above
type ConfigDraft = Record<string, any>
const withConfig = (patch: (c: ConfigDraft) => void): Record<string, unknown> => {
  const c = structuredClone(goodConfig) as ConfigDraft
  patch(c)
  return c
}

describe('malformed model folders stop start-up with a clear message', () => {
  it('wrong input name: names the real inputs', async () => {
    const msg = await startFails(await repositoryWith({ config: withConfig((c) => (c.input.name = 'data')) }))
    expect(msg).toMatch(/bad[/\\]model\.onnx: has no input "data"; its inputs are "input"\. Fix: Set input\.name/)
  })

  it('wrong output name', async () => {
    const msg = await startFails(await repositoryWith({ config: withConfig((c) => (c.output.name = 'prob')) }))
    expect(msg).toMatch(/has no output "prob"; its outputs are "logits"/)
  })

  it('a mean with two channels', async () => {
    const msg = await startFails(await repositoryWith({ config: withConfig((c) => (c.preprocess.mean = [0.5, 0.5])) }))
    expect(msg).toMatch(
      /bad[/\\]config\.json: preprocess\.mean must be three numbers \(got \[0\.5,0\.5\]\)\. Fix: Give exactly three numbers/
    )
  })

  it('labels count differs from the output width', async () => {
    const msg = await startFails(await repositoryWith({ labels: 'cat\ndog\n' }))
    expect(msg).toMatch(/output "logits" has 1000 classes but labels\.txt has 2 labels\. Fix: Give labels\.txt exactly 1000 lines/)
  })

  it('missing model file', async () => {
    const msg = await startFails(await repositoryWith({ model: 'missing' }))
    expect(msg).toMatch(/bad[/\\]model\.onnx: is missing \(or not a regular file\)\. Fix: Put the exported ONNX model there/)
  })

  it('a model file that is a FIFO is refused, not opened (opening it waited for a writer for good, and the process then ignored SIGTERM)', async () => {
    const msg = await startFails(await repositoryWith({ model: 'fifo' }))
    expect(msg).toMatch(/bad[/\\]model\.onnx: is missing \(or not a regular file\)\./)
  })

  it('missing labels file', async () => {
    const msg = await startFails(await repositoryWith({ labels: 'missing' }))
    expect(msg).toMatch(/bad[/\\]labels\.txt: is missing/)
  })

  it('regression: a fresh volume\'s lost+found at the root stopped the start ("not a valid model name"), and a model or version folder that is a link was not seen', async () => {
    const root = await mkdtemp(join(tmpdir(), 'rs-repo-'))
    temps.push(root)
    await mkdir(join(root, 'lost+found'))
    // A model folder linked from where it was exported, and one whose version folders are links.
    const exported = await mkdtemp(join(tmpdir(), 'rs-exported-'))
    temps.push(exported)
    for (const file of ['config.json', 'labels.txt']) await copyFile(join(good, file), join(exported, file))
    await symlink(join(good, 'model.onnx'), join(exported, 'model.onnx'))
    await symlink(exported, join(root, 'linked'))
    await mkdir(join(root, 'versioned'))
    for (const file of ['config.json', 'labels.txt']) await copyFile(join(good, file), join(root, 'versioned', file))
    await mkdir(join(exported, 'v7'))
    await symlink(join(good, 'model.onnx'), join(exported, 'v7', 'model.onnx'))
    await symlink(join(exported, 'v7'), join(root, 'versioned', '7'))
    // A link to nothing is no model folder.
    await symlink(join(root, 'gone'), join(root, 'dangling'))

    expect(await listModelFolders(root)).toEqual(['linked', 'versioned'])
    const service = await ClassifyService.start(loadSettings(['--model-repository', root, '--provider', 'cpu'], {}), testLogger())
    try {
      expect(service.modelNames()).toEqual(['linked', 'versioned'])
      expect(service.modelVersions('versioned').map((m) => m.info.version)).toEqual(['7'])
    } finally {
      await service.close()
    }
  })

  it('missing config.json', async () => {
    const msg = await startFails(await repositoryWith({ noConfig: true }))
    expect(msg).toMatch(/bad[/\\]config\.json: is missing\. Fix: Write one with `npm run model:add/)
  })

  it('regression: the fix for a missing config.json is a command that works as printed (it named <model.onnx>, no --repository, and model:add refused the folder that exists without --force)', async () => {
    const root = await repositoryWith({ noConfig: true, model: 'missing' })
    await mkdir(join(root, 'bad', '1'))
    await symlink(join(good, 'model.onnx'), join(root, 'bad', '1', 'model.onnx'))
    const msg = await startFails(root)
    const command = /`npm run model:add -- (.*)`/.exec(msg)?.[1]
    expect(command).toBe(`${join(root, 'bad', '1', 'model.onnx')} --name bad --preset torchvision --repository ${root} --force`)
    // What a reader then runs: the folder is rewritten from the file inside it, and the server starts.
    const flags = command!.split(' ')
    await importModel({ source: flags[0]!, name: 'bad', preset: 'torchvision', repository: root, force: true })
    const service = await ClassifyService.start(loadSettings(['--model-repository', root, '--provider', 'cpu'], {}), testLogger())
    try {
      expect(service.modelNames()).toEqual(['bad'])
    } finally {
      await service.close()
    }
    // With the model file beside where config.json belongs, that file.
    expect(await startFails(await repositoryWith({ noConfig: true }))).toMatch(/model:add -- .*bad[/\\]model\.onnx --name bad .*--force`/)
  })

  it('a folder laid out for Triton (config.pbtxt, 1/model.onnx) is told config.pbtxt is not read, and how to import its ONNX file', async () => {
    const root = await repositoryWith({ noConfig: true, model: 'missing' })
    await writeFile(join(root, 'bad', 'config.pbtxt'), 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n')
    await mkdir(join(root, 'bad', '1'))
    await symlink(join(good, 'model.onnx'), join(root, 'bad', '1', 'model.onnx'))
    const msg = await startFails(root)
    expect(msg).toMatch(/config\.json: is missing; config\.pbtxt \(Triton's model configuration\) is not read by this server\./)
    expect(msg).toMatch(
      /Fix: Import the ONNX file, .*`npm run model:add -- .*bad[/\\]1[/\\]model\.onnx --name bad-onnx --preset torchvision --repository .*rs-repo-[^ ]*`/
    )
  })

  it('a model file that is not ONNX', async () => {
    const msg = await startFails(await repositoryWith({ model: Buffer.from('<html>this is a web page, not a model</html>') }))
    expect(msg).toMatch(/bad[/\\]model\.onnx: is not an ONNX model\. Fix: Export the network with torch\.onnx\.export/)
    // A PyTorch checkpoint renamed model.onnx (a zip archive since PyTorch 1.6, a pickle before) is named as such.
    const zip = Buffer.concat([Buffer.from('PK\x03\x04', 'latin1'), Buffer.alloc(60)])
    expect(await startFails(await repositoryWith({ model: zip }))).toMatch(
      /model\.onnx: is not an ONNX model: it is a zip archive, as PyTorch's torch\.save/
    )
    const pickle = Buffer.concat([Buffer.from([0x80, 0x02, 0x8a, 0x0a]), Buffer.alloc(60)])
    expect(await startFails(await repositoryWith({ model: pickle }))).toMatch(/is not an ONNX model: it is a Python pickle/)
  })

  it('a file that starts like protobuf but is not a model: ONNX Runtime refuses it', async () => {
    const msg = await startFails(await repositoryWith({ model: Buffer.concat([Buffer.from([0x08, 0x07]), Buffer.alloc(64, 0xff)]) }))
    expect(msg).toMatch(/ONNX Runtime could not load the model/)
  })

  it('a config that is not JSON', async () => {
    const msg = await startFails(await repositoryWith({ configText: '{ "input": { name: input } ' }))
    expect(msg).toMatch(/bad[/\\]config\.json: is not valid JSON \(.+\)\. Fix: Correct the JSON syntax/)
  })

  it('an unknown config field (a typo is not silently ignored)', async () => {
    const msg = await startFails(await repositoryWith({ config: withConfig((c) => (c.preprocess.meen = [1, 2, 3])) }))
    expect(msg).toMatch(/config\.json: \/preprocess.*meen/)
  })

  it('a crop larger than the model input', async () => {
    const msg = await startFails(
      await repositoryWith({ config: withConfig((c) => ((c.preprocess.crop = 240), (c.preprocess.resize = 256))) })
    )
    expect(msg).toMatch(/takes 224×224 images, but preprocess\.crop is 240\. Fix: Set preprocess\.crop to 224/)
  })

  it('uint8 datatype for a float32 model', async () => {
    const msg = await startFails(
      await repositoryWith({ config: withConfig((c) => ((c.input.datatype = 'uint8'), (c.input.layout = 'NHWC'))) })
    )
    expect(msg).toMatch(/input "input" is float32, but config\.json says uint8/)
  })

  it('an empty repository', async () => {
    const root = await mkdtemp(join(tmpdir(), 'rs-empty-'))
    temps.push(root)
    expect(await startFails(root)).toMatch(/holds no model folders/)
  })
})

describe('checkModelSignature', () => {
  const sig = (batch: number | string): ModelSignature => ({
    inputs: [{ name: 'input', type: 'float32', shape: [batch, 3, 224, 224] }],
    outputs: [{ name: 'logits', type: 'float32', shape: [batch, 1000] }]
  })
  let entry: ModelEntry
  beforeAll(async () => {
    entry = await loadModelFolder(join(good, '..'), 'resnet50')
  })

  it('a dynamic batch keeps the configured max batch size', () => {
    expect(checkModelSignature(entry, sig('N'))).toEqual({ maxBatchSize: entry.config.batching.maxBatchSize, numClasses: 1000 })
  })
  it('a fixed batch of 1 is served one image per run', () => {
    expect(checkModelSignature(entry, sig(1)).maxBatchSize).toBe(1)
  })
  it('a fixed batch above 1 is refused with the re-export fix', () => {
    expect(() => checkModelSignature(entry, sig(8))).toThrow(/fixed batch of 8\. Fix: Re-export with a dynamic batch dimension/)
  })
  it('a greyscale (1-channel) input is refused', () => {
    const s = sig('N')
    expect(() => checkModelSignature(entry, { ...s, inputs: [{ name: 'input', type: 'float32', shape: ['N', 1, 224, 224] }] })).toThrow(
      /has 1 channels/
    )
  })
  it('a float16 input or output is refused with the way to serve such a network (its FP16 variant), not a datatype the schema refuses', () => {
    const s = sig('N')
    for (const signature of [
      { ...s, inputs: [{ name: 'input', type: 'float16', shape: ['N', 3, 224, 224] }] },
      { ...s, outputs: [{ name: 'logits', type: 'float16', shape: ['N', 1000] }] }
    ]) {
      expect(() => checkModelSignature(entry, signature)).toThrow(
        /is float16.* Fix: Import the export with npm run model:add, which adds a Cast at each float16 edge.*npm run model:fp16 -- --name NAME/
      )
    }
  })
})
