import { abortCode, ServiceError } from '../errors.js'
import { systemClock, type Clock } from './batcher.js'

/**
 * Admission for image decodes: at most `maxConcurrent` at once, and at most `budgetBytes` of
 * estimated decoded memory among them (see decodeCostBytes in preprocess.ts). A decode that has
 * to wait joins a bounded FIFO queue that honours the caller's deadline and abort signal.
 *
 * Two lanes share the budget, so that ordinary photos keep flowing while huge images queue:
 * - a decode is *small* when its cost is at most `smallDecodeBytes(limits)` (an eighth of the
 *   budget), *large* otherwise;
 * - with two slots or more, large decodes may hold all slots but one and all bytes but one small
 *   decode's worth: a small decode never waits for large ones, only for other small ones;
 * - each lane is FIFO; between the lanes the older head goes first. A small decode may pass an
 *   older large one only while that large one is blocked by other large decodes: when only the
 *   small decodes running stand in its way, later small ones wait, so large decodes are never
 *   starved by a stream of small ones.
 * A single decode that could never fit (cost over `largestDecodeBytes`) is refused at once.
 *
 * As in batcher.ts, the decision is a pure function (`decideAdmission`) of a view of the state;
 * `DecodeBudget` is the queue, timers and cancellation around it, on an injectable clock.
 */

export interface DecodeLimits {
  /** Decodes running at once. */
  readonly maxConcurrent: number
  /** Estimated decoded bytes of all running decodes together. */
  readonly budgetBytes: number
  /** Decodes waiting for a slot or for bytes; one more is refused with DECODE_QUEUE_FULL. */
  readonly maxQueued: number
}

/** The fraction of the budget up to which a decode counts as small. */
const SMALL_DECODE_SHARE = 8

export function smallDecodeBytes(limits: DecodeLimits): number {
  return Math.floor(limits.budgetBytes / SMALL_DECODE_SHARE)
}

/** Slots large decodes may hold: all but one, so that one is always free for a small decode. */
export function largeDecodeSlots(limits: DecodeLimits): number {
  return Math.max(1, limits.maxConcurrent - 1)
}

/**
 * Bytes large decodes may hold together (with a lane for small decodes, all but one small decode's
 * worth), hence the most one decode may cost: a costlier image is refused (IMAGE_TOO_LARGE) at once.
 */
export function largestDecodeBytes(limits: DecodeLimits): number {
  return limits.maxConcurrent > 1 ? limits.budgetBytes - smallDecodeBytes(limits) : limits.budgetBytes
}

export function isSmallDecode(cost: number, limits: DecodeLimits): boolean {
  return cost <= smallDecodeBytes(limits)
}

export interface WaitingHead {
  readonly cost: number
  /** Arrival order: lower is older. */
  readonly seq: number
}

export interface BudgetView {
  readonly running: number
  readonly largeRunning: number
  readonly bytesInFlight: number
  readonly largeBytesInFlight: number
  /** The oldest waiting decode of each lane; undefined when the lane is empty. */
  readonly smallHead: WaitingHead | undefined
  readonly largeHead: WaitingHead | undefined
}

export type Lane = 'small' | 'large'

function smallFits(view: BudgetView, cost: number, limits: DecodeLimits): boolean {
  return view.running < limits.maxConcurrent && view.bytesInFlight + cost <= limits.budgetBytes
}

/** Whether a large decode fits, counting only the large decodes running (small ones excluded). */
function largeFitsAmongLarge(view: BudgetView, cost: number, limits: DecodeLimits): boolean {
  return view.largeRunning < largeDecodeSlots(limits) && view.largeBytesInFlight + cost <= largestDecodeBytes(limits)
}

function largeFits(view: BudgetView, cost: number, limits: DecodeLimits): boolean {
  return largeFitsAmongLarge(view, cost, limits) && view.running < limits.maxConcurrent && view.bytesInFlight + cost <= limits.budgetBytes
}

/**
 * Pure: which lane's head starts now, or undefined (wait for a decode to finish or a new arrival).
 * Called repeatedly until it answers undefined.
 */
export function decideAdmission(view: BudgetView, limits: DecodeLimits): Lane | undefined {
  const { smallHead, largeHead } = view
  const smallOk = smallHead !== undefined && smallFits(view, smallHead.cost, limits)
  const largeOk = largeHead !== undefined && largeFits(view, largeHead.cost, limits)
  if (smallOk && largeOk) return smallHead.seq < largeHead.seq ? 'small' : 'large'
  if (largeOk) return 'large'
  if (!smallOk) return undefined
  // An older large decode that only running small ones keep out goes next: let them drain.
  if (largeHead !== undefined && largeHead.seq < smallHead.seq && largeFitsAmongLarge(view, largeHead.cost, limits)) return undefined
  return 'small'
}

export interface AdmissionOptions {
  /** Clock time after which the decode must not start. */
  readonly deadlineAt?: number
  readonly signal?: AbortSignal
}

/** Held while a decode runs; `release` exactly once when it is over, whatever the outcome. */
export interface DecodePermit {
  release(): void
}

type TicketState = 'queued' | 'running' | 'done'

/**
 * One decode, waiting or running. Its own abort listener (`handleEvent`), as the batcher's items
 * are, so waiting costs no closure beyond the promise's.
 */
class Ticket implements DecodePermit {
  state: TicketState = 'queued'
  startedAt = 0
  deadlineTimer: unknown = undefined
  resolve: (permit: DecodePermit) => void = noop
  reject: (err: unknown) => void = noop

  constructor(
    readonly owner: DecodeBudget,
    readonly cost: number,
    readonly small: boolean,
    readonly seq: number,
    readonly signal: AbortSignal | undefined
  ) {}

  handleEvent(): void {
    this.owner.cancel(this, abortCode(this.signal!))
  }

  release(): void {
    this.owner.finish(this)
  }
}

function noop(): void {}

/** FIFO with lazy deletion: cancelled tickets stay until they reach the head. */
class TicketQueue {
  private items: Ticket[] = []
  private head = 0

  /** The oldest ticket still queued. */
  peek(): Ticket | undefined {
    while (this.head < this.items.length && this.items[this.head]!.state !== 'queued') this.head++
    if (this.head === this.items.length && this.head > 0) {
      this.items = []
      this.head = 0
    }
    return this.items[this.head]
  }

  push(ticket: Ticket): void {
    this.items.push(ticket)
  }

  shift(): Ticket | undefined {
    const ticket = this.peek()
    if (ticket !== undefined) this.items[this.head++] = undefined as unknown as Ticket
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return ticket
  }
}

/** Smoothing of the decode-duration average that sizes the queue-full retry hint. */
const DURATION_EWMA_WEIGHT = 0.2
const MAX_RETRY_AFTER_SECONDS = 60

export class DecodeBudget {
  readonly limits: DecodeLimits
  private readonly clock: Clock
  private readonly small = new TicketQueue()
  private readonly large = new TicketQueue()
  private readonly view = {
    running: 0,
    largeRunning: 0,
    bytesInFlight: 0,
    largeBytesInFlight: 0,
    smallHead: undefined as Ticket | undefined,
    largeHead: undefined as Ticket | undefined
  }
  private waiting = 0
  private nextSeq = 0
  private avgDecodeMs = 0
  private startedTotal = 0

  constructor(limits: DecodeLimits, clock: Clock = systemClock) {
    for (const key of ['maxConcurrent', 'budgetBytes', 'maxQueued'] as const) {
      if (!Number.isSafeInteger(limits[key]) || limits[key] < 1)
        throw new RangeError(`DecodeBudget ${key} must be an integer ≥ 1, got ${limits[key]}.`)
    }
    this.limits = Object.freeze({ ...limits })
    this.clock = clock
  }

  /** Decodes running now. */
  get running(): number {
    return this.view.running
  }

  /** Decodes waiting (cancelled ones not counted). */
  get queued(): number {
    return this.waiting
  }

  /** Estimated decoded bytes of the decodes running now. */
  get bytesInFlight(): number {
    return this.view.bytesInFlight
  }

  /** Decodes started since the budget was made (a counter, for metrics and tests). */
  get started(): number {
    return this.startedTotal
  }

  /**
   * Resolves with a permit once a decode of `cost` bytes may start. Rejects with IMAGE_TOO_LARGE
   * (it could never fit), DECODE_QUEUE_FULL (with a retry hint), DEADLINE_EXCEEDED or
   * CLIENT_CLOSED, in which case nothing is held.
   */
  acquire(cost: number, options: AdmissionOptions = {}): Promise<DecodePermit> {
    const largest = largestDecodeBytes(this.limits)
    if (!(cost <= largest)) {
      return Promise.reject(
        new ServiceError(
          'IMAGE_TOO_LARGE',
          `(decoding it needs about ${mib(cost)} MiB; one decode may use ${mib(largest)} MiB of the ${mib(this.limits.budgetBytes)} MiB decode budget)`
        )
      )
    }
    const { signal } = options
    if (signal?.aborted) return Promise.reject(new ServiceError(abortCode(signal)))
    const now = this.clock.now()
    const deadlineAt = options.deadlineAt ?? Infinity
    if (deadlineAt <= now) return Promise.reject(new ServiceError('DEADLINE_EXCEEDED', '(before decoding)'))
    const ticket = new Ticket(this, cost, isSmallDecode(cost, this.limits), this.nextSeq++, signal)
    const promise = new Promise<DecodePermit>((resolve, reject) => {
      ticket.resolve = resolve
      ticket.reject = reject
    })
    ;(ticket.small ? this.small : this.large).push(ticket)
    this.waiting++
    this.pump()
    // A decode that starts at once takes no place in the queue; one that has to wait needs one.
    // Being the youngest, its withdrawal changes no decision about the others.
    if (ticket.state === 'queued' && this.waiting > this.limits.maxQueued) {
      this.leaveQueue(ticket)
      ticket.state = 'done'
      ticket.reject(
        new ServiceError('DECODE_QUEUE_FULL', `(${this.waiting} waiting, limit ${this.limits.maxQueued})`, {
          retryAfterSeconds: this.retryAfterSeconds()
        })
      )
      return promise
    }
    if (ticket.state === 'queued') {
      if (signal !== undefined) signal.addEventListener('abort', ticket)
      if (deadlineAt !== Infinity)
        ticket.deadlineTimer = this.clock.setTimer(() => this.cancel(ticket, 'DEADLINE_EXCEEDED'), deadlineAt - now)
    }
    return promise
  }

  /** Withdraws a waiting ticket; no effect once it has started. Internal (abort listener, deadline timer). */
  cancel(ticket: Ticket, code: 'CLIENT_CLOSED' | 'DEADLINE_EXCEEDED'): void {
    if (ticket.state !== 'queued') return
    this.leaveQueue(ticket)
    ticket.state = 'done'
    ticket.reject(new ServiceError(code, '(while waiting to be decoded)'))
    // The head may have changed: a younger decode held back behind this one may now start.
    this.pump()
  }

  /** A running decode is over. Internal: called through the permit. */
  finish(ticket: Ticket): void {
    if (ticket.state !== 'running') return
    ticket.state = 'done'
    const view = this.view
    view.running--
    view.bytesInFlight -= ticket.cost
    if (!ticket.small) {
      view.largeRunning--
      view.largeBytesInFlight -= ticket.cost
    }
    const tookMs = this.clock.now() - ticket.startedAt
    this.avgDecodeMs = this.avgDecodeMs === 0 ? tookMs : this.avgDecodeMs + DURATION_EWMA_WEIGHT * (tookMs - this.avgDecodeMs)
    this.pump()
  }

  private leaveQueue(ticket: Ticket): void {
    this.waiting--
    if (ticket.signal !== undefined) ticket.signal.removeEventListener('abort', ticket)
    if (ticket.deadlineTimer !== undefined) {
      this.clock.clearTimer(ticket.deadlineTimer)
      ticket.deadlineTimer = undefined
    }
  }

  private pump(): void {
    const view = this.view
    for (;;) {
      view.smallHead = this.small.peek()
      view.largeHead = this.large.peek()
      const lane = decideAdmission(view, this.limits)
      if (lane === undefined) break
      const ticket = (lane === 'small' ? this.small : this.large).shift()!
      this.leaveQueue(ticket)
      ticket.state = 'running'
      ticket.startedAt = this.clock.now()
      this.startedTotal++
      view.running++
      view.bytesInFlight += ticket.cost
      if (!ticket.small) {
        view.largeRunning++
        view.largeBytesInFlight += ticket.cost
      }
      ticket.resolve(ticket)
    }
    view.smallHead = undefined
    view.largeHead = undefined
  }

  /** Roughly how long the decodes waiting take to clear, spread over the slots. */
  private retryAfterSeconds(): number {
    const waitMs = ((this.waiting + this.view.running) / this.limits.maxConcurrent) * this.avgDecodeMs
    return Math.min(MAX_RETRY_AFTER_SECONDS, Math.max(1, Math.ceil(waitMs / 1000)))
  }
}

function mib(bytes: number): number {
  return Math.ceil(bytes / 2 ** 20)
}

/**
 * Admission by slots alone (what header reads need: they cannot be priced before they run): at
 * most `maxConcurrent` at once, each acquired at cost 1. The bytes are sized so that a cost of 1 is
 * a small decode, which may take every slot; they never bind.
 */
export function slotAdmission(maxConcurrent: number, maxQueued: number): DecodeBudget {
  return new DecodeBudget({ maxConcurrent, budgetBytes: maxConcurrent * SMALL_DECODE_SHARE, maxQueued })
}
