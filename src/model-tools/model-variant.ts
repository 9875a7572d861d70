import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { openSession, readSignature } from '../core/onnx-session.js'
import type { ModelConfig } from '../repository/model-config.js'
import { checkModelSignature, loadModelFolder } from '../repository/repository.js'
import { convertToFp16 } from './fp16.js'
import { addUint8Prologue, DEFAULT_PIXELS_INPUT } from './prologue.js'

/**
 * A variant of a model folder already in the repository, written as a new folder beside it: the
 * UINT8 prologue (the graph normalises the decoder's pixels), FP16 weights and compute, or both
 * (prologue first, so its arithmetic is converted too). Labels and preprocess constants are kept;
 * for a uint8 model the constants document what the graph does, the worker no longer applies them.
 * The folder is validated as the server validates it at start-up before it appears.
 */

export interface VariantOptions {
  readonly repository: string
  /** The existing model folder to start from. */
  readonly name: string
  readonly uint8Input: boolean
  readonly fp16: boolean
  /** Default: the name with "-u8", "-fp16" or "-u8-fp16" appended. */
  readonly outName?: string
  /** The uint8 input's name; default "pixels". */
  readonly pixelsInputName?: string
  /** Replace an existing folder of the output name. */
  readonly force?: boolean
}

export interface WrittenVariant {
  readonly name: string
  readonly dir: string
  readonly config: ModelConfig
  readonly sourceBytes: number
  readonly modelBytes: number
  /** Time spent rewriting the graph (decode, edit, encode), not validating it. */
  readonly rewriteMs: number
  readonly foldedBatchNorms: number | undefined
}

/** A refusal the command line can fix (name taken, nothing asked, wrong kind of source). */
export class VariantUsageError extends Error {
  override name = 'VariantUsageError'
}

export function defaultVariantName(name: string, uint8Input: boolean, fp16: boolean): string {
  return `${name}${uint8Input ? '-u8' : ''}${fp16 ? '-fp16' : ''}`
}

export async function writeModelVariant(options: VariantOptions): Promise<WrittenVariant> {
  if (!options.uint8Input && !options.fp16) throw new VariantUsageError('ask for --uint8-input, --fp16, or both.')
  const repository = resolve(options.repository)
  const outName = options.outName ?? defaultVariantName(options.name, options.uint8Input, options.fp16)
  if (outName === options.name) throw new VariantUsageError('the variant would replace its source; pick another --out-name.')
  const dest = join(repository, outName)
  if (!options.force && (await exists(dest)))
    throw new VariantUsageError(`${dest} already exists; pick another --out-name or pass --force.`)

  const source = await loadModelFolder(repository, options.name)
  const config = structuredClone(source.config) as ModelConfig
  if (options.uint8Input && (config.input.datatype !== 'float32' || config.input.layout !== 'NCHW')) {
    throw new VariantUsageError(
      `${options.name} takes ${config.input.datatype} ${config.input.layout} already; the prologue turns a float32 NCHW model into a uint8 NHWC one.`
    )
  }
  const sourceBytes = await readFile(source.modelPath)
  const started = performance.now()
  let bytes: Uint8Array = sourceBytes
  const notes: string[] = []
  if (options.uint8Input) {
    const pixelsName = options.pixelsInputName ?? DEFAULT_PIXELS_INPUT
    bytes = addUint8Prologue(bytes, config.preprocess, { inputName: config.input.name, pixelsName }).bytes
    config.input = { name: pixelsName, layout: 'NHWC', datatype: 'uint8' }
    notes.push('UINT8 NHWC RGB input, normalised inside the graph (preprocess kept as documentation)')
  }
  let foldedBatchNorms: number | undefined
  if (options.fp16) {
    const converted = convertToFp16(bytes)
    bytes = converted.bytes
    foldedBatchNorms = converted.foldedBatchNorms
    notes.push('FP16 weights and compute, FP32 at the edges')
  }
  const rewriteMs = performance.now() - started
  config.description = `${config.description ?? options.name} [variant of ${options.name}: ${notes.join('; ')}]`

  await mkdir(repository, { recursive: true })
  // Staged inside the repository (same filesystem: the final rename is atomic); the leading dot keeps
  // the server from taking it for a model folder.
  const staging = await mkdtemp(join(repository, '.variant-'))
  try {
    const staged = join(staging, outName)
    await mkdir(staged)
    await writeFile(join(staged, config.file), bytes)
    await writeFile(join(staged, config.labels), source.labels.join('\n') + '\n')
    await writeFile(join(staged, 'config.json'), JSON.stringify(config, null, 2) + '\n')
    const entry = await loadModelFolder(staging, outName)
    await validateWithOnnxRuntime(entry)
    if (await exists(dest)) await rename(dest, join(staging, `${outName}.replaced`))
    await rename(staged, dest)
    return { name: outName, dir: dest, config, sourceBytes: sourceBytes.length, modelBytes: bytes.length, rewriteMs, foldedBatchNorms }
  } finally {
    await rm(staging, { recursive: true, force: true })
  }
}

/** The server's start-up check (signature against config) and its warm-up run on one all-zero image. */
async function validateWithOnnxRuntime(entry: Awaited<ReturnType<typeof loadModelFolder>>): Promise<void> {
  const opened = await openSession(entry.modelPath, { provider: 'cpu', cudaDeviceId: 0, threads: 1 })
  try {
    checkModelSignature(entry, readSignature(opened.session))
    const { crop } = entry.config.preprocess
    const tensor =
      entry.config.input.datatype === 'uint8'
        ? new opened.Tensor('uint8', new Uint8Array(crop * crop * 3), [1, crop, crop, 3])
        : new opened.Tensor('float32', new Float32Array(3 * crop * crop), [1, 3, crop, crop])
    await opened.session.run({ [entry.config.input.name]: tensor }, [entry.config.output.name])
  } finally {
    await opened.session.release()
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false
  )
}
