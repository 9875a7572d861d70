/**
 * --body-budget-bytes: the request bytes both doors hold at once, from the moment a request's size
 * is known until it is answered. An HTTP request counts its `Content-Length` (a chunked one its
 * route's limit) from its head, a gRPC message its length from the moment its 5-byte prefix
 * arrives (message-meter.ts). One that does not fit waits (`acquire`), its body unread or its
 * HTTP/2 stream paused, in one line of at most `maxWaiting` for both doors; one more is refused
 * `BODY_BUDGET_FULL` (an HTTP request also when its wait passes admission.ts's BUDGET_WAIT_MS).
 * The line is served in order, except that what fits may pass a waiting HTTP upload: uploads
 * that do not fit keep none that do waiting, as when they were refused at once.
 * A request or message alone is always admitted, so a budget below one request's size still
 * serves one at a time.
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

/** How often a waiting line looks again for shares behind their pace (a share falls behind with time alone). */
const RECONSIDER_WAITING_MS = 250

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
  /**
   * The bytes are still to come: while they are, a request that finds no room may take this share
   * if `arrival` is behind its pace (body-pace.ts). Until `arrived`, or the release.
   */
  arriving(arrival: Arrival): void
  /** The bytes are in: the share is memory held, never taken. */
  arrived(): void
}

/** A share whose bytes are still to come. */
export interface Arrival {
  /** Whether its bytes are behind the pace that finishes them in time. */
  behind(): boolean
  /** Refuses its request (called once, after its share has been given back; a later release does nothing). */
  preempt(): void
}

interface Waiter {
  readonly bytes: number
  readonly grant: (reservation: Reservation) => void
  /** A newcomer that fits may pass it (an HTTP upload, whose wait is bounded), or not (a gRPC message). */
  readonly passable: boolean
}

export class BodyBudget {
  private held = 0
  /** Bytes given back since the budget was last empty. */
  private givenBack = 0
  private readonly waiting: Waiter[] = []
  /** Shares whose bytes are still to come, oldest first, with what gives each back. */
  private readonly arrivals = new Map<Arrival, { readonly bytes: () => number; readonly release: () => void }>()
  /** A look at the waiting line is due (after this turn's I/O, then every RECONSIDER_WAITING_MS while it waits). */
  private reconsidering = false

  constructor(
    readonly budgetBytes: number,
    readonly maxWaiting: number,
    /** Called when a release leaves nothing held, with the bytes given back since it last did. */
    private readonly onEmpty?: (releasedBytes: number) => void
  ) {}

  /**
   * Holds `bytes` now if they fit and nothing waits, taking the shares of bodies behind their pace
   * when that makes room; else undefined (the caller waits with `acquire`, or refuses).
   */
  take(bytes: number): Reservation | undefined {
    this.serveWaiting()
    return !this.firmWaiting() && this.makeRoom(bytes) ? this.reserve(bytes) : undefined
  }

  /** Whether `take(bytes)` would hold them without taking any share back. */
  fitsNow(bytes: number): boolean {
    return this.fits(bytes) && !this.firmWaiting()
  }

  /**
   * Calls `granted` once `bytes` fit beside what is held (or nothing is held), in arrival order: at
   * once, before returning, when they fit now. Returns a cancel for a wait, or undefined when the
   * waiting line is full (`granted` is then never called). A `passable` wait (an HTTP upload, which
   * gives up after a bounded wait) lets those behind it, and newcomers, that fit go first; a gRPC
   * message, which waits as long as it takes, is never passed, so it is never starved.
   */
  acquire(bytes: number, granted: (reservation: Reservation) => void, passable = false): { cancel(): void } | undefined {
    if (this.fitsNow(bytes)) {
      granted(this.reserve(bytes))
      return { cancel: () => {} }
    }
    if (this.waiting.length >= this.maxWaiting) return undefined
    const waiter: Waiter = { bytes, grant: granted, passable }
    this.waiting.push(waiter)
    // The shares of bodies behind their pace are looked at after this turn's I/O (see makeRoom),
    // and again while the line waits: a share falls behind with time alone.
    if (!this.reconsidering) {
      this.reconsidering = true
      setImmediate(() => this.reconsider())
    }
    return {
      cancel: () => {
        const i = this.waiting.indexOf(waiter)
        if (i < 0) return
        this.waiting.splice(i, 1)
        // It may have been what held the others back.
        this.pump()
      }
    }
  }

  /** Bytes held now, and calls waiting (for tests and logs). */
  get state(): { readonly heldBytes: number; readonly waiting: number } {
    return { heldBytes: this.held, waiting: this.waiting.length }
  }

  /** A waiter no newcomer may pass is in line. */
  private firmWaiting(): boolean {
    for (const waiter of this.waiting) if (!waiter.passable) return true
    return false
  }

  private fits(bytes: number): boolean {
    return this.held === 0 || this.held + bytes <= this.budgetBytes
  }

  /**
   * Whether `bytes` fit, once the shares of bodies behind their pace are taken back when that is
   * enough (then they are, oldest first, and their requests refused): a share is held for bytes a
   * client has only announced, and bytes announced and not sent must not keep others out. Looked
   * at after a turn of the event loop's I/O: bytes that arrived while the loop was busy are counted
   * by then, so a client is not judged behind for the server's own stall.
   */
  private makeRoom(bytes: number): boolean {
    if (this.fits(bytes)) return true
    const behind: Arrival[] = []
    let freed = 0
    for (const [arrival, share] of this.arrivals) {
      if (!arrival.behind()) continue
      behind.push(arrival)
      freed += share.bytes()
      if (this.held - freed + bytes <= this.budgetBytes) break
    }
    if (this.held - freed > 0 && this.held - freed + bytes > this.budgetBytes) return false
    for (const arrival of behind) {
      this.arrivals.get(arrival)!.release()
      // Outside this call: the refusal ends another request, whose door may come back here.
      setImmediate(() => arrival.preempt())
    }
    return true
  }

  private reserve(bytes: number): Reservation {
    this.held += bytes
    let current = bytes
    let released = false
    let arrival: Arrival | undefined
    const arrived = (): void => {
      if (arrival !== undefined) this.arrivals.delete(arrival)
      arrival = undefined
    }
    const release = (): void => {
      if (released) return
      released = true
      arrived()
      this.held -= current
      this.givenBack += current
      this.pump()
      if (this.held > 0) return
      const given = this.givenBack
      this.givenBack = 0
      this.onEmpty?.(given)
    }
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
      release,
      arriving: (next) => {
        if (released) return
        arrived()
        arrival = next
        this.arrivals.set(next, { bytes: () => current, release })
      },
      arrived
    }
  }

  private reconsider(): void {
    this.serveWaiting()
    if (this.waiting.length === 0) {
      this.reconsidering = false
      return
    }
    setTimeout(() => this.reconsider(), RECONSIDER_WAITING_MS).unref()
  }

  /** Makes room for the waiting calls in order, as for a newcomer (makeRoom), while that grants the head. */
  private serveWaiting(): void {
    while (this.waiting.length > 0) {
      const head = this.waiting[0]!
      if (!this.makeRoom(head.bytes)) return
      // Room made is granted by the releases (pump); room that was there already, here.
      if (this.waiting[0] === head) this.pump()
      if (this.waiting[0] === head) return
    }
  }

  /** Grants waiting calls in order while they fit, passing those that do not and may be passed. */
  private pump(): void {
    for (let i = 0; i < this.waiting.length;) {
      const next = this.waiting[i]!
      if (this.fits(next.bytes)) {
        this.waiting.splice(i, 1)
        next.grant(this.reserve(next.bytes))
      } else if (next.passable) i++
      else return
    }
  }
}
