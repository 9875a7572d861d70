import { constants as http2, type Http2Session } from 'node:http2'
import type { Socket } from 'node:net'

/**
 * The gRPC door's connections and the calls open on each, so that connections holding no call do
 * not keep clients out of --max-grpc-connections for good. grpc-js closed none: 1030 TCP
 * connections that sent nothing (no HTTP/2 preface, zero bytes) held every place for as long as
 * they stayed, and every gRPC client, Kubernetes' grpc probe included, was refused at connect
 * (UNAVAILABLE 'Socket closed') until they went. The HTTP door's rules, applied to calls:
 * - a connection must begin its first call within --headers-timeout-ms of being accepted (HTTP:
 *   its first request's headers), else it is closed: a channel connects for a call, and one that
 *   connected ahead (channel_ready_future) reconnects for its call, as gRPC clients do;
 * - between calls it may stay open --keep-alive-timeout-ms (grpc-js's grpc.max_connection_idle_ms,
 *   set by the door), then it is told to go away;
 * - when a connection is refused at the cap, those with no call open that have had one are told to
 *   go away at once (HTTP: Node closes its keep-alive connections idle between requests), so the
 *   next client, a probe, gets in.
 * "Told to go away" is GOAWAY NO_ERROR and a graceful close: a gRPC client reconnects for its next
 * call without an error, and a call its GOAWAY crossed is retried (HTTP/2 says it was not read).
 *
 * A connection whose calls are all ModelStreamInfer streams with no request in flight is not idle
 * here; idle-streams.ts ends those streams, and the connection, when none of these is left to reclaim.
 *
 * Calls are told apart by their connection's remote address and port, which the listener's socket
 * and grpc-js's session (through its socket proxy) both show. When a call cannot be traced to its
 * connection (grpc-js hides its HTTP/2 stream), the first-call and reclaim rules are off, so no
 * client is closed for calls the door cannot see.
 */
export class ConnectionCalls {
  private readonly open = new Map<string, Connection>()
  private blind = false

  constructor(
    /** How long a connection may take to begin its first call (--headers-timeout-ms). */
    private readonly firstCallMs: number,
    /** Connections closed for beginning no call in time (to log it). */
    private readonly closedSilent: () => void
  ) {}

  /** A connection the door accepted. */
  accept(socket: Socket): void {
    const key = peerKey(socket)
    if (key === undefined) return
    const connection: Connection = { socket, session: undefined, calls: 0, firstCall: undefined }
    connection.firstCall = setTimeout(() => {
      connection.firstCall = undefined
      if (connection.session !== undefined || this.blind || socket.destroyed) return
      socket.destroy()
      this.closedSilent()
    }, this.firstCallMs)
    connection.firstCall.unref()
    this.open.set(key, connection)
    socket.once('close', () => {
      clearTimeout(connection.firstCall)
      if (this.open.get(key) === connection) this.open.delete(key)
    })
  }

  /**
   * A call begins on this HTTP/2 session (undefined: grpc-js did not show it). Returns what ends it,
   * to call once whatever way the call ends (further calls do nothing).
   */
  callBegan(session: Http2Session | undefined): () => void {
    const connection = session === undefined ? undefined : this.open.get(peerKey(session.socket) ?? '')
    if (connection === undefined) {
      if (session === undefined) this.blind = true
      return noop
    }
    connection.session = session
    connection.calls++
    let ended = false
    return () => {
      if (ended) return
      ended = true
      connection.calls--
    }
  }

  /** Calls open on this HTTP/2 session's connection (0 for one the door does not know). */
  callsOn(session: Http2Session): number {
    return this.open.get(peerKey(session.socket) ?? '')?.calls ?? 0
  }

  /** Tells every connection with no call open that has had one to go away; returns how many were. */
  reclaimIdle(): number {
    if (this.blind) return 0
    let told = 0
    for (const { session, calls } of this.open.values()) {
      if (calls > 0 || session === undefined || session.closed || session.destroyed) continue
      session.goaway(http2.NGHTTP2_NO_ERROR)
      session.close()
      told++
    }
    return told
  }
}

interface Connection {
  readonly socket: Socket
  /** The HTTP/2 session grpc-js made of it, known from its first call (undefined: it has begun none). */
  session: Http2Session | undefined
  /** Calls open on it now. */
  calls: number
  firstCall: NodeJS.Timeout | undefined
}

function peerKey(socket: Pick<Socket, 'remoteAddress' | 'remotePort'> | undefined): string | undefined {
  const address = socket?.remoteAddress
  return address === undefined ? undefined : `${address}|${String(socket?.remotePort)}`
}

function noop(): void {}
