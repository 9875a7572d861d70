import type { ClassifyService, ServedModel } from '../core/classify-service.js'
import { ServiceError, echoed } from '../errors.js'
import { PACKAGE_NAME, PACKAGE_VERSION } from '../package-version.js'
import type { ModelMetadata, ServerMetadata } from './types.js'

/** What the server and each model declare over the protocol: names, versions, tensor shapes, readiness. */

export const SERVER_NAME = PACKAGE_NAME
export const PLATFORM = 'onnxruntime_onnx'
/**
 * The protocol extensions this server implements, under the names Triton reports them by: clients
 * and tooling read this list before they use one. Not listed, because not implemented: shared memory
 * (system and CUDA) and sequences.
 */
export const EXTENSIONS: readonly string[] = Object.freeze([
  'classification',
  'model_repository',
  'model_repository(unload_dependents)',
  'schedule_policy',
  'model_configuration',
  'binary_tensor_data',
  'statistics',
  'trace',
  'logging'
])

const SERVER_METADATA: ServerMetadata = Object.freeze({ name: SERVER_NAME, version: PACKAGE_VERSION, extensions: EXTENSIONS })

export function serverMetadata(): ServerMetadata {
  return SERVER_METADATA
}

/** What the protocol reads of a served model: its config, its classes and one image tensor's bytes. */
export type ModelContract = Pick<ServedModel, 'entry' | 'numClasses' | 'tensorItemBytes'>

/**
 * A version as the protocol names it → the version it means: undefined or empty for the newest; a
 * whole number read as Triton reads it ("01" is version 1). A negative number is BAD_REQUEST, as
 * Triton refuses it INVALID_ARG; any other text is looked up as it is, and is MODEL_NOT_FOUND (a
 * served version's name is a positive whole number, VERSION_NAME).
 */
export function versionKey(version: string | undefined): string | undefined {
  if (version === undefined || version === '') return undefined
  if (/^\d{1,15}$/.test(version)) return String(Number(version))
  if (/^-\d+$/.test(version)) {
    throw new ServiceError(
      'BAD_REQUEST',
      `The model version must be a whole number ≥ 0, or empty for the newest; got "${echoed(version)}".`
    )
  }
  return version
}

/** The named version of a served model, or (none named) its newest; MODEL_NOT_FOUND when that version is not served. */
export function resolveModel(service: ClassifyService, name: string, version: string | undefined): ServedModel {
  return service.model(name, versionKey(version))
}

/** One image of the model's input tensor, without the batch dimension. */
export function itemShape(model: ModelContract): readonly number[] {
  const { crop } = model.entry.config.preprocess
  return model.entry.config.input.layout === 'NCHW' ? [3, crop, crop] : [crop, crop, 3]
}

/** The protocol's name for the model's input datatype. */
export function tensorDatatype(model: ModelContract): 'FP32' | 'UINT8' {
  return model.entry.config.input.datatype === 'float32' ? 'FP32' : 'UINT8'
}

export function modelMetadata(service: ClassifyService, name: string, version: string | undefined): ModelMetadata {
  const model = resolveModel(service, name, version)
  const { input, output } = model.entry.config
  return {
    name: model.info.name,
    // Every version served, oldest first (as Triton lists them); the tensors are the resolved version's.
    versions: service
      .modelVersions(model.info.name)
      .map((m) => m.info.version)
      .reverse(),
    platform: PLATFORM,
    inputs: [{ name: input.name, datatype: tensorDatatype(model), shape: [-1, ...itemShape(model)] }],
    outputs: [{ name: output.name, datatype: 'FP32', shape: [-1, model.numClasses] }]
  }
}

/** Whether the model (and version, when named) takes requests now; MODEL_NOT_FOUND if unknown. */
export function isModelReady(service: ClassifyService, name: string, version: string | undefined): boolean {
  try {
    resolveModel(service, name, version)
  } catch (err) {
    // A model that failed to load is known but not ready; only unknown names are errors.
    if (err instanceof ServiceError && err.code === 'MODEL_NOT_READY') return false
    throw err
  }
  return service.isModelReady(name, versionKey(version))
}
