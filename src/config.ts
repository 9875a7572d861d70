import { existsSync, statSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { availableCores } from './cpu-quota.js'
import type { TraceLevel } from './trace/trace-settings.js'

/**
 * Service settings. Each comes from a CLI flag, else an environment variable, else its default;
 * all are validated once at start-up (a bad value stops the process with the fix in the message)
 * and the result is frozen. docs/configuration.md is checked against SETTINGS by a test.
 */

export type Provider = 'auto' | 'cuda' | 'cpu'
/** Triton's model control modes: load everything once, load on request, or follow the repository folder. */
export type ModelControlMode = 'none' | 'explicit' | 'poll'
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'

/** Where models are read from unless --model-repository says otherwise; built into when missing. */
export const DEFAULT_MODEL_REPOSITORY = './models'

export interface Settings {
  readonly host: string
  readonly port: number
  readonly grpcPort: number
  readonly modelRepository: string
  readonly defaultModel: string | undefined
  readonly buildDefaultModel: boolean
  readonly provider: Provider
  readonly cudaDeviceId: number
  readonly sessionsPerModel: number
  readonly threadsPerSession: number
  /** Whether --threads-per-session was given; if not, a model with its own `instances` divides `cores` among them. */
  readonly threadsPerSessionGiven: boolean
  /** The cores this process may use (availableCores: the cgroup limit, else the machine's). */
  readonly cores: number
  readonly maxTopk: number
  readonly bodyLimitBytes: number
  readonly maxInputPixels: number
  readonly maxJpegScans: number
  readonly decodeTimeoutSeconds: number
  readonly decodeConcurrency: number
  readonly decodeBudgetBytes: number
  readonly decodeQueueSize: number
  readonly maxBatchItems: number
  readonly drainTimeoutMs: number
  readonly headersTimeoutMs: number
  readonly requestTimeoutMs: number
  readonly drainGraceMs: number
  readonly keepAliveTimeoutMs: number
  readonly maxConnections: number
  readonly maxGrpcCalls: number
  readonly maxGrpcConnections: number
  readonly grpcStreamIdleTimeoutMs: number
  readonly bodyBudgetBytes: number
  readonly allowPartialStart: boolean
  readonly modelControlMode: ModelControlMode
  /** Models loaded at start in explicit mode; `*` is every folder. */
  readonly loadModels: readonly string[]
  readonly repositoryPollSecs: number
  readonly apiKey: string | undefined
  readonly authHealth: boolean
  readonly authMetrics: boolean
  /** Origins allowed by CORS; undefined: no CORS headers at all. */
  readonly corsOrigins: readonly string[] | undefined
  readonly logLevel: LogLevel
  /** Where traces are written; undefined: to the log. */
  readonly traceFile: string | undefined
  readonly traceLevel: TraceLevel
  readonly traceRate: number
  readonly traceCount: number
  readonly traceLogFrequency: number
}

type Kind = 'string' | 'integer' | 'boolean' | 'enum' | 'origins' | 'list'

interface SettingSpec<K extends keyof Settings> {
  readonly key: K
  readonly flag: string
  readonly env: string
  readonly kind: Kind
  readonly description: string
  readonly choices?: readonly string[]
  readonly min?: number
  readonly max?: number
  /** Default; undefined means "derived" (see `derive`) or "unset". */
  readonly fallback?: Settings[K]
}

function spec<K extends keyof Settings>(s: SettingSpec<K>): SettingSpec<K> {
  return s
}

export const SETTINGS = [
  spec({
    key: 'host',
    flag: 'host',
    env: 'HOST',
    kind: 'string',
    fallback: '0.0.0.0',
    description: 'Address the HTTP and gRPC servers listen on.'
  }),
  spec({
    key: 'port',
    flag: 'port',
    env: 'PORT',
    kind: 'integer',
    min: 0,
    max: 65535,
    fallback: 8080,
    description: 'HTTP port (0 picks a free one).'
  }),
  spec({
    key: 'grpcPort',
    flag: 'grpc-port',
    env: 'GRPC_PORT',
    kind: 'integer',
    min: 0,
    max: 65535,
    fallback: 9000,
    description: 'gRPC port (0 picks a free one).'
  }),
  spec({
    key: 'modelRepository',
    flag: 'model-repository',
    env: 'MODEL_REPOSITORY',
    kind: 'string',
    fallback: DEFAULT_MODEL_REPOSITORY,
    description:
      'Folder holding one sub-folder per model (model.onnx, config.json, labels.txt). Must exist, except the default ./models, which is created when missing.'
  }),
  spec({
    key: 'defaultModel',
    flag: 'default-model',
    env: 'DEFAULT_MODEL',
    kind: 'string',
    description:
      'Model used when a request names none. Default: the model with real (trained) weights when exactly one has them; among several, resnet50 if real, else the first in name order; with none, resnet50 if loaded, else the first in name order.'
  }),
  spec({
    key: 'buildDefaultModel',
    flag: 'build-default-model',
    env: 'BUILD_DEFAULT_MODEL',
    kind: 'boolean',
    fallback: true,
    description:
      'When the repository has no model and --model-control-mode is none, build the synthetic ResNet-50 into it before starting. Under poll and explicit an empty repository starts empty, as Triton does.'
  }),
  spec({
    key: 'provider',
    flag: 'provider',
    env: 'PROVIDER',
    kind: 'enum',
    choices: ['auto', 'cuda', 'cpu'],
    fallback: 'auto',
    description:
      "Execution provider: auto uses CUDA when onnxruntime-node's CUDA provider library is installed and loads (a loud warning when it is installed but fails), else the CPU; cuda refuses to start without it."
  }),
  spec({
    key: 'cudaDeviceId',
    flag: 'cuda-device-id',
    env: 'CUDA_DEVICE_ID',
    kind: 'integer',
    min: 0,
    max: 64,
    fallback: 0,
    description: 'GPU index for the CUDA provider.'
  }),
  spec({
    key: 'sessionsPerModel',
    flag: 'sessions-per-model',
    env: 'SESSIONS_PER_MODEL',
    kind: 'integer',
    min: 1,
    max: 64,
    description:
      "ONNX Runtime sessions (worker threads) per model; batches in flight at once. Default: 2 with --provider cuda, else 1. A model's config.json may set its own (instances, Triton's instance_group count)."
  }),
  spec({
    key: 'threadsPerSession',
    flag: 'threads-per-session',
    env: 'THREADS_PER_SESSION',
    kind: 'integer',
    min: 1,
    max: 256,
    description:
      "Intra-op threads per session. Default: the cores divided among the model's sessions; in a container with a CPU limit (cgroup quota: docker --cpus, a Kubernetes limit), the limit rounded up."
  }),
  spec({
    key: 'maxTopk',
    flag: 'max-topk',
    env: 'MAX_TOPK',
    kind: 'integer',
    min: 1,
    max: 1000,
    fallback: 100,
    description:
      'Largest topk a request may ask for (/classify, the batch endpoint; a request that asks for none gets 5, or this many when fewer); a V2 classification count above it is answered with this many.'
  }),
  spec({
    key: 'bodyLimitBytes',
    flag: 'body-limit-bytes',
    env: 'BODY_LIMIT_BYTES',
    kind: 'integer',
    min: 1024,
    max: 1 << 30,
    fallback: 16 * 1024 * 1024,
    description: 'Largest request body or uploaded file, in bytes.'
  }),
  spec({
    key: 'maxInputPixels',
    flag: 'max-input-pixels',
    env: 'MAX_INPUT_PIXELS',
    kind: 'integer',
    min: 1,
    max: 1_000_000_000,
    fallback: 50_000_000,
    description: 'Largest image (width × height) the decoder accepts.'
  }),
  spec({
    key: 'maxJpegScans',
    flag: 'max-jpeg-scans',
    env: 'MAX_JPEG_SCANS',
    kind: 'integer',
    min: 1,
    max: 100_000,
    fallback: 32,
    description:
      'Most scans a JPEG may have, counted from its markers before decoding (encoders write 1 baseline, 5-18 progressive); more: 400 `IMAGE_TOO_COMPLEX`. See [Decoding](#decoding).'
  }),
  spec({
    key: 'decodeTimeoutSeconds',
    flag: 'decode-timeout-seconds',
    env: 'DECODE_TIMEOUT_SECONDS',
    kind: 'integer',
    min: 1,
    max: 3600,
    fallback: 20,
    description: 'Longest one decoding pass of an image may run; then libvips stops it: 400 `IMAGE_TOO_COMPLEX`.'
  }),
  spec({
    key: 'decodeConcurrency',
    flag: 'decode-concurrency',
    env: 'DECODE_CONCURRENCY',
    kind: 'integer',
    min: 1,
    max: 256,
    description:
      'Images decoded at once. Default: the cores, at least 2, at most the libuv threadpool size (`UV_THREADPOOL_SIZE`, default 4) minus 1.'
  }),
  spec({
    key: 'decodeBudgetBytes',
    flag: 'decode-budget-bytes',
    env: 'DECODE_BUDGET_BYTES',
    kind: 'integer',
    min: 16 * 1024 * 1024,
    max: 2 ** 46,
    fallback: 512 * 1024 * 1024,
    description:
      'Estimated decoded memory of all images being decoded at once (512 MiB); an image whose decode alone needs more than 7/8 of it: 413 `IMAGE_TOO_LARGE`.'
  }),
  spec({
    key: 'decodeQueueSize',
    flag: 'decode-queue-size',
    env: 'DECODE_QUEUE_SIZE',
    kind: 'integer',
    min: 1,
    max: 100_000,
    fallback: 256,
    description: 'Images waiting for a decode slot or for decode budget; one more: 429 `DECODE_QUEUE_FULL` with `Retry-After`.'
  }),
  spec({
    key: 'maxBatchItems',
    flag: 'max-batch-items',
    env: 'MAX_BATCH_ITEMS',
    kind: 'integer',
    min: 1,
    max: 4096,
    fallback: 64,
    description:
      'Most images one batch-endpoint or /v2 request may carry. Also sets the gRPC receive limit (see [gRPC message limits](#grpc-message-limits)).'
  }),
  spec({
    key: 'drainTimeoutMs',
    flag: 'drain-timeout-ms',
    env: 'DRAIN_TIMEOUT_MS',
    kind: 'integer',
    min: 0,
    max: 600_000,
    fallback: 30_000,
    description:
      'On SIGTERM or SIGHUP (after `--drain-grace-ms`) or SIGINT, how long accepted requests may take to finish once the ports stop accepting; then work still queued is refused SHUTTING_DOWN (503, gRPC UNAVAILABLE) and running batches finish.'
  }),
  spec({
    key: 'drainGraceMs',
    flag: 'drain-grace-ms',
    env: 'DRAIN_GRACE_MS',
    kind: 'integer',
    min: 0,
    max: 600_000,
    fallback: 10_000,
    description:
      "On SIGTERM or SIGHUP, how long the ports keep serving while readiness answers 503, so a load balancer stops routing here first (the manifests' readiness probe: 5 s × 2 failures). SIGINT skips it. Grace + drain timeout + 5 s must fit the pod's terminationGracePeriodSeconds, with a few seconds to spare."
  }),
  spec({
    key: 'headersTimeoutMs',
    flag: 'headers-timeout-ms',
    env: 'HEADERS_TIMEOUT_MS',
    kind: 'integer',
    min: 100,
    max: 600_000,
    fallback: 10_000,
    description:
      'How long an HTTP client may take to send the request line and headers; then 408 `REQUEST_TIMEOUT` and the connection is closed. Also how long a gRPC connection may take to begin its first call; then it is closed (logged at warn). At most `--request-timeout-ms`.'
  }),
  spec({
    key: 'requestTimeoutMs',
    flag: 'request-timeout-ms',
    env: 'REQUEST_TIMEOUT_MS',
    kind: 'integer',
    min: 100,
    max: 3_600_000,
    fallback: 30_000,
    description:
      'How long an HTTP client may take to send a whole request, headers and body (a 16 MiB upload needs about 4.5 Mbit/s); then 408 `REQUEST_TIMEOUT` and the connection is closed. While another request needs its share of `--body-budget-bytes`, a body (or gRPC message) must also keep the pace that finishes it in time: behind it after a 1 s grace, it loses the share and is refused `REQUEST_TIMEOUT`. A gRPC call has as long to start its message once the server reads, and as long to finish it once it has room in the body budget (then DEADLINE_EXCEEDED `REQUEST_TIMEOUT`; a stream may idle between requests, up to `--grpc-stream-idle-timeout-ms`), and a gRPC client as long to take an answer (then `ANSWERS_NOT_READ`, the call reset). Time spent queued or running the model does not count. At least `--headers-timeout-ms`.'
  }),
  spec({
    key: 'keepAliveTimeoutMs',
    flag: 'keep-alive-timeout-ms',
    env: 'KEEP_ALIVE_TIMEOUT_MS',
    kind: 'integer',
    min: 100,
    max: 600_000,
    fallback: 72_000,
    description:
      'How long an idle keep-alive HTTP connection stays open, and a gRPC connection with no call open (then GOAWAY; its client reconnects for its next call); keep it above the idle timeout of a load balancer in front (60 s on most).'
  }),
  spec({
    key: 'maxConnections',
    flag: 'max-connections',
    env: 'MAX_CONNECTIONS',
    kind: 'integer',
    min: 1,
    max: 1_000_000,
    fallback: 512,
    description:
      'Most open HTTP connections; a connection over the cap is closed as soon as it is accepted (logged at warn, at most once per 10 s). Connections idle between requests are then closed too, so the next client (a probe) gets in.'
  }),
  spec({
    key: 'maxGrpcConnections',
    flag: 'max-grpc-connections',
    env: 'MAX_GRPC_CONNECTIONS',
    kind: 'integer',
    min: 1,
    max: 1_000_000,
    fallback: 1024,
    description:
      'Most open gRPC connections; a connection over the cap is closed as soon as it is accepted (logged at warn, at most once per 10 s). Connections with no call open are then told to go away (GOAWAY), or when there are none, the connection whose every call has no request in flight (a ModelStreamInfer stream between requests, or a unary call whose message has not begun), idle longest (its calls end UNAVAILABLE `STREAM_IDLE`; see `--grpc-stream-idle-timeout-ms`), so the next client (a probe) gets in. gRPC clients carry all their calls on one connection (a channel), so this counts clients, not calls. Each idle connection costs about 13 KB.'
  }),
  spec({
    key: 'maxGrpcCalls',
    flag: 'max-grpc-calls',
    env: 'MAX_GRPC_CALLS',
    kind: 'integer',
    min: 1,
    max: 1_000_000,
    fallback: 4096,
    description:
      'Most gRPC calls open at once, unary calls and ModelStreamInfer streams together, however many connections carry them; one more (its key checked) takes the place of the call with no request in flight idle longest (a ModelStreamInfer stream between requests, or a unary call whose message has not begun: one that sends nothing held its place until `--request-timeout-ms`), if one has been idle 1 s (it ends UNAVAILABLE `STREAM_IDLE`), else is refused RESOURCE_EXHAUSTED `TOO_MANY_CALLS` before its message is read. Unary health and metadata calls (ServerLive, ServerReady, ModelReady, Check, the metadata RPCs) have 64 places of their own past the cap, so probes are answered whatever holds the rest. An open call costs about 14 KB even idle: 100 000 idle streams on 50 connections took the server 1.4 GiB over its baseline. One connection may open 128 at once (the HTTP/2 setting SETTINGS_MAX_CONCURRENT_STREAMS; clients queue past it). Also the most calls that may begin in one turn of the event loop: a connection that begins one more then is told GOAWAY ENHANCE_YOUR_CALM (logged `CALL_BURST`) and closed once its calls end, as only a client that opens streams and ends or resets them without waiting for answers (HTTP/2 rapid reset) gets there; 200 such connections (2000 streams each, 5 rounds) exhausted the V8 heap of a server in a 1.5 GiB pod before this bound.'
  }),
  spec({
    key: 'grpcStreamIdleTimeoutMs',
    flag: 'grpc-stream-idle-timeout-ms',
    env: 'GRPC_STREAM_IDLE_TIMEOUT_MS',
    kind: 'integer',
    min: 1000,
    max: 86_400_000,
    fallback: 600_000,
    description:
      'How long a ModelStreamInfer stream may stay open with no request in flight and no bytes coming (10 min: a Triton client keeps its stream for a whole session); then it ends UNAVAILABLE `STREAM_IDLE` and its client opens a new one. Sooner under pressure: at `--max-grpc-calls` a new call ends the stream idle longest (idle 1 s or more) and takes its place, and at `--max-grpc-connections` a refused connection ends the streams of the connection idle longest whose every call is an idle stream, and that connection is told to go away.'
  }),
  spec({
    key: 'bodyBudgetBytes',
    flag: 'body-budget-bytes',
    env: 'BODY_BUDGET_BYTES',
    kind: 'integer',
    min: 1024 * 1024,
    max: 2 ** 40,
    fallback: 192 * 1024 * 1024,
    description:
      "Request bytes both doors hold at once (192 MiB), shared: an HTTP request counts its `Content-Length` (a chunked one its route's limit) from its head until it is answered, and one that does not fit waits in line with its body unread, for at most 3 s (half `--request-timeout-ms` if less; requests that fit pass it), then gets 429 `BODY_BUDGET_FULL` with `Retry-After: 1`; a gRPC ModelInfer or ModelStreamInfer message counts its length from the moment the frame's prefix arrives until it is answered (a call or stream that sends nothing holds nothing), and one that does not fit waits in the same line with its HTTP/2 stream paused. At most 1024 wait, then 429 / RESOURCE_EXHAUSTED `BODY_BUDGET_FULL` at once; the other gRPC RPCs have a small budget of their own. A request alone is always admitted. A request that finds no room first takes the shares of bodies behind the pace that finishes them within `--request-timeout-ms` (after a 1 s grace; they are refused `REQUEST_TIMEOUT`), so lengths announced and not sent keep nobody out for long. With the baseline (about 0.7 GiB with one ResNet-50) and `--decode-budget-bytes`, it must fit the pod's memory limit."
  }),
  spec({
    key: 'allowPartialStart',
    flag: 'allow-partial-start',
    env: 'ALLOW_PARTIAL_START',
    kind: 'boolean',
    fallback: false,
    description: 'Start even when some models fail to load; those report not ready.'
  }),
  spec({
    key: 'modelControlMode',
    flag: 'model-control-mode',
    env: 'MODEL_CONTROL_MODE',
    kind: 'enum',
    choices: ['none', 'explicit', 'poll'],
    fallback: 'none',
    description:
      'How models are loaded (as Triton): none loads every model folder at start and never changes; explicit loads the `--load-model` ones at start, then only through the repository API; poll loads every folder at start, then follows the folder every `--repository-poll-secs` (new folders load, changed ones reload, removed ones unload).'
  }),
  spec({
    key: 'loadModels',
    flag: 'load-model',
    env: 'LOAD_MODEL',
    kind: 'list',
    description:
      'With `--model-control-mode explicit`: a model to load at start; repeat the flag or give a comma list; `*` loads every folder. Default: none.'
  }),
  spec({
    key: 'repositoryPollSecs',
    flag: 'repository-poll-secs',
    env: 'REPOSITORY_POLL_SECS',
    kind: 'integer',
    min: 1,
    max: 86_400,
    fallback: 15,
    description: 'With `--model-control-mode poll`: seconds between two looks at the model repository folder.'
  }),
  spec({
    key: 'apiKey',
    flag: 'api-key',
    env: 'API_KEY',
    kind: 'string',
    description: 'When set, inference routes need "Authorization: Bearer <key>" or "x-api-key: <key>".'
  }),
  spec({
    key: 'authHealth',
    flag: 'auth-health',
    env: 'AUTH_HEALTH',
    kind: 'boolean',
    fallback: false,
    description:
      'With `--api-key` (refused without it): the health routes (`/health/*`, `/v2/health/*`, gRPC ServerLive/ServerReady/ModelReady and health checks) need the key too (probes must then send it).'
  }),
  spec({
    key: 'authMetrics',
    flag: 'auth-metrics',
    env: 'AUTH_METRICS',
    kind: 'boolean',
    fallback: false,
    description: 'With `--api-key` (refused without it): `GET /metrics` needs the key too (the scraper must then send it).'
  }),
  spec({
    key: 'corsOrigins',
    flag: 'cors-origins',
    env: 'CORS_ORIGINS',
    kind: 'origins',
    description: 'Comma-separated origins (`https://app.example.com`) or `*` that browsers may call from; unset: no CORS headers at all.'
  }),
  spec({
    key: 'logLevel',
    flag: 'log-level',
    env: 'LOG_LEVEL',
    kind: 'enum',
    choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
    fallback: 'info',
    description:
      'The log level at start (pino\'s levels; JSON lines on stdout). Triton\'s logging extension changes it while the server runs: `POST /v2/logging`, gRPC LogSettings (docs/api.md, "Log settings").'
  }),
  spec({
    key: 'traceFile',
    flag: 'trace-file',
    env: 'TRACE_FILE',
    kind: 'string',
    description:
      'Where traces of inference requests are written, as a JSON array in Triton\'s trace format (with a log frequency: `<file>.0`, `<file>.1`, …); unset: each trace is a log line. Its folder must exist. It cannot be changed while the server runs (docs/api.md, "Trace settings").'
  }),
  spec({
    key: 'traceLevel',
    flag: 'trace-level',
    env: 'TRACE_LEVEL',
    kind: 'enum',
    choices: ['OFF', 'TIMESTAMPS'],
    fallback: 'OFF',
    description:
      "Tracing at start: OFF, or TIMESTAMPS (when each sampled V2 inference request was received, queued, computed and answered). Triton's trace extension changes it while the server runs: `POST /v2/trace/setting`, gRPC TraceSetting."
  }),
  spec({
    key: 'traceRate',
    flag: 'trace-rate',
    env: 'TRACE_RATE',
    kind: 'integer',
    min: 1,
    max: 2 ** 31 - 1,
    fallback: 1000,
    description: "One inference request traced in every this many (Triton's trace rate)."
  }),
  spec({
    key: 'traceCount',
    flag: 'trace-count',
    env: 'TRACE_COUNT',
    kind: 'integer',
    min: -1,
    max: 2 ** 31 - 1,
    fallback: -1,
    description: 'Traces to take, then tracing stops; -1: no limit.'
  }),
  spec({
    key: 'traceLogFrequency',
    flag: 'trace-log-frequency',
    env: 'TRACE_LOG_FREQUENCY',
    kind: 'integer',
    min: 0,
    max: 2 ** 31 - 1,
    fallback: 0,
    description:
      'With `--trace-file`: traces per file, each written as `<file>.<n>` once it holds this many; 0: one file, its array closed when the server stops.'
  })
] as const

/** A setting with a bad value; the message names the flag, the env variable and the fix. */
export class ConfigError extends Error {
  override name = 'ConfigError'
}

type Raw = Record<string, string | boolean | string[] | undefined>

const TRUE_WORD = /^(1|true|yes|on)$/i
const FALSE_WORD = /^(0|false|no|off)$/i
const isBooleanWord = (word: string): boolean => TRUE_WORD.test(word) || FALSE_WORD.test(word)

function parseValue(s: SettingSpec<keyof Settings>, raw: string | boolean, source: string): unknown {
  const hint = `${source} (flag --${s.flag}, env ${s.env}): ${plainText(s.description)}`
  switch (s.kind) {
    case 'string':
      if (typeof raw !== 'string' || raw.length === 0) throw new ConfigError(`${hint} It must be a non-empty string.`)
      return raw
    case 'boolean':
      if (typeof raw === 'boolean') return raw
      if (TRUE_WORD.test(raw)) return true
      if (FALSE_WORD.test(raw)) return false
      throw new ConfigError(`${hint} Got "${raw}"; use true or false.`)
    case 'enum': {
      // Any case names the same choice (LOG_LEVEL=DEBUG is debug) while no two choices differ only in case.
      const choice = typeof raw === 'string' ? (s.choices ?? []).filter((c) => c.toLowerCase() === raw.toLowerCase()) : []
      if (choice.length !== 1) throw new ConfigError(`${hint} Got "${String(raw)}"; use one of: ${(s.choices ?? []).join(', ')}.`)
      return choice[0]
    }
    case 'integer': {
      const n = typeof raw === 'string' && /^-?\d+$/.test(raw.trim()) ? Number(raw) : NaN
      if (!Number.isSafeInteger(n) || (s.min !== undefined && n < s.min) || (s.max !== undefined && n > s.max)) {
        throw new ConfigError(`${hint} Got "${String(raw)}"; use an integer from ${s.min} to ${s.max}.`)
      }
      return n
    }
    case 'list': {
      const items = String(raw)
        .split(',')
        .map((v) => v.trim())
      if (items.length === 0 || items.some((v) => v.length === 0))
        throw new ConfigError(`${hint} Got "${String(raw)}"; give names, comma-separated.`)
      return Object.freeze([...new Set(items)])
    }
    case 'origins': {
      const origins =
        typeof raw === 'string'
          ? raw
              .split(',')
              .map((o) => o.trim())
              .filter((o) => o.length > 0)
          : []
      const bad = origins.find((o) => o !== '*' && !isOrigin(o))
      if (origins.length === 0 || bad !== undefined) {
        throw new ConfigError(
          `${hint} Got "${String(raw)}"; use * or origins like https://app.example.com:8443 (scheme, host and port only, no path).`
        )
      }
      return Object.freeze(origins)
    }
  }
}

/** A description as plain text, for a terminal: no code spans, links as their words. */
export function plainText(markdown: string): string {
  return markdown.replace(/`([^`]*)`/g, '$1').replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
}

function isOrigin(text: string): boolean {
  try {
    return new URL(text).origin === text
  } catch {
    return false
  }
}

/** The default intra-op threads of each session: the cores divided among the sessions, at least 1. */
export function defaultThreadsPerSession(sessions: number, cores = availableCores()): number {
  return Math.max(1, Math.floor(cores / sessions))
}

/**
 * The default images decoded at once: the cores, at least 2, at most the libuv threadpool less one
 * (sharp decodes on that pool; one thread stays free for header reads and file I/O).
 */
export function defaultDecodeConcurrency(env: NodeJS.ProcessEnv = process.env, cores = availableCores()): number {
  const threadpool = Number(env.UV_THREADPOOL_SIZE) || 4
  return Math.max(2, Math.min(cores, threadpool - 1))
}

const BOOLEAN_FLAGS: ReadonlySet<string> = new Set(SETTINGS.filter((s) => s.kind === 'boolean').map((s) => s.flag))

/**
 * A boolean flag alone turns its setting on; `--flag=false`, `--flag false` (any value its variable
 * takes) and `--no-flag` set it either way, which parseArgs alone refuses. Those forms are taken out
 * of argv here, with their values, the last one given winning.
 */
function booleanFlagForms(argv: readonly string[]): { args: string[]; booleans: Map<string, string | boolean> } {
  const args: string[] = []
  const booleans = new Map<string, string | boolean>()
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === '--') {
      args.push(...argv.slice(i))
      break
    }
    const valued = /^--([a-z0-9-]+)=(.*)$/s.exec(arg)
    if (valued !== null && BOOLEAN_FLAGS.has(valued[1]!)) {
      booleans.set(valued[1]!, valued[2]!)
      continue
    }
    const negated = /^--no-([a-z0-9-]+)$/.exec(arg)
    if (negated !== null && BOOLEAN_FLAGS.has(negated[1]!)) {
      booleans.set(negated[1]!, false)
      continue
    }
    if (arg.startsWith('--') && BOOLEAN_FLAGS.has(arg.slice(2))) {
      // `--flag false`: no positional argument is taken, so a boolean word after the flag is its value.
      const next = argv[i + 1]
      if (next !== undefined && isBooleanWord(next)) {
        booleans.set(arg.slice(2), next)
        i++
        continue
      }
      booleans.delete(arg.slice(2))
    }
    args.push(arg)
  }
  return { args, booleans }
}

/**
 * The settings' flags that `npm start --flag` (without `--`) gave to npm instead of the server. npm
 * keeps an option it does not know as its own config, `npm_config_<flag>` in the script's
 * environment ("true" for `--port 9090`, whose value then reaches the server as a stray word; the
 * value for `--port=9090`; "" for `--no-flag`), and passes the server nothing: a boolean flag
 * (`npm start --allow-partial-start`) was dropped without a word from the server. Only under an npm
 * script (`npm_lifecycle_event`), where npm sets these variables.
 */
function flagsNpmKept(env: NodeJS.ProcessEnv): { flag: string; asTyped: string }[] {
  if (env.npm_lifecycle_event === undefined) return []
  const kept: { flag: string; asTyped: string }[] = []
  for (const s of SETTINGS) {
    const value = env[`npm_config_${s.flag.replaceAll('-', '_')}`]
    if (value === undefined) continue
    const asTyped =
      s.kind === 'boolean'
        ? value === '' || FALSE_WORD.test(value)
          ? `--no-${s.flag}`
          : `--${s.flag}`
        : value === 'true' || value === ''
          ? `--${s.flag} <value>`
          : `--${s.flag} ${value}`
    kept.push({ flag: s.flag, asTyped })
  }
  return kept
}

/** Triton's and TorchServe's names for settings this server names otherwise. */
const OTHER_SERVERS_FLAGS: Readonly<Record<string, string>> = {
  'http-port': 'port',
  'http-address': 'host',
  'grpc-address': 'host',
  'model-store': 'model-repository',
  'exit-timeout-secs': 'drain-timeout-ms',
  'log-verbose': 'log-level'
}

/** Edit distance between two short strings (flag names), for "did you mean". */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++)
      row.push(Math.min(previous[j]! + 1, row[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1)))
    previous = row
  }
  return previous[b.length]!
}

/**
 * parseArgs' refusal, said for this command: an unknown flag with the nearest known one and the
 * list; a flag without its value (the next word was another flag, or there was none) with how to
 * give it; a stray word with where it may come from.
 */
function commandLineProblem(err: NodeJS.ErrnoException): string {
  const known = SETTINGS.map((s) => `--${s.flag}`)
  const named = /'(-[^' ]+)/.exec(err.message)?.[1] ?? ''
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION': {
      const typed = named.replace(/^--?/, '').split('=')[0]!
      if (typed === 'trace-config') {
        return `Unknown option '${named}': Triton's --trace-config settings are flags of their own here, as in Triton's older form: level= is --trace-level, rate= --trace-rate, count= --trace-count, triton,file= --trace-file, triton,log-frequency= --trace-log-frequency (the same values; mode is always triton).`
      }
      const nearest = SETTINGS.map((s) => ({ flag: s.flag, d: editDistance(typed, s.flag) })).sort((a, b) => a.d - b.d)[0]
      const extending = SETTINGS.filter((s) => typed.length >= 3 && s.flag.startsWith(typed))
      const meant =
        OTHER_SERVERS_FLAGS[typed] ??
        (extending.length === 1 ? extending[0]!.flag : undefined) ??
        (nearest !== undefined && nearest.d <= Math.max(2, Math.floor(typed.length / 4)) ? nearest.flag : undefined)
      const guess = meant === undefined ? '' : ` Did you mean --${meant}?`
      return `Unknown option '${named}'.${guess} Known flags: ${known.join(', ')}.`
    }
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      return `${named} needs a value: ${named} VALUE, or ${named}=VALUE when the value starts with "-".`
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `${err.message.replace(/\. This command does not take positional arguments\.?$/, '')}: every setting is a flag with its value (--port 9090); a word on its own is a value whose flag is missing or misspelt.`
    default:
      return `${err.message}. Known flags: ${known.join(', ')}.`
  }
}

/**
 * Reads settings from argv (flags like `--port 8080`, `--allow-partial-start`) and env. Unknown
 * flags are refused, so a typo never silently falls back to a default.
 */
export function loadSettings(
  argv: readonly string[] = process.argv.slice(2),
  env: NodeJS.ProcessEnv = process.env,
  cores = availableCores()
): Settings {
  const options: Record<string, { type: 'string' | 'boolean'; multiple: boolean }> = {}
  for (const s of SETTINGS) options[s.flag] = { type: s.kind === 'boolean' ? 'boolean' : 'string', multiple: s.kind === 'list' }
  const keptByNpm = flagsNpmKept(env)
  if (keptByNpm.length > 0) {
    const flags = keptByNpm.map((f) => `--${f.flag}`).join(', ')
    // What did reach the server goes in the command too: words npm passed on, flags given after
    // "--". Words before the first flag are the values of flags npm kept (`--port 9090`): one such
    // flag takes them, else they stay "<value>" (npm keeps its configs in its own order).
    const rest = [...argv]
    const strays: string[] = []
    while (rest.length > 0 && !rest[0]!.startsWith('-')) strays.push(rest.shift()!)
    const wanting = keptByNpm.filter((f) => f.asTyped.endsWith(' <value>'))
    const command = [
      ...keptByNpm.map((f) => (wanting.length === 1 && f === wanting[0] && strays.length === 1 ? `--${f.flag} ${strays[0]}` : f.asTyped)),
      ...rest
    ].join(' ')
    throw new ConfigError(
      `npm took ${flags} as its own option${keptByNpm.length > 1 ? 's' : ''} (its warning 'Unknown cli config' above), so the server never got ${keptByNpm.length > 1 ? 'them' : 'it'}: flags after "npm start" reach the server only after "--". Run: npm start -- ${command}`
    )
  }
  const { args, booleans } = booleanFlagForms(argv)
  let values: Raw
  try {
    values = parseArgs({ args, options, strict: true, allowPositionals: false }).values as Raw
  } catch (err) {
    throw new ConfigError(commandLineProblem(err as NodeJS.ErrnoException))
  }
  const out: Record<string, unknown> = {}
  for (const s of SETTINGS) {
    // A repeated flag (kind list) arrives as several values: one comma list, as its variable gives it.
    const given = booleans.get(s.flag) ?? values[s.flag]
    const fromFlag = Array.isArray(given) ? given.join(',') : given
    const fromEnv = env[s.env]
    if (fromFlag !== undefined) out[s.key] = parseValue(s, fromFlag, `--${s.flag}=${String(fromFlag)}`)
    else if (fromEnv !== undefined && fromEnv !== '') out[s.key] = parseValue(s, fromEnv, `${s.env}=${fromEnv}`)
    else out[s.key] = 'fallback' in s ? s.fallback : undefined
  }
  const provider = out.provider as Provider
  out.sessionsPerModel ??= provider === 'cpu' ? 1 : provider === 'cuda' ? 2 : 1
  out.threadsPerSessionGiven = out.threadsPerSession !== undefined
  out.threadsPerSession ??= defaultThreadsPerSession(out.sessionsPerModel as number, cores)
  out.cores = cores
  out.modelRepository = resolve(out.modelRepository as string)
  out.decodeConcurrency ??= defaultDecodeConcurrency(env, cores)
  if (out.loadModels !== undefined && out.modelControlMode !== 'explicit') {
    throw new ConfigError(
      `--load-model (${(out.loadModels as string[]).join(', ')}) only applies with --model-control-mode explicit (got ${String(out.modelControlMode)}): add --model-control-mode explicit, or drop --load-model (the other modes load every folder).`
    )
  }
  out.loadModels ??= Object.freeze([])
  if (out.traceFile !== undefined) {
    const file = resolve(out.traceFile as string)
    // Found when the first trace is written, this would be an error line long after the start.
    // A FIFO or a device would block or never end the writes (a FIFO without a reader held the exit).
    const problem = !existsSync(dirname(file))
      ? `its folder ${dirname(file)} does not exist`
      : existsSync(file) && !statSync(file).isFile()
        ? 'is not a plain file (a folder, FIFO or device)'
        : undefined
    if (problem !== undefined) {
      throw new ConfigError(
        `--trace-file ${String(out.traceFile)}: ${problem}; name a file in a folder that exists (it is created or replaced).`
      )
    }
    out.traceFile = file
  }
  // Without a key there is nothing to put health or metrics behind: the flag would quietly do nothing.
  for (const [key, flag] of [
    ['authHealth', 'auth-health'],
    ['authMetrics', 'auth-metrics']
  ] as const) {
    if (out[key] === true && out.apiKey === undefined) {
      throw new ConfigError(`--${flag} puts routes behind the API key, but no key is set: add --api-key (API_KEY), or drop --${flag}.`)
    }
  }
  // The second door would fail to bind only after every model had loaded.
  if (out.port !== 0 && out.port === out.grpcPort) {
    throw new ConfigError(
      `--port and --grpc-port are both ${String(out.port)}: HTTP and gRPC each need their own port; change one (0 picks a free one).`
    )
  }
  // Node applies neither timeout when the headers may take longer than the whole request.
  if ((out.headersTimeoutMs as number) > (out.requestTimeoutMs as number)) {
    throw new ConfigError(
      `--headers-timeout-ms (${String(out.headersTimeoutMs)}) is longer than --request-timeout-ms (${String(out.requestTimeoutMs)}): the headers are part of the request; lower the first or raise the second.`
    )
  }
  return Object.freeze(out as unknown as Settings)
}

/** Settings as printed once at start: the API key is never logged. */
export function describeSettings(settings: Settings): Record<string, unknown> {
  return { ...settings, apiKey: settings.apiKey === undefined ? undefined : '<set>' }
}
