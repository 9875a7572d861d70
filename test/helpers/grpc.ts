import { connect, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2'
import { Client, Metadata, credentials, status, type ServiceDefinition, type ServiceError as GrpcCallError } from '@grpc/grpc-js'
import { expect } from 'vitest'
import type { Logger } from 'pino'
import type { Settings } from '../../src/config.js'
import { SERVICE_NAME, loadInferenceProto, startGrpcServer } from '../../src/grpc/server.js'
import type { BodyBudget } from '../../src/body-budget.js'
import type { StreamCounters } from '../../src/grpc/stream-infer.js'
import type { TestServer } from './server.js'

export interface GrpcTestClient {
  /** One unary call of inference.GRPCInferenceService; rejects with the call's status error. */
  call<Res>(rpc: string, request: object, options?: CallOptions): Promise<Res>
  /** The same, with the request message given as its wire bytes (sent as they are). */
  callRaw<Res>(rpc: string, message: Uint8Array, options?: CallOptions): Promise<Res>
  close(): void
}

export interface GrpcTestDoor extends Omit<GrpcTestClient, 'close'> {
  readonly port: number
  readonly receiveLimitBytes: number
  /** ModelInfer messages the door has protobuf-decoded so far. */
  decodedInferRequests(): number
  /** What the door's ModelStreamInfer calls have read and answered so far. */
  streamCounters(): Readonly<StreamCounters>
  /** The body budget its inference messages are held in: bytes held and messages waiting for room. */
  bodyBudget(): { readonly heldBytes: number; readonly waiting: number }
  close(): Promise<void>
}

export type { GrpcCallError }

export interface CallOptions {
  readonly deadlineMs?: number
  /** Sent as the call's metadata (e.g. authorization). */
  readonly metadata?: Readonly<Record<string, string>>
}

const definition = loadInferenceProto()[SERVICE_NAME] as ServiceDefinition
const asIs = (bytes: Uint8Array): Buffer => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

/** A client of the gRPC door at host:port that accepts answers of any size. */
export function grpcTestClient(address: string): GrpcTestClient {
  const client = new Client(address, credentials.createInsecure(), {
    'grpc.max_receive_message_length': -1,
    'grpc.max_send_message_length': -1
  })
  function unary<Res>(rpc: string, request: unknown, serialize: (value: never) => Buffer, options: CallOptions): Promise<Res> {
    const method = definition[rpc]
    if (method === undefined) throw new Error(`${SERVICE_NAME} has no method ${rpc}`)
    const callOptions = options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs }
    const metadata = new Metadata()
    for (const [key, value] of Object.entries(options.metadata ?? {})) metadata.set(key, value)
    return new Promise<Res>((resolve, reject) => {
      client.makeUnaryRequest(
        method.path,
        serialize,
        method.responseDeserialize,
        request as never,
        metadata,
        callOptions,
        (err, response) => (err === null ? resolve(response as Res) : reject(err))
      )
    })
  }
  return {
    call: (rpc, request, options = {}) => unary(rpc, request, definition[rpc]?.requestSerialize as (value: never) => Buffer, options),
    callRaw: (rpc, message, options = {}) => unary(rpc, message, asIs, options),
    close: () => client.close()
  }
}

/**
 * The real gRPC door over a test server's service and metrics, on 127.0.0.1, port 0, with a client
 * for it. `settings` (default: the server's) lets a test open a second door configured otherwise;
 * `logger` one whose lines it reads (default: the server's, as main.ts gives both doors one); `bodyBudget` the HTTP door's, to share it as main.ts does (by
 * default the door has one of its own).
 */
export async function startTestGrpc(
  server: TestServer,
  settings: Settings = server.settings,
  logger: Logger = server.log,
  bodyBudget?: BodyBudget
): Promise<GrpcTestDoor> {
  const handle = await startGrpcServer(server.service, settings, logger, server.metrics, bodyBudget)
  const client = grpcTestClient(`127.0.0.1:${handle.port}`)
  return {
    port: handle.port,
    receiveLimitBytes: handle.receiveLimitBytes,
    decodedInferRequests: () => handle.decodedInferRequests(),
    streamCounters: () => ({ ...handle.streamCounters() }),
    bodyBudget: () => handle.bodyBudget(),
    call: client.call,
    callRaw: client.callRaw,
    async close() {
      client.close()
      await handle.close()
    }
  }
}

/** The status a call failed with, by name (INVALID_ARGUMENT), and its details; fails the test if the call succeeded. */
export async function callRefusal(call: Promise<unknown>): Promise<{ code: string; details: string }> {
  const err = await call.then(
    () => undefined,
    (e: unknown) => e as GrpcCallError
  )
  expect(err, 'the call succeeded').toBeDefined()
  return { code: status[err!.code], details: err!.details }
}

/** A gRPC message as it travels: a compressed flag, a 4-byte big-endian length, the bytes. */
export function grpcFrame(message: Uint8Array, compressed = false): Buffer {
  const header = Buffer.alloc(5)
  header.writeUInt8(compressed ? 1 : 0, 0)
  header.writeUInt32BE(message.byteLength, 1)
  return Buffer.concat([header, message])
}

export interface RawCallEnd {
  readonly code: number
  readonly details: string
}

export interface RawGrpcCall {
  readonly stream: ClientHttp2Stream
  /** The call's grpc-status and grpc-message, from the trailers (or a trailers-only answer). */
  readonly ended: Promise<RawCallEnd>
  close(): void
}

/** A call of inference.GRPCInferenceService opened on `session`, its headers sent, nothing more; how it ends is read from its events. */
export function openGrpcStream(
  session: ClientHttp2Session,
  rpc: string,
  headers: Readonly<Record<string, string>> = {}
): ClientHttp2Stream {
  const stream = session.request({
    ':method': 'POST',
    ':path': `/${SERVICE_NAME}/${rpc}`,
    'content-type': 'application/grpc',
    te: 'trailers',
    ...headers
  })
  stream.on('error', () => undefined)
  return stream
}

/**
 * A call of inference.GRPCInferenceService written by hand over HTTP/2, for what a grpc-js client
 * never sends: an unreadable grpc-timeout, half a message, an unknown encoding. The caller writes
 * the body on `stream` (see grpcFrame).
 */
export function rawGrpcCall(port: number, rpc: string, headers: Readonly<Record<string, string>> = {}): RawGrpcCall {
  const session = connect(`http://127.0.0.1:${port}`)
  session.on('error', () => undefined)
  const stream = openGrpcStream(session, rpc, headers)
  const ended = new Promise<RawCallEnd>((resolve, reject) => {
    const settle = (h: IncomingHttpHeaders): void => {
      if (h['grpc-status'] === undefined) return
      resolve({ code: Number(h['grpc-status']), details: decodeURIComponent(String(h['grpc-message'] ?? '')) })
    }
    stream.on('response', settle)
    stream.on('trailers', settle)
    stream.on('close', () => reject(new Error('the stream closed without a grpc-status')))
    stream.resume()
  })
  // A call the test closes itself may never settle; only an awaited one reports its rejection.
  ended.catch(() => undefined)
  return {
    stream,
    ended,
    close() {
      session.destroy()
    }
  }
}
