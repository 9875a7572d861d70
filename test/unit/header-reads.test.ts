import { describe, expect, it } from 'vitest'
import { slotAdmission, type DecodeBudget } from '../../src/core/decode-budget.js'
import { ImagePreprocessor } from '../../src/core/preprocess.js'
import { configFromPreset } from '../../src/repository/model-config.js'
import { readPhoto } from '../helpers/photos.js'

/**
 * Header reads go through admission of their own (slots, an ordered queue), before the decode
 * budget can price the decode: libvips reads a file's whole structure to open it, with no timeout.
 * Here the one slot is held by the test, so each read's wait is seen as it happens. Unit tier.
 */

function preprocessorWith(headerReads: DecodeBudget): ImagePreprocessor {
  return new ImagePreprocessor(configFromPreset('torchvision', { synthetic: true }).preprocess, {
    maxInputPixels: 50_000_000,
    headerReads
  })
}

describe('header read admission', () => {
  it('slot admission lets every slot run at once, and no more', async () => {
    const slots = slotAdmission(3, 8)
    const held = await Promise.all([slots.acquire(1), slots.acquire(1), slots.acquire(1)])
    expect([slots.running, slots.queued]).toEqual([3, 0])
    const fourth = slots.acquire(1)
    expect(slots.queued).toBe(1)
    held[0]!.release()
    ;(await fourth).release()
    for (const permit of held.slice(1)) permit.release()
    expect([slots.running, slots.queued]).toEqual([0, 0])
  })

  it('a header read waits for a free slot, and runs once one is given back', async () => {
    const headerReads = slotAdmission(1, 8)
    const pre = preprocessorWith(headerReads)
    const photo = await readPhoto('chelsea')
    const held = await headerReads.acquire(1)
    const decoding = pre.decode(photo)
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(headerReads.queued).toBe(1)
    expect(headerReads.started).toBe(1)
    held.release()
    expect((await decoding).byteLength).toBe(224 * 224 * 3)
    expect(headerReads.started).toBe(2)
    expect([headerReads.running, headerReads.queued]).toEqual([0, 0])
  })

  it('a read whose client goes while it waits is never started (CLIENT_CLOSED), nor one whose deadline passes (DEADLINE_EXCEEDED)', async () => {
    const headerReads = slotAdmission(1, 8)
    const pre = preprocessorWith(headerReads)
    const photo = await readPhoto('chelsea')
    const held = await headerReads.acquire(1)
    const client = new AbortController()
    const gone = pre.decode(photo, { signal: client.signal })
    const late = pre.decode(photo, { deadlineAt: performance.now() + 30 })
    await new Promise((resolve) => setTimeout(resolve, 10))
    client.abort()
    await expect(gone).rejects.toMatchObject({ code: 'CLIENT_CLOSED' })
    await expect(late).rejects.toMatchObject({ code: 'DEADLINE_EXCEEDED' })
    held.release()
    expect(headerReads.started).toBe(1)
  })
})
