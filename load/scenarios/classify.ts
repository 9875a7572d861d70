import { availableParallelism } from 'node:os'
import { ImagePreprocessor } from '../../src/core/preprocess.js'
import { runHttpLoad } from '../kit/load-generators.js'
import type { BenchPhoto } from '../kit/photos.js'
import { levelsAt, photoLabel, photoOfSize, typicalPhoto, type ModelUnderTest, type PlanScenario } from '../kit/scenario-plan.js'
import { median } from '../kit/stats.js'

/**
 * POST /classify, one JPEG per request: the whole data path, decoding included. `classify` sends
 * each of --photos in turn to the float32 model; `classify-exact` those large enough for the JPEG
 * decode mode to matter to its twin with `preprocess.decode: "exact"`; `classify-uint8` the typical photo to the UINT8 model. Beside it, what decoding alone costs on the same cores: the ceiling for this door.
 */

/** Sharp's decode + resize + crop alone, `inFlight` at a time in this process (the libuv pool). */
async function sharpImagesPerSecond(model: ModelUnderTest, photo: BenchPhoto, inFlight: number, seconds: number): Promise<number> {
  const pre = new ImagePreprocessor(model.config.preprocess, { maxInputPixels: 50_000_000 })
  let done = 0
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() - t0 < seconds * 1000) {
        await pre.decode(photo.bytes)
        done++
      }
    })
  )
  return done / ((performance.now() - t0) / 1000)
}

export const classifyPlan: PlanScenario = async (name, model, options) => {
  const typical = await typicalPhoto()
  // The exact decode differs from the fast one only where a JPEG is more than twice the size needed.
  const sizes =
    name === 'classify'
      ? options.photoSizes
      : name === 'classify-exact'
        ? options.photoSizes.filter((size) => Math.min(...size.split('x').map(Number)) > 2 * model.config.preprocess.resize)
        : []
  const photos = sizes.length > 0 ? await Promise.all(sizes.map(photoOfSize)) : [typical]
  const path = `/classify?model=${encodeURIComponent(model.name)}`
  return {
    name,
    title: `POST /classify, one JPEG per request (${model.config.input.datatype} model${model.config.preprocess.decode === 'exact' ? ', exact decode' : ''})`,
    model,
    levels: photos.flatMap((photo) =>
      levelsAt(photoLabel(photo), options.concurrency, (server, c, s) =>
        runHttpLoad(
          { url: `${server.url}${path}`, headers: { 'content-type': 'image/jpeg' }, body: photo.bytes, imagesPerRequest: 1 },
          c,
          s
        )
      )
    ),
    extra: async () => {
      // What one request at concurrency 1 pays before inference, and what the cores can decode at most.
      const pre = new ImagePreprocessor(model.config.preprocess, { maxInputPixels: 50_000_000 })
      const times: number[] = []
      for (let i = 0; i < 40; i++) {
        const t = performance.now()
        await pre.decode(typical.bytes)
        times.push(performance.now() - t)
      }
      const seconds = Math.max(2, options.durationSeconds / 4)
      return {
        'preprocess alone, median ms (500×375)': median(times),
        'sharp alone, images/s, 1 in flight (500×375)': await sharpImagesPerSecond(model, typical, 1, seconds),
        [`sharp alone, images/s, ${availableParallelism() * 2} in flight (500×375)`]: await sharpImagesPerSecond(
          model,
          typical,
          availableParallelism() * 2,
          seconds
        )
      }
    }
  }
}
