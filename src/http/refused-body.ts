import type { IncomingMessage } from 'node:http'

/**
 * What happens to the rest of a body when a request is refused before its body has arrived (401,
 * 404, 413, 415, 429 at admission; 413 when a chunked body passes the limit). Closing at once
 * would be cheapest, but a client that sends its whole body before reading (tritonclient, Python
 * `requests`) then meets a reset while sending and reports a broken pipe instead of the answer,
 * and retries. So the answer goes out and the rest of the body is read and dropped, chunk by
 * chunk, never held: up to DISCARD_MAX_BYTES or for DISCARD_MAX_MS, whichever comes first; then
 * the connection is closed. A body that ends within the bounds leaves a usable keep-alive
 * connection. Nothing is parsed: admission's guarantees (no body parsed before admission, the
 * body budget) hold, since dropped bytes are neither.
 */

/**
 * The largest rest of a body read to let its client see the answer: well above the default
 * --body-limit-bytes (16 MiB) and the V2 limit, and their JSON/base64 forms, which a client
 * commonly passes by mistake; a 72 MB V2 request from tritonclient met a connection reset at
 * 64 MiB instead of its 413 (client review). Time bounds it too (below).
 */
export const DISCARD_MAX_BYTES = 256 * 1024 * 1024
/** How long a refused request's body is read before the connection is closed: at 1 Gbit/s (125 MB/s), about 256 MiB. */
const DISCARD_MAX_MS = 2000

/** Connections whose request was answered and whose body is being dropped: nothing more is to be written on them. */
const discarding = new WeakSet<object>()

/** Whether this connection's request was refused and answered, and only the rest of its body is being read. */
export function isDiscardingRefusedBody(socket: object): boolean {
  return discarding.has(socket)
}

/**
 * Reads and drops what is left of `raw`'s body, within the bounds above; closes the connection
 * when they are passed. Call once the request is refused and its body has not fully arrived.
 */
export function discardRefusedBody(raw: IncomingMessage): void {
  if (raw.destroyed || raw.complete) return
  const socket = raw.socket
  let bytes = 0
  const stop = (): void => {
    discarding.delete(socket)
    clearTimeout(timer)
    raw.off('data', count)
    raw.off('end', stop)
  }
  const giveUp = (): void => {
    stop()
    socket.destroy()
  }
  const count = (chunk: Buffer): void => {
    bytes += chunk.byteLength
    if (bytes > DISCARD_MAX_BYTES) giveUp()
  }
  const timer = setTimeout(giveUp, DISCARD_MAX_MS)
  timer.unref()
  // A decoder (Content-Encoding) may still be piped from the body; nothing is to be decoded now.
  raw.unpipe()
  discarding.add(socket)
  raw.on('data', count)
  raw.once('end', stop)
  raw.resume()
}
