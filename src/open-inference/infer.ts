import { setMaxListeners } from 'node:events'
import { echoed } from '../errors.js'
import type { ClassifyService, RequestOptions, ScoresResult, ServedModel } from '../core/classify-service.js'
import { resolveModel } from './metadata.js'
import { withRequestParameters } from './request-parameters.js'
import { float32Text } from './tensor-codec.js'
import type { InferOutput, InferRequest, InferResponse } from './types.js'
import { prepareInput, prepareOutputs } from './validation.js'

/**
 * The Open Inference Protocol's inference over the core service, shared by the REST and gRPC
 * doors: what a request means, and every refusal, is decided here once.
 *
 * What a model accepts, on its one input (named as in its config.json):
 * - BYTES, shape [N] or [N, 1]: N encoded images (JPEG, PNG, …), decoded and preprocessed by the
 *   server exactly as /classify does;
 * - the model's own input tensor, already preprocessed: FP32 [N, 3, crop, crop] for float32 NCHW
 *   models, UINT8 [N, crop, crop, 3] for uint8 NHWC ones (layout as config.json says).
 * Either way each image goes through the model's batcher alongside everyone else's; a request's
 * tensors enter it together, so that on an idle model they run as one batch.
 *
 * What it answers, on its one output: the FP32 [N, classes] output rows (logits, or
 * probabilities when the model outputs those), or, when the output asks for `classification: k`
 * (Triton's classification extension), BYTES [N, k] of "value:index:label", best first, where
 * value is the model's own output value for that class.
 */

/** Characters of a request's id its log line repeats; the answer echoes the id whole, as Triton does. */
export const LOGGED_ID_CHARS = 256

/**
 * A request's id as its log line carries it: at most LOGGED_ID_CHARS characters, then its length.
 * The protocol sets no bound on an id, and one of 20 MB was a 20 MB log line.
 */
export function loggedId(id: string | undefined): string | undefined {
  return id === undefined ? undefined : echoed(id, LOGGED_ID_CHARS)
}

function classificationOutput(
  service: ClassifyService,
  model: ServedModel,
  name: string,
  results: readonly ScoresResult[],
  k: number
): InferOutput {
  const data: string[] = new Array(results.length * k)
  const labels = model.entry.labels
  let n = 0
  for (const { scores } of results) {
    for (const { index } of service.predictions(model, scores, k))
      data[n++] = `${float32Text(scores[index]!)}:${index}:${labels[index] ?? ''}`
  }
  return { name, datatype: 'BYTES', shape: [results.length, k], data }
}

function scoresOutput(model: ServedModel, name: string, results: readonly ScoresResult[]): InferOutput {
  const width = model.numClasses
  const data = new Float32Array(results.length * width)
  for (let i = 0; i < results.length; i++) data.set(results[i]!.scores, i * width)
  return { name, datatype: 'FP32', shape: [results.length, width], data }
}

/**
 * Runs one V2 inference request. Everything about the request is checked before any image runs
 * (ServiceError BAD_REQUEST, TOO_MANY_ITEMS, INVALID_TOPK, MODEL_NOT_FOUND); then each image goes
 * through the model's batcher. The first image that fails fails the request and withdraws the
 * others still queued, so a doomed request costs no further model runs.
 */
export async function infer(service: ClassifyService, request: InferRequest, options: RequestOptions = {}): Promise<InferResponse> {
  const model = resolveModel(service, request.modelName, request.modelVersion)
  const { items, encoded } = prepareInput(model, request.inputs, service.settings.maxBatchItems)
  const outputs = prepareOutputs(model, request.outputs, service.settings.maxTopk)
  const { deadlineAt, priority } = withRequestParameters(request.parameters, options)
  // Sampled once everything about the request has been checked: a refused request is not traced.
  const trace = service.tracer.start(model.info.name, model.info.version, loggedId(request.id))
  trace?.stamp('REQUEST_START')

  // A request of several images withdraws the others when one fails (and when the client goes);
  // one image has no others, and listens on the client's signal itself.
  const outer = options.signal
  const withdraw = items.length > 1 ? new AbortController() : undefined
  const onOuterAbort = (): void => withdraw?.abort(outer?.reason)
  if (withdraw !== undefined) {
    // Every queued image listens on this signal: more than Node's default of 10 is expected.
    setMaxListeners(items.length + 10, withdraw.signal)
    if (outer?.aborted === true) withdraw.abort(outer.reason)
    else outer?.addEventListener('abort', onOuterAbort, { once: true })
  }
  const itemOptions: RequestOptions = { deadlineAt, priority, signal: withdraw === undefined ? outer : withdraw.signal, trace }
  let results: ScoresResult[]
  try {
    // The version resolved above answers every item, even if a reload switches versions meanwhile.
    // Tensors are submitted together, so that they form one batch; encoded images reach the batcher
    // one by one as their decodes finish, the first ones running while the rest decode.
    results = await Promise.all(
      encoded
        ? items.map((item) => service.inferImage(model, item, itemOptions))
        : model.batcher.together(() => items.map((item) => service.inferTensor(model, item, itemOptions)))
    )
  } catch (err) {
    withdraw?.abort()
    // A failed request's trace ends here, without the door's sending.
    trace?.stamp('REQUEST_END')
    trace?.finish()
    throw err
  } finally {
    if (withdraw !== undefined) outer?.removeEventListener('abort', onOuterAbort)
  }

  let batchSize = 0
  for (const r of results) if (r.batchSize > batchSize) batchSize = r.batchSize
  const response = {
    modelName: model.info.name,
    modelVersion: model.info.version,
    id: request.id,
    outputs: outputs.map((o) =>
      o.classification === undefined
        ? scoresOutput(model, o.name, results)
        : classificationOutput(service, model, o.name, results, o.classification)
    ),
    batchSize,
    trace
  }
  trace?.stamp('REQUEST_END')
  return response
}
