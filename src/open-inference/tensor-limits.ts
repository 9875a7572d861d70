import type { Settings } from '../config.js'
import type { ClassifyService } from '../core/classify-service.js'

/**
 * Tensor elements one request may list value by value (JSON `data`, gRPC typed contents such as
 * `fp32_contents`): each becomes a JavaScript number while the request is parsed, on the event
 * loop, so a listed tensor costs time and heap by its element count, not its bytes. 2^20 holds six
 * 3×224×224 images (as the JSON door's value limit); larger tensors go as raw bytes (binary data,
 * `raw_input_contents`), as Triton's clients send them.
 */
export const MAX_LISTED_ELEMENTS = 2 ** 20

/** One 3×224×224 image: the crop every preset uses (src/repository/model-config.ts). */
const PRESET_ITEM_ELEMENTS = 3 * 224 * 224

export interface TensorLimits {
  /** Elements of the largest image tensor a loaded model takes. */
  readonly itemElements: number
  /** The tensor payload one infer request may carry, in bytes, on either door. */
  readonly payloadBytes: number
}

/**
 * What one infer request may carry, from the models loaded and the settings: the largest tensor
 * batch any loaded model accepts (--max-batch-items images, each in its largest wire form: FP32 4
 * bytes an element; UINT8 up to 2, as gRPC's packed varints) or an encoded-image body as large as
 * --body-limit-bytes, whichever is larger. Both doors size their limits from it, so a batch one
 * takes the other takes too.
 */
export function tensorLimits(service: ClassifyService, settings: Settings): TensorLimits {
  let itemElements = 0
  let itemWireBytes = 0
  for (const name of service.modelNames()) {
    if (!service.isModelReady(name)) continue
    const { preprocess, input } = service.model(name).entry.config
    const elements = 3 * preprocess.crop * preprocess.crop
    itemElements = Math.max(itemElements, elements)
    itemWireBytes = Math.max(itemWireBytes, elements * (input.datatype === 'float32' ? 4 : 2))
  }
  if (settings.modelControlMode !== 'none') {
    // Models may load after the doors have started (explicit and poll modes): the limits then hold
    // at least an image of the presets' 224×224 crop in FP32, the largest form a model takes it in.
    itemElements = Math.max(itemElements, PRESET_ITEM_ELEMENTS)
    itemWireBytes = Math.max(itemWireBytes, PRESET_ITEM_ELEMENTS * 4)
  }
  return { itemElements, payloadBytes: Math.max(settings.maxBatchItems * itemWireBytes, settings.bodyLimitBytes) }
}
