import { availableParallelism, tmpdir } from 'node:os'
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { openSession, readSignature } from '../core/onnx-session.js'
import { computedBySoftmax, inspectOnnxGraph, type OnnxGraphSummary } from './onnx-graph.js'
import { addFloat32Edges, float16Edges } from './float32-edges.js'
import { configFromPreset, PRESETS, type ModelConfig, type PresetName } from '../repository/model-config.js'
import {
  checkModelSignature,
  loadModelFolder,
  type ModelEntry,
  type ModelShape,
  type ModelSignature,
  type TensorSignature,
  LABELS_FIX,
  notOnnxProblem,
  parseLabels,
  shownAs
} from '../repository/repository.js'

/**
 * `model:add`: turns an exported ONNX file into a model folder of the repository. The file is
 * inspected with a real ONNX Runtime session, the input and output names are taken from what it
 * declares, and the folder is validated by the same code the server runs at start-up before it
 * appears in the repository, so a model that imports is a model that loads.
 */

// Under tsx the sources are .ts in src/model-tools; compiled, they are .js in dist/src/model-tools.
export const SHIPPED_LABELS = fileURLToPath(
  new URL(import.meta.url.endsWith('.ts') ? '../../data/imagenet1k-labels.txt' : '../../../data/imagenet1k-labels.txt', import.meta.url)
)

export interface ImportOptions {
  /** The exported ONNX file; it is copied, never moved. */
  readonly source: string
  readonly name: string
  readonly preset: PresetName
  /** Root of the model repository; created if missing. */
  readonly repository: string
  /** One class name per line, in output order; default: the shipped ImageNet-1k labels. */
  readonly labels?: string
  readonly inputName?: string
  readonly outputName?: string
  /** What the output holds; default: probabilities when the graph computes it with a Softmax, else the preset's. */
  readonly outputKind?: ModelConfig['output']['kind']
  readonly maxBatchSize?: number
  readonly maxQueueDelayMs?: number
  /** The weights are seeded random numbers, not trained; the server says so loudly. */
  readonly synthetic?: boolean
  /** Replace an existing folder of the same name. */
  readonly force?: boolean
}

export interface ImportedModel {
  readonly dir: string
  readonly config: ModelConfig
  readonly signature: ModelSignature
  /** What the server concluded from the signature (a fixed batch of 1 → maxBatchSize 1). */
  readonly shape: ModelShape
  readonly input: TensorSignature
  readonly output: TensorSignature
  readonly labelsSource: string
  readonly labelCount: number
  readonly modelBytes: number
  /** Decisions the user should know about (names that differ from the preset, batching limits). */
  readonly notes: readonly string[]
}

/**
 * A refusal with the fix. `usage` marks the ones that a different command line fixes (missing file,
 * name taken, ambiguous names): the CLI exits 2 for them, 1 for models that cannot be served.
 */
export class ImportError extends Error {
  override name = 'ImportError'
  constructor(
    readonly problem: string,
    readonly fix: string,
    readonly usage: boolean
  ) {
    super(`${problem} Fix: ${fix}`)
  }
}

/** The same rule loadModelFolder applies, checked before any work is done. */
const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/

const shown = shownAs
const quoted = (list: readonly TensorSignature[]): string => list.map((t) => `"${t.name}"`).join(', ')

export async function importModel(options: ImportOptions): Promise<ImportedModel> {
  const preset = PRESETS[options.preset]
  if (preset === undefined) {
    throw new ImportError(
      `unknown preset "${String(options.preset)}".`,
      `Use --preset with one of: ${Object.keys(PRESETS).join(', ')}.`,
      true
    )
  }
  if (!MODEL_NAME.test(options.name)) {
    throw new ImportError(
      `"${options.name}" is not a valid model name.`,
      'Use --name with letters, digits, ".", "_" and "-" (at most 64 characters, starting with a letter or digit).',
      true
    )
  }
  const source = resolve(options.source)
  const modelBytes = await sourceSize(source)
  const repository = resolve(options.repository)
  const dest = join(repository, options.name)
  if (!options.force && (await exists(dest))) {
    throw new ImportError(`${shown(dest)} already exists.`, `Pick another --name, or pass --force to replace it.`, true)
  }
  const labelsSource = resolve(options.labels ?? SHIPPED_LABELS)
  const labels = await readLabels(labelsSource, options.labels === undefined)

  const notes: string[] = []
  // A float16 export (model.half() before export) gets float32 edges, written to a scratch file that is imported instead.
  // Read once: a ResNet-152 is 230 MB. The graph is inspected from these bytes (or their float32-edged copy).
  const sourceBytes = await readFile(source)
  const notOnnx = notOnnxProblem(sourceBytes.subarray(0, 16))
  if (notOnnx !== undefined) {
    throw new ImportError(
      `${shown(source)} ${notOnnx}`,
      'Load the weights into their torchvision model and export it with torch.onnx.export (README, "Serving real models"), then import the .onnx file.',
      false
    )
  }
  const edged = await withFloat32Edges(source, sourceBytes, notes)
  const modelFile = edged?.file ?? source
  const opened = await openSession(modelFile, { provider: 'cpu', cudaDeviceId: 0, threads: availableParallelism() }).catch(
    async (err: unknown) => {
      await edged?.remove()
      throw new ImportError(
        `ONNX Runtime cannot load ${shown(source)}: ${(err as Error).message}`,
        'Export the network again with torch.onnx.export (opset 13–17), see docs/models.md.',
        false
      )
    }
  )
  try {
    const signature = readSignature(opened.session)
    const input = pickTensor('input', signature.inputs, options.inputName, options.preset, notes)
    const output = pickTensor('output', signature.outputs, options.outputName, options.preset, notes)
    const unfed = signature.inputs.filter((t) => t !== input)
    if (unfed.length > 0) {
      throw new ImportError(
        `${shown(source)} also needs the input(s) ${quoted(unfed)}, but the server feeds only the image tensor "${input.name}".`,
        'Export the network with a single image input (turn the other inputs into constants).',
        false
      )
    }

    const config = configFromPreset(options.preset, {
      synthetic: options.synthetic ?? false,
      inputName: input.name,
      outputName: output.name
    })
    fitInputShape(config, input, notes)
    const graph = inspectOnnxGraph(edged?.bytes ?? sourceBytes)
    config.output.kind = options.outputKind ?? outputKindOf(graph, output.name, config.output.kind, notes)
    const externalFiles = await externalDataFiles(source, graph.externalFiles)
    if (options.maxBatchSize !== undefined) config.batching.maxBatchSize = options.maxBatchSize
    if (options.maxQueueDelayMs !== undefined) config.batching.maxQueueDelayMs = options.maxQueueDelayMs
    const batch = input.shape[0]
    if (typeof batch === 'number' && batch === 1) {
      if (options.maxBatchSize !== undefined && options.maxBatchSize > 1) notes.push(`--max-batch-size ${options.maxBatchSize} ignored.`)
      notes.push(
        `input "${input.name}" has a fixed batch of 1 (shape [${input.shape.join(', ')}]): the server runs one image per model run. Re-export with a dynamic batch axis to batch requests.`
      )
      config.batching.maxBatchSize = 1
    }
    const width = output.shape.at(-1)
    if (typeof width === 'number' && width !== labels.length) {
      throw new ImportError(
        `output "${output.name}" has ${width} classes but ${shown(labelsSource)} has ${labels.length} labels.`,
        `Pass --labels with a file of exactly ${width} lines, one class name per output index.`,
        true
      )
    }

    // Checked against the destination paths before anything is written, so a refusal leaves no trace.
    const planned: ModelEntry = {
      name: options.name,
      dir: dest,
      version: config.version,
      modelPath: join(dest, config.file),
      config,
      labels
    }
    checkModelSignature(planned, signature)
    await runOnce(opened, config)

    await mkdir(repository, { recursive: true })
    // Staged inside the repository (same filesystem, so the final rename is atomic); the leading dot
    // keeps the server from taking it for a model folder.
    const staging = await mkdtemp(join(repository, '.import-'))
    try {
      const staged = join(staging, options.name)
      await mkdir(staged)
      await copyFile(modelFile, join(staged, config.file))
      for (const file of externalFiles) {
        await mkdir(dirname(join(staged, file)), { recursive: true })
        await copyFile(join(dirname(source), file), join(staged, file))
      }
      await writeFile(join(staged, config.labels), labels.join('\n') + '\n')
      await writeFile(join(staged, 'config.json'), JSON.stringify(config, null, 2) + '\n')
      const entry = await loadModelFolder(staging, options.name)
      // The folder as written, opened as the server will: a file the model needs and the folder lacks fails here.
      const shape = checkModelSignature(entry, await stagedSignature(entry.modelPath))
      if (await exists(dest)) await rename(dest, join(staging, `${options.name}.replaced`))
      await rename(staged, dest)
      const externalBytes = (await Promise.all(externalFiles.map(async (file) => (await stat(join(dirname(source), file))).size))).reduce(
        (a, b) => a + b,
        0
      )
      if (externalFiles.length > 0) notes.push(`the weights stored beside the model (${externalFiles.join(', ')}) were copied with it.`)
      return {
        dir: dest,
        config,
        signature,
        shape,
        input,
        output,
        labelsSource,
        labelCount: labels.length,
        modelBytes: modelBytes + externalBytes,
        notes
      }
    } finally {
      await rm(staging, { recursive: true, force: true })
    }
  } finally {
    await opened.session.release()
    await edged?.remove()
  }
}

/**
 * The model with float32 edges in a scratch folder, when its image input or class output is
 * float16 (the server feeds and reads float32); undefined when it has no float16 edge.
 */
async function withFloat32Edges(
  source: string,
  bytes: Uint8Array,
  notes: string[]
): Promise<{ file: string; bytes: Uint8Array; remove: () => Promise<void> } | undefined> {
  let half: ReturnType<typeof float16Edges>
  try {
    half = float16Edges(bytes)
  } catch (err) {
    throw new ImportError(
      `${shown(source)} cannot be read as an ONNX model (${(err as Error).message}): it is truncated, or not an ONNX file.`,
      'Export the network again with torch.onnx.export (README, "Serving real models") and import that file.',
      false
    )
  }
  if (half.inputs.length + half.outputs.length === 0) return undefined
  let edged: Uint8Array
  try {
    edged = addFloat32Edges(bytes, half)
  } catch (err) {
    throw new ImportError(
      `${shown(source)} is float16 at its edges, and its edges cannot be made float32: ${(err as Error).message}`,
      'Export the network in float32, import that, and make its FP16 variant: npm run model:fp16 -- --name NAME (docs/models.md).',
      false
    )
  }
  const dir = await mkdtemp(join(tmpdir(), 'resnet-serve-import-'))
  const file = join(dir, 'model.onnx')
  await writeFile(file, edged)
  notes.push(
    `${[...half.inputs, ...half.outputs].map((n) => `"${n}"`).join(' and ')} ${half.inputs.length + half.outputs.length > 1 ? 'are' : 'is'} float16: a Cast was added at each, so the server feeds and reads float32 (float16 inside).`
  )
  return { file, bytes: edged, remove: () => rm(dir, { recursive: true, force: true }) }
}

/**
 * Which input (or output) the server should use: the one named by the flag, else the only one,
 * else the one with the preset's name. Anything else is ambiguous and refused with the candidates.
 */
function pickTensor(
  kind: 'input' | 'output',
  candidates: readonly TensorSignature[],
  requested: string | undefined,
  presetName: PresetName,
  notes: string[]
): TensorSignature {
  const flag = `--${kind}`
  if (requested !== undefined) {
    const named = candidates.find((t) => t.name === requested)
    if (named === undefined) {
      throw new ImportError(
        `the model has no ${kind} "${requested}"; its ${kind}s are ${quoted(candidates)}.`,
        `Pass ${flag} with one of ${quoted(candidates)}.`,
        true
      )
    }
    return named
  }
  const presetTensorName = PRESETS[presetName][kind].name
  if (candidates.length === 1) {
    const only = candidates[0]!
    if (only.name !== presetTensorName)
      notes.push(`${kind} "${only.name}" is the model's only ${kind} (the ${presetName} preset's usual name is "${presetTensorName}").`)
    return only
  }
  const byPreset = candidates.find((t) => t.name === presetTensorName)
  if (byPreset !== undefined) return byPreset
  throw new ImportError(
    `the model has ${candidates.length} ${kind}s (${quoted(candidates)}) and none is the ${presetName} preset's "${presetTensorName}".`,
    `Pass ${flag} <name> with the ${kind === 'input' ? 'image input' : 'class scores output'}: one of ${quoted(candidates)}.`,
    true
  )
}

/**
 * The layout and image size the input declares, when they differ from the preset's: channels last
 * ([N, H, W, 3], TensorFlow/Keras exports) is NHWC; a fixed side other than the crop becomes the
 * crop, with the shorter side resized in the same proportion as 256 is to 224 (299 → 342).
 */
function fitInputShape(config: ModelConfig, input: TensorSignature, notes: string[]): void {
  if (input.shape.length !== 4) return
  const [, d1, d2, d3] = input.shape
  if (d3 === 3 && d1 !== 3 && config.input.layout === 'NCHW') {
    config.input.layout = 'NHWC'
    notes.push(`input "${input.name}" is channels last ([${input.shape.join(', ')}]): layout NHWC.`)
  }
  const side = config.input.layout === 'NCHW' ? d2 : d1
  const other = config.input.layout === 'NCHW' ? d3 : d2
  if (typeof side === 'number' && side === other && side !== config.preprocess.crop && side >= 32 && side <= 1024) {
    config.preprocess.crop = side
    config.preprocess.resize = Math.round((side * 256) / 224)
    notes.push(
      `input "${input.name}" takes ${side}×${side} images: shorter side resized to ${config.preprocess.resize}, centre crop ${side} (set preprocess.resize in config.json if the network was trained otherwise).`
    )
  }
}

/**
 * An output the graph computes with a Softmax holds probabilities, whatever the preset's usual kind
 * (the server would apply softmax a second time to logits); any other output is taken as the preset says.
 */
function outputKindOf(
  graph: OnnxGraphSummary,
  output: string,
  presetKind: ModelConfig['output']['kind'],
  notes: string[]
): ModelConfig['output']['kind'] {
  if (!computedBySoftmax(graph, output)) return presetKind
  notes.push(`output "${output}" is computed by a Softmax: its values are used as probabilities (pass --output-kind logits to override).`)
  return 'probabilities'
}

/**
 * The files a model keeps its weights in beside the .onnx (external data), each a path under the
 * model's folder that exists; copied into the model folder with it, at the same relative path.
 */
async function externalDataFiles(source: string, locations: readonly string[]): Promise<string[]> {
  for (const location of locations) {
    const path = resolve(dirname(source), location)
    if (isAbsolute(location) || relative(dirname(source), path).startsWith('..')) {
      throw new ImportError(
        `${shown(source)} keeps weights in "${location}", outside its own folder.`,
        'Save the model again with its external data beside it (onnx.save(..., save_as_external_data=True, location="model.onnx.data")).',
        false
      )
    }
    if (!(await exists(path))) {
      throw new ImportError(
        `${shown(source)} keeps weights in "${location}", which is not there (${shown(path)}).`,
        'Put the external data file beside the model, as it was saved.',
        true
      )
    }
  }
  return [...locations]
}

/** The signature of the model file as written into the folder, from its own session. */
async function stagedSignature(modelPath: string): Promise<ModelSignature> {
  const opened = await openSession(modelPath, { provider: 'cpu', cudaDeviceId: 0, threads: 1 }).catch((err: unknown) => {
    throw new ImportError(
      `ONNX Runtime cannot load the copy written to the repository: ${(err as Error).message}`,
      'Check that every file the model needs sits beside it.',
      false
    )
  })
  try {
    return readSignature(opened.session)
  } finally {
    await opened.session.release()
  }
}

/** One all-zero image through the session: the same warm-up the server runs before it reports ready. */
async function runOnce(opened: Awaited<ReturnType<typeof openSession>>, config: ModelConfig): Promise<void> {
  const { crop } = config.preprocess
  const dims = config.input.layout === 'NCHW' ? [1, 3, crop, crop] : [1, crop, crop, 3]
  const tensor =
    config.input.datatype === 'float32'
      ? new opened.Tensor('float32', new Float32Array(3 * crop * crop), dims)
      : new opened.Tensor('uint8', new Uint8Array(3 * crop * crop), dims)
  try {
    await opened.session.run({ [config.input.name]: tensor }, [config.output.name])
  } catch (err) {
    throw new ImportError(
      `ONNX Runtime could not run the model on one ${dims.join('×')} image: ${(err as Error).message}`,
      'Check that the export takes one [batch, 3, 224, 224] image tensor and returns [batch, classes].',
      false
    )
  }
}

async function sourceSize(source: string): Promise<number> {
  try {
    const s = await stat(source)
    if (s.isFile()) return s.size
  } catch {
    // reported below
  }
  throw new ImportError(`${shown(source)} is not a file.`, 'Give the path of the exported .onnx file as the first argument.', true)
}

async function readLabels(path: string, shipped: boolean): Promise<string[]> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch {
    throw shipped
      ? new ImportError(
          `the shipped labels file ${shown(path)} is missing.`,
          'Restore data/imagenet1k-labels.txt from the repository, or pass --labels with your labels file.',
          false
        )
      : new ImportError(
          `the labels file ${shown(path)} cannot be read.`,
          'Pass --labels with a text file holding one class name per line (or a JSON index_to_name.json).',
          true
        )
  }
  const parsed = parseLabels(text)
  if (typeof parsed === 'string') throw new ImportError(`${shown(path)} ${parsed}`, LABELS_FIX, true)
  return parsed
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false
  )
}

const fmt = (n: number): string => String(Number(n.toPrecision(6)))

/** The human summary `model:add` prints: what was chosen, and how the server will treat it. */
export function describeImport(imported: ImportedModel, source: string): string {
  const { config, input, output, shape } = imported
  const p = config.preprocess
  const scale = Math.abs(1 / p.scale - Math.round(1 / p.scale)) < 1e-9 && p.scale !== 1 ? `1/${Math.round(1 / p.scale)}` : fmt(p.scale)
  const batching =
    shape.maxBatchSize === 1
      ? 'one image per run (fixed batch of 1)'
      : `dynamic batch: up to ${config.batching.maxBatchSize} images per run, waiting at most ${config.batching.maxQueueDelayMs} ms to fill one; queue of ${config.batching.maxQueueSize}`
  const lines = [
    `Imported ${basename(imported.dir)} into ${shown(imported.dir)}`,
    `  model.onnx   copied from ${shown(resolve(source))} (${(imported.modelBytes / 2 ** 20).toFixed(1)} MiB)`,
    `  input        "${input.name}" ${input.type} [${input.shape.join(', ')}], layout ${config.input.layout}`,
    `  output       "${output.name}" ${output.type} [${output.shape.join(', ')}], ${config.output.kind}${config.output.kind === 'logits' ? ' (the server applies softmax)' : ''}`,
    `  labels.txt   ${imported.labelCount} classes from ${shown(imported.labelsSource)}`,
    `  preset       ${config.preset ?? ''}: ${config.description ?? ''}`,
    `  preprocess   shorter side → ${p.resize}, centre crop ${p.crop}×${p.crop}, ${p.colorOrder}, (pixel × ${scale} − mean) / std, mean [${p.mean.map(fmt).join(', ')}], std [${p.std.map(fmt).join(', ')}]`,
    `  batching     ${batching}`,
    `  weights      ${config.synthetic ? 'SYNTHETIC (seeded random, not trained): answers mean nothing' : 'as exported'}`
  ]
  for (const note of imported.notes) lines.push(`  note: ${note}`)
  lines.push(`Validated as the server does at start-up (config, files, labels, ONNX signature, one run).`)
  const name = basename(imported.dir)
  // Run through npm (npm run model:add) the server starts with npm too; run as a file (the image,
  // which has no npm: node dist/src/cli/model-add.js) it starts as node dist/src/main.js.
  const start = process.env.npm_lifecycle_event === 'model:add' ? 'npm start --' : 'node dist/src/main.js'
  lines.push(`Serve it: ${start} --model-repository ${shown(resolve(imported.dir, '..'))}`)
  lines.push(
    config.synthetic
      ? `Ask for it by name: curl -X POST -H 'content-type: image/jpeg' --data-binary @photo.jpg 'http://localhost:8080/classify?model=${name}'`
      : `Requests that name no model go to ${name} when it is the only model with real weights (else start with --default-model ${name}, or ask per request: /classify?model=${name}).`
  )
  return lines.join('\n')
}
