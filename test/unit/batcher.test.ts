import { getEventListeners } from 'node:events'
import { describe, expect, it } from 'vitest'
import { Batcher, decideBatch, pickRunner, type BatchPolicy, type Clock, type QueueView } from '../../src/core/batcher.js'
import { ServiceError } from '../../src/errors.js'
import { FakeClock } from '../helpers/fake-clock.js'

/** Lets resolved promises and the batcher's continuations run; no time passes on the fake clock. */
async function settle(): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve))
}

interface Deferred<T> {
  promise: Promise<T>
  resolve(value: T): void
  reject(err: unknown): void
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void
  let reject!: (err: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

/**
 * An execute whose batches finish only when the test says so. `calls` records the exact inputs of
 * every batch; finish(i) answers batch i by echoing each input × 10 (so mix-ups show).
 */
function manualExecute() {
  const calls: number[][] = []
  const runners: number[] = []
  const pending: Deferred<number[]>[] = []
  const execute = (inputs: number[], runner: number): Promise<number[]> => {
    calls.push([...inputs])
    runners.push(runner)
    const d = deferred<number[]>()
    pending.push(d)
    return d.promise
  }
  return {
    calls,
    runners,
    execute,
    finish(i: number, outputs?: number[]) {
      pending[i]!.resolve(outputs ?? calls[i]!.map((x) => x * 10))
    },
    fail(i: number, err: unknown) {
      pending[i]!.reject(err)
    }
  }
}

/** An execute that answers at once, echoing each input × 10. */
function echoExecute() {
  const calls: number[][] = []
  const execute = async (inputs: number[]): Promise<number[]> => {
    calls.push([...inputs])
    return inputs.map((x) => x * 10)
  }
  return { calls, execute }
}

const POLICY: BatchPolicy = { maxBatchSize: 4, maxQueueDelayMs: 5, maxQueueSize: 100 }

/** A batcher of one runner under POLICY on a fake clock, with the execute whose calls the test reads. */
function oneRunner<E extends { execute: (inputs: number[], runner: number) => Promise<number[]> }>(exec: E) {
  const clock = new FakeClock()
  return { clock, exec, b: new Batcher({ policy: POLICY, runners: 1, execute: exec.execute, clock }) }
}

function caught(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => 'resolved',
    (err: unknown) => err
  )
}

describe('decideBatch', () => {
  const policy: BatchPolicy = { maxBatchSize: 8, maxQueueDelayMs: 10, maxQueueSize: 100 }
  const q = (length: number, oldestEnqueuedAt: number, idleCapacity: number): QueueView => ({ length, oldestEnqueuedAt, idleCapacity })

  it.each([
    ['empty queue waits for an event', q(0, 0, 8), 100, { run: false, waitMs: undefined }],
    ['no idle runner waits for an event, even when full', q(20, 0, 0), 100, { run: false, waitMs: undefined }],
    ['no idle runner waits for an event, even when overdue', q(3, 0, 0), 1000, { run: false, waitMs: undefined }],
    ['exactly maxBatchSize runs at once', q(8, 100, 8), 100, { run: true, size: 8 }],
    ['more than maxBatchSize runs maxBatchSize', q(30, 100, 8), 100, { run: true, size: 8 }],
    ['young partial batch waits the rest of the delay', q(3, 100, 8), 104, { run: false, waitMs: 6 }],
    ['just-enqueued item waits the whole delay', q(1, 100, 8), 100, { run: false, waitMs: 10 }],
    ['partial batch runs exactly at the delay, sized to the queue', q(3, 100, 8), 110, { run: true, size: 3 }],
    ['overdue partial batch runs, sized to the queue', q(5, 100, 8), 500, { run: true, size: 5 }],
    ['an idle runner that takes 4 runs 4 at once: it is full', q(6, 100, 4), 100, { run: true, size: 4 }],
    ["a queue under the idle runner's capacity waits the delay", q(3, 100, 4), 104, { run: false, waitMs: 6 }]
  ])('%s', (_name, view, now, expected) => {
    expect(decideBatch(view, now, policy)).toEqual(expected)
  })

  it('zero delay runs whatever is queued at once', () => {
    expect(decideBatch(q(2, 100, 8), 100, { ...policy, maxQueueDelayMs: 0 })).toEqual({ run: true, size: 2 })
  })

  it('is pure: the same inputs give the same answer and the view is untouched', () => {
    const view = Object.freeze(q(3, 100, 8))
    expect(decideBatch(view, 105, policy)).toEqual(decideBatch(view, 105, policy))
    expect(view).toEqual({ length: 3, oldestEnqueuedAt: 100, idleCapacity: 8 })
  })
})

describe('pickRunner', () => {
  it.each([
    ['the smallest idle runner that holds the batch', [16, 128], [true, true], 5, 0],
    ['a batch too big for the small one goes to the large one', [16, 128], [true, true], 17, 1],
    ['the small one busy: the large one takes a small batch (no idle runner waits)', [16, 128], [false, true], 1, 1],
    ['none holds it: the largest idle one (the batcher never asks this, but it must not fail)', [16, 128], [true, false], 40, 0],
    ['equal runners: the first idle one', [8, 8, 8], [false, true, true], 8, 1],
    ['none idle', [8, 8], [false, false], 1, -1]
  ])('%s', (_name, capacities, idle, size, expected) => {
    expect(pickRunner(capacities, idle, size)).toBe(expected)
  })
})

// Fake time only: a test that waits is a hang, so fail fast instead of at the suite's ONNX-sized timeout.
describe('Batcher', { timeout: 5000 }, () => {
  it('runs a full batch as soon as maxBatchSize items are queued, without waiting', async () => {
    const { clock, exec, b } = oneRunner(echoExecute())
    const results = [1, 2, 3].map((x) => b.submit(x))
    expect(exec.calls).toEqual([])
    expect(b.pending).toBe(3)
    expect(clock.pendingTimers).toBe(1)
    results.push(b.submit(4))
    expect(exec.calls).toEqual([[1, 2, 3, 4]])
    expect(b.pending).toBe(0)
    expect(clock.pendingTimers).toBe(0)
    const out = await Promise.all(results)
    expect(out.map((r) => r.output)).toEqual([10, 20, 30, 40])
    expect(out.map((r) => r.batchSize)).toEqual([4, 4, 4, 4])
    expect(out.map((r) => r.queueMs)).toEqual([0, 0, 0, 0])
  })

  it('runs a partial batch exactly when the oldest has waited maxQueueDelayMs, not before', async () => {
    const { clock, exec, b } = oneRunner(echoExecute())
    const p1 = b.submit(1)
    clock.advance(2)
    const p2 = b.submit(2)
    clock.advance(2.999)
    expect(exec.calls).toEqual([])
    clock.advance(0.001)
    expect(exec.calls).toEqual([[1, 2]])
    const [r1, r2] = await Promise.all([p1, p2])
    expect(r1).toEqual({ output: 10, queueMs: 5, batchSize: 2 })
    expect(r2.output).toBe(20)
    expect(r2.queueMs).toBeCloseTo(3, 9)
  })

  it('with delay 0 (the default) an idle session never waits: one request runs alone at once; requests that arrive while every session is busy form the next batch', async () => {
    const clock = new FakeClock()
    const exec = manualExecute()
    const b = new Batcher({ policy: { ...POLICY, maxQueueDelayMs: 0 }, runners: 2, execute: exec.execute, clock })
    const first = b.submit(1)
    expect(exec.calls).toEqual([[1]])
    const second = b.submit(2)
    expect(exec.calls).toEqual([[1], [2]])
    const waiting = [3, 4, 5, 6, 7].map((x) => b.submit(x))
    expect(exec.calls).toHaveLength(2)
    expect(clock.pendingTimers).toBe(0)
    clock.advance(7)
    exec.finish(0)
    expect((await first).queueMs).toBe(0)
    await settle()
    // The freed session takes a full batch of what piled up, the rest waits for the next free one.
    expect(exec.calls).toEqual([[1], [2], [3, 4, 5, 6]])
    exec.finish(1)
    expect((await second).batchSize).toBe(1)
    await settle()
    expect(exec.calls[3]).toEqual([7])
    exec.finish(2)
    exec.finish(3)
    expect((await Promise.all(waiting)).map((r) => r.output)).toEqual([30, 40, 50, 60, 70])
  })

  it('together(): the items one request submits at once form one batch on an idle session (they ran as 1 + the rest), split only by maxBatchSize', async () => {
    const clock = new FakeClock()
    const exec = manualExecute()
    const b = new Batcher({ policy: { ...POLICY, maxQueueDelayMs: 0 }, runners: 2, execute: exec.execute, clock })
    const request = b.together(() => [1, 2, 3].map((x) => b.submit(x)))
    expect(exec.calls).toEqual([[1, 2, 3]])
    const overfull = b.together(() => [4, 5, 6, 7, 8].map((x) => b.submit(x)))
    expect(exec.calls).toEqual([
      [1, 2, 3],
      [4, 5, 6, 7]
    ])
    exec.finish(0)
    exec.finish(1)
    await settle()
    expect(exec.calls[2]).toEqual([8])
    exec.finish(2)
    expect((await Promise.all(request)).map((r) => r.batchSize)).toEqual([3, 3, 3])
    expect((await Promise.all(overfull)).map((r) => r.output)).toEqual([40, 50, 60, 70, 80])
    // A submit that throws inside together() still lets what was queued run.
    expect(() =>
      b.together(() => [
        b.submit(9),
        (() => {
          throw new Error('boom')
        })()
      ])
    ).toThrow('boom')
    expect(exec.calls[3]).toEqual([9])
  })

  it("runners of fixed sizes: a batch goes to the smallest idle runner that holds it and never exceeds the idle runner's size", async () => {
    const clock = new FakeClock()
    const exec = manualExecute()
    const b = new Batcher({
      policy: { maxBatchSize: 8, maxQueueDelayMs: 0, maxQueueSize: 100 },
      runners: 2,
      runnerCapacities: [2, 8],
      execute: exec.execute,
      clock
    })
    const first = b.submit(1)
    // One request, both idle: the small runner takes it, the large one stays free.
    expect(exec.runners).toEqual([0])
    const more = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11].map((x) => b.submit(x))
    // The large runner was idle when 2 arrived; the rest piled up behind both.
    expect(exec.calls).toEqual([[1], [2]])
    expect(exec.runners).toEqual([0, 1])
    exec.finish(0)
    await first
    await settle()
    // The small runner is free again: it takes 2, its size, not 8.
    expect(exec.calls[2]).toEqual([3, 4])
    expect(exec.runners[2]).toBe(0)
    exec.finish(1)
    await settle()
    expect(exec.calls[3]).toEqual([5, 6, 7, 8, 9, 10, 11])
    expect(exec.runners[3]).toBe(1)
    exec.finish(2)
    exec.finish(3)
    expect((await Promise.all(more)).map((r) => r.output)).toEqual([20, 30, 40, 50, 60, 70, 80, 90, 100, 110])
  })

  it('abandonQueued (the drain timeout): queued items are refused SHUTTING_DOWN, the running batch finishes, later submits are refused', async () => {
    const exec = manualExecute()
    const b = new Batcher({ policy: { ...POLICY, maxQueueDelayMs: 0 }, runners: 1, execute: exec.execute, clock: new FakeClock() })
    const running = b.submit(1)
    const queued = [2, 3].map((x) => caught(b.submit(x)))
    expect(b.pending).toBe(2)
    b.abandonQueued()
    for (const err of await Promise.all(queued)) {
      expect(err).toBeInstanceOf(ServiceError)
      expect((err as ServiceError).code).toBe('SHUTTING_DOWN')
      expect((err as ServiceError).retryAfterSeconds).toBe(1)
    }
    expect(b.pending).toBe(0)
    expect(((await caught(b.submit(4))) as ServiceError).code).toBe('SHUTTING_DOWN')
    let drained = false
    void b.drained().then(() => (drained = true))
    await settle()
    expect(drained).toBe(false)
    exec.finish(0)
    expect((await running).output).toBe(10)
    await settle()
    expect(drained).toBe(true)
    expect(exec.calls).toEqual([[1]])
  })

  it('refuses runner capacities that do not match the runners', () => {
    const execute = async (inputs: number[]): Promise<number[]> => inputs
    expect(() => new Batcher({ policy: POLICY, runners: 2, runnerCapacities: [4], execute })).toThrow(/runnerCapacities/)
    expect(() => new Batcher({ policy: POLICY, runners: 1, runnerCapacities: [0], execute })).toThrow(/runnerCapacities/)
  })

  it('keeps a single batch timer while items accumulate, and none once the queue is empty', async () => {
    const { clock, exec, b } = oneRunner(echoExecute())
    void b.submit(1)
    clock.advance(1)
    void b.submit(2)
    void b.submit(3)
    expect(clock.pendingTimers).toBe(1)
    expect(clock.timersSet).toBe(1)
    clock.advance(4)
    expect(exec.calls).toEqual([[1, 2, 3]])
    expect(clock.pendingTimers).toBe(0)
    await settle()
    expect(clock.pendingTimers).toBe(0)
  })

  it('sizes batches to what is queued and splits an overfull queue into maxBatchSize batches', async () => {
    const { clock, exec, b } = oneRunner(manualExecute())
    const results = [1, 2, 3, 4, 5, 6].map((x) => b.submit(x))
    expect(exec.calls).toEqual([[1, 2, 3, 4]])
    exec.finish(0)
    await settle()
    expect(exec.calls).toEqual([[1, 2, 3, 4]])
    clock.advance(5)
    expect(exec.calls).toEqual([
      [1, 2, 3, 4],
      [5, 6]
    ])
    exec.finish(1)
    const out = await Promise.all(results)
    expect(out.map((r) => r.batchSize)).toEqual([4, 4, 4, 4, 2, 2])
  })

  it('with one runner, accumulates while it is busy and runs the accumulated batch when it frees', async () => {
    const clock = new FakeClock()
    const exec = manualExecute()
    const batches: { size: number; queueMs: number[] }[] = []
    const b = new Batcher({ policy: POLICY, runners: 1, execute: exec.execute, clock, onBatch: (info) => batches.push(info) })
    const first = b.submit(1)
    clock.advance(5)
    expect(exec.calls).toEqual([[1]])
    expect(b.inFlight).toBe(1)
    const waiting = [2, 3, 4].map((x) => {
      clock.advance(10)
      return b.submit(x)
    })
    clock.advance(100)
    expect(exec.calls).toEqual([[1]])
    expect(b.pending).toBe(3)
    exec.finish(0)
    await settle()
    expect(exec.calls).toEqual([[1], [2, 3, 4]])
    expect(batches).toEqual([
      { size: 1, queueMs: [5] },
      { size: 3, queueMs: [120, 110, 100] }
    ])
    exec.finish(1)
    expect((await first).output).toBe(10)
    const out = await Promise.all(waiting)
    expect(out.map((r) => [r.output, r.queueMs, r.batchSize])).toEqual([
      [20, 120, 3],
      [30, 110, 3],
      [40, 100, 3]
    ])
  })

  it('with two runners, keeps two batches in flight and queues behind them', async () => {
    const clock = new FakeClock()
    const exec = manualExecute()
    const b = new Batcher({ policy: POLICY, runners: 2, execute: exec.execute, clock })
    const all = [1, 2, 3, 4, 5, 6, 7, 8, 9].map((x) => b.submit(x))
    expect(exec.calls).toEqual([
      [1, 2, 3, 4],
      [5, 6, 7, 8]
    ])
    expect(b.inFlight).toBe(2)
    expect(b.pending).toBe(1)
    clock.advance(50)
    expect(exec.calls.length).toBe(2)
    exec.finish(1)
    await settle()
    expect(exec.calls[2]).toEqual([9])
    expect(b.inFlight).toBe(2)
    exec.finish(0)
    exec.finish(2)
    const out = await Promise.all(all)
    expect(out.map((r) => r.output)).toEqual([10, 20, 30, 40, 50, 60, 70, 80, 90])
  })

  it('gives each submit its own output, never another request’s', async () => {
    const clock = new FakeClock()
    const b = new Batcher<string, string>({
      policy: { maxBatchSize: 8, maxQueueDelayMs: 5, maxQueueSize: 100 },
      runners: 1,
      clock,
      execute: async (inputs) => inputs.map((s) => s.toUpperCase())
    })
    const names = ['ant', 'bee', 'cat', 'dog', 'eel']
    const results = names.map((n) => b.submit(n))
    clock.advance(5)
    const out = await Promise.all(results)
    expect(out.map((r) => r.output)).toEqual(['ANT', 'BEE', 'CAT', 'DOG', 'EEL'])
  })

  it('rejects every item of a failed batch with its error, and later batches still run', async () => {
    const { clock, exec, b } = oneRunner(manualExecute())
    const failed = [1, 2].map((x) => caught(b.submit(x)))
    clock.advance(5)
    const later = b.submit(3)
    const boom = new Error('worker crashed')
    exec.fail(0, boom)
    expect(await Promise.all(failed)).toEqual([boom, boom])
    clock.advance(5)
    expect(exec.calls).toEqual([[1, 2], [3]])
    exec.finish(1)
    expect((await later).output).toBe(30)
    expect(b.inFlight).toBe(0)
  })

  it('treats an execute that throws synchronously like a rejection', async () => {
    const clock = new FakeClock()
    const boom = new Error('sync throw')
    let calls = 0
    const b = new Batcher<number, number>({
      policy: { ...POLICY, maxQueueDelayMs: 0 },
      runners: 1,
      clock,
      execute: () => {
        calls++
        throw boom
      }
    })
    expect(await caught(b.submit(1))).toBe(boom)
    expect(await caught(b.submit(2))).toBe(boom)
    expect(calls).toBe(2)
  })

  it('rejects the whole batch with INTERNAL when execute returns the wrong number of outputs', async () => {
    const { clock, exec, b } = oneRunner(manualExecute())
    const results = [1, 2, 3].map((x) => caught(b.submit(x)))
    clock.advance(5)
    exec.finish(0, [10, 20])
    const errors = await Promise.all(results)
    for (const err of errors) {
      expect(err).toBeInstanceOf(ServiceError)
      expect((err as ServiceError).code).toBe('INTERNAL')
    }
    const next = b.submit(4)
    clock.advance(5)
    expect(exec.calls).toEqual([[1, 2, 3], [4]])
    exec.finish(1)
    expect((await next).output).toBe(40)
  })

  it('rejects QUEUE_FULL with a retry hint of at least a second once maxQueueSize items wait', async () => {
    const clock = new FakeClock()
    const exec = manualExecute()
    const policy = { maxBatchSize: 2, maxQueueDelayMs: 5, maxQueueSize: 3 }
    const b = new Batcher({ policy, runners: 1, execute: exec.execute, clock })
    void b.submit(0)
    void b.submit(1)
    expect(exec.calls).toEqual([[0, 1]])
    const queued = [2, 3, 4].map((x) => b.submit(x))
    expect(b.pending).toBe(3)
    const err = await caught(b.submit(5))
    expect(err).toBeInstanceOf(ServiceError)
    expect((err as ServiceError).code).toBe('QUEUE_FULL')
    expect((err as ServiceError).retryAfterSeconds).toBe(1)
    expect(b.pending).toBe(3)

    // Slow batches make the hint longer: 3 queued at 2 per batch plus one running, 4 s each.
    clock.advance(4000)
    exec.finish(0)
    await settle()
    expect(exec.calls).toEqual([
      [0, 1],
      [2, 3]
    ])
    void b.submit(6)
    void b.submit(7)
    const slow = (await caught(b.submit(8))) as ServiceError
    expect(slow.code).toBe('QUEUE_FULL')
    expect(slow.retryAfterSeconds).toBe(Math.ceil(((2 + 1) * 4000 + 5) / 1000))
    expect(exec.calls).toEqual([
      [0, 1],
      [2, 3]
    ])
    void queued
  })

  it('rejects DEADLINE_EXCEEDED when the deadline passes while queued, and never runs the item', async () => {
    const { clock, exec, b } = oneRunner(manualExecute())
    const blocker = b.submit(0)
    clock.advance(5)
    const doomed = caught(b.submit(1, { deadlineAt: clock.now() + 20 }))
    const kept = b.submit(2, { deadlineAt: clock.now() + 1000 })
    clock.advance(20)
    const err = await doomed
    expect(err).toBeInstanceOf(ServiceError)
    expect((err as ServiceError).code).toBe('DEADLINE_EXCEEDED')
    expect(b.pending).toBe(1)
    exec.finish(0)
    await settle()
    expect(exec.calls).toEqual([[0], [2]])
    exec.finish(1)
    await Promise.all([blocker, kept])
    expect(clock.pendingTimers).toBe(0)
  })

  it('rejects an already-passed deadline at submit', async () => {
    const { clock, exec, b } = oneRunner(echoExecute())
    const err = await caught(b.submit(1, { deadlineAt: clock.now() }))
    expect((err as ServiceError).code).toBe('DEADLINE_EXCEEDED')
    expect(b.pending).toBe(0)
    clock.advance(100)
    expect(exec.calls).toEqual([])
  })

  it('drops an item whose deadline passed but whose timer has not fired when its batch forms', async () => {
    // A clock whose timers never fire on their own, like real timers running late.
    const clock = new FakeClock()
    const lateClock: Clock = { now: () => clock.now(), setTimer: () => 0, clearTimer: () => {} }
    const exec = echoExecute()
    const b = new Batcher({ policy: POLICY, runners: 1, execute: exec.execute, clock: lateClock })
    const late = caught(b.submit(1, { deadlineAt: clock.now() + 3 }))
    const fine = [2, 3].map((x) => b.submit(x))
    clock.advance(4)
    const last = b.submit(4)
    expect(exec.calls).toEqual([[2, 3, 4]])
    expect(((await late) as ServiceError).code).toBe('DEADLINE_EXCEEDED')
    expect((await Promise.all([...fine, last])).map((r) => r.batchSize)).toEqual([3, 3, 3])
  })

  it('rejects CLIENT_CLOSED on abort while queued, never runs the item, and removes its listener', async () => {
    const { clock, exec, b } = oneRunner(echoExecute())
    const ac = new AbortController()
    const aborted = caught(b.submit(1, { signal: ac.signal }))
    const kept = b.submit(2)
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(1)
    ac.abort()
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0)
    expect(b.pending).toBe(1)
    expect(clock.pendingTimers).toBe(1)
    const err = await aborted
    expect(err).toBeInstanceOf(ServiceError)
    expect((err as ServiceError).code).toBe('CLIENT_CLOSED')
    clock.advance(5)
    expect(exec.calls).toEqual([[2]])
    expect((await kept).queueMs).toBe(5)
  })

  it('removes the abort listener when the item starts, and a later abort changes nothing', async () => {
    const { clock, exec, b } = oneRunner(manualExecute())
    const ac = new AbortController()
    const p = b.submit(7, { signal: ac.signal })
    clock.advance(5)
    expect(exec.calls).toEqual([[7]])
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0)
    ac.abort()
    exec.finish(0)
    expect((await p).output).toBe(70)
  })

  it('rejects at once when the signal is already aborted', async () => {
    const { clock, exec, b } = oneRunner(echoExecute())
    const err = await caught(b.submit(1, { signal: AbortSignal.abort() }))
    expect((err as ServiceError).code).toBe('CLIENT_CLOSED')
    clock.advance(100)
    expect(exec.calls).toEqual([])
  })

  it('keeps oldest-first timing right after the oldest item is cancelled', async () => {
    const { clock, exec, b } = oneRunner(echoExecute())
    const ac = new AbortController()
    void caught(b.submit(1, { signal: ac.signal }))
    clock.advance(3)
    const second = b.submit(2)
    ac.abort()
    clock.advance(2)
    expect(exec.calls).toEqual([])
    clock.advance(3)
    expect(exec.calls).toEqual([[2]])
    expect((await second).queueMs).toBe(5)
  })

  it('after close(), rejects new submits SHUTTING_DOWN and still runs what was queued, then drains', async () => {
    const { exec, b } = oneRunner(manualExecute())
    const queued = [1, 2, 3, 4, 5].map((x) => b.submit(x))
    let drained = false
    void b.drained().then(() => (drained = true))
    b.close()
    const err = await caught(b.submit(6))
    expect(err).toBeInstanceOf(ServiceError)
    expect((err as ServiceError).code).toBe('SHUTTING_DOWN')
    expect(exec.calls).toEqual([[1, 2, 3, 4]])
    exec.finish(0)
    await settle()
    // No new item can join after close, so the remainder runs without waiting out the delay.
    expect(exec.calls).toEqual([[1, 2, 3, 4], [5]])
    expect(drained).toBe(false)
    exec.finish(1)
    await settle()
    expect(drained).toBe(true)
    expect((await Promise.all(queued)).map((r) => r.output)).toEqual([10, 20, 30, 40, 50])
  })

  it('drained() resolves at once when idle, and only after queued and running work finishes', async () => {
    const { clock, exec, b } = oneRunner(manualExecute())
    await b.drained()
    const p = b.submit(1)
    let drained = false
    void b.drained().then(() => (drained = true))
    await settle()
    expect(drained).toBe(false)
    clock.advance(5)
    await settle()
    expect(drained).toBe(false)
    exec.finish(0)
    await p
    await settle()
    expect(drained).toBe(true)
  })

  it('clears the batch timer when the only queued item is cancelled', () => {
    const { clock, b } = oneRunner(echoExecute())
    const ac = new AbortController()
    void caught(b.submit(1, { signal: ac.signal }))
    expect(clock.pendingTimers).toBe(1)
    ac.abort()
    expect(clock.pendingTimers).toBe(0)
  })

  it('drained() resolves when the last queued item is cancelled', async () => {
    const { exec, b } = oneRunner(echoExecute())
    const ac = new AbortController()
    void caught(b.submit(1, { signal: ac.signal }))
    let drained = false
    void b.drained().then(() => (drained = true))
    ac.abort()
    await settle()
    expect(drained).toBe(true)
    expect(exec.calls).toEqual([])
  })

  it('rejects a policy or runner count that cannot work, saying what to fix', () => {
    const execute = async (inputs: number[]) => inputs
    expect(() => new Batcher({ policy: POLICY, runners: 0, execute })).toThrow(/runners must be an integer ≥ 1/)
    expect(() => new Batcher({ policy: { ...POLICY, maxBatchSize: 0 }, runners: 1, execute })).toThrow(/maxBatchSize/)
    expect(() => new Batcher({ policy: { ...POLICY, maxQueueDelayMs: -1 }, runners: 1, execute })).toThrow(/maxQueueDelayMs/)
  })

  it('handles a queue that wraps around its ring many times without losing order', async () => {
    const clock = new FakeClock()
    const exec = manualExecute()
    const b = new Batcher({ policy: { maxBatchSize: 3, maxQueueDelayMs: 1, maxQueueSize: 1000 }, runners: 1, execute: exec.execute, clock })
    const results: Promise<{ output: number }>[] = []
    let next = 0
    for (let round = 0; round < 30; round++) {
      for (let k = 0; k < 7; k++) results.push(b.submit(next++))
      clock.advance(1)
      exec.finish(exec.calls.length - 1)
      await settle()
    }
    for (let guard = 0; b.pending > 0 || b.inFlight > 0; guard++) {
      if (guard > 1000) throw new Error('the queue never drained')
      clock.advance(1)
      if (b.inFlight > 0) exec.finish(exec.calls.length - 1)
      await settle()
    }
    expect(exec.calls.flat()).toEqual(Array.from({ length: next }, (_, i) => i))
    expect((await Promise.all(results)).map((r) => r.output)).toEqual(Array.from({ length: next }, (_, i) => i * 10))
  })
})

describe('Batcher priorities', { timeout: 5000 }, () => {
  const LEVELS: BatchPolicy = { maxBatchSize: 2, maxQueueDelayMs: 0, maxQueueSize: 100, priorityLevels: 3 }

  /** A batcher whose one runner is busy with item 0, so later submits queue until finish(0). */
  function busyBatcher(policy: BatchPolicy) {
    const clock = new FakeClock()
    const exec = manualExecute()
    const b = new Batcher({ policy, runners: 1, execute: exec.execute, clock })
    const first = b.submit(0)
    expect(exec.calls).toEqual([[0]])
    return { clock, exec, b, first }
  }

  it('takes the highest level first (1 is the highest), FIFO within a level, whatever the submit order', async () => {
    const { exec, b } = busyBatcher(LEVELS)
    const submitted = [
      [31, 3],
      [32, 3],
      [11, 1],
      [21, 2],
      [12, 1],
      [33, 3],
      [22, 2]
    ].map(([input, priority]) => b.submit(input!, { priority }))
    for (let i = 0; i < 5; i++) {
      exec.finish(i)
      await settle()
    }
    expect(exec.calls).toEqual([[0], [11, 12], [21, 22], [31, 32], [33]])
    expect((await Promise.all(submitted)).map((r) => r.output)).toEqual([310, 320, 110, 210, 120, 330, 220])
  })

  it('puts priority 0, an absent priority and one above the levels at the default level: the lowest unless the policy names one', async () => {
    const lowest = busyBatcher(LEVELS)
    for (const [input, priority] of [
      [1, undefined],
      [2, 0],
      [3, 7],
      [4, 2]
    ] as const)
      void lowest.b.submit(input, { priority })
    lowest.exec.finish(0)
    await settle()
    expect(lowest.exec.calls[1]).toEqual([4, 1])

    const middle = busyBatcher({ ...LEVELS, defaultPriorityLevel: 2 })
    for (const [input, priority] of [
      [1, 3],
      [2, undefined],
      [3, 1]
    ] as const)
      void middle.b.submit(input, { priority })
    middle.exec.finish(0)
    await settle()
    expect(middle.exec.calls[1]).toEqual([3, 2])
  })

  it('with priorityLevels 0 (the default) ignores priorities: one FIFO queue', async () => {
    const { exec, b } = busyBatcher({ ...LEVELS, priorityLevels: 0 })
    for (const [input, priority] of [
      [1, 3],
      [2, 1],
      [3, 2]
    ])
      void b.submit(input!, { priority })
    exec.finish(0)
    await settle()
    exec.finish(1)
    await settle()
    expect(exec.calls).toEqual([[0], [1, 2], [3]])
  })

  it('times the wait for a fuller batch from the oldest item at any level, and that batch still takes the higher level first', async () => {
    const clock = new FakeClock()
    const exec = echoExecute()
    const b = new Batcher({ policy: { ...LEVELS, maxBatchSize: 4, maxQueueDelayMs: 10 }, runners: 1, execute: exec.execute, clock })
    const low = b.submit(30, { priority: 3 })
    clock.advance(6)
    const high = b.submit(10, { priority: 1 })
    clock.advance(3.999)
    expect(exec.calls).toEqual([])
    clock.advance(0.001)
    expect(exec.calls).toEqual([[10, 30]])
    expect((await low).queueMs).toBe(10)
    expect((await high).queueMs).toBeCloseTo(4, 9)
  })

  it('keeps the oldest-first timing right when the oldest item, at a lower level, is cancelled', async () => {
    const clock = new FakeClock()
    const exec = echoExecute()
    const b = new Batcher({ policy: { ...LEVELS, maxBatchSize: 4, maxQueueDelayMs: 10 }, runners: 1, execute: exec.execute, clock })
    const ac = new AbortController()
    const low = caught(b.submit(30, { priority: 3, signal: ac.signal }))
    clock.advance(4)
    void b.submit(10, { priority: 1 })
    ac.abort()
    expect(((await low) as ServiceError).code).toBe('CLIENT_CLOSED')
    clock.advance(9.999)
    expect(exec.calls).toEqual([])
    clock.advance(0.001)
    expect(exec.calls).toEqual([[10]])
  })

  it('counts maxQueueSize over every level', async () => {
    const { b } = busyBatcher({ ...LEVELS, maxQueueSize: 2 })
    void b.submit(1, { priority: 1 })
    void b.submit(2, { priority: 3 })
    expect(((await caught(b.submit(3, { priority: 1 }))) as ServiceError).code).toBe('QUEUE_FULL')
  })

  it('refuses priority settings that cannot work, saying what to fix', () => {
    const execute = async (inputs: number[]) => inputs
    expect(() => new Batcher({ policy: { ...LEVELS, priorityLevels: -1 }, runners: 1, execute })).toThrow(/priorityLevels/)
    expect(() => new Batcher({ policy: { ...LEVELS, defaultPriorityLevel: 4 }, runners: 1, execute })).toThrow(
      /defaultPriorityLevel.*1 to priorityLevels \(3\)/
    )
  })
})
