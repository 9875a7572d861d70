import { inferenceClient, runGrpcLoad } from '../kit/load-generators.js'
import { levelsAt, photoTensor, tensorDatatype, tensorShape, typicalPhoto, type PlanScenario } from '../kit/scenario-plan.js'

/**
 * gRPC ModelInfer with the image already a tensor in raw_input_contents (FP32 for `grpc-fp32`,
 * UINT8 for `grpc-uint8`): N streams of unary calls, one image per call.
 */
export const grpcPlan: PlanScenario = async (name, model, options) => {
  const bytes = await photoTensor(model, await typicalPhoto())
  const input = { name: model.config.input.name, datatype: tensorDatatype(model), shape: tensorShape(model, 1), bytes }
  return {
    name,
    title: `gRPC ModelInfer, raw_input_contents ${input.datatype} [${input.shape.join(',')}], N streams of unary calls`,
    model,
    levels: levelsAt('1 image per call', options.concurrency, async (server, c, s) => {
      if (server.grpcAddress === undefined) throw new Error('the service logged no gRPC address')
      const client = inferenceClient(server.grpcAddress)
      try {
        return await runGrpcLoad(client, model.name, input, c, s)
      } finally {
        client.close()
      }
    })
  }
}
