import type { ServiceDefinition } from '@grpc/grpc-js'
import { describe, expect, it } from 'vitest'
import { SERVICE_NAME, loadInferenceProto } from '../../src/grpc/server.js'
import { runPlan } from '../../src/core/run-sizes.js'
import { renderModelConfig, type ModelConfigSource } from '../../src/open-inference/model-config.js'
import { configFromPreset, type ModelConfig } from '../../src/repository/model-config.js'

/**
 * A served torchvision-preset model on the CPU, one session, as the synthetic default is; its padded
 * sizes are what its sessions' plan (run-sizes.ts) says, as ModelSessions computes it at start.
 */
function source(overrides: Partial<Omit<ModelConfigSource, 'paddedSizes'>> = {}, config: Partial<ModelConfig> = {}): ModelConfigSource {
  const base = {
    name: 'resnet50',
    config: { ...configFromPreset('torchvision', { synthetic: true }), ...config },
    maxBatchSize: 16,
    maxBatchItems: 64,
    numClasses: 1000,
    provider: 'cpu' as const,
    sessions: 1,
    cudaDeviceId: 0,
    ...overrides
  }
  return { ...base, paddedSizes: runPlan(base.maxBatchSize, base.provider, base.sessions, base.config.batching).paddedSizes }
}

const uint8Nhwc: Partial<ModelConfig> = {
  input: { name: 'image_u8', layout: 'NHWC', datatype: 'uint8' },
  output: { name: 'probs', kind: 'probabilities' }
}

describe("model configuration in Triton's ModelConfig shape", () => {
  it('renders the torchvision preset: FP32 NCHW dims without the batch, batching, one CPU instance, preprocessing as parameters', () => {
    const config = renderModelConfig(source())
    expect(config).toMatchObject({
      name: 'resnet50',
      platform: 'onnxruntime_onnx',
      backend: 'onnxruntime',
      version_policy: { latest: { num_versions: 1 } },
      max_batch_size: 16,
      input: [{ name: 'input', data_type: 'TYPE_FP32', format: 'FORMAT_NCHW', dims: [3, 224, 224] }],
      output: [{ name: 'logits', data_type: 'TYPE_FP32', dims: [1000], label_filename: 'labels.txt' }],
      dynamic_batching: { preferred_batch_size: [], max_queue_delay_microseconds: 0, default_queue_policy: { max_queue_size: 256 } },
      instance_group: [{ kind: 'KIND_CPU', count: 1, gpus: [] }],
      default_model_filename: 'model.onnx'
    })
    expect(config.parameters).toEqual({
      'preprocess.resize': { string_value: '256' },
      'preprocess.crop': { string_value: '224' },
      'preprocess.colorOrder': { string_value: 'RGB' },
      'preprocess.scale': { string_value: String(1 / 255) },
      'preprocess.mean': { string_value: '0.485,0.456,0.406' },
      'preprocess.std': { string_value: '0.229,0.224,0.225' },
      'output.kind': { string_value: 'logits' },
      synthetic: { string_value: 'true' },
      preset: { string_value: 'torchvision' }
    })
  })

  it('renders a uint8 NHWC model: TYPE_UINT8, FORMAT_NHWC, dims height × width × channels, its output kind', () => {
    const config = renderModelConfig(source({}, uint8Nhwc))
    expect(config.input).toEqual([{ name: 'image_u8', data_type: 'TYPE_UINT8', format: 'FORMAT_NHWC', dims: [224, 224, 3] }])
    expect(config.output[0]).toMatchObject({ name: 'probs', data_type: 'TYPE_FP32', dims: [1000] })
    expect(config.parameters['output.kind']).toEqual({ string_value: 'probabilities' })
  })

  it('advertises at most --max-batch-items as max_batch_size (what one request may carry), and no preferred size above it', () => {
    const config = renderModelConfig(
      source(
        { provider: 'cuda', sessions: 2, maxBatchSize: 128, maxBatchItems: 64 },
        { batching: { maxBatchSize: 128, maxQueueDelayMs: 0, maxQueueSize: 512 } }
      )
    )
    expect(config.max_batch_size).toBe(64)
    expect(config.dynamic_batching.preferred_batch_size).toEqual([16])
  })

  it('gives a model exported with a fixed batch of 1 max_batch_size 1, whatever config.json asks', () => {
    const config = renderModelConfig(source({ maxBatchSize: 1 }))
    expect(config.max_batch_size).toBe(1)
    // Still a batch dimension: Triton clients then expect metadata shapes with the leading -1.
    expect(config.input[0]!.dims).toEqual([3, 224, 224])
  })

  it("on CUDA: GPU instances on the configured device, the sessions' fixed sizes as preferred sizes, the queue delay in µs", () => {
    const config = renderModelConfig(
      source(
        { provider: 'cuda', sessions: 2, cudaDeviceId: 3, maxBatchSize: 64 },
        { batching: { maxBatchSize: 64, maxQueueDelayMs: 2.5, maxQueueSize: 64 } }
      )
    )
    expect(config.instance_group).toEqual([{ name: 'resnet50_0', kind: 'KIND_GPU', count: 2, gpus: [3] }])
    expect(config.dynamic_batching).toEqual({
      preferred_batch_size: [16, 64],
      max_queue_delay_microseconds: 2500,
      default_queue_policy: { max_queue_size: 64 }
    })
    // Without fixed shapes, the ladder every session pads to.
    const ladder = renderModelConfig(
      source(
        { provider: 'cuda', sessions: 2 },
        { batching: { maxBatchSize: 16, maxQueueDelayMs: 0, maxQueueSize: 64, fixedShapes: false } }
      )
    )
    expect(ladder.dynamic_batching.preferred_batch_size).toEqual([1, 2, 3, 4, 6, 8, 12, 16])
    // padTo [] turns padding off, so no size is preferred; a listed padTo is what runs.
    const off = renderModelConfig(
      source({ provider: 'cuda' }, { batching: { maxBatchSize: 16, maxQueueDelayMs: 0, maxQueueSize: 64, padTo: [] } })
    )
    expect(off.dynamic_batching.preferred_batch_size).toEqual([])
    const listed = renderModelConfig(source({}, { batching: { maxBatchSize: 16, maxQueueDelayMs: 0, maxQueueSize: 64, padTo: [8, 4] } }))
    expect(listed.dynamic_batching.preferred_batch_size).toEqual([4, 8, 16])
  })

  it("states config.json's version policy, and Triton's default (the newest version) when it sets none", () => {
    expect(renderModelConfig(source()).version_policy).toEqual({ latest: { num_versions: 1 } })
    expect(renderModelConfig(source({}, { versionPolicy: { latest: { numVersions: 2 } } })).version_policy).toEqual({
      latest: { num_versions: 2 }
    })
    expect(renderModelConfig(source({}, { versionPolicy: { all: {} } })).version_policy).toEqual({ all: {} })
    expect(renderModelConfig(source({}, { versionPolicy: { specific: { versions: [1, 3] } } })).version_policy).toEqual({
      specific: { versions: [1, 3] }
    })
  })

  it('encodes as inference.ModelConfigResponse and decodes back unchanged (enum names and field names are the proto’s)', () => {
    const method = (loadInferenceProto()[SERVICE_NAME] as ServiceDefinition).ModelConfig!
    for (const config of [renderModelConfig(source()), renderModelConfig(source({ provider: 'cuda', cudaDeviceId: 1 }, uint8Nhwc))]) {
      const decoded = method.responseDeserialize(method.responseSerialize({ config })) as { config: Record<string, unknown> }
      expect(decoded.config).toMatchObject(JSON.parse(JSON.stringify(config)) as Record<string, unknown>)
    }
  })
})
