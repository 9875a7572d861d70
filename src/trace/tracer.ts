import { createWriteStream, type WriteStream } from 'node:fs'
import { once } from 'node:events'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import { TraceSettings, type TraceConfig } from './trace-settings.js'

/**
 * Traces of inference requests in Triton's JSON trace format (docs/api.md, "Trace settings"): for
 * each traced request an object naming it ({id, model_name, model_version, request_id}) and one
 * holding its timestamps ({id, timestamps: [{name, ns}, …]}), `ns` on the server's monotonic clock
 * in nanoseconds, as Triton's are on its steady clock: only differences mean anything.
 *
 * With --trace-file, the traces are written to that file as one JSON array, closed when the server
 * stops; with a log_frequency of N, to `<file>.0`, `<file>.1`, … of N traces each, every one a
 * complete array as soon as it holds N. Traces are written as they finish (Triton holds a
 * log_frequency 0 file's traces in memory until it stops; a busy server traced at rate 1 would hold
 * millions). Without --trace-file each trace is a log line ("trace", at info). A disk that does not
 * keep up drops traces (counted, with a warning) rather than holding them in memory.
 */

/** The points of a request's life a trace marks, in the order they happen (and are written). */
const LIFE = [
  'HTTP_RECV_START',
  'HTTP_RECV_END',
  'GRPC_WAITREAD_END',
  'REQUEST_START',
  'QUEUE_START',
  'COMPUTE_START',
  'COMPUTE_INPUT_END',
  'COMPUTE_OUTPUT_START',
  'COMPUTE_END',
  'REQUEST_END',
  'HTTP_SEND_START',
  'HTTP_SEND_END',
  'GRPC_SEND_START'
] as const

export type StampName = (typeof LIFE)[number]

/** One model execution as a traced request sees it, on performance.now()'s clock. */
export interface BatchRun {
  /** The batch was taken from the queue to be packed and sent to its session's worker. */
  readonly startedAt: number
  /** The worker had the input tensors ready and started the session's run. */
  readonly inputEndAt: number
  /** The session's run returned. */
  readonly outputStartAt: number
  /** The outputs were back on the main thread. */
  readonly endedAt: number
}

/** What the core marks on a traced request: each of its images entering the queue and running. */
export interface CoreTrace {
  ran(queuedAt: number, run: BatchRun): void
}

/** Buffered trace bytes a slow disk may hold before traces are dropped. */
const MAX_BUFFERED_BYTES = 8 * 1024 * 1024

/** A request chosen for tracing: its stamps as they happen, written when the door finishes it. */
export class RequestTrace implements CoreTrace {
  private readonly stamps = new Map<StampName, number>()
  private finished = false

  constructor(
    private readonly tracer: Tracer,
    readonly id: number,
    readonly model: string,
    readonly version: string,
    readonly requestId: string | undefined
  ) {}

  /** A point of the request's life now (or at `at`, on performance.now()'s clock). */
  stamp(name: StampName, at = performance.now()): void {
    this.stamps.set(name, at)
  }

  /**
   * One of its images entered the queue at `queuedAt` and ran in `run`. A request whose images ran
   * in several batches is traced from the first one's start to the last one's end.
   */
  ran(queuedAt: number, run: BatchRun): void {
    this.earliest('QUEUE_START', queuedAt)
    this.earliest('COMPUTE_START', run.startedAt)
    this.earliest('COMPUTE_INPUT_END', run.inputEndAt)
    this.latest('COMPUTE_OUTPUT_START', run.outputStartAt)
    this.latest('COMPUTE_END', run.endedAt)
  }

  private earliest(name: StampName, at: number): void {
    const now = this.stamps.get(name)
    if (now === undefined || at < now) this.stamps.set(name, at)
  }

  private latest(name: StampName, at: number): void {
    const now = this.stamps.get(name)
    if (now === undefined || at > now) this.stamps.set(name, at)
  }

  /** The request is answered: the trace is written (once). */
  finish(): void {
    if (this.finished) return
    this.finished = true
    this.tracer.write(this)
  }

  /** Its two objects of the trace file, as JSON. */
  toJson(): string {
    const head = JSON.stringify({
      id: this.id,
      model_name: this.model,
      model_version: Number(this.version),
      ...(this.requestId === undefined || this.requestId === '' ? {} : { request_id: this.requestId })
    })
    const timestamps: string[] = []
    for (const name of LIFE) {
      const at = this.stamps.get(name)
      if (at !== undefined) timestamps.push(`{"name":"${name}","ns":${Math.round(at * 1e6)}}`)
    }
    return `${head},\n{"id":${this.id},"timestamps":[${timestamps.join(',')}]}`
  }
}

/** After a trace file could not be written, how long traces are dropped before a new file is tried. */
const RETRY_MS = 1_000

/**
 * The trace file, or files of log_frequency traces each. No path is opened twice: a file written
 * earlier is never truncated by a later one, so after a change of log_frequency back to 0, or
 * after a write error, traces go on in the next numbered file.
 */
class TraceFiles {
  private stream: WriteStream | undefined
  /** Every file not yet closed on disk, the one being written and those ended before it. */
  private readonly closing = new Set<WriteStream>()
  private inFile = 0
  private index = 0
  private pathUsed = false
  /** A file could not be written: no new one is opened before this (performance.now()). */
  private retryAt = 0
  /** An error has been logged and no file has opened since. */
  private failing = false
  /** Whether the disk has fallen behind (once, with a warning). */
  private fellBehind = false

  constructor(
    private readonly path: string,
    private frequency: number,
    private readonly log: Logger
  ) {}

  write(json: string): void {
    if (this.stream === undefined) {
      // Dropped: the last file could not be written (its error line said so).
      if (performance.now() < this.retryAt) return
      this.open()
    }
    const stream = this.stream!
    if (stream.writableLength > MAX_BUFFERED_BYTES) {
      if (!this.fellBehind) this.log.warn({ file: this.path }, 'trace file not keeping up: traces dropped until it does')
      this.fellBehind = true
      return
    }
    stream.write(this.inFile === 0 ? json : `,\n${json}`)
    this.inFile++
    if (this.frequency > 0 && this.inFile >= this.frequency) this.end()
  }

  /** A new log_frequency: the file being written is closed, the next one follows the new frequency. */
  setFrequency(frequency: number): void {
    this.end()
    this.frequency = frequency
  }

  private open(): void {
    const bare = this.frequency === 0 && !this.pathUsed
    const path = bare ? this.path : `${this.path}.${this.index++}`
    if (bare) this.pathUsed = true
    const stream = createWriteStream(path)
    stream.once('open', () => {
      if (this.failing) this.log.info({ file: path }, 'trace file writable again')
      this.failing = false
    })
    stream.on('error', (err) => {
      if (this.stream === stream) {
        this.stream = undefined
        this.retryAt = performance.now() + RETRY_MS
      }
      if (!this.failing)
        this.log.error({ file: path, problem: err.message }, 'trace file cannot be written: traces are dropped until a new one can')
      this.failing = true
    })
    stream.write('[\n')
    this.closing.add(stream)
    stream.once('close', () => this.closing.delete(stream))
    this.stream = stream
    this.inFile = 0
  }

  private end(): void {
    this.stream?.end('\n]\n')
    this.stream = undefined
  }

  /** Ends the file being written and waits until every file is closed on disk. */
  async close(): Promise<void> {
    this.end()
    await Promise.all([...this.closing].map((stream) => (stream.closed ? undefined : once(stream, 'close').catch(() => undefined))))
  }
}

export interface TracerOptions {
  /** --trace-file; undefined: traces go to the log. */
  readonly file: string | undefined
  readonly start: TraceConfig
}

/** The trace settings and where traces go; one for the server, shared by its doors. */
export class Tracer {
  readonly settings: TraceSettings
  private nextId = 1
  private readonly files: TraceFiles | undefined

  constructor(
    options: TracerOptions,
    private readonly log: Logger
  ) {
    this.settings = new TraceSettings({ file: options.file ?? '', start: options.start })
    this.files = options.file === undefined ? undefined : new TraceFiles(options.file, options.start.logFrequency, log)
    this.settings.onLogFrequency = (frequency) => this.files?.setFrequency(frequency)
  }

  /** A trace for this request of `model` when the settings sample it; undefined (most requests) otherwise. */
  start(model: string, version: string, requestId: string | undefined): RequestTrace | undefined {
    if (!this.settings.sample(model)) return undefined
    return new RequestTrace(this, this.nextId++, model, version, requestId)
  }

  write(trace: RequestTrace): void {
    const json = trace.toJson()
    if (this.files !== undefined) this.files.write(json)
    else this.log.info({ trace: JSON.parse(`[${json}]`) as unknown }, 'trace')
  }

  /** Closes the trace file (its array) once the requests have finished. */
  async close(): Promise<void> {
    await this.files?.close()
  }
}
