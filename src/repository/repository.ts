import type { Dirent } from 'node:fs'
import { open, readdir, readFile, stat } from 'node:fs/promises'
import { basename, dirname, join, relative, resolve } from 'node:path'
import { Value, type ValueError } from '@sinclair/typebox/value'
import { DEFAULT_MODEL_REPOSITORY } from '../config.js'
import { ModelConfigSchema, VERSION_NAME, type ModelConfig } from './model-config.js'

/**
 * The model repository: one folder per model under a root. Loading checks everything that can be
 * checked without ONNX Runtime (config shape, files, labels); `checkModelSignature` checks the
 * config against the inputs and outputs the session really has, once a worker has opened it.
 * Every failure is a RepositoryError naming the file, the problem and the fix.
 */

export interface ModelEntry {
  readonly name: string
  /** The model's folder (config.json); a versioned model's files are in its `<n>/` sub-folder. */
  readonly dir: string
  /** The version folder's number, or config.json's `version` for a model without version folders. */
  readonly version: string
  readonly modelPath: string
  readonly config: Readonly<ModelConfig>
  readonly labels: readonly string[]
}

/** What ONNX Runtime reports about one input or output of a session. */
export interface TensorSignature {
  readonly name: string
  readonly type: string
  readonly shape: readonly (number | string)[]
}

export interface ModelSignature {
  readonly inputs: readonly TensorSignature[]
  readonly outputs: readonly TensorSignature[]
}

/** What the signature check concluded about batching. */
export interface ModelShape {
  /** A model exported with a fixed batch of 1 runs one image per run. */
  readonly maxBatchSize: number
  readonly numClasses: number
}

export class RepositoryError extends Error {
  override name = 'RepositoryError'
  constructor(
    readonly model: string,
    readonly file: string,
    problem: string,
    /** Absent when the problem lists several, each with its own fix. */
    fix?: string
  ) {
    super(fix === undefined ? `${file}: ${problem}` : `${file}: ${problem} Fix: ${fix}`)
  }
}

const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/

/**
 * Whether a failed stat/open/read was refused by owner and mode rather than finding nothing: a
 * model folder on a host mount keeps the host's uid, and "is missing" sent people looking for a
 * file that was there.
 */
export function isPermissionDenied(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null | undefined)?.code
  return code === 'EACCES' || code === 'EPERM'
}

const UNREADABLE = 'cannot be read by this process (permission denied).'

/** The fix for a file this process may not read, naming the user it runs as. */
export function unreadableFix(): string {
  const user = process.getuid === undefined ? "the server's user" : `uid ${process.getuid()}`
  return `Check the owner and mode of the file and of the folders above it (a host mount keeps the host's uid): the server runs as ${user}. Make them readable to it, e.g. \`chmod a+r\` on the file and \`chmod a+rx\` on its folders, or chown them to that user.`
}
/** ONNX files are protobuf ModelProto messages; their first field is ir_version (field 1, varint). */
const ONNX_FIRST_BYTE = 0x08

/**
 * Why a file is not an ONNX model, naming what it most likely is from its first bytes: the usual
 * first try is the PyTorch checkpoint itself (torch.save and torch.jit.save write zip archives since
 * PyTorch 1.6, pickles before; TorchServe's .mar is a zip too), or a Keras .h5 (HDF5).
 */
export function notOnnxProblem(head: Uint8Array): string | undefined {
  if (head.length >= 16 && head[0] === ONNX_FIRST_BYTE) return undefined
  const starts = (...bytes: number[]): boolean => bytes.every((b, i) => head[i] === b)
  if (starts(0x50, 0x4b, 0x03, 0x04))
    return "is not an ONNX model: it is a zip archive, as PyTorch's torch.save and torch.jit.save write a .pth or .pt (and TorchServe a .mar)."
  if (starts(0x80) && head[1] !== undefined && head[1] >= 2 && head[1] <= 5)
    return 'is not an ONNX model: it is a Python pickle (torch.save before PyTorch 1.6).'
  if (starts(0x89, 0x48, 0x44, 0x46)) return 'is not an ONNX model: it is an HDF5 file (a Keras .h5 model).'
  return 'is not an ONNX model.'
}

export async function listModelFolders(root: string): Promise<string[]> {
  let dirents
  try {
    dirents = await readdir(root, { withFileTypes: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
  // lost+found is the file system's, at the root of every fresh ext4 volume (a PersistentVolumeClaim
  // mounted as the repository): no model, and refused as a model name it stopped the start.
  const names = dirents.filter((d) => !d.name.startsWith('.') && d.name !== 'lost+found')
  return (await folderNames(root, names)).sort()
}

/**
 * The names of the entries of `dir` that are folders, a link to a folder counting as one, as Triton
 * follows links (\`ln -s /exports/resnet50 models/\`, a version folder linked to where it was written).
 * A link to nothing, or to a file, is not a folder.
 */
export async function folderNames(dir: string, dirents: readonly Dirent[]): Promise<string[]> {
  const folders = await Promise.all(
    dirents.map(async (d) => {
      if (d.isDirectory()) return d.name
      if (!d.isSymbolicLink()) return undefined
      const target = await stat(join(dir, d.name)).catch(() => undefined)
      return target?.isDirectory() === true ? d.name : undefined
    })
  )
  return folders.filter((name): name is string => name !== undefined)
}

/** A model folder whose config.json passed every check; its version folders are not read yet. */
export interface ModelFolder {
  readonly name: string
  readonly dir: string
  readonly config: Readonly<ModelConfig>
}

/** A model without version folders: its files sit in the model folder, served as config.json's version. */
export async function loadModelFolder(root: string, name: string): Promise<ModelEntry> {
  const folder = await readModelFolder(root, name)
  return loadModelVersion(folder, folder.config.version, folder.dir)
}

/** A path as messages show it, as the user would type it: relative inside the working directory, absolute outside it. */
export function shownAs(path: string): string {
  const rel = relative(process.cwd(), path)
  return rel === '' || rel.startsWith('..') ? path : rel
}

/** A model folder's file as messages show it. */
export function shownPath(dir: string, file: string): string {
  return shownAs(join(dir, file))
}

/** The ONNX file of a folder without config.json, relative to it: model.onnx, else the newest version's, else the only .onnx file. */
async function onnxFileIn(dir: string): Promise<string | undefined> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => [])
  if (entries.some((e) => e.name === 'model.onnx' && !e.isDirectory())) return 'model.onnx'
  const versions = (
    await folderNames(
      dir,
      entries.filter((e) => VERSION_NAME.test(e.name))
    )
  ).sort((a, b) => Number(b) - Number(a))
  for (const version of versions) {
    const inside = await readdir(join(dir, version)).catch(() => [] as string[])
    const file = inside.includes('model.onnx')
      ? 'model.onnx'
      : inside.filter((f) => f.endsWith('.onnx')).length === 1
        ? inside.find((f) => f.endsWith('.onnx'))
        : undefined
    if (file !== undefined) return join(version, file)
  }
  const onnx = entries.filter((e) => !e.isDirectory() && e.name.endsWith('.onnx'))
  return onnx.length === 1 ? onnx[0]!.name : undefined
}

/**
 * A change to config.json's object made before it is checked, as a load request's Triton `config`
 * parameter makes one (src/open-inference/config-override.ts): the result is checked as the file is.
 */
export type ConfigAmendment = (parsed: Readonly<Record<string, unknown>>) => Record<string, unknown>

/** Checks a model folder's name and its config.json (amended by `amend`, when given). */
export async function readModelFolder(root: string, name: string, amend?: ConfigAmendment): Promise<ModelFolder> {
  const dir = join(root, name)
  const shown = (file: string): string => shownPath(dir, file)
  if (!MODEL_NAME.test(name)) {
    throw new RepositoryError(
      name,
      shown(''),
      `"${name}" is not a valid model name.`,
      'Rename the folder using letters, digits, ".", "_" and "-" (at most 64 characters).'
    )
  }

  let configFile = shown('config.json')
  let text: string
  try {
    // As for the model file: reading a FIFO would wait for a writer for good.
    if (!(await stat(join(dir, 'config.json'))).isFile()) throw new Error('not a file')
    text = await readFile(join(dir, 'config.json'), 'utf8')
  } catch (err) {
    if (isPermissionDenied(err)) throw new RepositoryError(name, configFile, UNREADABLE, unreadableFix())
    // A folder laid out for Triton (config.pbtxt, 1/model.onnx) is a common first try: say what is read instead.
    const triton = await stat(join(dir, 'config.pbtxt')).then(
      (s) => s.isFile(),
      () => false
    )
    // The command must work as printed: the ONNX file that is there, the repository when it is not
    // model:add's default, and --force to rewrite a folder that exists (model:add refuses one otherwise).
    const onnx = await onnxFileIn(dir)
    const repository = resolve(root) === resolve(DEFAULT_MODEL_REPOSITORY) ? '' : ` --repository ${shownAs(root)}`
    throw new RepositoryError(
      name,
      configFile,
      triton ? "is missing; config.pbtxt (Triton's model configuration) is not read by this server." : 'is missing.',
      triton
        ? `Import the ONNX file, which writes config.json from a preset, into a folder of its own: \`npm run model:add -- ${shown(onnx ?? join('1', 'model.onnx'))} --name ${name}-onnx --preset torchvision${repository}\`, then move this folder out of the repository.`
        : `Write one with \`npm run model:add -- ${onnx === undefined ? '<model.onnx>' : shown(onnx)} --name ${name} --preset torchvision${repository} --force\` (it rewrites this folder as one version: the model, config.json and labels.txt; the preset is how the network was trained: torchvision, caffe or onnx-zoo), or remove the folder.`
    )
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (err) {
    throw new RepositoryError(name, configFile, `is not valid JSON (${(err as Error).message}).`, 'Correct the JSON syntax.')
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new RepositoryError(name, configFile, 'must hold a JSON object.', 'See docs/models.md for the fields.')
  }
  if (amend !== undefined) {
    parsed = amend(parsed as Record<string, unknown>)
    configFile = `${configFile} with the load request's "config"`
  }
  const withDefaults = Value.Default(ModelConfigSchema, structuredClone(parsed))
  // Every problem at once: one per start, fixed and restarted in turn, is how a first model takes an hour.
  const problems = configProblems(parsed, withDefaults)
  if (problems.length === 1) throw new RepositoryError(name, configFile, problems[0]!.problem, problems[0]!.fix)
  if (problems.length > 1) {
    const list = problems.map((p, i) => `\n  ${i + 1}. ${p.problem} Fix: ${p.fix}`).join('')
    throw new RepositoryError(name, configFile, `has ${problems.length} problems:${list}`)
  }
  const config = withDefaults as ModelConfig

  if (relative(dir, join(dir, config.file)).startsWith('..')) {
    throw new RepositoryError(
      name,
      configFile,
      `"file" (${config.file}) points outside the model folder.`,
      'Keep model.onnx inside the folder.'
    )
  }
  return Object.freeze({ name, dir, config: deepFreeze(config) })
}

/**
 * One version of a checked model folder: the model file in `versionDir` (the model folder itself
 * for a model without version folders), the labels from `versionDir` when it has its own, else
 * the model folder's (as Triton keeps the config and labels beside the version folders).
 */
export async function loadModelVersion(folder: ModelFolder, version: string, versionDir: string): Promise<ModelEntry> {
  const { name, dir, config } = folder
  const modelPath = join(versionDir, config.file)
  await checkOnnxFile(name, modelPath, shownPath(versionDir, config.file))
  const labelsPath = await labelsFile(folder, versionDir)
  const labels = await readLabels(name, labelsPath, shownPath(dirname(labelsPath), basename(labelsPath)))
  return Object.freeze({ name, dir, version, modelPath, config, labels: Object.freeze(labels) })
}

/** The labels file a version reads: its own when its folder has one, else the model folder's. */
export async function labelsFile(folder: ModelFolder, versionDir: string): Promise<string> {
  const own = join(versionDir, folder.config.labels)
  if (versionDir === folder.dir) return own
  try {
    if ((await stat(own)).isFile()) return own
  } catch (err) {
    // Denied is not "none of its own": reading it then says so.
    if (isPermissionDenied(err)) return own
  }
  return join(folder.dir, folder.config.labels)
}

interface ConfigProblem {
  readonly problem: string
  readonly fix: string
}

const isNumber = (v: unknown): v is number => typeof v === 'number'

/**
 * Everything wrong with a config.json: the schema's errors, the first per field (TypeBox reports a
 * union's failure once per member, an array's once per element), then the checks across fields,
 * each made only where the fields it compares have their types.
 */
function configProblems(parsed: unknown, withDefaults: unknown): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const seen = new Set<string>()
  for (const error of Value.Errors(ModelConfigSchema, withDefaults)) {
    const triple = /^\/preprocess\/(mean|std)(\/\d+)?$/.exec(error.path)
    const field = triple === null ? error.path : `/preprocess/${triple[1]}`
    if (seen.has(field)) continue
    seen.add(field)
    if (triple !== null) {
      const got = (parsed as { preprocess?: Record<string, unknown> }).preprocess?.[triple[1]!]
      problems.push({ problem: `preprocess.${triple[1]} must be three numbers (got ${JSON.stringify(got)}).`, fix: configFix(error.path) })
    } else {
      const where = error.path === '' ? 'the top level' : error.path
      problems.push({ problem: `${where}: ${schemaMessage(error)} (got ${JSON.stringify(error.value)}).`, fix: configFix(error.path) })
    }
  }
  const config = withDefaults as {
    version?: unknown
    preprocess?: { crop?: unknown; resize?: unknown; std?: unknown }
    input?: { datatype?: unknown; layout?: unknown }
    batching?: { priorityLevels?: unknown; defaultPriorityLevel?: unknown }
  }
  const { crop, resize, std } = config.preprocess ?? {}
  if (isNumber(crop) && isNumber(resize) && crop > resize) {
    problems.push({
      problem: `preprocess.crop (${crop}) is larger than preprocess.resize (${resize}).`,
      fix: 'Use a crop no larger than the resized shorter side, e.g. resize 256 and crop 224.'
    })
  }
  // Each channel is divided by its std: zero divides by zero, a negative one flips the channel's sign.
  if (Array.isArray(std) && std.length === 3 && std.every(isNumber) && std.some((s) => s <= 0)) {
    problems.push({
      problem: `preprocess.std must be three positive numbers (got ${JSON.stringify(std)}).`,
      fix: 'Use the standard deviations the model was trained with, and 1 for channels that are not divided (e.g. the caffe preset).'
    })
  }
  const unrepresentable = float32Problem(config.preprocess)
  if (unrepresentable !== undefined) {
    problems.push({
      problem: `preprocess ${unrepresentable}: a pixel normalised with it is not a finite float32, and the model would answer NaN or infinity for every image.`,
      fix: 'Use the scale, mean and std the model was trained with (torchvision: scale 1/255, mean 0.485,0.456,0.406, std 0.229,0.224,0.225).'
    })
  }
  if (typeof config.version === 'string' && !VERSION_NAME.test(config.version)) {
    problems.push({
      problem: `version must be a positive whole number without leading zeros, as Triton numbers versions (got ${JSON.stringify(config.version)}).`,
      fix: 'Use "1", or the number of the version this model folder is; requests name versions by number.'
    })
  }
  if (config.input?.datatype === 'uint8' && config.input.layout !== 'NHWC') {
    problems.push({
      problem: 'input.datatype uint8 needs input.layout NHWC (raw pixels as decoded).',
      fix: 'Set input.layout to "NHWC", or use datatype float32.'
    })
  }
  const { priorityLevels = 0, defaultPriorityLevel } = config.batching ?? {}
  if (isNumber(priorityLevels) && isNumber(defaultPriorityLevel) && defaultPriorityLevel > priorityLevels) {
    problems.push({
      problem: `batching.defaultPriorityLevel (${defaultPriorityLevel}) is above batching.priorityLevels (${priorityLevels}).`,
      fix: 'Set priorityLevels to at least defaultPriorityLevel, or remove defaultPriorityLevel (the lowest level is the default).'
    })
  }
  return problems
}

/**
 * Where preprocessing's constants leave float32, the model input's type: the first of scale, a
 * channel's mean or std, or what a pixel from 0 to 255 becomes, (p × scale − mean) / std, whose
 * float32 is not finite (1e39, a std of 1e-45 that divides to infinity); undefined when all are
 * finite, or when the fields have not the types checked above.
 */
function float32Problem(preprocess: { scale?: unknown; mean?: unknown; std?: unknown } | undefined): string | undefined {
  const { scale, mean, std } = preprocess ?? {}
  if (!isNumber(scale) || !Array.isArray(mean) || !Array.isArray(std) || !mean.every(isNumber) || !std.every(isNumber)) return undefined
  const finite = (x: number): boolean => Number.isFinite(Math.fround(x))
  if (!finite(scale)) return `scale ${scale} is beyond float32`
  for (let c = 0; c < Math.min(mean.length, std.length); c++) {
    const m = mean[c] as number
    const s = std[c] as number
    if (!finite(m)) return `mean ${m} is beyond float32`
    if (!finite(s)) return `std ${s} is beyond float32`
    if (s <= 0) continue
    const pixels = [0, 255].map((p) => (Math.fround(p * scale) - m) / Math.fround(s))
    if (!finite(1 / Math.fround(s)) || !pixels.every(finite)) return `scale ${scale}, mean ${m} and std ${s}`
  }
  return undefined
}

/** TypeBox's message, except for a choice of words, whose "Expected union value" would not say which. */
function schemaMessage(error: ValueError): string {
  const choices = (error.schema.anyOf as Array<{ const?: unknown }> | undefined)?.map((member) => member.const)
  if (choices === undefined || choices.some((c) => typeof c !== 'string')) return error.message
  return `must be one of ${choices.map((c) => JSON.stringify(c)).join(', ')}`
}

function configFix(path: string): string {
  if (path.startsWith('/preprocess/mean') || path.startsWith('/preprocess/std'))
    return "Give exactly three numbers, one per colour channel in the model's colour order."
  if (path.startsWith('/input')) return 'input needs name (as in the ONNX file), layout NCHW|NHWC and datatype float32|uint8.'
  if (path.startsWith('/batching'))
    return 'batching takes maxBatchSize (1–1024), maxQueueDelayMs (0–10000), maxQueueSize and optionally padTo (a list of batch sizes) and fixedShapes (true or false).'
  return 'Compare with docs/models.md, or regenerate the file with `npm run model:add`.'
}

async function checkOnnxFile(name: string, path: string, shown: string): Promise<void> {
  let handle
  try {
    // Opening a FIFO for reading waits for a writer, for good: only a regular file is opened.
    if (!(await stat(path)).isFile()) throw new Error('not a file')
    handle = await open(path, 'r')
  } catch (err) {
    if (isPermissionDenied(err)) throw new RepositoryError(name, shown, UNREADABLE, unreadableFix())
    throw new RepositoryError(
      name,
      shown,
      'is missing (or not a regular file).',
      'Put the exported ONNX model there (or set "file" in config.json).'
    )
  }
  try {
    const head = Buffer.alloc(16)
    const { bytesRead } = await handle.read(head, 0, 16, 0)
    const problem = notOnnxProblem(head.subarray(0, bytesRead))
    if (problem !== undefined) {
      throw new RepositoryError(
        name,
        shown,
        problem,
        'Export the network with torch.onnx.export (see docs/models.md) and copy the .onnx file here.'
      )
    }
  } finally {
    await handle.close()
  }
}

async function readLabels(name: string, path: string, shown: string): Promise<string[]> {
  let text: string
  try {
    if (!(await stat(path)).isFile()) throw new Error('not a file')
    text = await readFile(path, 'utf8')
  } catch (err) {
    if (isPermissionDenied(err)) throw new RepositoryError(name, shown, UNREADABLE, unreadableFix())
    throw new RepositoryError(
      name,
      shown,
      'is missing.',
      'Copy data/imagenet1k-labels.txt there, or point "labels" in config.json at your labels file (one class name per line).'
    )
  }
  const parsed = parseLabels(text)
  if (typeof parsed === 'string') throw new RepositoryError(name, shown, parsed, LABELS_FIX)
  return parsed
}

export const LABELS_FIX =
  'Write one non-empty class name per line, in the model\'s output order, or JSON from each class index ("0", "1", …) to its name or to [id, name] (TorchServe\'s index_to_name.json, Keras\' imagenet_class_index.json).'

/**
 * A labels file's class names, one per line (LF or CRLF): a UTF-8 byte-order mark and blank lines
 * at the end are dropped; a blank line anywhere else would shift every class after it, so it is
 * the problem returned instead, with its line number. JSON labels (labelsFromJson) are read as such.
 */
export function parseLabels(text: string): string[] | string {
  const fromJson = labelsFromJson(text)
  if (fromJson !== undefined) return fromJson
  const labels = text.replace(/^\uFEFF/, '').split(/\r?\n/)
  while (labels.length > 0 && labels.at(-1)!.trim() === '') labels.pop()
  if (labels.length === 0) return 'has no class names.'
  const blank = labels.findIndex((l) => l.trim() === '')
  return blank === -1 ? labels : `has an empty line (line ${blank + 1}) before its last class name.`
}

/**
 * Checks a config against what ONNX Runtime reports for the model. Pure, so it is tested without
 * a session; the pool calls it with the signature its worker read.
 */
export function checkModelSignature(entry: ModelEntry, signature: ModelSignature): ModelShape {
  const { config } = entry
  const file = shownAs(entry.modelPath)
  const fail = (problem: string, fix: string): never => {
    throw new RepositoryError(entry.name, file, problem, fix)
  }
  const names = (list: readonly TensorSignature[]): string => list.map((t) => `"${t.name}"`).join(', ')

  /** The input or output config.json names, or the refusal that lists the ones the model has. */
  const named = (kind: 'input' | 'output', list: readonly TensorSignature[], name: string): TensorSignature =>
    list.find((t) => t.name === name) ??
    fail(`has no ${kind} "${name}"; its ${kind}s are ${names(list)}.`, `Set ${kind}.name in config.json to one of ${names(list)}.`)

  const inp = named('input', signature.inputs, config.input.name)
  if (inp.type !== 'float32' && inp.type !== 'uint8') {
    fail(`input "${inp.name}" is ${inp.type}; the server feeds float32 (normalised pixels) or uint8 (the pixels themselves).`, FP16_FIX)
  }
  if (inp.type !== config.input.datatype) {
    fail(
      `input "${inp.name}" is ${inp.type}, but config.json says ${config.input.datatype}.`,
      `Set input.datatype to "${inp.type}" (float32 models take normalised NCHW; uint8 models take NHWC pixels).`
    )
  }
  if (inp.shape.length !== 4) {
    fail(
      `input "${inp.name}" has rank ${inp.shape.length} (shape [${inp.shape.join(', ')}]); an image model takes rank 4.`,
      'Export the model with a [batch, 3, height, width] input.'
    )
  }
  const [batch, d1, d2, d3] = inp.shape
  const channels = config.input.layout === 'NCHW' ? d1 : d3
  const spatial = config.input.layout === 'NCHW' ? [d2, d3] : [d1, d2]
  if (channels !== 3) {
    fail(
      `input "${inp.name}" has ${String(channels)} channels where layout ${config.input.layout} puts them (shape [${inp.shape.join(', ')}]); 3 are needed.`,
      `Check input.layout (NCHW or NHWC) in config.json.`
    )
  }
  for (const side of spatial) {
    if (typeof side === 'number' && side !== config.preprocess.crop) {
      fail(
        `input "${inp.name}" takes ${side}×${side} images, but preprocess.crop is ${config.preprocess.crop}.`,
        `Set preprocess.crop to ${side} (and resize to about ${Math.round((side * 256) / 224)}).`
      )
    }
  }
  let maxBatchSize = config.batching.maxBatchSize
  if (typeof batch === 'number') {
    if (batch !== 1) {
      fail(
        `input "${inp.name}" has a fixed batch of ${batch}.`,
        'Re-export with a dynamic batch dimension (torch.onnx.export(..., dynamic_axes={"input": {0: "N"}})) or a batch of 1.'
      )
    }
    maxBatchSize = 1
  }

  const out = named('output', signature.outputs, config.output.name)
  if (out.type !== 'float32') {
    fail(`output "${out.name}" is ${out.type}; class scores must be float32.`, FP16_FIX)
  }
  const width = out.shape.at(-1)
  if (out.shape.length !== 2 || typeof width !== 'number') {
    fail(
      `output "${out.name}" has shape [${out.shape.join(', ')}]; expected [batch, classes].`,
      'Export the model with a [batch, classes] output (flatten after the pooling).'
    )
  }
  if (width !== entry.labels.length) {
    fail(
      `output "${out.name}" has ${String(width)} classes but ${config.labels} has ${entry.labels.length} labels.`,
      `Give ${config.labels} exactly ${String(width)} lines, one per output class.`
    )
  }
  return { maxBatchSize, numClasses: width as number }
}

/** What to do with a float16 model: the server feeds and reads float32 at the edges. */
const FP16_FIX =
  'Import the export with npm run model:add, which adds a Cast at each float16 edge so the server feeds and reads float32; or import a float32 export and make its FP16 variant: npm run model:fp16 -- --name NAME (docs/models.md, "FP16 variant").'

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v)
    Object.freeze(value)
  }
  return value
}

/**
 * Class names from a JSON labels file, the form TorchServe users and Keras' ImageNet models bring:
 * an object from each index to its name (`index_to_name.json`, `{"0": "tench"}`) or to `[id, name]`
 * (`imagenet_class_index.json`, `{"0": ["n01440764", "tench"]}`), or an array of names. Undefined when
 * the text is not JSON of that shape's start (a text labels file); the problem, when it is JSON but
 * not names for every index from 0 on. Read as text it was one label, refused as "has 1 labels".
 */
export function labelsFromJson(text: string): string[] | string | undefined {
  const body = text.replace(/^\uFEFF/, '').trim()
  if (!body.startsWith('{') && !body.startsWith('[')) return undefined
  let parsed: unknown
  try {
    parsed = JSON.parse(body)
  } catch {
    return undefined
  }
  const nameOf = (value: unknown): string | undefined => {
    const name = Array.isArray(value) ? (value.at(-1) as unknown) : value
    return typeof name === 'string' && name.trim() !== '' && !/[\r\n]/.test(name) ? name : undefined
  }
  const entries: [string, unknown][] = Array.isArray(parsed)
    ? parsed.map((value, i) => [String(i), value])
    : typeof parsed === 'object' && parsed !== null
      ? Object.entries(parsed)
      : []
  if (entries.length === 0) return 'is JSON with no class names.'
  const labels: string[] = []
  for (const [key, value] of entries) {
    if (!/^(0|[1-9][0-9]*)$/.test(key)) return `is JSON whose key "${key.slice(0, 64)}" is not a class index (0, 1, 2, …).`
    if (Number(key) >= entries.length)
      return `is JSON with ${entries.length} entries but a class index ${key.slice(0, 16)} (its indexes must run from 0 without gaps).`
    const name = nameOf(value)
    if (name === undefined) return `is JSON whose entry "${key}" is not a class name (a string, or [id, name], on one line).`
    labels[Number(key)] = name
  }
  // Every key is a distinct index below the number of entries, so together they are 0 … n−1: no gaps.
  return labels
}
