import { constants as http2, type ServerHttp2Stream } from 'node:http2'
import { Duplex } from 'node:stream'
import { ServiceError } from '../errors.js'
import { MessageFrames } from './message-frames.js'
import type { BodyBudget, Reservation } from '../body-budget.js'
import { bodyPace, silentAtItsTurn } from '../body-pace.js'

/**
 * Holds a gRPC call's request messages within the door's receive budget, message by message, from
 * the moment each message's length is known. gRPC has no Content-Length, and grpc-js reads a
 * message into memory whole once the call asks for it; so the meter watches the call's HTTP/2
 * bytes as they arrive, and when a message's 5-byte prefix is in, reserves its length (the receive
 * limit for a compressed message, whose size is known only once it is decompressed). When the
 * budget has no room, the HTTP/2 stream is paused right there, so the rest of the message waits in
 * the client's flow-control window (at most 64 KiB with it), and the call reads on once its turn
 * comes, in arrival order with every other call of the budget. A call that has sent nothing yet
 * holds nothing: an open stream waiting for its next request, or a unary call whose message has
 * not started, never keeps others out.
 *
 * A message's share is held until it is answered: a unary call's until the call ends, a streamed
 * request's until the handler gives it back (`MessageShares`), as an HTTP body is held until its
 * response. Time bounds every step, each `readTimeoutMs`, else the call ends DEADLINE_EXCEEDED
 * `REQUEST_TIMEOUT`: a message must arrive whole once it has its share (and, once another request
 * needs that share, at the pace that finishes it in time: body-pace.ts), and a unary call must
 * start its message (and half-close after it) once grpc-js asks. A stream may wait idle as long as
 * its client likes, but holds at most about one receive limit of requests read and not yet
 * answered: past that it starts no new read until answers give some back. The same time bounds a
 * client that takes no answers: once none has been taken for `readTimeoutMs`, the call ends
 * `ANSWERS_NOT_READ` and its HTTP/2 stream is reset (a status cannot reach a client that does not
 * read, and only a reset frees what the unsendable answers and unread messages hold).
 *
 * grpc-js has no public hook for a call's bytes: the meter reads the HTTP/2 stream off its
 * innermost call object (BaseServerInterceptingCall's `stream`; @grpc/grpc-js is pinned for it).
 * Where that is missing (`http2StreamOf` finds none), the door logs it at error and serves
 * the call unmetered; the integration tests fail then, which is the point.
 */

/** A streamed request's share of the budget, given back when the handler has answered it. */
export interface MessageShare {
  release(): void
}

/** From the door's interceptor, which meters a stream's bytes, to its handler, which answers them: keyed by the message's bytes. */
export type MessageShares = WeakMap<Buffer, MessageShare>

export interface MessageMeterOptions {
  readonly budget: BodyBudget
  /** The receive limit: what a compressed message reserves, and about what one stream may hold read and unanswered. */
  readonly limitBytes: number
  readonly readTimeoutMs: number
  /** A stream of requests (it may wait idle for the next), or a unary call (its message is due once asked for). */
  readonly stream: boolean
  /** Ends the call with this refusal (too slow, or the budget's waiting line full). */
  readonly refuse: (refusal: ServiceError) => void
}

type FlowControlled = Pick<
  ServerHttp2Stream,
  'pause' | 'resume' | 'prependListener' | 'off' | 'readableEnded' | 'readableLength' | 'closed' | 'close'
>

/** The HTTP/2 stream under grpc-js's innermost call object, where there is one. */
export function http2StreamOf(call: object): ServerHttp2Stream | undefined {
  const stream = (call as { stream?: unknown }).stream
  return stream instanceof Duplex && typeof (stream as Partial<ServerHttp2Stream>).close === 'function' && 'session' in stream
    ? (stream as ServerHttp2Stream)
    : undefined
}

const tooSlow = (): ServiceError => new ServiceError('REQUEST_TIMEOUT', '(the gRPC message: the call ends)')

const silentWhileWaiting = (bytes: number, shown: number, waitedMs: number): ServiceError =>
  new ServiceError(
    'REQUEST_TIMEOUT',
    `(the gRPC message announced ${bytes} bytes and sent ${shown} of them in ${Math.round(waitedMs)} ms waiting for room in --body-budget-bytes: the call ends)`
  )

const tooSlowForItsShare = (bytes: number): ServiceError =>
  new ServiceError(
    'REQUEST_TIMEOUT',
    `(the gRPC message of ${bytes} bytes arrived more slowly than --request-timeout-ms allows while holding its share of --body-budget-bytes: the call ends)`
  )

export class MessageMeter {
  private readonly frames: MessageFrames
  private readonly onData = (chunk: Buffer): void => this.frames.write(chunk)
  /** Shares of messages whose bytes are arriving or in, not yet delivered to the handler (in order). */
  private readonly arriving: Reservation[] = []
  /** Shares delivered to the handler and not yet given back. */
  private readonly delivered = new Set<Reservation>()
  /** Messages started whose share waits for room in the budget, and their cancels. */
  private readonly waits: Array<{ cancel(): void }> = []
  /** When the last of `waits`, the message whose bytes are still to come, began waiting. */
  private waitingSince = 0
  /** grpc-js asked for a message and has not had it. */
  private readOpen = false
  /** A read held back until there is room; passed on to grpc-js then. */
  private deferredRead: (() => void) | undefined
  /** Times what the client owes: a message with its share, or a unary call's next message or half-close. */
  private readTimer: NodeJS.Timeout | undefined
  /** The wire length of the message started last. */
  private messageBytes = 0
  /** The share of the message whose bytes are arriving, while they are; timed against the pace (body-pace.ts) while grpc-js reads. */
  private inbound: Reservation | undefined
  private paced = false
  /** Answers handed to HTTP/2 and not yet taken by the client (flow control holds them). */
  private unsent = 0
  private sendTimer: NodeJS.Timeout | undefined
  /** An answer has been written: a reset could now overtake what is queued behind it. */
  private answered = false
  private closed = false

  constructor(
    private readonly http2Stream: FlowControlled,
    private readonly options: MessageMeterOptions
  ) {
    this.frames = new MessageFrames({ start: (bytes, compressed) => this.started(bytes, compressed), end: () => this.ended() })
    // Before grpc-js's own listener, so a message's share is asked for before grpc-js can deliver it.
    http2Stream.prependListener('data', this.onData)
  }

  /** grpc-js's startRead: passed on now, or once the call has room to read again. */
  gateRead(next: () => void): void {
    this.readOpen = true
    if (this.mustWait()) this.deferredRead = next
    else this.pass(next)
    this.startPace()
  }

  /** grpc-js delivers a message: its share, now the message's decoded size (held until `close` unless given back sooner). */
  deliver(message: Buffer): MessageShare | undefined {
    this.readOpen = false
    this.suspendPace()
    const reservation = this.arriving.shift()
    if (reservation === undefined) return undefined
    reservation.resize(message.byteLength)
    this.delivered.add(reservation)
    return {
      release: () => {
        if (!this.delivered.delete(reservation)) return
        reservation.release()
        this.flow()
      }
    }
  }

  /** The client has half-closed: it owes nothing more. */
  halfClosed(): void {
    this.readOpen = false
    this.clearReadTimer()
  }

  /** An answer is being written: `written` is grpc-js's callback for when HTTP/2 has sent it. */
  sending(written: () => void): () => void {
    this.answered = true
    if (this.closed) return written
    if (this.unsent++ === 0) this.timeAnswers()
    return () => {
      if (--this.unsent === 0) clearTimeout(this.sendTimer)
      else this.timeAnswers()
      written()
    }
  }

  /**
   * The call is over (its status is on its way): every share goes back, waits are given up. A call
   * refused before any answer, whose client is still sending, is told to stop with RST_STREAM
   * NO_ERROR once its status has gone out (as HTTP/2 lets a server that has answered): else its
   * HTTP/2 stream, and grpc-js's call with it, stay open until the client ends its side, and
   * 124 000 streams refused TOO_MANY_CALLS kept 1 GB. After answers, a reset could overtake the
   * status still queued behind them: those calls end as grpc-js ends them.
   */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.clearReadTimer()
    this.stopPace()
    clearTimeout(this.sendTimer)
    this.http2Stream.off('data', this.onData)
    if (!this.answered && !this.http2Stream.readableEnded && !this.http2Stream.closed) {
      setImmediate(() => {
        if (!this.http2Stream.closed) this.http2Stream.close(http2.NGHTTP2_NO_ERROR)
      })
    }
    for (const wait of this.waits.splice(0)) wait.cancel()
    for (const reservation of this.arriving.splice(0)) reservation.release()
    for (const reservation of this.delivered) reservation.release()
    this.delivered.clear()
  }

  /**
   * A read waits while a message's share waits for room, or, for a stream between messages, while
   * it holds its part. Never while a message with its share is arriving, or is whole in grpc-js's
   * hands: only reads let those in and delivered (and so, once answered, given back).
   */
  private mustWait(): boolean {
    if (this.arriving.length > 0) return false
    return this.waits.length > 0 || (this.options.stream && this.deliveredBytes() >= this.options.limitBytes)
  }

  private pass(next: () => void): void {
    // A unary call's message (or half-close) is due from now; a stream may idle.
    if (!this.options.stream && !this.frames.inMessage && this.readTimer === undefined) this.startReadTimer()
    next()
  }

  private started(bytes: number, compressed: boolean): void {
    if (this.closed) return
    this.clearReadTimer()
    this.messageBytes = bytes
    // Over the receive limit, grpc-js refuses the message itself; the share never needs more.
    const share = compressed ? this.options.limitBytes : Math.min(bytes, this.options.limitBytes)
    let granted = false
    const wait = this.options.budget.acquire(share, (reservation) => {
      granted = true
      this.admitted(reservation)
    })
    if (wait === undefined) return this.options.refuse(new ServiceError('BODY_BUDGET_FULL', undefined, { retryAfterSeconds: 1 }))
    if (granted) return
    this.waitingSince = performance.now()
    this.waits.push(wait)
    this.http2Stream.pause()
  }

  private admitted(reservation: Reservation): void {
    const waited = this.waits.length > 0
    if (waited) this.waits.shift()
    if (this.closed) return reservation.release()
    if (waited && this.waits.length === 0 && this.silentWhileWaiting()) {
      // Given back at once, so the line goes on to the next; the call ends outside the budget's
      // grant (its status gives back what else it holds, and may grant another).
      reservation.release()
      const refusal = silentWhileWaiting(this.messageBytes, this.shownBytes(), performance.now() - this.waitingSince)
      setImmediate(() => this.options.refuse(refusal))
      return
    }
    this.arriving.push(reservation)
    // Time the message whose bytes are still to come, once it has its share: waiting for room is the server's doing.
    if (this.waits.length === 0 && this.frames.inMessage) {
      this.startReadTimer()
      this.inbound = reservation
      if (this.readOpen) this.startPace()
    }
    this.flow()
  }

  /** The message being granted waited and too little of it came, read or held unread (body-pace.ts). */
  private silentWhileWaiting(): boolean {
    return this.frames.inMessage && silentAtItsTurn(this.messageBytes, this.shownBytes(), performance.now() - this.waitingSince)
  }

  /** The bytes of the message started last that have come, read or held unread in the paused stream. */
  private shownBytes(): number {
    return this.messageBytes - this.frames.remainingBytes + this.http2Stream.readableLength
  }

  /**
   * Times the arriving message's bytes against the pace, from now and for what is still to come:
   * only while grpc-js reads (it pauses the HTTP/2 stream between messages until the handler asks
   * for the next, and a stream's handler asks only with room among its running requests).
   */
  private startPace(): void {
    const reservation = this.inbound
    if (reservation === undefined || this.paced) return
    this.paced = true
    const remainingAtStart = this.frames.remainingBytes
    const pace = bodyPace({
      // The share's bytes: a compressed message holds the receive limit, whatever its length.
      lengthBytes: Math.max(reservation.bytes, remainingAtStart),
      windowMs: this.options.readTimeoutMs,
      received: () => remainingAtStart - this.frames.remainingBytes,
      slackBytes: 0
    })
    reservation.arriving({ behind: pace.behind, preempt: () => this.options.refuse(tooSlowForItsShare(this.messageBytes)) })
  }

  /** The server holds the message's bytes back (no read asked for): not timed, and its share not taken. */
  private suspendPace(): void {
    this.paced = false
    this.inbound?.arrived()
  }

  private ended(): void {
    this.clearReadTimer()
    this.stopPace()
  }

  /** The message's bytes are in, or the call is over: its share is memory held from now. */
  private stopPace(): void {
    this.suspendPace()
    this.inbound = undefined
  }

  private startReadTimer(): void {
    clearTimeout(this.readTimer)
    this.readTimer = setTimeout(() => this.options.refuse(tooSlow()), this.options.readTimeoutMs)
  }

  private clearReadTimer(): void {
    clearTimeout(this.readTimer)
    this.readTimer = undefined
  }

  /** (Re)starts the wait for the client to take an answer. */
  private timeAnswers(): void {
    clearTimeout(this.sendTimer)
    this.sendTimer = setTimeout(() => {
      this.options.refuse(new ServiceError('ANSWERS_NOT_READ'))
      this.http2Stream.close(http2.NGHTTP2_CANCEL)
    }, this.options.readTimeoutMs)
  }

  /** What the requests delivered and not yet answered hold (at most STREAM_MAX_IN_FLIGHT and a few). */
  private deliveredBytes(): number {
    let bytes = 0
    for (const reservation of this.delivered) bytes += reservation.bytes
    return bytes
  }

  /** Lets bytes flow again once nothing waits for room and the call holds less than its part. */
  private flow(): void {
    if (this.closed || this.mustWait()) return
    const next = this.deferredRead
    if (next !== undefined) {
      this.deferredRead = undefined
      this.pass(next)
    } else if (this.readOpen) {
      this.http2Stream.resume()
    }
  }
}
