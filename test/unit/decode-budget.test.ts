import { describe, expect, it } from 'vitest'
import {
  DecodeBudget,
  decideAdmission,
  largestDecodeBytes,
  smallDecodeBytes,
  type BudgetView,
  type DecodeLimits,
  type DecodePermit
} from '../../src/core/decode-budget.js'
import { isServiceError, type ErrorCode } from '../../src/errors.js'
import { FakeClock } from '../helpers/fake-clock.js'

/** The decode budget: its pure decision, then the queue around it on a fake clock. Unit tier. */

const MiB = 2 ** 20
/** Two slots, 800 MiB: small decodes up to 100 MiB, large ones up to 700 MiB together. */
const LIMITS: DecodeLimits = { maxConcurrent: 2, budgetBytes: 800 * MiB, maxQueued: 4 }

const idle: BudgetView = {
  running: 0,
  largeRunning: 0,
  bytesInFlight: 0,
  largeBytesInFlight: 0,
  smallHead: undefined,
  largeHead: undefined
}

describe('decideAdmission (pure)', () => {
  it('derives the lanes from the limits: small up to 1/8 of the budget, one decode at most 7/8 of it', () => {
    expect(smallDecodeBytes(LIMITS)).toBe(100 * MiB)
    expect(largestDecodeBytes(LIMITS)).toBe(700 * MiB)
    // With one slot there is no small lane to keep room for.
    expect(largestDecodeBytes({ ...LIMITS, maxConcurrent: 1 })).toBe(800 * MiB)
  })

  it('nothing waiting: nothing to start', () => {
    expect(decideAdmission(idle, LIMITS)).toBeUndefined()
  })

  it('starts the head of a lane when a slot and the bytes are free', () => {
    expect(decideAdmission({ ...idle, smallHead: { cost: 10 * MiB, seq: 0 } }, LIMITS)).toBe('small')
    expect(decideAdmission({ ...idle, largeHead: { cost: 500 * MiB, seq: 0 } }, LIMITS)).toBe('large')
  })

  it('never more than maxConcurrent at once', () => {
    const full = { ...idle, running: 2, bytesInFlight: 20 * MiB, smallHead: { cost: 1, seq: 5 } }
    expect(decideAdmission(full, LIMITS)).toBeUndefined()
  })

  it('never more bytes in flight than the budget', () => {
    const smalls = { ...idle, running: 1, bytesInFlight: 750 * MiB, smallHead: { cost: 60 * MiB, seq: 5 } }
    expect(decideAdmission(smalls, LIMITS)).toBeUndefined()
    expect(decideAdmission({ ...smalls, smallHead: { cost: 50 * MiB, seq: 5 } }, LIMITS)).toBe('small')
  })

  it('large decodes keep one slot and one small decode worth of bytes free', () => {
    const oneLarge = { ...idle, running: 1, largeRunning: 1, bytesInFlight: 300 * MiB, largeBytesInFlight: 300 * MiB }
    // The second slot is the small lane's: another large decode waits, however little it needs.
    expect(decideAdmission({ ...oneLarge, largeHead: { cost: 101 * MiB, seq: 1 } }, LIMITS)).toBeUndefined()
    expect(decideAdmission({ ...oneLarge, smallHead: { cost: 100 * MiB, seq: 2 } }, LIMITS)).toBe('small')
    // With more slots, large decodes share all bytes but the small lane's 100 MiB.
    const three = { ...LIMITS, maxConcurrent: 3 }
    expect(decideAdmission({ ...oneLarge, largeHead: { cost: 400 * MiB, seq: 1 } }, three)).toBe('large')
    expect(decideAdmission({ ...oneLarge, largeHead: { cost: 401 * MiB, seq: 1 } }, three)).toBeUndefined()
  })

  it('between lanes the older head goes first', () => {
    const both = { ...idle, smallHead: { cost: 1 * MiB, seq: 7 }, largeHead: { cost: 200 * MiB, seq: 3 } }
    expect(decideAdmission(both, LIMITS)).toBe('large')
    expect(decideAdmission({ ...both, smallHead: { cost: 1 * MiB, seq: 2 } }, LIMITS)).toBe('small')
  })

  it('a small decode passes an older large one that other large decodes keep out', () => {
    const view = {
      ...idle,
      running: 1,
      largeRunning: 1,
      bytesInFlight: 600 * MiB,
      largeBytesInFlight: 600 * MiB,
      largeHead: { cost: 200 * MiB, seq: 1 },
      smallHead: { cost: 5 * MiB, seq: 2 }
    }
    expect(decideAdmission(view, LIMITS)).toBe('small')
  })

  it('but not one that only the small decodes running keep out: they drain, then it starts (no starvation)', () => {
    const three = { ...LIMITS, maxConcurrent: 3 }
    const view = {
      ...idle,
      running: 3,
      bytesInFlight: 30 * MiB,
      largeHead: { cost: 200 * MiB, seq: 1 },
      smallHead: { cost: 5 * MiB, seq: 9 }
    }
    expect(decideAdmission(view, three)).toBeUndefined()
    // One small decode finished: the slot goes to the older large decode, not to the younger small one.
    expect(decideAdmission({ ...view, running: 2, bytesInFlight: 20 * MiB }, three)).toBe('large')
  })
})

/** Resolves with the permit or the code of the ServiceError it rejected with, once settled. */
function track(promise: Promise<DecodePermit>): { permit?: DecodePermit; code?: ErrorCode; retryAfter?: number } {
  const state: { permit?: DecodePermit; code?: ErrorCode; retryAfter?: number } = {}
  promise.then(
    (permit) => (state.permit = permit),
    (err: unknown) => {
      if (!isServiceError(err)) throw err
      state.code = err.code
      state.retryAfter = err.retryAfterSeconds
    }
  )
  return state
}

const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

describe('DecodeBudget (fake clock)', () => {
  it('admits up to the slots, queues the rest in order, and starts the next on release', async () => {
    const budget = new DecodeBudget(LIMITS, new FakeClock(0))
    const a = track(budget.acquire(10 * MiB))
    const b = track(budget.acquire(10 * MiB))
    const c = track(budget.acquire(10 * MiB))
    const d = track(budget.acquire(10 * MiB))
    await settle()
    expect([!!a.permit, !!b.permit, !!c.permit, !!d.permit]).toEqual([true, true, false, false])
    expect([budget.running, budget.queued, budget.bytesInFlight]).toEqual([2, 2, 20 * MiB])
    a.permit!.release()
    await settle()
    expect([!!c.permit, !!d.permit]).toEqual([true, false])
    // A second release of the same permit changes nothing.
    a.permit!.release()
    await settle()
    expect(d.permit).toBeUndefined()
    b.permit!.release()
    c.permit!.release()
    await settle()
    d.permit!.release()
    expect([budget.running, budget.queued, budget.bytesInFlight, budget.started]).toEqual([0, 0, 0, 4])
  })

  it('refuses an image that could never fit, without queueing it: IMAGE_TOO_LARGE', async () => {
    const budget = new DecodeBudget(LIMITS, new FakeClock(0))
    const huge = track(budget.acquire(701 * MiB))
    await settle()
    expect(huge.code).toBe('IMAGE_TOO_LARGE')
    expect(budget.queued).toBe(0)
  })

  it('a full queue answers DECODE_QUEUE_FULL with a retry hint from the decodes measured', async () => {
    const clock = new FakeClock(0)
    const budget = new DecodeBudget({ ...LIMITS, maxQueued: 2 }, clock)
    const first = track(budget.acquire(600 * MiB))
    await settle()
    clock.advance(3_000)
    first.permit!.release()
    const running = [track(budget.acquire(600 * MiB)), track(budget.acquire(50 * MiB))]
    const queued = [track(budget.acquire(600 * MiB)), track(budget.acquire(600 * MiB))]
    const refused = track(budget.acquire(1 * MiB))
    await settle()
    expect(running.map((r) => !!r.permit)).toEqual([true, true])
    expect(queued.map((r) => r.permit ?? r.code)).toEqual([undefined, undefined])
    expect(refused.code).toBe('DECODE_QUEUE_FULL')
    // 4 decodes ahead over 2 slots at ~3 s each.
    expect(refused.retryAfter).toBe(6)
  })

  it('a queued decode whose deadline passes is withdrawn: DEADLINE_EXCEEDED, and its place is freed', async () => {
    const clock = new FakeClock(0)
    const budget = new DecodeBudget({ ...LIMITS, maxConcurrent: 1 }, clock)
    const running = track(budget.acquire(10 * MiB))
    const late = track(budget.acquire(10 * MiB, { deadlineAt: 500 }))
    const patient = track(budget.acquire(10 * MiB))
    await settle()
    clock.advance(499)
    await settle()
    expect(late.code).toBeUndefined()
    clock.advance(1)
    await settle()
    expect(late.code).toBe('DEADLINE_EXCEEDED')
    expect(budget.queued).toBe(1)
    running.permit!.release()
    await settle()
    expect(patient.permit).toBeDefined()
    expect(clock.pendingTimers).toBe(0)
  })

  it('a deadline already passed, or a client already gone, is refused at once', async () => {
    const clock = new FakeClock(0)
    clock.advance(1000)
    const budget = new DecodeBudget(LIMITS, clock)
    const gone = new AbortController()
    gone.abort()
    const a = track(budget.acquire(1 * MiB, { deadlineAt: 1000 }))
    const b = track(budget.acquire(1 * MiB, { signal: gone.signal }))
    await settle()
    expect([a.code, b.code]).toEqual(['DEADLINE_EXCEEDED', 'CLIENT_CLOSED'])
    expect(budget.running).toBe(0)
  })

  it('a large decode kept out only by small ones is not passed by younger small ones; a client that leaves the queue is withdrawn (CLIENT_CLOSED)', async () => {
    const clock = new FakeClock(0)
    const budget = new DecodeBudget({ ...LIMITS, maxConcurrent: 3 }, clock)
    const small1 = track(budget.acquire(10 * MiB))
    const small2 = track(budget.acquire(10 * MiB))
    const small3 = track(budget.acquire(10 * MiB))
    const client = new AbortController()
    // Only the running small decodes keep this one out, so younger small decodes must wait behind it.
    const large = track(budget.acquire(600 * MiB, { signal: client.signal, deadlineAt: 60_000 }))
    const younger = track(budget.acquire(10 * MiB))
    await settle()
    small1.permit!.release()
    await settle()
    expect(large.permit).toBeDefined()
    large.permit!.release()
    // Again, and this time the large decode's client leaves while it waits.
    const client2 = new AbortController()
    await settle()
    const again = track(budget.acquire(650 * MiB, { signal: client2.signal }))
    const last = track(budget.acquire(10 * MiB))
    await settle()
    expect([!!younger.permit, again.permit, last.permit]).toEqual([true, undefined, undefined])
    client2.abort()
    await settle()
    expect(again.code).toBe('CLIENT_CLOSED')
    expect(last.permit).toBeUndefined() // all three slots are busy: small2, small3, younger
    small2.permit!.release()
    await settle()
    expect(last.permit).toBeDefined()
    small3.permit!.release()
    younger.permit!.release()
    last.permit!.release()
    expect([budget.running, budget.queued, budget.bytesInFlight]).toEqual([0, 0, 0])
    expect(clock.pendingTimers).toBe(0)
  })

  it('small decodes keep flowing while large ones fill the queue (a burst of huge images does not hold up photos)', async () => {
    // The queue is full, but a decode that can start at once needs no place in it.
    const budget = new DecodeBudget({ ...LIMITS, maxQueued: 5 }, new FakeClock(0))
    const large = Array.from({ length: 6 }, () => track(budget.acquire(400 * MiB)))
    await settle()
    expect(large.filter((l) => l.permit !== undefined)).toHaveLength(1)
    for (let i = 0; i < 5; i++) {
      const photo = track(budget.acquire(20 * MiB))
      await settle()
      expect(photo.permit, `photo ${i}`).toBeDefined()
      photo.permit!.release()
    }
    expect(budget.queued).toBe(5)
    expect(large.filter((l) => l.code !== undefined)).toHaveLength(0)
    const seventh = track(budget.acquire(400 * MiB))
    await settle()
    expect(seventh.code).toBe('DECODE_QUEUE_FULL')
  })

  it('checks its limits', () => {
    expect(() => new DecodeBudget({ ...LIMITS, maxConcurrent: 0 })).toThrow(RangeError)
    expect(() => new DecodeBudget({ ...LIMITS, budgetBytes: 1.5 })).toThrow(RangeError)
  })
})
