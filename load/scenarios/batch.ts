import { runHttpLoad } from '../kit/load-generators.js'
import { levelsAt, photoLabel, typicalPhoto, type PlanScenario } from '../kit/scenario-plan.js'

/** POST /v1/models/{model}:classify: --batch-items base64 JPEGs per request, each through the model's batcher. */
export const batchPlan: PlanScenario = async (name, model, options) => {
  const typical = await typicalPhoto()
  const items = Math.min(options.batchItems, 64)
  const body = Buffer.from(
    JSON.stringify({ instances: Array.from({ length: items }, () => ({ b64: typical.bytes.toString('base64') })), topk: 5 })
  )
  // Each request queues `items` images at once; past the model's queue bound they would be refused.
  const concurrency = options.concurrency.filter((c) => c * items <= model.config.batching.maxQueueSize)
  return {
    name,
    title: `POST /v1/models/{model}:classify, ${items} base64 JPEGs (${photoLabel(typical)}) per request`,
    model,
    levels: levelsAt(`${items} per request`, concurrency.length > 0 ? concurrency : [1], (server, c, s) =>
      runHttpLoad(
        {
          url: `${server.url}/v1/models/${model.name}:classify`,
          headers: { 'content-type': 'application/json' },
          body,
          imagesPerRequest: items
        },
        c,
        s
      )
    )
  }
}
