/**
 * The gRPC door's share of --body-budget-bytes: request messages held at once, each from the moment
 * its length arrives until it is answered (message-meter.ts does this per call). grpc-js reads a
 * call's message into memory whole (up to the receive limit) once the call asks for it, and nothing
 * bounded how many calls did so: 256 ModelInfer calls of 9.6 MB each, sent at once, took the server
 * from 0.5 to 5.3 GiB of RSS, every message received and held while the calls before it were served;
 * 200 ModelStreamInfer streams of three such messages took it to 2.7 GiB.
 *
 * A message that does not fit waits, its HTTP/2 stream paused, in a FIFO of at most `maxWaiting`;
 * one more is refused RESOURCE_EXHAUSTED `BODY_BUDGET_FULL`. A message alone is always admitted, so
 * a budget below the receive limit still serves one at a time.
 *
 * The door keeps two: ModelInfer's and ModelStreamInfer's, of --body-budget-bytes, and one of two
 * receive limits for every other unary RPC (their messages are small once read), so health and
 * metadata calls never wait behind inference uploads.
 */

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

export class ReceiveBudget {
  private held = 0
  private readonly waiting: Waiter[] = []

  constructor(
    readonly budgetBytes: number,
    readonly maxWaiting: number
  ) {}

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
        this.pump()
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
