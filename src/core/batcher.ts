import { abortCode, ServiceError } from '../errors.js'
import { Ring } from './ring.js'

/**
 * The dynamic batcher in front of a model's inference sessions. Two halves, kept apart as in
 * Triton's dynamic batch scheduler: `decideBatch` is the decision (pure, a function of the queue
 * and the time), `Batcher` is the loop around it (queue, one timer, runners, cancellation).
 * Batching comes from load: a batch forms only when a runner is idle, so while every session is
 * busy, requests pile up and the next batch takes them together.
 *
 * Priorities, as Triton's: with `priorityLevels` n > 0 the queue is n FIFO rings, level 1 the
 * highest; a batch takes items from the highest non-empty level first, FIFO within a level. A
 * request's priority 0, or one above n, means the model's `defaultPriorityLevel` (default: n, the
 * lowest, so that only requests that ask for it go ahead). The wait for a fuller batch is measured
 * from the oldest item at any level, so a low-priority item still runs within maxQueueDelayMs of
 * an idle runner; under sustained higher-priority load it waits (no ageing, as in Triton).
 */

export interface BatchPolicy {
  readonly maxBatchSize: number
  readonly maxQueueDelayMs: number
  readonly maxQueueSize: number
  /** Priority levels (1 = highest); 0 or absent: priorities off, one FIFO queue. */
  readonly priorityLevels?: number
  /** The level of a request that names none (priority 0); absent: the lowest level. */
  readonly defaultPriorityLevel?: number
}

export interface QueueView {
  /** Items waiting, cancelled ones not counted. */
  readonly length: number
  /** Clock time the oldest waiting item was submitted; meaningless when length is 0. */
  readonly oldestEnqueuedAt: number
  /** The largest batch an idle runner takes (a session with a fixed shape takes only its size); 0 when none is idle. */
  readonly idleCapacity: number
}

export type BatchDecision = { readonly run: true; readonly size: number } | { readonly run: false; readonly waitMs: number | undefined }

const WAIT_FOR_EVENT: BatchDecision = Object.freeze({ run: false, waitMs: undefined })

/**
 * Pure: run now (how many) or wait (how long; undefined = until something new happens — an
 * enqueue or a finished batch). Batches are sized to what is queued (the inference pool may pad
 * the run, not the batch), and never larger than an idle runner takes: a batch as large as that is
 * full and runs at once. Work-conserving with maxQueueDelayMs 0: an idle runner never waits.
 */
export function decideBatch(queue: QueueView, now: number, policy: BatchPolicy): BatchDecision {
  if (queue.length === 0 || queue.idleCapacity <= 0) return WAIT_FOR_EVENT
  const full = Math.min(policy.maxBatchSize, queue.idleCapacity)
  if (queue.length >= full) return { run: true, size: full }
  const runAt = queue.oldestEnqueuedAt + policy.maxQueueDelayMs
  if (now >= runAt) return { run: true, size: queue.length }
  return { run: false, waitMs: runAt - now }
}

/**
 * Pure: which idle runner takes a batch of `size` — the one with the smallest capacity that holds
 * it (so a small fixed-shape session takes a small batch and the large one stays free), else the
 * largest idle one; -1 when none is idle.
 */
export function pickRunner(capacities: readonly number[], idle: readonly boolean[], size: number): number {
  let fits = -1
  let largest = -1
  for (let i = 0; i < capacities.length; i++) {
    if (!idle[i]) continue
    const cap = capacities[i]!
    if (cap >= size && (fits < 0 || cap < capacities[fits]!)) fits = i
    if (largest < 0 || cap > capacities[largest]!) largest = i
  }
  return fits >= 0 ? fits : largest
}

/** Time and timers, injectable so tests drive the batcher with a fake clock. Times are in ms. */
export interface Clock {
  now(): number
  setTimer(fn: () => void, ms: number): unknown
  clearTimer(handle: unknown): void
}

/**
 * performance.now() and ordinary timers. Not unref'd on purpose: while work is queued the batch
 * timer must keep the process alive, or a queued request would never run.
 */
export const systemClock: Clock = Object.freeze({
  now: () => performance.now(),
  setTimer: (fn: () => void, ms: number): unknown => setTimeout(fn, ms),
  clearTimer: (handle: unknown) => clearTimeout(handle as NodeJS.Timeout)
})

export interface BatchResult<O> {
  output: O
  /** From submit to the start of the batch that ran it. */
  queueMs: number
  batchSize: number
}

export interface SubmitOptions {
  /** Clock time (same clock as the batcher's) after which the item must not start. */
  deadlineAt?: number
  signal?: AbortSignal
  /** Priority level, 1 the highest; 0, absent or above the policy's levels: the default level. */
  priority?: number
}

export interface BatcherOptions<I, O> {
  policy: BatchPolicy
  /** How many batches may run at once: one per inference session. */
  runners: number
  /**
   * Per runner, the largest batch it takes (a session that runs one fixed batch size); absent:
   * every runner takes maxBatchSize.
   */
  runnerCapacities?: readonly number[]
  /** Runs a batch on runner `runner`; resolves with exactly one output per input, in input order. */
  execute: (inputs: I[], runner: number) => Promise<O[]>
  clock?: Clock
  onBatch?: (info: { size: number; queueMs: number[] }) => void
}

/**
 * One submitted input. It is its own abort listener (`handleEvent`), so queueing an item costs
 * no closure beyond the promise executor; only items with a deadline also get a timer callback.
 * While in the ring, `queued` false means cancelled (lazy deletion); the ring skips it.
 */
class QueueItem<I, O> {
  input: I | undefined
  queued = true
  queueMs = 0
  deadlineTimer: unknown = undefined
  resolve: (result: BatchResult<O>) => void = noop
  reject: (err: unknown) => void = noop

  constructor(
    readonly owner: Batcher<I, O>,
    input: I,
    readonly enqueuedAt: number,
    readonly deadlineAt: number,
    /** Index of its ring: priority level − 1. */
    readonly level: number,
    readonly signal: AbortSignal | undefined
  ) {
    this.input = input
  }

  handleEvent(): void {
    this.owner.cancel(this, abortCode(this.signal!))
  }
}

function noop(): void {}

/** Smoothing of the batch-duration average that sizes the QUEUE_FULL retry hint. */
const DURATION_EWMA_WEIGHT = 0.2
const MAX_RETRY_AFTER_SECONDS = 60

export class Batcher<I, O> {
  private readonly policy: BatchPolicy
  /** After close nothing can join a batch, so waiting for a fuller one only delays shutdown. */
  private readonly flushPolicy: BatchPolicy
  private readonly execute: (inputs: I[], runner: number) => Promise<O[]>
  private readonly capacities: readonly number[]
  private readonly idle: boolean[]
  private readonly clock: Clock
  private readonly onBatch: ((info: { size: number; queueMs: number[] }) => void) | undefined
  /** One FIFO ring per priority level, highest first; one ring when priorities are off. */
  private readonly rings: Ring<QueueItem<I, O>>[]
  /** Ring index of a request without a valid priority. */
  private readonly defaultLevel: number
  /**
   * The queue's live counts, updated in place as items come and go and handed to decideBatch as
   * its read-only QueueView (one object for every decision). `length` counts live items only.
   */
  private readonly queueState = { length: 0, oldestEnqueuedAt: 0, idleCapacity: 0 }
  private running = 0
  private closed = false
  /** Open together() calls: submits queue without forming a batch until the last one ends. */
  private corked = 0
  private batchTimer: unknown = undefined
  private batchTimerAt = Infinity
  private avgBatchMs = 0
  private drainWaiters: (() => void)[] = []
  private readonly onBatchTimer = (): void => {
    this.batchTimer = undefined
    this.batchTimerAt = Infinity
    this.pump()
  }

  constructor(options: BatcherOptions<I, O>) {
    const { policy, runners } = options
    if (!Number.isInteger(runners) || runners < 1) {
      throw new RangeError(`Batcher runners must be an integer ≥ 1 (one per inference session), got ${runners}.`)
    }
    if (!Number.isInteger(policy.maxBatchSize) || policy.maxBatchSize < 1) {
      throw new RangeError(`batching.maxBatchSize must be an integer ≥ 1, got ${policy.maxBatchSize}.`)
    }
    const capacities = options.runnerCapacities ?? new Array<number>(runners).fill(policy.maxBatchSize)
    if (capacities.length !== runners || !capacities.every((c) => Number.isInteger(c) && c >= 1)) {
      throw new RangeError(
        `Batcher runnerCapacities must give an integer ≥ 1 for each of the ${runners} runners, got [${capacities.join(', ')}].`
      )
    }
    if (!Number.isInteger(policy.maxQueueSize) || policy.maxQueueSize < 1) {
      throw new RangeError(`batching.maxQueueSize must be an integer ≥ 1, got ${policy.maxQueueSize}.`)
    }
    if (!(policy.maxQueueDelayMs >= 0) || !Number.isFinite(policy.maxQueueDelayMs)) {
      throw new RangeError(`batching.maxQueueDelayMs must be a finite number ≥ 0, got ${policy.maxQueueDelayMs}.`)
    }
    const levels = policy.priorityLevels ?? 0
    if (!Number.isInteger(levels) || levels < 0) {
      throw new RangeError(`batching.priorityLevels must be an integer ≥ 0 (0: priorities off), got ${levels}.`)
    }
    const defaultLevel = policy.defaultPriorityLevel ?? levels
    if (levels > 0 && (!Number.isInteger(defaultLevel) || defaultLevel < 1 || defaultLevel > levels)) {
      throw new RangeError(`batching.defaultPriorityLevel must be an integer from 1 to priorityLevels (${levels}), got ${defaultLevel}.`)
    }
    this.rings = Array.from({ length: Math.max(1, levels) }, () => new Ring<QueueItem<I, O>>())
    this.defaultLevel = levels === 0 ? 0 : defaultLevel - 1
    this.policy = Object.freeze({ ...policy })
    this.flushPolicy = Object.freeze({ ...policy, maxQueueDelayMs: 0 })
    this.capacities = Object.freeze([...capacities])
    this.idle = new Array<boolean>(runners).fill(true)
    this.queueState.idleCapacity = Math.max(...capacities)
    this.execute = options.execute
    this.clock = options.clock ?? systemClock
    this.onBatch = options.onBatch
  }

  /** Items queued, not yet running (cancelled ones excluded). */
  get pending(): number {
    return this.queueState.length
  }

  /** Batches running now. */
  get inFlight(): number {
    return this.running
  }

  /**
   * Queues one input. Rejects with QUEUE_FULL, SHUTTING_DOWN, DEADLINE_EXCEEDED or CLIENT_CLOSED
   * before it runs, or with execute's error if its batch fails; never resolves with another
   * input's output.
   */
  submit(input: I, options?: SubmitOptions): Promise<BatchResult<O>> {
    if (this.closed) {
      return Promise.reject(new ServiceError('SHUTTING_DOWN', undefined, { retryAfterSeconds: 1 }))
    }
    const full = this.refusalFor(0)
    if (full !== undefined) return Promise.reject(full)
    const now = this.clock.now()
    const deadlineAt = options?.deadlineAt ?? Infinity
    if (deadlineAt <= now) return Promise.reject(new ServiceError('DEADLINE_EXCEEDED', '(already passed at submit)'))
    const signal = options?.signal
    if (signal?.aborted) return Promise.reject(new ServiceError(abortCode(signal)))

    const item = new QueueItem<I, O>(this, input, now, deadlineAt, this.levelOf(options?.priority), signal)
    const promise = new Promise<BatchResult<O>>((resolve, reject) => {
      item.resolve = resolve
      item.reject = reject
    })
    if (signal !== undefined) signal.addEventListener('abort', item)
    if (deadlineAt !== Infinity) {
      item.deadlineTimer = this.clock.setTimer(() => this.cancel(item, 'DEADLINE_EXCEEDED'), deadlineAt - now)
    }
    if (this.queueState.length === 0) this.queueState.oldestEnqueuedAt = now
    this.rings[item.level]!.push(item)
    this.queueState.length++
    if (this.corked === 0) this.pump()
    return promise
  }

  /**
   * Runs `submitAll`, which submits the items of one request synchronously, and only then lets a
   * batch form: a request of N tensors is one unit, as in Triton's batcher. Submitted one by one,
   * the first went alone to an idle session and the rest ran after it (16 images ran as 1 + 15; on
   * CUDA, with sessions padded to fixed shapes, that was the work of 32).
   */
  together<T>(submitAll: () => T): T {
    this.corked++
    try {
      return submitAll()
    } finally {
      if (--this.corked === 0) this.pump()
    }
  }

  /**
   * QUEUE_FULL when the queue has no room beside `coming` items admitted and not yet submitted
   * (images still decoding), else undefined: a door refuses an image before it pays for its decode.
   */
  refusalFor(coming: number): ServiceError | undefined {
    const taken = this.queueState.length + coming
    if (taken < this.policy.maxQueueSize) return undefined
    const detail = coming === 0 ? `${this.queueState.length} queued` : `${this.queueState.length} queued and ${coming} being decoded`
    return new ServiceError('QUEUE_FULL', `(${detail}, limit ${this.policy.maxQueueSize})`, { retryAfterSeconds: this.retryAfterSeconds() })
  }

  /** Stops accepting work: later submits reject SHUTTING_DOWN; what is queued still runs, without waiting to fill. */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.pump()
  }

  /**
   * Closes, and refuses everything still queued with SHUTTING_DOWN (a shutdown whose drain timeout
   * has passed); batches already running finish.
   */
  abandonQueued(): void {
    this.closed = true
    for (const ring of this.rings) {
      for (let item = ring.shift(); item !== undefined; item = ring.shift()) {
        if (!item.queued) continue
        this.leaveQueue(item)
        item.input = undefined
        item.reject(new ServiceError('SHUTTING_DOWN', '(the drain timeout passed while it was queued)', { retryAfterSeconds: 1 }))
      }
    }
    this.disarm()
    this.notifyIfDrained()
  }

  /** Resolves once nothing is queued and no batch is running. */
  drained(): Promise<void> {
    if (this.queueState.length === 0 && this.running === 0) return Promise.resolve()
    return new Promise((resolve) => this.drainWaiters.push(resolve))
  }

  /** Removes a queued item (abort or deadline); no effect once it has left the queue. Internal. */
  cancel(item: QueueItem<I, O>, code: 'CLIENT_CLOSED' | 'DEADLINE_EXCEEDED'): void {
    if (!item.queued) return
    this.leaveQueue(item)
    item.input = undefined
    item.reject(new ServiceError(code))
    this.dropCancelledHeads()
    if (this.queueState.length === 0) this.disarm()
    this.notifyIfDrained()
  }

  private leaveQueue(item: QueueItem<I, O>): void {
    item.queued = false
    this.queueState.length--
    if (item.signal !== undefined) item.signal.removeEventListener('abort', item)
    if (item.deadlineTimer !== undefined) {
      this.clock.clearTimer(item.deadlineTimer)
      item.deadlineTimer = undefined
    }
  }

  /** The ring a request goes to: its priority level when valid for this policy, else the default. */
  private levelOf(priority: number | undefined): number {
    if (priority === undefined || !Number.isInteger(priority) || priority < 1 || priority > this.rings.length) return this.defaultLevel
    return priority - 1
  }

  /**
   * Keeps each ring's head a live item, so `oldestEnqueuedAt` is the oldest still waiting at any
   * level (each ring is in submit order, so its head is its oldest).
   */
  private dropCancelledHeads(): void {
    let oldest = Infinity
    for (const ring of this.rings) {
      let head = ring.peek()
      while (head !== undefined && !head.queued) {
        ring.shift()
        head = ring.peek()
      }
      if (head !== undefined && head.enqueuedAt < oldest) oldest = head.enqueuedAt
    }
    if (oldest !== Infinity) this.queueState.oldestEnqueuedAt = oldest
  }

  /** The loop body: runs on enqueue, on batch completion, on the batch timer and on close. */
  private pump(): void {
    const policy = this.closed ? this.flushPolicy : this.policy
    for (;;) {
      const now = this.clock.now()
      const decision = decideBatch(this.queueState, now, policy)
      if (!decision.run) {
        if (decision.waitMs === undefined) this.disarm()
        else this.armAt(now + decision.waitMs, now)
        return
      }
      this.startBatch(decision.size, now)
    }
  }

  /** One timer at most; a later wake time keeps the earlier timer, which re-decides when it fires. */
  private armAt(at: number, now: number): void {
    if (at >= this.batchTimerAt) return
    if (this.batchTimer !== undefined) this.clock.clearTimer(this.batchTimer)
    this.batchTimerAt = at
    this.batchTimer = this.clock.setTimer(this.onBatchTimer, at - now)
  }

  private disarm(): void {
    if (this.batchTimer === undefined) return
    this.clock.clearTimer(this.batchTimer)
    this.batchTimer = undefined
    this.batchTimerAt = Infinity
  }

  private startBatch(size: number, now: number): void {
    const items: QueueItem<I, O>[] = []
    const inputs: I[] = []
    let level = 0
    while (items.length < size && level < this.rings.length) {
      const item = this.rings[level]!.shift()
      if (item === undefined) {
        level++
        continue
      }
      if (!item.queued) continue
      if (item.deadlineAt <= now) {
        // Its timer has not fired yet (real timers run late); it must still never start.
        this.leaveQueue(item)
        item.input = undefined
        item.reject(new ServiceError('DEADLINE_EXCEEDED'))
        continue
      }
      this.leaveQueue(item)
      item.queueMs = now - item.enqueuedAt
      items.push(item)
      inputs.push(item.input as I)
      item.input = undefined
    }
    this.dropCancelledHeads()
    if (items.length === 0) {
      this.notifyIfDrained()
      return
    }
    const runner = pickRunner(this.capacities, this.idle, items.length)
    this.setIdle(runner, false)
    this.running++
    if (this.onBatch !== undefined) this.onBatch({ size: items.length, queueMs: items.map((i) => i.queueMs) })
    void this.runBatch(items, inputs, now, runner)
  }

  /** Marks a runner idle or busy and keeps the queue view's idle capacity current. */
  private setIdle(runner: number, idle: boolean): void {
    this.idle[runner] = idle
    let capacity = 0
    for (let i = 0; i < this.capacities.length; i++) if (this.idle[i] && this.capacities[i]! > capacity) capacity = this.capacities[i]!
    this.queueState.idleCapacity = capacity
  }

  private async runBatch(items: QueueItem<I, O>[], inputs: I[], startedAt: number, runner: number): Promise<void> {
    try {
      const outputs = await this.execute(inputs, runner)
      if (!Array.isArray(outputs) || outputs.length !== items.length) {
        const got = Array.isArray(outputs) ? `${outputs.length} outputs` : 'no output array'
        throw new ServiceError('INTERNAL', `(batch execution returned ${got} for ${items.length} inputs)`)
      }
      const batchSize = items.length
      for (let i = 0; i < batchSize; i++) {
        const item = items[i]!
        item.resolve({ output: outputs[i] as O, queueMs: item.queueMs, batchSize })
      }
    } catch (err) {
      for (const item of items) item.reject(err)
    } finally {
      const tookMs = this.clock.now() - startedAt
      this.avgBatchMs = this.avgBatchMs === 0 ? tookMs : this.avgBatchMs + DURATION_EWMA_WEIGHT * (tookMs - this.avgBatchMs)
      this.running--
      this.setIdle(runner, true)
      this.pump()
      this.notifyIfDrained()
    }
  }

  /** Roughly how long the queue ahead takes to clear: its batches spread over the runners. */
  private retryAfterSeconds(): number {
    const batchesAhead = Math.ceil(this.queueState.length / this.policy.maxBatchSize) + this.running
    const runners = this.capacities.length
    const waitMs = (batchesAhead / runners) * this.avgBatchMs + this.policy.maxQueueDelayMs
    return Math.min(MAX_RETRY_AFTER_SECONDS, Math.max(1, Math.ceil(waitMs / 1000)))
  }

  private notifyIfDrained(): void {
    if (this.queueState.length !== 0 || this.running !== 0 || this.drainWaiters.length === 0) return
    const waiters = this.drainWaiters
    this.drainWaiters = []
    for (const resolve of waiters) resolve()
  }
}
