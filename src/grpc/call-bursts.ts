import { constants as http2, type ServerHttp2Stream } from 'node:http2'

/**
 * Bounds how many gRPC calls may begin in one turn of the event loop, over every connection.
 *
 * A call that ends at once still leaves its objects (Node's HTTP/2 stream, grpc-js's call, the
 * door's) until the next turn: Node frees a stream's native half on the turn after it closed. A
 * client that opens streams and ends them without waiting for answers (half-closed at once, or
 * reset: HTTP/2's "rapid reset") puts thousands of calls in one read. 200 such connections, 2000
 * streams each, 5 rounds, killed the built server in a 1.5 GiB memory cgroup, as the manifests
 * give a pod (V8's heap limit there is 792 MiB): heap exhausted, every one of those calls answered.
 * A client that keeps to the 128 streams a connection may have open cannot begin so many: its next
 * calls wait for answers, which come on later turns.
 *
 * Once `limit` calls have begun in a turn, a connection that begins one more is sent GOAWAY
 * ENHANCE_YOUR_CALM and closed gracefully: the calls it has already begun (this one included)
 * run to their end, and HTTP/2 drops, unread, every stream it opens after, whatever the rest of
 * its bytes hold. Its client reconnects for new calls, as gRPC clients do after a GOAWAY.
 */
export class CallBursts {
  /** Calls begun in this turn of the event loop; the first of a turn schedules its reset. */
  private begun = 0
  private readonly endTurn = (): void => {
    this.begun = 0
  }

  constructor(
    private readonly limit: number,
    /** A connection was told to go away (to log it). */
    private readonly told: () => void
  ) {}

  /** A call begins on this HTTP/2 stream. */
  begin(stream: Pick<ServerHttp2Stream, 'session'>): void {
    if (this.begun++ === 0) setImmediate(this.endTurn)
    if (this.begun <= this.limit) return
    const session = stream.session
    if (session === undefined || session.closed || session.destroyed) return
    // The last stream it processed (0: nghttp2 takes the last one it processed) is this call's.
    session.goaway(http2.NGHTTP2_ENHANCE_YOUR_CALM, 0)
    session.close()
    this.told()
  }
}
