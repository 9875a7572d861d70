import { runHttpLoad } from '../kit/load-generators.js'
import {
  levelsAt,
  photoTensor,
  tensorDatatype,
  tensorShape,
  typicalPhoto,
  type ModelUnderTest,
  type PlanScenario
} from '../kit/scenario-plan.js'

/**
 * POST /v2/models/{model}/infer with the binary tensor extension: one image already in the
 * model's input layout (FP32 for `v2-fp32`, UINT8 for `v2-uint8`), so no decoding on the server.
 */

/** The Open Inference Protocol's binary extension: the JSON header, then the tensor bytes. */
function v2BinaryBody(model: ModelUnderTest, tensor: Buffer): { headers: Record<string, string>; body: Buffer } {
  const header = Buffer.from(
    JSON.stringify({
      inputs: [
        {
          name: model.config.input.name,
          shape: tensorShape(model, 1),
          datatype: tensorDatatype(model),
          parameters: { binary_data_size: tensor.length }
        }
      ]
    })
  )
  return {
    headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(header.length) },
    body: Buffer.concat([header, tensor])
  }
}

export const v2Plan: PlanScenario = async (name, model, options) => {
  const { headers, body } = v2BinaryBody(model, await photoTensor(model, await typicalPhoto()))
  return {
    name,
    title: `POST /v2/models/{model}/infer, binary ${tensorDatatype(model)} tensor [${tensorShape(model, 1).join(',')}]`,
    model,
    levels: levelsAt('1 image per request', options.concurrency, (server, c, s) =>
      runHttpLoad({ url: `${server.url}/v2/models/${model.name}/infer`, headers, body, imagesPerRequest: 1 }, c, s)
    )
  }
}
