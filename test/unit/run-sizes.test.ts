import { describe, expect, it } from 'vitest'
import { runPlan, sizeLadder } from '../../src/core/run-sizes.js'

describe('run plan (which batch sizes each session runs)', () => {
  it('the ladder goes 1, 2, 3, 4, 6, 8, … and ends at the maximum', () => {
    expect(sizeLadder(128)).toEqual([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128])
    expect(sizeLadder(20)).toEqual([1, 2, 3, 4, 6, 8, 12, 16, 20])
    expect(sizeLadder(1)).toEqual([1])
  })

  it('on CUDA each session keeps one shape: with two, a small size and the maximum; with one, the maximum', () => {
    const two = runPlan(128, 'cuda', 2, {})
    expect(two.fixedShapes).toBe(true)
    expect(two.capacities).toEqual([16, 128])
    expect(two.warmUp).toEqual([[16], [128]])
    expect(two.paddedSizes).toEqual([16, 128])
    // Every batch a session takes runs at that session's one size, whatever its length.
    expect([1, 9, 16].map((n) => two.runSize(n, 0))).toEqual([16, 16, 16])
    expect([1, 17, 128].map((n) => two.runSize(n, 1))).toEqual([128, 128, 128])
    const one = runPlan(128, 'cuda', 1, {})
    expect(one.capacities).toEqual([128])
    expect(one.runSize(3, 0)).toBe(128)
    // More sessions than sizes: the extra sessions run the maximum; a maximum under 16 is the only size.
    expect(runPlan(64, 'cuda', 4, {}).capacities).toEqual([16, 64, 64, 64])
    expect(runPlan(8, 'cuda', 2, {}).capacities).toEqual([8, 8])
  })

  it('padTo lists the fixed sizes (the maximum always among them); more sizes than sessions is refused with the fix', () => {
    const listed = runPlan(64, 'cuda', 3, { padTo: [32, 4, 4] })
    expect(listed.capacities).toEqual([4, 32, 64])
    expect(() => runPlan(64, 'cuda', 2, { padTo: [4, 32] })).toThrow(
      /need 3 sessions where the model has 2: raise --sessions-per-model to 3/
    )
    expect(() => runPlan(64, 'cuda', 2, { padTo: [], fixedShapes: true })).toThrow(/drop one of them/)
  })

  it('on the CPU batches run at their own size on any session, with only the largest warmed; fixedShapes can be asked for', () => {
    const cpu = runPlan(16, 'cpu', 2, {})
    expect(cpu.fixedShapes).toBe(false)
    expect(cpu.capacities).toEqual([16, 16])
    expect(cpu.warmUp).toEqual([[16], [16]])
    expect(cpu.paddedSizes).toEqual([])
    expect([1, 5, 16].map((n) => cpu.runSize(n, 1))).toEqual([1, 5, 16])
    expect(runPlan(16, 'cpu', 2, { fixedShapes: true }).capacities).toEqual([16, 16])
    expect(runPlan(32, 'cpu', 2, { fixedShapes: true }).capacities).toEqual([16, 32])
  })

  it('without fixed shapes, a listed padTo pads to the smallest size that holds the batch, never wasting more than a third on the ladder', () => {
    const listed = runPlan(16, 'cpu', 1, { padTo: [8, 4, 4, 32] })
    expect(listed.warmUp).toEqual([[4, 8, 16]])
    expect([1, 4, 5, 9].map((n) => listed.runSize(n, 0))).toEqual([4, 4, 8, 16])
    const ladder = runPlan(128, 'cuda', 2, { fixedShapes: false })
    expect(ladder.paddedSizes).toEqual(sizeLadder(128))
    for (let n = 1; n <= 128; n++) {
      const size = ladder.runSize(n, 0)
      expect(size).toBeGreaterThanOrEqual(n)
      expect((size - n) / size).toBeLessThanOrEqual(1 / 3)
    }
    // [] turns padding off, and with it the CUDA default of fixed shapes.
    const off = runPlan(64, 'cuda', 2, { padTo: [] })
    expect(off.fixedShapes).toBe(false)
    expect(off.warmUp).toEqual([[64], [64]])
    expect(off.runSize(7, 0)).toBe(7)
  })
})
