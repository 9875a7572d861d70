import { once } from 'node:events'
import { connect as http2Connect, type IncomingHttpHeaders } from 'node:http2'
import { connect } from 'node:net'
import { Client, Metadata, credentials, status as grpcStatus, type ServiceError as GrpcCallError } from '@grpc/grpc-js'

/**
 * How load/robustness/attack.ts sends its requests, each capped in time so that a server that never answers
 * costs the harness a bounded wait: fetch for whole bodies, a raw socket for bodies sent slowly or
 * never finished, a gRPC client that sends a message's bytes as they are, and a gRPC call that
 * announces a message and sends only its start.
 */

/** What became of one request: an HTTP status, a gRPC status name, or how the exchange ended. */
export interface Outcome {
  /**
   * "413", "UNAUTHENTICATED"; or "closed" (by the server, without an answer), "reset" (the
   * connection was reset before an answer could be read), "gave up" (no answer within the cap),
   * "error" (no connection).
   */
  readonly code: string
  readonly seconds: number
}

const since = (t0: number): number => (performance.now() - t0) / 1000

/** One HTTP request through fetch; after `capMs` the client gives up ("gave up"). */
export async function sendHttp(url: string, init: RequestInit, capMs: number): Promise<Outcome> {
  const t0 = performance.now()
  try {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(capMs) })
    await res.arrayBuffer()
    return { code: String(res.status), seconds: since(t0) }
  } catch (err) {
    return { code: (err as Error).name === 'TimeoutError' ? 'gave up' : 'error', seconds: since(t0) }
  }
}

export interface RawRequest {
  /** Request line and headers, without the blank line that ends them. */
  readonly head: string
  /** Sent at once after the head. */
  readonly body?: Uint8Array
  /** Then this many more bytes, one every `intervalMs` (a slow client). */
  readonly trickle?: { readonly bytes: number; readonly intervalMs: number }
  readonly capMs: number
}

const HEAD_PAUSE_MS = 500

/**
 * One request over its own socket: the head, 500 ms later the body, then the trickle, until the
 * server answers, or closes the connection without an answer ("closed"), or `capMs` passes ("gave
 * up"). The code is the status of the server's answer when it sent one.
 */
export async function sendRaw(url: string, request: RawRequest): Promise<Outcome> {
  const { hostname, port } = new URL(url)
  const t0 = performance.now()
  const socket = connect(Number(port), hostname)
  let answer = ''
  const ended = new Promise<string>((resolve) => {
    socket.on('data', (d: Buffer) => {
      if (answer.length < 64) answer += d.toString('latin1')
      if (/^HTTP\/1\.1 \d{3}/.test(answer)) resolve('answered')
    })
    socket.on('error', () => resolve('reset'))
    socket.on('close', () => resolve('closed'))
  })
  let trickle: NodeJS.Timeout | undefined
  let cap: NodeJS.Timeout | undefined
  const capped = new Promise<string>((resolve) => {
    cap = setTimeout(() => resolve('gave up'), request.capMs)
  })
  try {
    await once(socket, 'connect')
    socket.write(`${request.head}\r\n\r\n`)
    // A server that refuses on the head alone answers and closes at once; bytes sent after that
    // make its kernel reset the connection, and a reset loses the answer before it is read.
    const early = await Promise.race([ended, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), HEAD_PAUSE_MS))])
    if (early === undefined && request.body !== undefined && !socket.write(request.body))
      await Promise.race([once(socket, 'drain'), ended, capped])
    if (early === undefined && request.trickle !== undefined) {
      let left = request.trickle.bytes
      trickle = setInterval(() => {
        if (left-- > 0 && socket.writable) socket.write('A')
      }, request.trickle.intervalMs)
    }
    const how = await Promise.race([ended, capped])
    const status = /^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1]
    return { code: status ?? how, seconds: since(t0) }
  } catch {
    return { code: 'error', seconds: since(t0) }
  } finally {
    clearInterval(trickle)
    clearTimeout(cap)
    socket.destroy()
  }
}

const MODEL_INFER = '/inference.GRPCInferenceService/ModelInfer'
const asIs = (bytes: Buffer): Buffer => bytes

/** gRPC ModelInfer with `message` as its wire bytes; after `capMs` the call is cancelled ("gave up"). */
export async function sendModelInfer(
  address: string,
  message: Buffer,
  metadata: Readonly<Record<string, string>>,
  capMs: number
): Promise<Outcome> {
  const client = new Client(address, credentials.createInsecure(), {
    'grpc.max_send_message_length': -1,
    'grpc.max_receive_message_length': -1
  })
  const meta = new Metadata()
  for (const [key, value] of Object.entries(metadata)) meta.set(key, value)
  const t0 = performance.now()
  let cap: NodeJS.Timeout | undefined
  try {
    const code = await new Promise<string>((resolve) => {
      const call = client.makeUnaryRequest(MODEL_INFER, asIs, asIs, message, meta, {}, (err: GrpcCallError | null) =>
        resolve(err === null ? 'OK' : grpcStatus[err.code])
      )
      cap = setTimeout(() => {
        call.cancel()
        resolve('gave up')
      }, capMs)
    })
    return { code, seconds: since(t0) }
  } finally {
    clearTimeout(cap)
    client.close()
  }
}

/**
 * A ModelInfer call on its own connection that announces a message of `bytes` (its 5-byte prefix)
 * and sends only `sent` bytes of it, then waits for the server to end the call, or `capMs` ("gave up").
 */
export async function announceModelInfer(
  address: string,
  bytes: number,
  sent: number,
  metadata: Readonly<Record<string, string>>,
  capMs: number
): Promise<Outcome> {
  const t0 = performance.now()
  const session = http2Connect(`http://${address}`)
  session.on('error', () => {})
  let cap: NodeJS.Timeout | undefined
  try {
    const stream = session.request({
      ':method': 'POST',
      ':path': MODEL_INFER,
      'content-type': 'application/grpc',
      te: 'trailers',
      ...metadata
    })
    stream.on('error', () => {})
    const prefix = Buffer.alloc(5)
    prefix.writeUInt32BE(bytes, 1)
    stream.write(Buffer.concat([prefix, Buffer.alloc(sent)]))
    const code = await new Promise<string>((resolve) => {
      const settle = (headers: IncomingHttpHeaders): void => {
        const code = headers['grpc-status']
        if (code !== undefined) resolve(grpcStatus[Number(code)] ?? String(code))
      }
      stream.on('response', settle)
      stream.on('trailers', settle)
      stream.on('close', () => resolve('closed'))
      stream.resume()
      cap = setTimeout(() => resolve('gave up'), capMs)
    })
    return { code, seconds: since(t0) }
  } finally {
    clearTimeout(cap)
    session.destroy()
  }
}
