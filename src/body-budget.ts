/**
 * --body-budget-bytes: the request bytes both doors hold at once, from the moment a request's size
 * is known until it is answered. An HTTP request counts its `Content-Length` (a chunked one its
 * route's limit) from its head, and is refused 429 `BODY_BUDGET_FULL` at once when it does not
 * fit (`take`). A gRPC message counts its length from the moment its 5-byte prefix arrives
 * (message-meter.ts), and waits when it does not fit (`acquire`), its HTTP/2 stream paused, in a FIFO
 * of at most `maxWaiting`; one more is refused RESOURCE_EXHAUSTED `BODY_BUDGET_FULL`. An HTTP
 * request never passes a waiting message. A request or message alone is always admitted, so a
 * budget below one request's size still serves one at a time.
 *
 * One budget for both doors, so that the memory they can be made to hold is the one figure the
 * sizing in docs/configuration.md adds up. grpc-js reads a message into memory whole once the call
 * asks for it, and nothing bounded how many calls did so: 256 ModelInfer calls of 9.6 MB each, sent
 * at once, took the server from 0.5 to 5.3 GiB of RSS; 200 ModelStreamInfer streams of three such
 * messages took it to 2.7 GiB. The gRPC door keeps a second, small budget (two receive limits) for
 * its other unary RPCs, whose messages are small once read, so health and metadata calls never
 * wait behind inference uploads.
 */

import { collectGarbage } from './collect-garbage.js'

/** Messages that may wait for room (each holds at most a paused HTTP/2 stream's 64 KiB); then BODY_BUDGET_FULL. */
export const MAX_WAITING = 1024

/**
 * Bodies given back between two moments the budget was empty that make it worth one full
 * collection once the doors hold nothing: 40 stalled 15 MiB uploads (12 admitted, 408 after 30 s)
 * left their 180 MiB of chunks in RSS for as long as the process stayed idle.
 */
export const COLLECT_AFTER_RELEASED_BYTES = 64 * 2 ** 20
/** How long the budget must have stayed empty (checked once, then) before that collection. */
export const COLLECT_WHEN_EMPTY_FOR_MS = 1000

/** The process's budget, shared by its doors. */
export function bodyBudgetOf(settings: { readonly bodyBudgetBytes: number }, collect = collectGarbage): BodyBudget {
  if (collect === undefined) return new BodyBudget(settings.bodyBudgetBytes, MAX_WAITING)
  const budget: BodyBudget = new BodyBudget(settings.bodyBudgetBytes, MAX_WAITING, (releasedBytes) => {
    if (releasedBytes < COLLECT_AFTER_RELEASED_BYTES) return
    // Under load the budget is rarely empty for long, and V8 collects by itself.
    setTimeout(() => {
      if (budget.state.heldBytes === 0) collect()
    }, COLLECT_WHEN_EMPTY_FOR_MS).unref()
  })
  return budget
}

export interface Reservation {
  /** The bytes held now. */
  readonly bytes: number
  /** Holds `bytes` instead (the message's size, once it is in). */
  resize(bytes: number): void
  /** Gives the bytes back; a second call does nothing. */
  release(): void
}

interface Waiter {
  readonly bytes: number
  readonly grant: (reservation: Reservation) => void
}

export class BodyBudget {
  private held = 0
  /** Bytes given back since the budget was last empty. */
  private givenBack = 0
  private readonly waiting: Waiter[] = []

  constructor(
    readonly budgetBytes: number,
    readonly maxWaiting: number,
    /** Called when a release leaves nothing held, with the bytes given back since it last did. */
    private readonly onEmpty?: (releasedBytes: number) => void
  ) {}

  /** Holds `bytes` now if they fit and nothing waits; else undefined (the caller refuses). */
  take(bytes: number): Reservation | undefined {
    return this.waiting.length === 0 && this.fits(bytes) ? this.reserve(bytes) : undefined
  }

  /**
   * Calls `granted` once `bytes` fit beside what is held (or nothing is held), in arrival order: at
   * once, before returning, when they fit now. Returns a cancel for a wait, or undefined when the
   * waiting line is full (`granted` is then never called).
   */
  acquire(bytes: number, granted: (reservation: Reservation) => void): { cancel(): void } | undefined {
    if (this.waiting.length === 0 && this.fits(bytes)) {
      granted(this.reserve(bytes))
      return { cancel: () => {} }
    }
    if (this.waiting.length >= this.maxWaiting) return undefined
    const waiter: Waiter = { bytes, grant: granted }
    this.waiting.push(waiter)
    return {
      cancel: () => {
        const i = this.waiting.indexOf(waiter)
        if (i < 0) return
        this.waiting.splice(i, 1)
        // The head may have been what held the others back.
        if (i === 0) this.pump()
      }
    }
  }

  /** Bytes held now, and calls waiting (for tests and logs). */
  get state(): { readonly heldBytes: number; readonly waiting: number } {
    return { heldBytes: this.held, waiting: this.waiting.length }
  }

  private fits(bytes: number): boolean {
    return this.held === 0 || this.held + bytes <= this.budgetBytes
  }

  private reserve(bytes: number): Reservation {
    this.held += bytes
    let current = bytes
    let released = false
    return {
      get bytes() {
        return released ? 0 : current
      },
      resize: (next) => {
        if (released) return
        this.held += next - current
        current = next
        this.pump()
      },
      release: () => {
        if (released) return
        released = true
        this.held -= current
        this.givenBack += current
        this.pump()
        if (this.held > 0) return
        const bytes = this.givenBack
        this.givenBack = 0
        this.onEmpty?.(bytes)
      }
    }
  }

  /** Grants waiting calls in order while the head fits. */
  private pump(): void {
    while (this.waiting.length > 0 && this.fits(this.waiting[0]!.bytes)) {
      const next = this.waiting.shift()!
      next.grant(this.reserve(next.bytes))
    }
  }
}
