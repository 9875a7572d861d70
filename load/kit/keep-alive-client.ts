import { connect, type Socket } from 'node:net'

/**
 * One request at a time on one kept-alive HTTP/1.1 connection, the way autocannon sends: the
 * request's bytes are built once and written whole, and the answer is read by its Content-Length.
 * It is for timing a single answer where the client must cost as little as the load generator's:
 * fetch, on caches a ResNet-50 run has just emptied, adds about 2 ms to each answer (docs/load-report.md).
 * Only what the benchmarked servers send is understood: a status line, headers and a body of
 * Content-Length bytes (no chunked answers, no 1xx).
 */

export interface KeepAliveAnswer {
  readonly status: number
  readonly body: Buffer
}

const HEAD_END = Buffer.from('\r\n\r\n')
const EMPTY = Buffer.alloc(0)
/** An answer's head is a few hundred bytes; a longer one is not an answer this client understands. */
const MAX_HEAD_BYTES = 16 * 1024

export class KeepAliveClient {
  private socket: Socket | undefined
  /** Bytes of the answer so far. */
  private received: Buffer = EMPTY
  private waiting: { resolve(answer: KeepAliveAnswer): void; reject(err: Error): void } | undefined

  constructor(
    private readonly url: URL,
    private readonly request: Buffer
  ) {}

  /** A client that POSTs `body` with `headers` to `url` (path and query included) each time it is asked. */
  static post(url: string, headers: Readonly<Record<string, string>>, body: Buffer): KeepAliveClient {
    const target = new URL(url)
    const lines = [`POST ${target.pathname}${target.search} HTTP/1.1`, `host: ${target.host}`, `content-length: ${body.length}`]
    for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`)
    return new KeepAliveClient(target, Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), body]))
  }

  /** Sends the request and resolves with the answer; connects first when there is no open connection. */
  async send(): Promise<KeepAliveAnswer> {
    if (this.waiting !== undefined) throw new Error('KeepAliveClient: one request at a time')
    const socket = this.socket ?? (await this.connect())
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject }
      socket.write(this.request)
    })
  }

  close(): void {
    this.socket?.destroy()
    this.socket = undefined
  }

  private async connect(): Promise<Socket> {
    const socket = connect(Number(this.url.port || 80), this.url.hostname)
    socket.setNoDelay(true)
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('error', reject)
    })
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    const lost = (err?: Error): void => {
      if (this.socket !== socket) return // already closed here, or replaced
      this.socket = undefined
      this.received = EMPTY
      this.fail(err ?? new Error(`${this.url.host} closed the connection before answering`))
    }
    socket.on('error', lost)
    socket.on('close', () => lost())
    this.socket = socket
    return socket
  }

  private onData(chunk: Buffer): void {
    const data = this.received.length === 0 ? chunk : Buffer.concat([this.received, chunk])
    this.received = data
    const headEnd = data.indexOf(HEAD_END)
    if (headEnd < 0) {
      if (data.length > MAX_HEAD_BYTES) this.fail(new Error(`${this.url.host}: no end of the answer's head in ${data.length} bytes`))
      return
    }
    const head = data.subarray(0, headEnd).toString('latin1')
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1])
    const length = /\r\ncontent-length: *(\d+)/i.exec(head)?.[1]
    if (!Number.isInteger(status) || length === undefined) {
      this.fail(new Error(`${this.url.host}: an answer without a status or a Content-Length: ${head.slice(0, 200)}`))
      return
    }
    const bodyStart = headEnd + HEAD_END.length
    if (data.length < bodyStart + Number(length)) return
    if (data.length > bodyStart + Number(length)) {
      this.fail(new Error(`${this.url.host}: more bytes than one answer`))
      return
    }
    this.received = EMPTY
    const waiting = this.waiting
    this.waiting = undefined
    // A server that closes after this answer: the next request opens a new connection.
    if (/\r\nconnection: *close/i.test(head)) this.close()
    waiting?.resolve({ status, body: data.subarray(bodyStart) })
  }

  private fail(err: Error): void {
    const waiting = this.waiting
    this.waiting = undefined
    if (waiting === undefined) return
    this.close()
    waiting.reject(err)
  }
}
