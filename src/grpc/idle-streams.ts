import { performance } from 'node:perf_hooks'
import { constants as http2, type Http2Session, type ServerHttp2Stream } from 'node:http2'
import { ServiceError } from '../errors.js'

/**
 * The door's ModelStreamInfer streams that have no request in flight, oldest idle first, so that
 * streams nobody uses do not keep clients out. Nothing ended them: 33 connections × 126 streams
 * that sent headers and never a message held every place of --max-grpc-calls for as long as they
 * stayed, and ServerLive, probes included, was refused TOO_MANY_CALLS; 1024 connections with one
 * such stream each held every place of --max-grpc-connections, as connection-calls.ts leaves a
 * connection with a call open alone (attacker, round 7). A stream is idle from the moment it has
 * answered every request it sent (or from its opening) until its next request's bytes arrive:
 * - idle for `idleTimeoutMs` (--grpc-stream-idle-timeout-ms) it is ended;
 * - under pressure, sooner, as an HTTP server closes its idle keep-alive connections at its cap:
 *   a call over --max-grpc-calls ends the stream idle longest and takes its place
 *   (`reclaimOldest`), and a connection refused at --max-grpc-connections ends the streams of the
 *   connection idle longest whose every call is an idle stream, which is then told to go away
 *   (`reclaimConnection`). Only streams idle RECLAIM_AFTER_MS or more are taken: a client's stream
 *   between two pipelined requests is not.
 * Ended is UNAVAILABLE `STREAM_IDLE`: nothing it sent is lost, and its client opens a new stream
 * for its next request (tritonclient: stop_stream, start_stream). A Triton client keeps its stream
 * for a whole session, hence a long timeout and reclaiming under pressure.
 *
 * The door tells each stream's activity (`track`); a stream that answers exactly once per request
 * (ModelStreamInfer) has a request in flight while it has read more requests than it has answered.
 * A unary call is tracked the same way, idle from its opening until its message is read: one that
 * sends nothing (or only part of its message, then stops) gives way as an idle stream does, where it
 * held its place until --request-timeout-ms and could be sent anew at will.
 */

/** How long a stream must have been idle for a newcomer to take its place. */
export const RECLAIM_AFTER_MS = 1000

/**
 * How long an ended stream's client has to close its side once the status is sent, before the
 * stream is reset: a client that ignores the status would otherwise keep its HTTP/2 stream, and
 * grpc-js's call, alive with the place it gave up taken by another.
 */
export const CLOSE_GRACE_MS = 1000

export interface StreamActivity {
  /** A request was read whole: its answer is due. */
  requestRead(): void
  /** An answer was written. */
  answered(): void
  /** The call is over, however it ended. */
  closed(): void
}

export interface IdleStreamsOptions {
  readonly idleTimeoutMs: number
  /** Streams ended for their idle time, and to make room (to log them). */
  readonly endedIdle: () => void
  readonly reclaimed: () => void
  /** The clock, for tests. */
  readonly now?: () => number
}

type Reason = 'idle' | 'calls' | 'connections'

export class IdleStreams {
  /** Streams with no request in flight, in the order they became idle (bytes since then move one back when looked at). */
  private readonly idle = new Set<TrackedStream>()
  /** Idle streams on each HTTP/2 session. */
  private readonly idleOn = new Map<Http2Session, number>()
  private sweeper: NodeJS.Timeout | undefined
  readonly now: () => number

  constructor(private readonly options: IdleStreamsOptions) {
    this.now = options.now ?? (() => performance.now())
  }

  /**
   * A stream the door admitted, idle from now. `end` ends its call with the refusal given (once
   * the status is sent the stream is reset after CLOSE_GRACE_MS if its client has not closed it).
   * `oneRequest`: a unary call, never idle again once its message is read.
   */
  track(http2Stream: ServerHttp2Stream | undefined, end: (refusal: ServiceError) => void, oneRequest = false): StreamActivity {
    const stream = new TrackedStream(this, http2Stream, end, oneRequest)
    this.becameIdle(stream)
    return stream
  }

  /** Ends the stream idle longest, if one has been idle RECLAIM_AFTER_MS; returns whether one was. */
  reclaimOldest(): boolean {
    const oldest = this.oldest()
    if (oldest === undefined || this.now() - oldest.since < RECLAIM_AFTER_MS) return false
    this.end(oldest, 'calls')
    return true
  }

  /**
   * Ends every stream of the connection idle longest among those whose every call (`callsOn`) is an
   * idle stream, idle RECLAIM_AFTER_MS or more, and tells it to go away; returns whether one was.
   */
  reclaimConnection(callsOn: (session: Http2Session) => number): boolean {
    this.oldest()
    const now = this.now()
    for (const stream of this.idle) {
      const session = stream.session
      if (now - stream.lastActive() < RECLAIM_AFTER_MS || session === undefined || session.closed || session.destroyed) continue
      if (this.idleOn.get(session) !== callsOn(session)) continue
      for (const other of [...this.idle]) if (other.session === session) this.end(other, 'connections')
      session.goaway(http2.NGHTTP2_NO_ERROR)
      session.close()
      return true
    }
    return false
  }

  /** Stops the sweeps until a stream goes idle again (the door closes: the drain ends its streams). */
  close(): void {
    clearInterval(this.sweeper)
    this.sweeper = undefined
  }

  /** @internal TrackedStream's: it has no request in flight from now. */
  becameIdle(stream: TrackedStream): void {
    stream.since = this.now()
    this.idle.add(stream)
    const session = stream.session
    if (session !== undefined) this.idleOn.set(session, (this.idleOn.get(session) ?? 0) + 1)
    this.sweeper ??= setInterval(() => this.sweep(), sweepEveryMs(this.options.idleTimeoutMs)).unref()
  }

  /** @internal TrackedStream's: it has a request in flight, or is over. */
  becameBusy(stream: TrackedStream): void {
    if (!this.idle.delete(stream)) return
    const session = stream.session
    if (session === undefined) return
    const left = (this.idleOn.get(session) ?? 1) - 1
    if (left === 0) this.idleOn.delete(session)
    else this.idleOn.set(session, left)
  }

  /** The stream idle longest; streams whose bytes came since they went idle are moved back on the way. */
  private oldest(): TrackedStream | undefined {
    for (const stream of this.idle) {
      if (stream.bytesAt <= stream.since) return stream
      this.idle.delete(stream)
      stream.since = stream.bytesAt
      this.idle.add(stream)
    }
    return undefined
  }

  private sweep(): void {
    // Stopped here rather than when the last idle stream gets busy: calls go idle and busy by the
    // thousand a second, each a timer made and cleared.
    if (this.idle.size === 0) return this.close()
    const now = this.now()
    for (const stream of [...this.idle]) if (now - stream.lastActive() >= this.options.idleTimeoutMs) this.end(stream, 'idle')
  }

  private end(stream: TrackedStream, reason: Reason): void {
    if (reason === 'idle') this.options.endedIdle()
    else this.options.reclaimed()
    stream.end(reason, this.options.idleTimeoutMs)
  }
}

/** Often enough that a stream ends within an eighth of the timeout past it, and at most once a second. */
function sweepEveryMs(idleTimeoutMs: number): number {
  return Math.max(1000, Math.round(idleTimeoutMs / 8))
}

const ENDED_BECAUSE: Record<Reason, (idleTimeoutMs: number) => string> = {
  idle: (ms) => `(It had none for ${ms} ms.)`,
  calls: () => '(--max-grpc-calls were open: a new call took its place.)',
  connections: () => '(--max-grpc-connections were open: its connection, every call of it an idle stream, was told to go away.)'
}

class TrackedStream implements StreamActivity {
  /** When it last went idle (or came back into line with bytes that had come). */
  since = 0
  /** When its last bytes arrived. */
  bytesAt = 0
  private inFlight = 0
  private over = false
  private readonly onBytes = (): void => {
    this.bytesAt = this.streams.now()
  }

  constructor(
    private readonly streams: IdleStreams,
    private readonly http2Stream: ServerHttp2Stream | undefined,
    private readonly endCall: (refusal: ServiceError) => void,
    /** A unary call: once its message is read it is busy until it ends. */
    private readonly oneRequest: boolean
  ) {
    this.session = http2Stream?.session
    // prependListener, not on: a 'data' listener added with on() would resume a paused stream.
    http2Stream?.prependListener('data', this.onBytes)
  }

  /** Its connection, kept: Node forgets a stream's session once the stream is destroyed. */
  readonly session: Http2Session | undefined

  lastActive(): number {
    return Math.max(this.since, this.bytesAt)
  }

  requestRead(): void {
    if (this.over || this.inFlight++ > 0) return
    this.streams.becameBusy(this)
  }

  answered(): void {
    if (this.over || this.oneRequest || this.inFlight === 0 || --this.inFlight > 0) return
    this.streams.becameIdle(this)
  }

  closed(): void {
    if (this.over) return
    this.over = true
    this.http2Stream?.off('data', this.onBytes)
    this.streams.becameBusy(this)
  }

  end(reason: Reason, idleTimeoutMs: number): void {
    if (this.over) return
    this.endCall(new ServiceError('STREAM_IDLE', ENDED_BECAUSE[reason](idleTimeoutMs)))
    this.closed()
    const http2Stream = this.http2Stream
    if (http2Stream === undefined) return
    setTimeout(() => {
      if (!http2Stream.closed) http2Stream.close(http2.NGHTTP2_NO_ERROR)
    }, CLOSE_GRACE_MS).unref()
  }
}
