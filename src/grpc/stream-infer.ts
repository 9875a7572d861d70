import { setMaxListeners } from 'node:events'
import type { ServerDuplexStream, StatusObject } from '@grpc/grpc-js'
import type { RequestOptions } from '../core/classify-service.js'

/**
 * Flow control for ModelStreamInfer, the bidirectional stream: each request read off the stream
 * runs at once, alongside the others (answers go back in completion order, as Triton's do), and
 * every request gets exactly one answer; a request that fails is answered with its error and the
 * stream goes on. What a stream may hold is bounded, so a client that sends without reading costs
 * a bounded amount of memory:
 * - requests running: at most STREAM_MAX_IN_FLIGHT, holding at most `maxInFlightBytes` of
 *   message bytes together (one message is always let in, whatever its size);
 * - answers written but not yet taken by HTTP/2 (the client does not read, its flow-control
 *   window is full): once `call.write` returns false, nothing more is read until 'drain'.
 * While either bound is reached the stream is paused: grpc-js then stops reading from HTTP/2 after
 * filling the stream's readable buffer (its object-mode default of 16 messages), HTTP/2 flow
 * control stops the client's writes, and the client's own sends wait.
 *
 * When the server shuts down, an open stream would hold the drain until its client closes it, for
 * as long as the drain timeout: `shutdown` stops reading, lets the requests already read be
 * answered, then ends the call with the status given (UNAVAILABLE, which tells a client to go
 * elsewhere), or OK if the client had already half-closed.
 */

/**
 * Requests of one stream run at once: enough to keep batches full for a client that pipelines
 * single images (the default maxBatchSize is 16, two sessions on CUDA), few enough that one stream
 * cannot take a model's whole queue (maxQueueSize 256).
 */
export const STREAM_MAX_IN_FLIGHT = 32

/** What the door's streams have done; read by tests and logs. */
export interface StreamCounters {
  /** Requests taken off every stream. */
  requestsRead: number
  /** Answers handed to HTTP/2 (their write completed). */
  answersWritten: number
  /** The most requests any one stream had read and not yet answered with a completed write. */
  peakUnanswered: number
}

export function streamCounters(): StreamCounters {
  return { requestsRead: 0, answersWritten: 0, peakUnanswered: 0 }
}

export interface InferStreamOptions<Res> {
  /** One request's answer; never rejects (a failed request's answer carries its error). */
  readonly answer: (bytes: Buffer, options: RequestOptions) => Promise<Res>
  /** A request has its answer: its bytes' share of the receive budget goes back (message-meter.ts). */
  readonly answered: (bytes: Buffer) => void
  /** The stream's deadline and hang-up signal, applied to every request it carries. */
  readonly options: RequestOptions
  /** Message bytes the running requests may hold together (the door's receive limit). */
  readonly maxInFlightBytes: number
  readonly counters: StreamCounters
}

export interface InferStreamHandle {
  /** The server is closing: read no more requests; end the call with `status` once those read are answered. */
  shutdown(status: Pick<StatusObject, 'code' | 'details' | 'metadata'>): void
}

/**
 * Serves one ModelStreamInfer call until the client has half-closed and every request it sent is
 * answered; then ends the call with OK. A cancelled call (client gone, deadline passed) aborts the
 * requests still running through options.signal; their answers are dropped.
 */
export function serveInferStream<Res>(call: ServerDuplexStream<Buffer, Res>, stream: InferStreamOptions<Res>): InferStreamHandle {
  const { answer, answered, options, maxInFlightBytes, counters } = stream
  // Each running request listens on the stream's signal (infer.ts withdraws queued images on abort).
  if (options.signal !== undefined) setMaxListeners(STREAM_MAX_IN_FLIGHT + 10, options.signal)
  let inFlight = 0
  let inFlightBytes = 0
  let unanswered = 0
  let writeBlocked = false
  let halfClosed = false
  let gone = false
  let closingStatus: Pick<StatusObject, 'code' | 'details' | 'metadata'> | undefined

  const full = (): boolean => inFlight >= STREAM_MAX_IN_FLIGHT || inFlightBytes >= maxInFlightBytes || writeBlocked
  const flow = (): void => {
    if (gone) return
    if (full() || closingStatus !== undefined) {
      if (!call.isPaused()) call.pause()
    } else if (call.isPaused()) {
      call.resume()
    }
  }
  const finishIfDone = (): void => {
    if (unanswered > 0 || gone || call.writableEnded) return
    if (halfClosed) call.end()
    // grpc-js's own 'error' listener on the call turns this into the call's status and ends it.
    else if (closingStatus !== undefined) call.emit('error', closingStatus)
  }
  const written = (): void => {
    unanswered--
    counters.answersWritten++
    finishIfDone()
  }
  const deliver = (res: Res, bytes: Buffer): void => {
    answered(bytes)
    inFlight--
    inFlightBytes -= bytes.byteLength
    if (gone) {
      unanswered--
      return
    }
    if (!call.write(res, written)) writeBlocked = true
    flow()
  }

  call.on('data', (bytes: Buffer) => {
    inFlight++
    inFlightBytes += bytes.byteLength
    unanswered++
    counters.requestsRead++
    if (unanswered > counters.peakUnanswered) counters.peakUnanswered = unanswered
    flow()
    void answer(bytes, options).then((res) => deliver(res, bytes))
  })
  call.on('drain', () => {
    writeBlocked = false
    flow()
  })
  call.on('end', () => {
    halfClosed = true
    finishIfDone()
  })
  call.on('cancelled', () => {
    gone = true
  })
  return {
    shutdown(status) {
      closingStatus = status
      flow()
      finishIfDone()
    }
  }
}
