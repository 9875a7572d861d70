import type { Clock } from '../../src/core/batcher.js'

/** A clock that moves only when told; advance() fires due timers in time order (ties: set order). */
export class FakeClock implements Clock {
  private time: number
  private nextId = 1
  private readonly timers = new Map<number, { at: number; fn: () => void }>()
  /** How many timers were ever set, to check the batcher does not re-arm needlessly. */
  timersSet = 0

  constructor(startAt = 1000) {
    this.time = startAt
  }

  now(): number {
    return this.time
  }

  setTimer(fn: () => void, ms: number): unknown {
    const id = this.nextId++
    this.timersSet++
    this.timers.set(id, { at: this.time + Math.max(0, ms), fn })
    return id
  }

  clearTimer(handle: unknown): void {
    this.timers.delete(handle as number)
  }

  get pendingTimers(): number {
    return this.timers.size
  }

  advance(ms: number): void {
    const target = this.time + ms
    // A timer that keeps re-arming at the current time would hang the test instead of failing it.
    for (let fired = 0; ; fired++) {
      if (fired > 10_000) throw new Error('FakeClock: timers keep firing without time passing')
      let dueId: number | undefined
      let dueAt = Infinity
      for (const [id, t] of this.timers) {
        if (t.at <= target && t.at < dueAt) {
          dueId = id
          dueAt = t.at
        }
      }
      if (dueId === undefined) break
      const timer = this.timers.get(dueId)!
      this.timers.delete(dueId)
      this.time = timer.at
      timer.fn()
    }
    this.time = target
  }
}
