import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  BodyBudget,
  COLLECT_AFTER_RELEASED_BYTES,
  COLLECT_WHEN_EMPTY_FOR_MS,
  bodyBudgetOf,
  type Reservation
} from '../../src/body-budget.js'

/** The body budget both doors share: bytes held by requests and messages, a FIFO line, and its bound. Unit tier. */

function asker(budget: BodyBudget): { ask(name: string, bytes: number): boolean; granted: string[]; held: Map<string, Reservation> } {
  const granted: string[] = []
  const held = new Map<string, Reservation>()
  return {
    granted,
    held,
    ask: (name, bytes) =>
      budget.acquire(bytes, (r) => {
        granted.push(name)
        held.set(name, r)
      }) !== undefined
  }
}

describe('BodyBudget', () => {
  it('grants while the bytes fit, then in arrival order as bytes come back; a later small call never passes a waiting large one', () => {
    const budget = new BodyBudget(100, 10)
    const { ask, granted, held } = asker(budget)
    ask('a', 60)
    ask('b', 30)
    ask('c', 50) // does not fit beside 90
    ask('d', 5) // would fit, but c is first in line
    expect(granted).toEqual(['a', 'b'])
    expect(budget.state).toEqual({ heldBytes: 90, waiting: 2 })
    held.get('b')!.release()
    expect(granted).toEqual(['a', 'b']) // 60 + 50 > 100
    held.get('a')!.resize(10) // a's message turned out to be small
    expect(granted).toEqual(['a', 'b', 'c', 'd'])
    expect(budget.state).toEqual({ heldBytes: 65, waiting: 0 })
    held.get('a')!.release()
    held.get('a')!.release() // a second release gives nothing back twice
    held.get('c')!.release()
    held.get('d')!.release()
    expect(budget.state).toEqual({ heldBytes: 0, waiting: 0 })
  })

  it('a call alone is admitted whatever its size', () => {
    const budget = new BodyBudget(100, 10)
    const { ask, granted } = asker(budget)
    ask('huge', 1_000)
    expect(granted).toEqual(['huge'])
  })

  it('a cancelled wait leaves the line, is never granted, and no longer holds back those after it', () => {
    const budget = new BodyBudget(100, 10)
    const { ask, granted, held } = asker(budget)
    ask('a', 50)
    const big = budget.acquire(80, () => granted.push('big'))
    ask('small', 40)
    expect(granted).toEqual(['a'])
    big!.cancel()
    expect(granted).toEqual(['a', 'small'])
    held.get('a')!.release()
    expect(granted).toEqual(['a', 'small'])
  })

  it('refuses (undefined, never granted) once the line is full', () => {
    const budget = new BodyBudget(100, 2)
    const { ask, granted } = asker(budget)
    expect([ask('a', 100), ask('b', 100), ask('c', 100), ask('d', 100)]).toEqual([true, true, true, false])
    expect(granted).toEqual(['a'])
    expect(budget.state).toEqual({ heldBytes: 100, waiting: 2 })
  })

  it('take holds at once when the bytes fit and nothing waits; never passes a waiting message', () => {
    const budget = new BodyBudget(100, 10)
    const { ask, granted } = asker(budget)
    const first = budget.take(60)
    expect(first?.bytes).toBe(60)
    expect(budget.take(50)).toBeUndefined() // 60 + 50 > 100
    ask('message', 50) // waits for room
    expect(budget.take(10)).toBeUndefined() // would fit, but the message is first
    first!.release()
    expect(granted).toEqual(['message'])
    expect(budget.take(10)?.bytes).toBe(10)
    expect(budget.state).toEqual({ heldBytes: 60, waiting: 0 })
  })

  it('a passable wait (an HTTP upload) lets what fits go first, newcomers and waiters behind it alike; a gRPC message waiting is never passed', () => {
    const budget = new BodyBudget(100, 10)
    const granted: string[] = []
    const held = new Map<string, Reservation>()
    const ask = (name: string, bytes: number, passable: boolean): void => {
      budget.acquire(
        bytes,
        (r) => {
          granted.push(name)
          held.set(name, r)
        },
        passable
      )
    }
    ask('a', 70, false)
    ask('upload', 50, true) // waits: 70 + 50 > 100
    expect(budget.fitsNow(20)).toBe(true)
    expect(budget.take(20)?.bytes).toBe(20) // passes the waiting upload
    ask('small', 10, false) // fits beside 90: passes it too
    expect(granted).toEqual(['a', 'small'])
    ask('message', 40, false) // waits behind the upload
    ask('late', 5, true)
    expect(granted).toEqual(['a', 'small']) // 5 would fit, but the message is in line and never passed
    held.get('a')!.release() // 30 held: the upload (50) fits, then the message (40) does not, and holds back what follows
    expect(granted).toEqual(['a', 'small', 'upload'])
    held.get('upload')!.release()
    expect(granted).toEqual(['a', 'small', 'upload', 'message', 'late'])
  })

  it('take admits a request alone whatever its size', () => {
    expect(new BodyBudget(100, 10).take(1_000)?.bytes).toBe(1_000)
  })
})

describe('BodyBudget once it is empty again', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('tells, each time a release leaves nothing held, the bytes given back since it last did; not while a waiter takes the room', () => {
    const empties: number[] = []
    const budget = new BodyBudget(100, 10, (bytes) => empties.push(bytes))
    const { ask, held } = asker(budget)
    ask('a', 70)
    ask('b', 60) // waits
    held.get('a')!.release() // b is granted at once: not empty
    expect(empties).toEqual([])
    held.get('b')!.resize(20)
    held.get('b')!.release()
    expect(empties).toEqual([90])
    budget.take(5)!.release()
    expect(empties).toEqual([90, 5])
  })

  it('collects garbage once, a second after the doors held large bodies and hold nothing now; not when they are busy again or held little', () => {
    vi.useFakeTimers()
    const collect = vi.fn()
    const budget = bodyBudgetOf({ bodyBudgetBytes: 4 * COLLECT_AFTER_RELEASED_BYTES }, collect)
    const half = COLLECT_AFTER_RELEASED_BYTES / 2

    // Two bodies of half the threshold: together they pass it.
    const a = budget.take(half)!
    const b = budget.take(half)!
    a.release()
    b.release()
    vi.advanceTimersByTime(COLLECT_WHEN_EMPTY_FOR_MS - 1)
    expect(collect).not.toHaveBeenCalled()
    vi.advanceTimersByTime(1)
    expect(collect).toHaveBeenCalledTimes(1)

    // Busy again before the second is up: V8 collects by itself under load.
    budget.take(COLLECT_AFTER_RELEASED_BYTES)!.release()
    const next = budget.take(10)!
    vi.advanceTimersByTime(COLLECT_WHEN_EMPTY_FOR_MS)
    expect(collect).toHaveBeenCalledTimes(1)
    next.release() // 10 bytes since the last empty: not worth a collection
    vi.advanceTimersByTime(COLLECT_WHEN_EMPTY_FOR_MS)
    expect(collect).toHaveBeenCalledTimes(1)
  })

  describe('shares of bytes still to come (body-pace.ts)', () => {
    /** An arriving share whose pace the test sets; `preempted` once the budget took it. */
    function arriving(reservation: Reservation): { behind: boolean; preempted: boolean } {
      const state = { behind: false, preempted: false }
      reservation.arriving({ behind: () => state.behind, preempt: () => (state.preempted = true) })
      return state
    }
    afterEach(() => {
      vi.useRealTimers()
    })

    it('regression: shares announced and not sent kept every newcomer out; a newcomer that finds no room now takes those behind their pace, oldest first, and only as many as it needs', async () => {
      const budget = new BodyBudget(100, 10)
      const a = budget.take(40)!
      const b = budget.take(40)!
      const c = budget.take(20)!
      const stalledA = arriving(a)
      const stalledB = arriving(b)
      const sending = arriving(c)
      expect(budget.take(30)).toBeUndefined() // nobody is behind yet
      stalledA.behind = true
      stalledB.behind = true
      const newcomer = budget.take(30)
      expect(newcomer?.bytes).toBe(30)
      expect(a.bytes).toBe(0) // given back at once
      expect(b.bytes).toBe(40) // 40 + 20 + 30 fit: b keeps its share
      expect(budget.state.heldBytes).toBe(90)
      await new Promise((resolve) => setImmediate(resolve))
      expect([stalledA.preempted, stalledB.preempted, sending.preempted]).toEqual([true, false, false])
      a.release() // the refused request's own release gives nothing back twice
      expect(budget.state.heldBytes).toBe(90)
    })

    it('a message that finds no room waits, and after the turn of the event loop (its I/O counted) takes the shares behind their pace', async () => {
      const budget = new BodyBudget(100, 10)
      const a = budget.take(80)!
      const stalled = arriving(a)
      stalled.behind = true
      const granted: string[] = []
      budget.acquire(60, () => granted.push('message'))
      expect(granted).toEqual([]) // not in the same turn
      await new Promise((resolve) => setImmediate(resolve))
      expect(granted).toEqual(['message'])
      expect(a.bytes).toBe(0)
      await new Promise((resolve) => setImmediate(resolve))
      expect(stalled.preempted).toBe(true)
    })

    it('takes no share when that would not make room, and none whose bytes are in', () => {
      const budget = new BodyBudget(100, 10)
      const a = budget.take(30)!
      const b = budget.take(70)!
      const stalled = arriving(a)
      const inB = arriving(b)
      stalled.behind = true
      inB.behind = true
      b.arrived()
      expect(budget.take(50)).toBeUndefined() // freeing a's 30 is not enough beside b's 70
      expect(a.bytes).toBe(30)
      expect(budget.take(30)?.bytes).toBe(30)
      expect(a.bytes).toBe(0)
    })

    it('makes room for a waiting message first, in line: a newcomer never passes it', () => {
      const budget = new BodyBudget(100, 10)
      const a = budget.take(80)!
      const stalled = arriving(a)
      const granted: string[] = []
      budget.acquire(60, () => granted.push('waiting'))
      expect(granted).toEqual([])
      stalled.behind = true
      expect(budget.take(50)).toBeUndefined() // the waiting message gets a's room, and 60 + 50 do not fit
      expect(granted).toEqual(['waiting'])
      expect(budget.take(40)?.bytes).toBe(40)
      expect(budget.state.heldBytes).toBe(100)
    })
  })
})
