import { readFile } from 'node:fs/promises'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ItemKind } from '../../src/core/worker-messages.js'
import { ModelSessions } from '../../src/core/model-sessions.js'
import { openSession } from '../../src/core/onnx-session.js'
import { ImagePreprocessor } from '../../src/core/preprocess.js'
import { createNormalizer } from '../../src/core/pixel-normalizer.js'
import { ServiceError } from '../../src/errors.js'
import { loadModelFolder, type ModelEntry } from '../../src/repository/repository.js'
import { photoPaths } from '../helpers/photos.js'
import { syntheticModelRepository } from '../helpers/models.js'

/** The worker-thread sessions against a session on the main thread, and a worker that dies. */

let entry: ModelEntry
let sessions: ModelSessions
let tensors: Float32Array
const N = 3

beforeAll(async () => {
  entry = await loadModelFolder(await syntheticModelRepository(), 'resnet50')
  sessions = new ModelSessions(entry, { provider: 'cpu', cudaDeviceId: 0, threads: 2, sessions: 1 })
  await sessions.start()
  const pre = new ImagePreprocessor(entry.config.preprocess, { maxInputPixels: 50_000_000 })
  const normalize = createNormalizer(entry.config.preprocess)
  const per = 3 * 224 * 224
  tensors = new Float32Array(N * per)
  for (let i = 0; i < N; i++) normalize(await pre.decode(await readFile(photoPaths()[i]!)), tensors, i * per)
})
afterAll(async () => {
  await sessions?.close()
})

describe('inference pool', () => {
  it('a worker-thread session and a main-thread session give the same logits for the same tensor', async () => {
    const { session, Tensor } = await openSession(entry.modelPath, { provider: 'cpu', cudaDeviceId: 0, threads: 2 })
    const main = (await session.run({ input: new Tensor('float32', tensors, [N, 3, 224, 224]) })).logits!.data as Float32Array
    await session.release()

    const { output } = await sessions.run(new Uint8Array(N).fill(ItemKind.TENSOR), tensors.slice().buffer)
    expect(output.length).toBe(N * 1000)
    let maxAbs = 0
    let maxDiff = 0
    for (let i = 0; i < output.length; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(main[i]!))
      maxDiff = Math.max(maxDiff, Math.abs(main[i]! - output[i]!))
    }
    expect(maxAbs).toBeGreaterThan(0)
    expect(maxDiff).toBeLessThanOrEqual(1e-5 * maxAbs)
  })

  it('normalising pixels in the worker equals sending the normalised tensor', async () => {
    const pre = new ImagePreprocessor(entry.config.preprocess, { maxInputPixels: 50_000_000 })
    const pixels = await pre.decode(await readFile(photoPaths()[0]!))
    const fromPixels = await sessions.run(
      new Uint8Array([ItemKind.PIXELS]),
      pixels.buffer.slice(pixels.byteOffset, pixels.byteOffset + pixels.byteLength) as ArrayBuffer
    )
    const fromTensor = await sessions.run(new Uint8Array([ItemKind.TENSOR]), tensors.slice(0, 3 * 224 * 224).buffer)
    expect(Array.from(fromPixels.output)).toEqual(Array.from(fromTensor.output))
  })

  it('a batch padded with zero images to a larger run size answers the same logits for its own images', async () => {
    const padded = new ModelSessions(
      { ...entry, config: { ...entry.config, batching: { ...entry.config.batching, padTo: [4] } } },
      { provider: 'cpu', cudaDeviceId: 0, threads: 2, sessions: 1 }
    )
    await padded.start()
    try {
      expect(padded.plan!.warmUp).toEqual([[4, entry.config.batching.maxBatchSize]])
      expect(padded.plan!.runSize(N, 0)).toBe(4)
      const plain = await sessions.run(new Uint8Array(N).fill(ItemKind.TENSOR), tensors.slice().buffer)
      const out = await padded.run(new Uint8Array(N).fill(ItemKind.TENSOR), tensors.slice().buffer)
      expect(out.output.length).toBe(N * 1000)
      let maxDiff = 0
      for (let i = 0; i < out.output.length; i++) maxDiff = Math.max(maxDiff, Math.abs(out.output[i]! - plain.output[i]!))
      expect(maxDiff).toBeLessThanOrEqual(1e-4)
    } finally {
      await padded.close()
    }
  })

  it('a batch input comes back from the worker for the next batch, whose answer, read from the first bytes only, is that of a fresh buffer', async () => {
    const per = 3 * 224 * 224
    const one = tensors.slice(0, per)
    const fresh = await sessions.run(new Uint8Array([ItemKind.TENSOR]), one.slice().buffer)
    // A larger buffer, its tail not part of the batch.
    const sent = sessions.inputBuffer(N * per * 4)
    new Float32Array(sent).set(tensors)
    const three = await sessions.run(new Uint8Array(N).fill(ItemKind.TENSOR), sent)
    expect(sent.byteLength).toBe(0) // transferred
    // Two kept for one session: the single image's and the three's. The three's, handed back, still holds them.
    const back = sessions.inputBuffer(N * per * 4)
    expect(new Float32Array(back, 0, N * per)).toEqual(tensors)
    new Float32Array(back, 0, per).set(tensors.subarray(per, 2 * per))
    const second = await sessions.run(new Uint8Array([ItemKind.TENSOR]), back)
    expect(Array.from(second.output)).toEqual(Array.from(three.output.subarray(1000, 2000)))
    expect(Array.from(fresh.output)).toEqual(Array.from(three.output.subarray(0, 1000)))
  })

  it('a worker that dies fails its batch fast with INFERENCE_FAILED, is replaced, and later runs succeed', async () => {
    const [worker] = sessions.threads
    sessions.injectWorkerFailure()
    const running = sessions.run(new Uint8Array(N).fill(ItemKind.TENSOR), tensors.slice().buffer)
    const err = await running.catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ServiceError)
    expect((err as ServiceError).code).toBe('INFERENCE_FAILED')
    // The replacement is started in the background; a run waits for it rather than failing.
    const { output } = await sessions.run(new Uint8Array(1).fill(ItemKind.TENSOR), tensors.slice(0, 3 * 224 * 224).buffer)
    expect(output.length).toBe(1000)
    expect(sessions.threads).toHaveLength(1)
    expect(sessions.threads[0]).not.toBe(worker)
  })
})
