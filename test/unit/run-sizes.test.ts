import { describe, expect, it } from 'vitest'
import { runSizes, sizeLadder } from '../../src/core/run-sizes.js'

describe('run sizes (padding batches to sizes a CUDA session has already run)', () => {
  it('the ladder goes 1, 2, 3, 4, 6, 8, … and ends at the maximum', () => {
    expect(sizeLadder(128)).toEqual([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128])
    expect(sizeLadder(20)).toEqual([1, 2, 3, 4, 6, 8, 12, 16, 20])
    expect(sizeLadder(1)).toEqual([1])
  })

  it('padding never wastes more than a third of a run', () => {
    const sizes = runSizes(128, 'cuda', undefined)
    for (let n = 1; n <= 128; n++) {
      const size = sizes.runSize(n)
      expect(size).toBeGreaterThanOrEqual(n)
      expect((size - n) / size).toBeLessThanOrEqual(1 / 3)
    }
  })

  it('on CUDA every batch runs at a warmed size; on the CPU at its own size, with only the largest warmed', () => {
    const cuda = runSizes(16, 'cuda', undefined)
    for (let n = 1; n <= 16; n++) expect(cuda.warmUp).toContain(cuda.runSize(n))
    const cpu = runSizes(16, 'cpu', undefined)
    expect(cpu.warmUp).toEqual([16])
    expect([1, 5, 16].map((n) => cpu.runSize(n))).toEqual([1, 5, 16])
  })

  it('a configured list wins over the provider default, always includes the maximum, and [] turns padding off', () => {
    const listed = runSizes(16, 'cpu', [8, 4, 4, 32])
    expect(listed.warmUp).toEqual([4, 8, 16])
    expect([1, 4, 5, 9].map((n) => listed.runSize(n))).toEqual([4, 4, 8, 16])
    const off = runSizes(64, 'cuda', [])
    expect(off.warmUp).toEqual([64])
    expect(off.runSize(7)).toBe(7)
  })
})
