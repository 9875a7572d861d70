import { setMaxListeners } from 'node:events'
import { ServiceError, isServiceError, toServiceError } from '../errors.js'
import type { Classification, ClassifyService, RequestOptions, ServedModel } from './classify-service.js'

/**
 * Many images of one request (the V1 batch endpoint), each through the model's batcher like any
 * single image, answered in request order. An image that cannot be classified gets its error in
 * its slot and the others are still answered: the request as a whole is refused only before any
 * image runs (no images, a bad topk). Items the door could not even read (bad base64) arrive as
 * their ServiceError and keep their slot.
 */
export async function classifyBatch(
  service: ClassifyService,
  model: ServedModel,
  items: ReadonlyArray<Uint8Array | ServiceError>,
  requestedTopk: number | undefined,
  options: RequestOptions
): Promise<Array<Classification | ServiceError>> {
  if (items.length === 0) throw new ServiceError('EMPTY_BODY', 'The batch holds no images.')
  const topk = service.topkFor(model, requestedTopk)
  // Every queued image listens on the one abort signal; more than Node's default 10 is expected here.
  if (options.signal !== undefined) setMaxListeners(items.length + 10, options.signal)
  return Promise.all(
    items.map(async (item) => {
      if (isServiceError(item)) return item
      try {
        return await service.classify(model, item, topk, options)
      } catch (err) {
        return toServiceError(err)
      }
    })
  )
}
