import { existsSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import {
  Server,
  ServerCredentials,
  status,
  type MethodDefinition,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type ServiceDefinition,
  type StatusObject,
  type UntypedServiceImplementation,
  type sendUnaryData
} from '@grpc/grpc-js'
import { loadSync, type PackageDefinition } from '@grpc/proto-loader'
import type { Logger } from 'pino'
import type { Settings } from '../config.js'
import type { ClassifyService, RequestOptions } from '../core/classify-service.js'
import { ServiceError, echoed, toServiceError } from '../errors.js'
import { logSettingsOf, type LogSettings } from '../log-settings.js'
import type { ServiceMetrics } from '../metrics.js'
import { MAX_CONFIG_BYTES } from '../open-inference/config-override.js'
import { infer, loggedId } from '../open-inference/infer.js'
import { isModelReady, modelMetadata, serverMetadata } from '../open-inference/metadata.js'
import { classificationCount, refuseSharedMemory } from '../open-inference/request-parameters.js'
import { extensionNotImplemented, UNIMPLEMENTED_RPCS } from '../open-inference/unimplemented-extensions.js'
import { rawOutputBytes } from '../open-inference/tensor-codec.js'
import { tensorLimits } from '../open-inference/tensor-limits.js'
import type {
  InferInput,
  InferRequest,
  InferResponse,
  ModelMetadata,
  RequestedOutput,
  ServerMetadata,
  TensorData
} from '../open-inference/types.js'
import { admissionInterceptor, type RpcAccess } from './call-admission.js'
import { modelConfigReply, modelStatisticsReply, type ModelRefRequest } from './config-stats-handlers.js'
import { logSettingsReply, type LogSettingsRequestMessage } from './log-settings-handler.js'
import { traceSettingReply, type TraceSettingRequestMessage } from './trace-setting-handler.js'
import { cancellationOf, statusOf } from './error-status.js'
import { HEALTH_SERVICE_NAME, healthService } from './health.js'
import { parameterValue, parameterValues } from './parameter-values.js'
import {
  repositoryIndexReply,
  repositoryModelLoadReply,
  repositoryModelUnloadReply,
  type RepositoryControlRequestMessage,
  type RepositoryIndexRequestMessage
} from './repository-handlers.js'
import { checkRequestBounds, inferRequestRule, type MessageRule, type RequestBounds } from './request-bounds.js'
import { requestHead } from './request-head.js'
import { BodyBudget, MAX_WAITING, bodyBudgetOf } from '../body-budget.js'
import { capConnections } from '../connection-cap.js'
import { floodWarning } from '../flood-warning.js'
import { ConnectionCalls } from './connection-calls.js'
import { IdleStreams } from './idle-streams.js'
import type { MessageShares } from './message-meter.js'
import { serveInferStream, streamCounters, type InferStreamHandle, type StreamCounters } from './stream-infer.js'

/**
 * The gRPC door: the Open Inference Protocol's `inference.GRPCInferenceService` over the core
 * service. Meaning lives in src/open-inference/; this door maps messages and statuses only.
 * The call's deadline and cancellation reach the batcher, so an abandoned call costs no model run.
 *
 * Admission, cheapest first: the API key on the call's metadata (call-admission.ts, before the
 * message is read); the receive limit (grpc-js, on the message's length prefix); then, in the
 * handler, the message's entry counts read off its wire bytes (request-bounds.ts); only then does
 * protobuf decode it. Requests are registered undecoded for that reason.
 */

export const SERVICE_NAME = 'inference.GRPCInferenceService'

/** Room in a message for everything around the tensor bytes: names, shape, parameters. */
const MESSAGE_ENVELOPE_BYTES = 64 * 1024
/** How long after the drain timeout calls still open are cancelled: time for the running batches to answer. */
const FORCE_SHUTDOWN_AFTER_DRAIN_MS = 3_000
/** The requests of every RPC but ModelInfer hold a model name and version at most. */
const SMALL_MESSAGE_BYTES = 4 * 1024
/** A load's request may also carry a model configuration (its `config` parameter). */
const LOAD_MESSAGE_BYTES = SMALL_MESSAGE_BYTES + MAX_CONFIG_BYTES
/** gRPC frames a message with a 4-byte length; grpc-js reads it as a signed 32-bit integer. */
const MAX_MESSAGE_BYTES = 2 ** 31 - 1

/**
 * HTTP/2 streams one connection may have open (SETTINGS_MAX_CONCURRENT_STREAMS): a client queues its
 * calls past it, and one that does not is refused by HTTP/2 itself, before grpc-js makes a call of
 * it. Without it, 50 connections opening 2000 idle streams each took the server 1.4 GiB.
 */
const STREAMS_PER_CONNECTION = 128

const ACCESS: Readonly<Record<string, RpcAccess>> = {
  ModelInfer: 'inference',
  ModelStreamInfer: 'inference',
  ServerLive: 'health',
  ServerReady: 'health',
  ModelReady: 'health',
  // Metadata RPCs stay open, as model listings are on the HTTP door.
  ServerMetadata: 'open',
  ModelMetadata: 'open',
  ModelConfig: 'open',
  // Statistics tell what /metrics tells: closed with --auth-metrics, as /metrics is.
  ModelStatistics: 'metrics',
  // Loading and unloading models changes the server: as protected as inference, and so is the index.
  RepositoryIndex: 'inference',
  RepositoryModelLoad: 'inference',
  RepositoryModelUnload: 'inference',
  // grpc.health.v1.Health: what probes call, as open as ServerReady.
  Check: 'health',
  Watch: 'health',
  // Refused NOT_IMPLEMENTED whoever calls: the refusal tells nothing a key should guard.
  ...Object.fromEntries(Object.keys(UNIMPLEMENTED_RPCS).map((rpc) => [rpc, 'open' as const])),
  // Changing the log settings changes the server, as a load does (answered 501 only for a logger without settings).
  LogSettings: 'inference',
  // So does changing what is traced, and where traces go.
  TraceSetting: 'inference'
}

/**
 * A .proto of the door, read at run time: beside this module (src/grpc/, or dist/src/grpc/ when the
 * build copied it there, as the Docker image does), else at its source path from dist/src/grpc/.
 */
function protoPath(file: 'inference.proto' | 'health.proto'): string {
  const beside = fileURLToPath(new URL(`./${file}`, import.meta.url))
  if (existsSync(beside)) return beside
  return fileURLToPath(new URL(`../../../src/grpc/${file}`, import.meta.url))
}

export function inferenceProtoPath(): string {
  return protoPath('inference.proto')
}

/** Message shapes as proto-loader gives them with PROTO_LOADER_OPTIONS (snake_case, defaults filled). */
const PROTO_LOADER_OPTIONS = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true } as const

export function loadInferenceProto(): PackageDefinition {
  return loadSync(inferenceProtoPath(), PROTO_LOADER_OPTIONS)
}

function loadHealthProto(): PackageDefinition {
  return loadSync(protoPath('health.proto'), PROTO_LOADER_OPTIONS)
}

interface InferParameterMessage {
  parameter_choice?: 'bool_param' | 'int64_param' | 'string_param' | 'double_param' | 'uint64_param'
  bool_param?: boolean
  int64_param?: number
  string_param?: string
  double_param?: number
  uint64_param?: number
}

interface InferTensorContentsMessage {
  uint_contents: number[]
  fp32_contents: number[]
  bytes_contents: Buffer[]
}

interface InferInputTensorMessage {
  name: string
  datatype: string
  shape: number[]
  parameters: Record<string, InferParameterMessage>
  contents: InferTensorContentsMessage | null
}

interface ModelInferRequestMessage {
  model_name: string
  model_version: string
  id: string
  parameters: Record<string, InferParameterMessage>
  inputs: InferInputTensorMessage[]
  outputs: Array<{ name: string; parameters: Record<string, InferParameterMessage> }>
  raw_input_contents: Buffer[]
}

interface ModelInferResponseMessage {
  model_name: string
  model_version: string
  id: string
  parameters?: Record<string, InferParameterMessage>
  outputs: Array<{ name: string; datatype: string; shape: readonly number[] }>
  raw_output_contents: Uint8Array[]
}

interface ModelStreamInferResponseMessage {
  error_message: string
  infer_response: ModelInferResponseMessage
}

interface ModelRefMessage {
  name: string
  version: string
}

export interface GrpcServerHandle {
  readonly port: number
  /** The largest message the door reads, in bytes (see messageLimits). */
  readonly receiveLimitBytes: number
  /** ModelInfer messages protobuf has decoded: those past the key, the receive limit and the entry bounds. */
  decodedInferRequests(): number
  /** What ModelStreamInfer calls have read and answered (see stream-infer.ts). */
  streamCounters(): Readonly<StreamCounters>
  /** The body budget now (shared with the HTTP door when main.ts passes one): bytes held, and messages waiting for room. */
  bodyBudget(): BodyBudget['state']
  /** Stops taking calls and waits for those in progress (up to the drain timeout), then closes. */
  close(): Promise<void>
}

export interface MessageLimits {
  /** grpc-js's receive limit: larger messages are refused on their length prefix, unread. */
  readonly receiveLimitBytes: number
  readonly requestBounds: RequestBounds
}

/** The door's limits: an infer message holds what tensorLimits allows, plus an envelope. */
export function messageLimits(service: ClassifyService, settings: Settings): MessageLimits {
  const { itemElements, payloadBytes } = tensorLimits(service, settings)
  return {
    receiveLimitBytes: Math.min(payloadBytes + MESSAGE_ENVELOPE_BYTES, MAX_MESSAGE_BYTES),
    requestBounds: { maxItems: settings.maxBatchItems, maxElements: settings.maxBatchItems * itemElements }
  }
}

function badRequest(detail: string): ServiceError {
  return new ServiceError('BAD_REQUEST', detail)
}

/** Typed contents → the core's TensorData; datatypes the models never take get no data (the core refuses them). */
function contentsData(input: InferInputTensorMessage): TensorData {
  const contents = input.contents
  if (contents === null) throw badRequest(`Input "${echoed(input.name)}" has no contents and the request no raw_input_contents.`)
  switch (input.datatype) {
    case 'BYTES':
      return { form: 'elements', values: contents.bytes_contents }
    case 'FP32':
      return { form: 'numbers', values: contents.fp32_contents }
    case 'UINT8':
      return { form: 'numbers', values: contents.uint_contents }
    default:
      return { form: 'numbers', values: [] }
  }
}

function toInferRequest(message: ModelInferRequestMessage): InferRequest {
  const raw = message.raw_input_contents
  if (raw.length > 0 && raw.length !== message.inputs.length) {
    throw badRequest(`raw_input_contents holds ${raw.length} entries for ${message.inputs.length} inputs.`)
  }
  const inputs: InferInput[] = message.inputs.map((input, i) => {
    refuseSharedMemory(`Input "${echoed(input.name)}"`, parameterValues(input.parameters))
    if (raw.length > 0 && input.contents !== null)
      throw badRequest(`Input "${echoed(input.name)}" has contents although the request uses raw_input_contents.`)
    return {
      name: input.name,
      datatype: input.datatype,
      shape: input.shape,
      data: raw.length > 0 ? { form: 'raw', bytes: raw[i]! } : contentsData(input)
    }
  })
  const outputs: RequestedOutput[] = message.outputs.map((output) => {
    refuseSharedMemory(`Output "${echoed(output.name)}"`, parameterValues(output.parameters))
    const k = parameterValue(output.parameters.classification)
    return { name: output.name, classification: classificationCount(k) }
  })
  return {
    modelName: message.model_name,
    modelVersion: message.model_version,
    id: message.id === '' ? undefined : message.id,
    parameters: parameterValues(message.parameters),
    inputs,
    outputs
  }
}

/** The call's deadline on performance.now()'s clock, and an abort signal for a cancelled call. */
function callOptions(call: ServerUnaryCall<unknown, unknown> | ServerDuplexStream<unknown, unknown>): RequestOptions {
  const abort = new AbortController()
  // The reason is one of two shared errors (cancellationOf): `abort()` without one makes a
  // DOMException with its captured stack for every call, and a client that opens and resets streams
  // (HTTP/2 "rapid reset") cancels thousands of calls in one turn of the event loop.
  call.once('cancelled', () => abort.abort(cancellationOf(call)))
  const deadline = call.getDeadline()
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline
  return Number.isFinite(deadlineMs)
    ? { signal: abort.signal, deadlineAt: performance.now() + (deadlineMs - Date.now()) }
    : { signal: abort.signal }
}

/** Why an answer can no longer be delivered: the call's deadline has passed or its client cancelled it. */
function unanswerable(options: RequestOptions): ServiceError | undefined {
  if (options.deadlineAt !== undefined && performance.now() >= options.deadlineAt) {
    return new ServiceError('DEADLINE_EXCEEDED', '(Its batch was already running; the answer was dropped.)')
  }
  return options.signal?.aborted === true ? (options.signal.reason as ServiceError) : undefined
}

/** The error as the door answers it, logged: an internal fault as an error with its cause, the client's as a refusal. */
function loggedError(err: unknown, log: Logger, rpc: string, what: string): ServiceError {
  const se = toServiceError(err)
  if (se.kind === 'internal') log.error({ err, rpc }, `${what} failed`)
  else log.info({ rpc, code: se.code }, `${what} refused`)
  return se
}

function grpcError(err: unknown, log: Logger, rpc: string): Partial<StatusObject> {
  return statusOf(loggedError(err, log, rpc, 'gRPC call'))
}

/** Requests arrive as their wire bytes (see deferDecoding); each handler decodes its own. */
type UnaryHandler<Res> = (bytes: Buffer, call: ServerUnaryCall<Buffer, Res>) => Res | Promise<Res>

/**
 * Runs a handler and answers with its result, or with its error mapped to a status; a verbose log
 * (log_verbose_level 1, pino's debug) gets a line for each call.
 */
async function answer<Res>(
  rpc: string,
  handler: UnaryHandler<Res>,
  call: ServerUnaryCall<Buffer, Res>,
  callback: sendUnaryData<Res>,
  log: Logger
): Promise<void> {
  const startedAt = performance.now()
  let result: Res
  try {
    result = await handler(call.request, call)
  } catch (err) {
    const refusal = grpcError(err, log, rpc)
    callback(refusal)
    log.debug({ rpc, code: refusal.code, ms: performance.now() - startedAt }, 'gRPC call answered')
    return
  }
  callback(null, result)
  log.debug({ rpc, code: status.OK, ms: performance.now() - startedAt }, 'gRPC call answered')
}

function unary<Res>(rpc: string, log: Logger, handler: UnaryHandler<Res>) {
  return (call: ServerUnaryCall<Buffer, Res>, callback: sendUnaryData<Res>): void => {
    void answer(rpc, handler, call, callback, log)
  }
}

type Decode = (bytes: Buffer) => unknown

/**
 * The service registered with requests left as their bytes, and each RPC's real decoder: grpc-js
 * would otherwise decode a message as it arrives, before anything could look at it.
 */
function deferDecoding(definition: ServiceDefinition): { definition: ServiceDefinition; decoders: ReadonlyMap<string, Decode> } {
  const deferred: Record<string, MethodDefinition<unknown, unknown>> = {}
  const decoders = new Map<string, Decode>()
  for (const [rpc, method] of Object.entries(definition)) {
    decoders.set(rpc, method.requestDeserialize as Decode)
    deferred[rpc] = { ...method, requestDeserialize: (bytes: Buffer) => bytes }
  }
  return { definition: deferred, decoders }
}

/** What every handler needs: the core, the settings, where to log and what to count. */
interface DoorContext {
  readonly service: ClassifyService
  readonly settings: Settings
  readonly log: Logger
  /** The settings of the logger the door was given, when createLogger made it (the logging extension). */
  readonly logSettings: LogSettings | undefined
  readonly metrics: ServiceMetrics | undefined
  readonly decoders: ReadonlyMap<string, Decode>
  /** ModelInferRequest's entry bounds, built once from the loaded models. */
  readonly inferRule: MessageRule
  /** The receive limit: also what one stream's running requests may hold together. */
  readonly receiveLimitBytes: number
  decodedInferRequests: number
  readonly streamCounters: StreamCounters
  /** ModelStreamInfer calls not yet ended, told to finish when the door closes. */
  readonly openStreams: Set<InferStreamHandle>
  /** Shares of the receive budget held by streamed requests until they are answered. */
  readonly messageShares: MessageShares
}

/** protobuf's decode of bytes already admitted; a message it cannot read is the client's fault. */
function decode<T>(door: DoorContext, rpc: string, bytes: Buffer): T {
  try {
    return door.decoders.get(rpc)!(bytes) as T
  } catch {
    throw new ServiceError('BAD_REQUEST', `The message is not a valid ${rpc}Request.`)
  }
}

/** The request of an RPC that names a model at most: small, so decoding it is cheap whatever it holds. */
function smallRequest<T>(door: DoorContext, rpc: string, bytes: Buffer, limit = SMALL_MESSAGE_BYTES): T {
  if (bytes.byteLength > limit)
    throw new ServiceError('BODY_TOO_LARGE', `(${rpc} requests take at most ${limit} bytes; got ${bytes.byteLength}).`)
  return decode<T>(door, rpc, bytes)
}

function inferRequestMessage(door: DoorContext, bytes: Buffer): ModelInferRequestMessage {
  checkRequestBounds(bytes, door.inferRule)
  const message = decode<ModelInferRequestMessage>(door, 'ModelInfer', bytes)
  door.decodedInferRequests++
  return message
}

/**
 * One inference request, of a ModelInfer call or of a stream, counted in request_success/failure_total
 * like the HTTP inference routes (one outcome per request; calls that end before reaching here are
 * counted by the admission interceptor).
 */
async function modelInfer(door: DoorContext, bytes: Buffer, options: RequestOptions): Promise<ModelInferResponseMessage> {
  let response: InferResponse
  let items: number | undefined
  let modelName: string | undefined
  let modelVersion: string | undefined
  const arrivedAt = performance.now()
  try {
    const request = inferRequestMessage(door, bytes)
    modelName = request.model_name
    modelVersion = request.model_version
    const inferRequest = toInferRequest(request)
    items = inferRequest.inputs[0]?.shape[0]
    response = await infer(door.service, inferRequest, options)
    // The message was in hand at arrival.
    response.trace?.stamp('GRPC_WAITREAD_END', arrivedAt)
    // A batch already running finishes when its client has gone; the answer then reaches no one.
    const gone = unanswerable(options)
    if (gone !== undefined) {
      response.trace?.finish()
      throw gone
    }
  } catch (err) {
    door.metrics?.recordRequest(modelName, toServiceError(err), performance.now() - arrivedAt, modelVersion)
    throw err
  }
  const totalMs = performance.now() - arrivedAt
  door.metrics?.recordRequest(response.modelName, 'success', totalMs, response.modelVersion)
  door.log.info(
    { model: response.modelName, id: loggedId(response.id), items, batchSize: response.batchSize, totalMs: Math.round(totalMs * 10) / 10 },
    'inferred'
  )
  const message = {
    model_name: response.modelName,
    model_version: response.modelVersion,
    id: response.id ?? '',
    // Raw contents for every output, as Triton answers: clients read them without a per-datatype field.
    outputs: response.outputs.map((o) => ({ name: o.name, datatype: o.datatype, shape: o.shape })),
    raw_output_contents: response.outputs.map(rawOutputBytes)
  }
  const trace = response.trace
  if (trace !== undefined) {
    // grpc-js tells nothing of when an answer has been written: the trace ends when it is handed over.
    trace.stamp('GRPC_SEND_START')
    trace.finish()
  }
  return message
}

/**
 * Triton marks every stream answer with whether it is its request's last; each request here gets
 * exactly one answer (no model is decoupled), so every answer is final. Stream clients written for
 * decoupled models wait for this flag before they count a request done.
 */
const FINAL_RESPONSE: Record<string, InferParameterMessage> = Object.freeze({
  triton_final_response: { parameter_choice: 'bool_param', bool_param: true }
})

/**
 * One streamed request's answer: its response, or its error in error_message with the model and
 * id it named, so the stream goes on. Logged as a refused or failed call would be.
 */
async function streamAnswer(door: DoorContext, bytes: Buffer, options: RequestOptions): Promise<ModelStreamInferResponseMessage> {
  try {
    return { error_message: '', infer_response: { ...(await modelInfer(door, bytes, options)), parameters: FINAL_RESPONSE } }
  } catch (err) {
    const se = loggedError(err, door.log, 'ModelStreamInfer', 'gRPC stream request')
    return {
      error_message: `${se.code}: ${se.message}`,
      infer_response: { ...requestHead(bytes), parameters: FINAL_RESPONSE, outputs: [], raw_output_contents: [] }
    }
  }
}

/** Whether a model takes requests; as in Triton, an unknown model or version is simply not ready. */
function modelReady(service: ClassifyService, request: ModelRefMessage): boolean {
  try {
    return isModelReady(service, request.name, request.version)
  } catch (err) {
    if (err instanceof ServiceError && err.code === 'MODEL_NOT_FOUND') return false
    throw err
  }
}

function handlers(door: DoorContext): UntypedServiceImplementation {
  const { service, log, logSettings } = door
  return {
    ServerLive: unary('ServerLive', log, (bytes) => {
      smallRequest(door, 'ServerLive', bytes)
      return { live: true }
    }),
    ServerReady: unary('ServerReady', log, (bytes) => {
      smallRequest(door, 'ServerReady', bytes)
      return { ready: service.ready }
    }),
    ModelReady: unary('ModelReady', log, (bytes) => ({
      ready: modelReady(service, smallRequest<ModelRefMessage>(door, 'ModelReady', bytes))
    })),
    ServerMetadata: unary('ServerMetadata', log, (bytes): ServerMetadata => {
      smallRequest(door, 'ServerMetadata', bytes)
      return serverMetadata()
    }),
    ModelMetadata: unary('ModelMetadata', log, (bytes): ModelMetadata => {
      const request = smallRequest<ModelRefMessage>(door, 'ModelMetadata', bytes)
      return modelMetadata(service, request.name, request.version)
    }),
    ModelInfer: unary('ModelInfer', log, (bytes, call: ServerUnaryCall<Buffer, ModelInferResponseMessage>) =>
      modelInfer(door, bytes, callOptions(call))
    ),
    ModelStreamInfer: (call: ServerDuplexStream<Buffer, ModelStreamInferResponseMessage>) => {
      const stream = serveInferStream(call, {
        answer: (bytes, options) => streamAnswer(door, bytes, options),
        answered: (bytes) => {
          door.messageShares.get(bytes)?.release()
          door.messageShares.delete(bytes)
        },
        options: callOptions(call),
        maxInFlightBytes: door.receiveLimitBytes,
        counters: door.streamCounters
      })
      door.openStreams.add(stream)
      const forget = (): boolean => door.openStreams.delete(stream)
      call.once('finish', forget)
      call.once('cancelled', forget)
    },
    ModelConfig: unary('ModelConfig', log, (bytes) => modelConfigReply(service, smallRequest<ModelRefRequest>(door, 'ModelConfig', bytes))),
    ModelStatistics: unary('ModelStatistics', log, (bytes) =>
      modelStatisticsReply(service, door.metrics?.statistics, smallRequest<ModelRefRequest>(door, 'ModelStatistics', bytes))
    ),
    RepositoryIndex: unary('RepositoryIndex', log, (bytes) =>
      repositoryIndexReply(service, smallRequest<RepositoryIndexRequestMessage>(door, 'RepositoryIndex', bytes))
    ),
    RepositoryModelLoad: unary('RepositoryModelLoad', log, (bytes) =>
      repositoryModelLoadReply(
        service,
        smallRequest<RepositoryControlRequestMessage>(door, 'RepositoryModelLoad', bytes, LOAD_MESSAGE_BYTES)
      )
    ),
    RepositoryModelUnload: unary('RepositoryModelUnload', log, (bytes) =>
      repositoryModelUnloadReply(service, smallRequest<RepositoryControlRequestMessage>(door, 'RepositoryModelUnload', bytes))
    ),
    ...Object.fromEntries(
      Object.entries(UNIMPLEMENTED_RPCS).map(([rpc, extension]) => [
        rpc,
        unary(rpc, log, () => {
          throw extensionNotImplemented(extension)
        })
      ])
    ),
    TraceSetting: unary('TraceSetting', log, (bytes) =>
      traceSettingReply(service, smallRequest<TraceSettingRequestMessage>(door, 'TraceSetting', bytes))
    ),
    ...(logSettings === undefined
      ? {}
      : {
          LogSettings: unary('LogSettings', log, (bytes) =>
            logSettingsReply(logSettings, smallRequest<LogSettingsRequestMessage>(door, 'LogSettings', bytes))
          )
        })
  }
}

/**
 * Starts the gRPC door on settings.host:settings.grpcPort (0: a free port). Its limits come from
 * the models the service has loaded, so start it after ClassifyService.start. With `metrics`,
 * ModelInfer calls are counted as the HTTP inference routes are. Its inference messages are held
 * in `bodyBudget`, which main.ts shares with the HTTP door (a door of its own by default).
 */
export async function startGrpcServer(
  service: ClassifyService,
  settings: Settings,
  logger: Logger,
  metrics?: ServiceMetrics,
  bodyBudget: BodyBudget = bodyBudgetOf(settings)
): Promise<GrpcServerHandle> {
  const log = logger.child({ door: 'grpc' })
  const { definition, decoders: inferenceDecoders } = deferDecoding(loadInferenceProto()[SERVICE_NAME] as ServiceDefinition)
  const health = deferDecoding(loadHealthProto()[HEALTH_SERVICE_NAME] as ServiceDefinition)
  const decoders = new Map([...inferenceDecoders, ...health.decoders])
  const { receiveLimitBytes, requestBounds } = messageLimits(service, settings)
  const door: DoorContext = {
    service,
    settings,
    log,
    logSettings: logSettingsOf(logger),
    metrics,
    decoders,
    inferRule: inferRequestRule(requestBounds),
    receiveLimitBytes,
    decodedInferRequests: 0,
    streamCounters: streamCounters(),
    openStreams: new Set(),
    messageShares: new WeakMap()
  }
  // ModelInfer's and ModelStreamInfer's messages are held in the body budget. Every other RPC takes small messages (refused past
  // 4 KiB once read, and holding only their few bytes from then on): a lane of two receive limits
  // of their own, so that a health or metadata call never waits behind inference uploads.
  const smallCallsBudget = new BodyBudget(2 * receiveLimitBytes, MAX_WAITING)
  const connections = new ConnectionCalls(
    settings.headersTimeoutMs,
    floodWarning(
      log,
      { code: 'REQUEST_TIMEOUT', headersTimeoutMs: settings.headersTimeoutMs },
      'gRPC connections closed: no call began within --headers-timeout-ms'
    )
  )
  const idleStreams = new IdleStreams({
    idleTimeoutMs: settings.grpcStreamIdleTimeoutMs,
    endedIdle: floodWarning(
      log,
      { code: 'STREAM_IDLE', grpcStreamIdleTimeoutMs: settings.grpcStreamIdleTimeoutMs },
      'gRPC streams ended: no request in flight for --grpc-stream-idle-timeout-ms'
    ),
    reclaimed: floodWarning(
      log,
      { code: 'STREAM_IDLE', maxGrpcCalls: settings.maxGrpcCalls, maxGrpcConnections: settings.maxGrpcConnections },
      'gRPC streams ended to let other clients in: --max-grpc-calls or --max-grpc-connections were open; the streams idle longest went'
    )
  })
  const server = new Server({
    'grpc.max_receive_message_length': receiveLimitBytes,
    'grpc.max_concurrent_streams': STREAMS_PER_CONNECTION,
    // A connection with no call open is told to go away after this long (connection-calls.ts).
    'grpc.max_connection_idle_ms': settings.keepAliveTimeoutMs,
    interceptors: [
      admissionInterceptor({
        apiKey: settings.apiKey,
        authHealth: settings.authHealth,
        authMetrics: settings.authMetrics,
        access: ACCESS,
        countedRpc: 'ModelInfer',
        maxCalls: settings.maxGrpcCalls,
        connections,
        idleStreams,
        log,
        metrics,
        receive: {
          budgetOf: (rpc) => (rpc === 'ModelInfer' || rpc === 'ModelStreamInfer' ? bodyBudget : smallCallsBudget),
          limitBytes: receiveLimitBytes,
          readTimeoutMs: settings.requestTimeoutMs,
          shares: door.messageShares
        }
      })
    ]
  })
  server.addService(definition, handlers(door))
  const healthChecks = healthService({
    services: [SERVICE_NAME],
    ready: () => service.ready,
    decode: (rpc, bytes) => smallRequest(door, rpc, bytes)
  })
  server.addService(health.definition, healthChecks.handlers)
  log.info(
    {
      receiveLimitBytes,
      bodyBudgetBytes: bodyBudget.budgetBytes,
      maxItems: requestBounds.maxItems,
      maxElements: requestBounds.maxElements
    },
    'gRPC message limits'
  )
  // grpc-js accepts connections on its own HTTP/2 server and shows none of its sockets; the door
  // listens itself and hands each connection over, so their number is capped like HTTP's.
  const injector = server.createConnectionInjector(ServerCredentials.createInsecure())
  const listener = createServer({ noDelay: true }, (socket) => {
    connections.accept(socket)
    injector.injectConnection(socket)
  })
  capConnections(
    listener,
    settings.maxGrpcConnections,
    log,
    '--max-grpc-connections',
    () => connections.reclaimIdle() > 0 || idleStreams.reclaimConnection((session) => connections.callsOn(session))
  )
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject)
    listener.listen(settings.grpcPort, settings.host, () => {
      listener.off('error', reject)
      resolve()
    })
  })
  const port = (listener.address() as AddressInfo).port
  return {
    port,
    receiveLimitBytes,
    decodedInferRequests: () => door.decodedInferRequests,
    streamCounters: () => door.streamCounters,
    bodyBudget: () => bodyBudget.state,
    close: () =>
      new Promise<void>((resolve) => {
        // At the drain timeout the service refuses queued work, which ends those calls properly;
        // calls still open some seconds later (a batch that does not end) are cancelled.
        const force = setTimeout(() => {
          log.warn({ drainTimeoutMs: settings.drainTimeoutMs }, 'drain timeout passed; cancelling gRPC calls still in progress')
          server.forceShutdown()
          resolve()
        }, settings.drainTimeoutMs + FORCE_SHUTDOWN_AFTER_DRAIN_MS)
        listener.close()
        healthChecks.close()
        idleStreams.close()
        server.tryShutdown(() => {
          clearTimeout(force)
          resolve()
        })
        // Open streams would otherwise hold the drain until their clients close them.
        const shuttingDown = statusOf(new ServiceError('SHUTTING_DOWN'))
        for (const stream of door.openStreams) stream.shutdown(shuttingDown)
      })
  }
}
