import { Type, type Static } from '@sinclair/typebox'

/**
 * The `config.json` of one model folder. Preprocessing turns a decoded pixel p (0–255) of channel c
 * (in the model's colour order) into  (p * scale − mean[c]) / std[c].
 */
const Triple = Type.Tuple([Type.Number(), Type.Number(), Type.Number()])

/**
 * A version's name, a version folder's or config.json's `version`: a positive integer without
 * leading zeros (Triton ignores version folders named otherwise, "0" included). A request names a
 * version by number ("01" is 1), so a name of another form could not be asked for.
 */
export const VERSION_NAME = /^[1-9][0-9]{0,8}$/

export const PreprocessConfigSchema = Type.Object(
  {
    resize: Type.Integer({ minimum: 1, maximum: 4096, description: 'Shorter side is resized to this.' }),
    crop: Type.Integer({ minimum: 1, maximum: 4096, description: 'Centre crop, square.' }),
    colorOrder: Type.Union([Type.Literal('RGB'), Type.Literal('BGR')]),
    scale: Type.Number({ exclusiveMinimum: 0 }),
    mean: Triple,
    std: Triple,
    decode: Type.Optional(
      Type.Union([Type.Literal('exact'), Type.Literal('fast')], {
        description:
          "JPEG decoding: 'fast' (default) shrinks as far as the decoder can while decoding (by up to 8), less CPU on large photos; 'exact' leaves at least a factor of 2 of the shrink to the resize kernel, a few hundredths of a grey level closer to torchvision (docs/models.md)."
      })
    )
  },
  { additionalProperties: false }
)

/**
 * Which of a model's version folders (`<model>/<n>/`) are served, as Triton's version_policy:
 * the newest N, all, or the ones listed. A model without version folders is one version.
 */
export const VersionPolicySchema = Type.Union([
  Type.Object(
    { latest: Type.Object({ numVersions: Type.Integer({ minimum: 1, maximum: 1000 }) }, { additionalProperties: false }) },
    { additionalProperties: false }
  ),
  Type.Object({ all: Type.Object({}, { additionalProperties: false }) }, { additionalProperties: false }),
  Type.Object(
    {
      specific: Type.Object(
        { versions: Type.Array(Type.Integer({ minimum: 1 }), { minItems: 1, maxItems: 1000 }) },
        { additionalProperties: false }
      )
    },
    { additionalProperties: false }
  )
])

export const ModelConfigSchema = Type.Object(
  {
    version: Type.String({ minLength: 1, default: '1' }),
    file: Type.String({ minLength: 1, default: 'model.onnx' }),
    labels: Type.String({ minLength: 1, default: 'labels.txt' }),
    synthetic: Type.Boolean({ description: 'Weights are seeded random numbers, not trained.' }),
    preset: Type.Optional(Type.String()),
    description: Type.Optional(Type.String()),
    versionPolicy: Type.Optional(VersionPolicySchema),
    instances: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 64,
        description:
          "ONNX Runtime sessions (worker threads) for this model, batches in flight at once: Triton's instance_group count. Absent: --sessions-per-model."
      })
    ),
    input: Type.Object(
      {
        name: Type.String({ minLength: 1 }),
        /** float32: the host normalises, into either layout. uint8 (NHWC only): the graph's prologue does (see docs/models.md). */
        layout: Type.Union([Type.Literal('NCHW'), Type.Literal('NHWC')]),
        datatype: Type.Union([Type.Literal('float32'), Type.Literal('uint8')], { default: 'float32' })
      },
      { additionalProperties: false }
    ),
    output: Type.Object(
      {
        name: Type.String({ minLength: 1 }),
        /** Whether the output holds logits (softmax applied by the server) or probabilities already. */
        kind: Type.Union([Type.Literal('logits'), Type.Literal('probabilities')], { default: 'logits' })
      },
      { additionalProperties: false }
    ),
    preprocess: PreprocessConfigSchema,
    batching: Type.Object(
      {
        maxBatchSize: Type.Integer({ minimum: 1, maximum: 1024, default: 16 }),
        maxQueueDelayMs: Type.Number({
          minimum: 0,
          maximum: 10_000,
          default: 0,
          description:
            'How long an idle session waits for a fuller batch. 0 (as Triton): an idle session takes what is queued at once; batches still form while every session is busy.'
        }),
        maxQueueSize: Type.Integer({ minimum: 1, maximum: 100_000, default: 256 }),
        priorityLevels: Type.Optional(
          Type.Integer({
            minimum: 0,
            maximum: 16,
            description:
              "Priority levels a request's `priority` parameter picks from, 1 the highest; batches take higher levels first, FIFO within a level. 0 or absent: priorities off (one FIFO queue; the parameter is accepted and ignored, as in Triton)."
          })
        ),
        defaultPriorityLevel: Type.Optional(
          Type.Integer({
            minimum: 1,
            maximum: 16,
            description:
              'The level of a request with no priority, priority 0, or one above priorityLevels. Absent: the lowest level, so only requests that ask go ahead.'
          })
        ),
        padTo: Type.Optional(
          Type.Array(Type.Integer({ minimum: 1, maximum: 1024 }), {
            maxItems: 64,
            description:
              "Batch sizes executions are padded to with zero images, each warmed up before ready. With fixedShapes, the sessions' sizes (the maximum always one of them; more sizes than sessions is refused); else a batch runs at the smallest listed size that holds it. [] for none; absent: on CUDA 16 and maxBatchSize (one per session), on the CPU none."
          })
        ),
        fixedShapes: Type.Optional(
          Type.Boolean({
            description:
              "Each session runs one batch size, padding every batch to it, so its input shape never changes (on CUDA a new shape rebuilds every convolution's plan: 0.1–1.1 s a run). Absent: true on CUDA unless padTo is [], false on the CPU."
          })
        )
      },
      { additionalProperties: false }
    )
  },
  { additionalProperties: false }
)

export type PreprocessConfig = Static<typeof PreprocessConfigSchema>
export type ModelConfig = Static<typeof ModelConfigSchema>
export type VersionPolicy = Static<typeof VersionPolicySchema>

export const PRESET_NAMES = ['torchvision', 'caffe', 'onnx-zoo'] as const
export type PresetName = (typeof PRESET_NAMES)[number]

interface Preset {
  readonly description: string
  readonly input: ModelConfig['input']
  readonly output: ModelConfig['output']
  readonly preprocess: PreprocessConfig
}

const TORCHVISION_PREPROCESS: PreprocessConfig = {
  resize: 256,
  crop: 224,
  colorOrder: 'RGB',
  scale: 1 / 255,
  mean: [0.485, 0.456, 0.406],
  std: [0.229, 0.224, 0.225]
}

/**
 * The conventions ResNets are commonly trained with. Output names are the usual ones; `model:add`
 * replaces input and output names with what the ONNX file really declares.
 */
export const PRESETS: Readonly<Record<PresetName, Preset>> = {
  torchvision: {
    description: 'torchvision.models: RGB, /255, ImageNet mean and std',
    input: { name: 'input', layout: 'NCHW', datatype: 'float32' },
    output: { name: 'logits', kind: 'logits' },
    preprocess: TORCHVISION_PREPROCESS
  },
  caffe: {
    description: "The paper's Caffe models: BGR, 0–255, per-channel mean subtraction only",
    input: { name: 'data', layout: 'NCHW', datatype: 'float32' },
    output: { name: 'prob', kind: 'logits' },
    preprocess: {
      resize: 256,
      crop: 224,
      colorOrder: 'BGR',
      scale: 1,
      mean: [103.939, 116.779, 123.68],
      std: [1, 1, 1]
    }
  },
  'onnx-zoo': {
    // No tensor name here: model:add writes the file's own names, whatever the preset says.
    description: 'ONNX Model Zoo ResNet v1/v2: RGB, /255, ImageNet mean and std',
    input: { name: 'data', layout: 'NCHW', datatype: 'float32' },
    output: { name: 'resnetv17_dense0_fwd', kind: 'logits' },
    preprocess: TORCHVISION_PREPROCESS
  }
}

export const DEFAULT_BATCHING: ModelConfig['batching'] = { maxBatchSize: 16, maxQueueDelayMs: 0, maxQueueSize: 256 }

export function configFromPreset(
  preset: PresetName,
  overrides: { synthetic: boolean; inputName?: string; outputName?: string; description?: string }
): ModelConfig {
  const p = PRESETS[preset]
  return {
    version: '1',
    file: 'model.onnx',
    labels: 'labels.txt',
    synthetic: overrides.synthetic,
    preset,
    description: overrides.description ?? p.description,
    input: { ...p.input, name: overrides.inputName ?? p.input.name },
    output: { ...p.output, name: overrides.outputName ?? p.output.name },
    preprocess: { ...p.preprocess, mean: [...p.preprocess.mean], std: [...p.preprocess.std] },
    batching: { ...DEFAULT_BATCHING }
  }
}
