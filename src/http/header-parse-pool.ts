import type { Worker } from 'node:worker_threads'
import type { Logger } from 'pino'
import { ServiceError } from '../errors.js'
import { siblingModule, startModuleWorker } from '../core/module-worker.js'
import type { HeaderParseJob, HeaderParseReply } from './header-parse-worker.js'
import { INLINE_PARSE_BYTES } from './parse-lane.js'
import { parseInferenceHeader } from './v2-binary.js'

/**
 * Large V2 inference headers (JSON tensors) parsed off the event loop, in worker threads. JSON.parse
 * is synchronous, and a 3×224×224 FP32 tensor as JSON (2 MB) took the event loop 17 ms to parse and
 * 7.5 ms to check for cost (json-cost.ts) before that: FP32 JSON clients were held to 26–44
 * requests/s here by one thread, and every other request and probe waited behind each parse. Here
 * the check and the parse run in a worker, which hands each FP32 or UINT8 input's data back packed
 * as a flat Float32Array or Uint8Array (transferred), so the event loop's share is the hand-off.
 * Headers of at most INLINE_PARSE_BYTES (a binary request's, a small JSON one) are parsed in place:
 * a worker hop would cost them more.
 *
 * Jobs are served in arrival order by the first free worker; workers start on the first large
 * header, one more per job waiting, up to `size`. A worker that dies (it should not: its input is
 * bounded by the body limit and json-cost.ts) fails its job INTERNAL and is replaced on demand.
 */

interface Job {
  readonly bytes: Uint8Array
  readonly withLength: boolean
  readonly resolve: (header: unknown) => void
  readonly reject: (err: Error) => void
}

interface PoolWorker {
  readonly worker: Worker
  job: Job | undefined
}

export class HeaderParsePool {
  private readonly workers: PoolWorker[] = []
  private readonly queue: Job[] = []
  private closed = false

  constructor(
    readonly size: number,
    private readonly log?: Logger
  ) {}

  /**
   * Bytes [0, end) of `body` as a V2 inference header, parsed by parseInferenceHeader (and rejected
   * as it throws): in place for at most INLINE_PARSE_BYTES or once the pool is closed, else in a
   * worker, with FP32 and UINT8 `data` packed (packJsonTensors). `body` may be given to the worker
   * (transferred): the caller must not read it afterwards.
   */
  parse(body: Uint8Array, end: number, withLength: boolean): Promise<unknown> {
    if (end <= INLINE_PARSE_BYTES || this.closed) {
      try {
        return Promise.resolve(parseInferenceHeader(body, end, withLength))
      } catch (err) {
        return Promise.reject(err as Error)
      }
    }
    // The header's bytes alone, in a buffer of their own that can move to the worker without a copy.
    const whole = body.byteOffset === 0 && end === body.buffer.byteLength && !(body.buffer instanceof SharedArrayBuffer)
    const bytes = whole ? body : new Uint8Array(body.subarray(0, end))
    return new Promise((resolve, reject) => {
      this.queue.push({ bytes, withLength, resolve, reject })
      this.dispatch()
    })
  }

  /** Ends the workers; the jobs they had and those still waiting fail SHUTTING_DOWN. */
  async close(): Promise<void> {
    this.closed = true
    const workers = this.workers.splice(0)
    for (const w of workers) w.job?.reject(new ServiceError('SHUTTING_DOWN'))
    for (const job of this.queue.splice(0)) job.reject(new ServiceError('SHUTTING_DOWN'))
    await Promise.all(workers.map((w) => w.worker.terminate()))
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      let free = this.workers.find((w) => w.job === undefined)
      if (free === undefined) {
        if (this.workers.length >= this.size) return
        free = this.start()
      }
      const job = this.queue.shift()!
      free.job = job
      try {
        free.worker.postMessage({ bytes: job.bytes, withLength: job.withLength } satisfies HeaderParseJob, [
          job.bytes.buffer as ArrayBuffer
        ])
      } catch {
        // A buffer marked untransferable (Node 20 copies it quietly, later Nodes throw): the worker gets a copy.
        const copy = new Uint8Array(job.bytes)
        free.worker.postMessage({ bytes: copy, withLength: job.withLength } satisfies HeaderParseJob, [copy.buffer])
      }
    }
  }

  private start(): PoolWorker {
    const worker = startModuleWorker(siblingModule(import.meta.url, 'header-parse-worker'))
    // Idle workers do not keep the process alive; a job in flight holds a promise the caller awaits.
    worker.unref()
    const entry: PoolWorker = { worker, job: undefined }
    worker.on('message', (reply: HeaderParseReply) => {
      const job = entry.job
      entry.job = undefined
      if (job !== undefined) {
        if ('header' in reply) job.resolve(reply.header)
        else if ('refusal' in reply) job.reject(new ServiceError(reply.refusal.code, reply.refusal.detail))
        else {
          this.log?.error({ reason: reply.failure }, 'JSON header parse failed in its worker')
          job.reject(new ServiceError('INTERNAL'))
        }
      }
      this.dispatch()
    })
    const gone = (err?: Error): void => {
      const i = this.workers.indexOf(entry)
      if (i < 0) return
      this.workers.splice(i, 1)
      if (this.closed) return
      this.log?.error({ err }, 'JSON header parse worker ended; starting another when needed')
      entry.job?.reject(new ServiceError('INTERNAL'))
      entry.job = undefined
      this.dispatch()
    }
    worker.on('error', gone)
    worker.on('exit', () => gone())
    this.workers.push(entry)
    return entry
  }
}
