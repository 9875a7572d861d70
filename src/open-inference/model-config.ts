import type { Settings } from '../config.js'
import type { ClassifyService, ServedModel } from '../core/classify-service.js'
import type { ModelConfig, VersionPolicy } from '../repository/model-config.js'
import { PLATFORM, resolveModel } from './metadata.js'

/**
 * A served model's configuration in the shape of Triton's ModelConfig message (model_config.proto),
 * as both doors answer it: REST with the message's JSON form (proto field names, enum names, 64-bit
 * integers as JSON numbers, as Triton's HTTP endpoint writes them), gRPC as the message itself.
 * Clients written for Triton read `max_batch_size` and `input[0].format` from it to shape their
 * tensors; everything else describes what this server does (batching, sessions, preprocessing).
 */

export const BACKEND = 'onnxruntime'

export type TritonDataType = 'TYPE_FP32' | 'TYPE_UINT8'

export interface TritonModelInput {
  readonly name: string
  readonly data_type: TritonDataType
  readonly format: 'FORMAT_NCHW' | 'FORMAT_NHWC'
  /** Without the batch dimension. */
  readonly dims: readonly number[]
}

export interface TritonModelOutput {
  readonly name: string
  readonly data_type: TritonDataType
  readonly dims: readonly number[]
  readonly label_filename: string
}

/** ModelVersionPolicy: one of its three choices. */
export type TritonVersionPolicy =
  | { readonly latest: { readonly num_versions: number } }
  | { readonly all: Record<string, never> }
  | { readonly specific: { readonly versions: readonly number[] } }

export interface TritonModelConfig {
  readonly name: string
  readonly platform: string
  readonly backend: string
  /** Which of the model's version folders are served (config.json's versionPolicy; the newest one when unset, as in Triton). */
  readonly version_policy: TritonVersionPolicy
  /** 0 would mean the model takes no batch dimension; every model served here has one. */
  readonly max_batch_size: number
  readonly input: readonly TritonModelInput[]
  readonly output: readonly TritonModelOutput[]
  readonly dynamic_batching: {
    /** The sizes batches are padded to, when padding is on; empty otherwise. */
    readonly preferred_batch_size: readonly number[]
    readonly max_queue_delay_microseconds: number
    readonly default_queue_policy: { readonly max_queue_size: number }
  }
  readonly instance_group: ReadonlyArray<{
    readonly name: string
    readonly kind: 'KIND_GPU' | 'KIND_CPU'
    readonly count: number
    readonly gpus: readonly number[]
  }>
  readonly default_model_filename: string
  /** The preprocessing the server applies to encoded images, and the output's kind, as config.json names them. */
  readonly parameters: Readonly<Record<string, { readonly string_value: string }>>
}

/** What the rendering reads: the model's config.json and what its sessions turned out to be. */
export interface ModelConfigSource {
  readonly name: string
  readonly config: Readonly<ModelConfig>
  /** From the signature check: 1 for a model exported with a fixed batch of 1. */
  readonly maxBatchSize: number
  /** --max-batch-items: the most images one request may carry. */
  readonly maxBatchItems: number
  readonly numClasses: number
  readonly provider: 'cuda' | 'cpu'
  readonly sessions: number
  /** The sizes executions are padded to (the sessions' plan: fixed sizes, or the ladder); [] when batches run as they come. */
  readonly paddedSizes: readonly number[]
  readonly cudaDeviceId: number
}

function versionPolicy(policy: VersionPolicy | undefined): TritonVersionPolicy {
  if (policy === undefined) return { latest: { num_versions: 1 } }
  if ('latest' in policy) return { latest: { num_versions: policy.latest.numVersions } }
  if ('all' in policy) return { all: {} }
  return { specific: { versions: [...policy.specific.versions] } }
}

function parameterValue(value: unknown): string {
  return Array.isArray(value) ? value.map(String).join(',') : String(value)
}

/** config.json's preprocess settings and output kind, keyed by their path there (`preprocess.crop`). */
function parameters(config: Readonly<ModelConfig>): Record<string, { string_value: string }> {
  const out: Record<string, { string_value: string }> = {}
  for (const [key, value] of Object.entries(config.preprocess)) {
    if (value !== undefined) out[`preprocess.${key}`] = { string_value: parameterValue(value) }
  }
  out['output.kind'] = { string_value: config.output.kind }
  out.synthetic = { string_value: String(config.synthetic) }
  if (config.preset !== undefined) out.preset = { string_value: config.preset }
  return out
}

export function renderModelConfig(source: ModelConfigSource): TritonModelConfig {
  const { config } = source
  const { crop } = config.preprocess
  const nchw = config.input.layout === 'NCHW'
  // What a client may put in one request: Triton clients size their batches from max_batch_size.
  const maxBatch = Math.min(source.maxBatchSize, source.maxBatchItems)
  return {
    name: source.name,
    platform: PLATFORM,
    backend: BACKEND,
    version_policy: versionPolicy(config.versionPolicy),
    max_batch_size: maxBatch,
    input: [
      {
        name: config.input.name,
        data_type: config.input.datatype === 'float32' ? 'TYPE_FP32' : 'TYPE_UINT8',
        format: nchw ? 'FORMAT_NCHW' : 'FORMAT_NHWC',
        dims: nchw ? [3, crop, crop] : [crop, crop, 3]
      }
    ],
    output: [{ name: config.output.name, data_type: 'TYPE_FP32', dims: [source.numClasses], label_filename: config.labels }],
    dynamic_batching: {
      preferred_batch_size: source.paddedSizes.filter((size) => size <= maxBatch),
      max_queue_delay_microseconds: Math.round(config.batching.maxQueueDelayMs * 1000),
      default_queue_policy: { max_queue_size: config.batching.maxQueueSize }
    },
    instance_group: [
      {
        name: `${source.name}_0`,
        kind: source.provider === 'cuda' ? 'KIND_GPU' : 'KIND_CPU',
        count: source.sessions,
        gpus: source.provider === 'cuda' ? [source.cudaDeviceId] : []
      }
    ],
    default_model_filename: config.file,
    parameters: parameters(config)
  }
}

export function servedModelConfigSource(model: ServedModel, settings: Pick<Settings, 'cudaDeviceId' | 'maxBatchItems'>): ModelConfigSource {
  const { sessions } = model
  return {
    name: model.info.name,
    config: model.entry.config,
    maxBatchSize: sessions.shape!.maxBatchSize,
    maxBatchItems: settings.maxBatchItems,
    numClasses: model.numClasses,
    provider: sessions.provider ?? 'cpu',
    sessions: sessions.sessionCount,
    paddedSizes: sessions.plan!.paddedSizes,
    cudaDeviceId: settings.cudaDeviceId
  }
}

/** The configuration of a served model (and version, when named); MODEL_NOT_FOUND / MODEL_NOT_READY otherwise. */
export function modelConfig(service: ClassifyService, name: string, version: string | undefined): TritonModelConfig {
  return renderModelConfig(servedModelConfigSource(resolveModel(service, name, version), service.settings))
}
