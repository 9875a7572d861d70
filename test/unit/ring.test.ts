import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { describe, expect, it } from 'vitest'
import { Ring } from '../../src/core/ring.js'

/** The batcher's FIFO: order kept across growth and wrap-around, slots released on shift. */

describe('Ring', () => {
  it('is first in, first out; empty answers undefined', () => {
    const ring = new Ring<number>()
    expect([ring.length, ring.peek(), ring.shift()]).toEqual([0, undefined, undefined])
    for (let i = 0; i < 5; i++) ring.push(i)
    expect(ring.peek()).toBe(0)
    expect([ring.shift(), ring.shift(), ring.length]).toEqual([0, 1, 3])
  })

  it('keeps the order when it grows while its head has wrapped around the end', () => {
    const ring = new Ring<number>()
    // Advance the head past the middle of the 16 slots, then fill past capacity so the copy must unwrap.
    for (let i = 0; i < 10; i++) ring.push(i)
    for (let i = 0; i < 10; i++) ring.shift()
    const pushed: number[] = []
    for (let i = 100; i < 140; i++) {
      ring.push(i)
      pushed.push(i)
    }
    expect(ring.length).toBe(40)
    const taken: number[] = []
    for (let v = ring.shift(); v !== undefined; v = ring.shift()) taken.push(v)
    expect(taken).toEqual(pushed)
    expect(ring.length).toBe(0)
  })

  it('interleaved pushes and shifts over many wraps return every value once, in order', () => {
    const ring = new Ring<number>()
    const taken: number[] = []
    let next = 0
    for (let round = 0; round < 1_000; round++) {
      for (let i = 0; i < (round % 7) + 1; i++) ring.push(next++)
      for (let i = 0; i < (round % 5) + 1; i++) {
        const v = ring.shift()
        if (v !== undefined) taken.push(v)
      }
    }
    for (let v = ring.shift(); v !== undefined; v = ring.shift()) taken.push(v)
    expect(taken).toEqual(Array.from({ length: next }, (_, i) => i))
  })

  it('lets a shifted value be collected: its slot no longer holds it', async () => {
    // V8's collector, reachable without starting node with --expose-gc.
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as () => void
    const ring = new Ring<object>()
    const kept = new Ring<object>()
    const refs = Array.from({ length: 4 }, () => {
      const value = { payload: new Uint8Array(1024) }
      ring.push(value)
      kept.push(value)
      return new WeakRef(value)
    })
    for (let i = 0; i < 4; i++) kept.shift()
    ring.shift()
    ring.shift()
    // Collection happens across turns of the event loop; the two still queued must survive it.
    await new Promise((r) => setTimeout(r, 0))
    gc()
    expect(refs.map((r) => r.deref() === undefined)).toEqual([true, true, false, false])
    expect(ring.length).toBe(2)
  })
})
