import { parentPort } from 'node:worker_threads'
import { ServiceError, type ErrorCode } from '../errors.js'
import { packJsonTensors, parseInferenceHeader } from './v2-binary.js'

/**
 * A worker thread of the header parse pool (header-parse-pool.ts): parses one V2 inference header
 * at a time, off the event loop, and hands back each FP32 or UINT8 input's `data` packed as one
 * flat Float32Array or Uint8Array (transferred, not cloned: packJsonTensors). Imports nothing that loads native code (no sharp, no ONNX Runtime).
 */

export interface HeaderParseJob {
  /** The header's JSON bytes, exactly. */
  readonly bytes: Uint8Array
  /** The body had Inference-Header-Content-Length (the refusal of invalid JSON names it). */
  readonly withLength: boolean
}

export type HeaderParseReply =
  | { readonly header: unknown }
  | { readonly refusal: { readonly code: ErrorCode; readonly detail: string | undefined } }
  | { readonly failure: string }

const port = parentPort
if (port === null) throw new Error('header-parse-worker.ts runs as a worker thread')

port.on('message', (job: HeaderParseJob) => {
  let reply: HeaderParseReply
  const transfer: ArrayBuffer[] = []
  try {
    const header = parseInferenceHeader(job.bytes, job.bytes.byteLength, job.withLength)
    for (const data of packJsonTensors(header)) transfer.push(data.buffer as ArrayBuffer)
    reply = { header }
  } catch (err) {
    reply =
      err instanceof ServiceError ? { refusal: { code: err.code, detail: err.detail } } : { failure: String((err as Error).stack ?? err) }
  }
  port.postMessage(reply, transfer)
})
