import { existsSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import {
  Metadata,
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type ServiceDefinition,
  type StatusObject,
  type UntypedServiceImplementation,
  type sendUnaryData
} from '@grpc/grpc-js'
import { loadSync, type PackageDefinition } from '@grpc/proto-loader'
import type { Logger } from 'pino'
import { isAuthorized } from '../api-key.js'
import type { Settings } from '../config.js'
import type { ClassifyService, RequestOptions } from '../core/classify-service.js'
import {
  infer,
  isModelReady,
  modelMetadata,
  rawOutputBytes,
  serverMetadata,
  type InferInput,
  type InferRequest,
  type InferResponse,
  type ModelMetadata,
  type RequestedOutput,
  type ServerMetadata,
  type TensorData
} from '../core/open-inference.js'
import { ServiceError } from '../errors.js'
import type { ServiceMetrics } from '../metrics.js'
import { grpcStatusOf, toServiceError } from './error-status.js'

/**
 * The gRPC door: the Open Inference Protocol's `inference.GRPCInferenceService` over the core
 * service. Meaning lives in src/core/open-inference.ts; this door maps messages and statuses only.
 * The call's deadline and cancellation reach the batcher, so an abandoned call costs no model run.
 */

export const SERVICE_NAME = 'inference.GRPCInferenceService'

/** Room in a message for everything around the tensor bytes, which bodyLimitBytes bounds. */
const MESSAGE_ENVELOPE_BYTES = 64 * 1024

/**
 * inference.proto, read at run time: beside this module (src/grpc/, or dist/src/grpc/ when the
 * build copied it there, as the Docker image does), else at its source path from dist/src/grpc/.
 */
export function inferenceProtoPath(): string {
  const beside = fileURLToPath(new URL('./inference.proto', import.meta.url))
  if (existsSync(beside)) return beside
  return fileURLToPath(new URL('../../../src/grpc/inference.proto', import.meta.url))
}

/** Message shapes as proto-loader gives them with PROTO_LOADER_OPTIONS (snake_case, defaults filled). */
const PROTO_LOADER_OPTIONS = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true } as const

export function loadInferenceProto(): PackageDefinition {
  return loadSync(inferenceProtoPath(), PROTO_LOADER_OPTIONS)
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
  outputs: Array<{ name: string; datatype: string; shape: readonly number[] }>
  raw_output_contents: Uint8Array[]
}

interface ModelRefMessage {
  name: string
  version: string
}

export interface GrpcServerHandle {
  readonly port: number
  /** Stops taking calls and waits for those in progress (up to the drain timeout), then closes. */
  close(): Promise<void>
}

function badRequest(detail: string): ServiceError {
  return new ServiceError('BAD_REQUEST', detail)
}

function parameterValue(parameter: InferParameterMessage | undefined): unknown {
  return parameter?.parameter_choice === undefined ? undefined : parameter[parameter.parameter_choice]
}

/** Typed contents → the core's TensorData; datatypes the models never take get no data (the core refuses them). */
function contentsData(input: InferInputTensorMessage): TensorData {
  const contents = input.contents
  if (contents === null) throw badRequest(`Input "${input.name}" has no contents and the request no raw_input_contents.`)
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
    if (raw.length > 0 && input.contents !== null) throw badRequest(`Input "${input.name}" has contents although the request uses raw_input_contents.`)
    return { name: input.name, datatype: input.datatype, shape: input.shape, data: raw.length > 0 ? { form: 'raw', bytes: raw[i]! } : contentsData(input) }
  })
  const outputs: RequestedOutput[] = message.outputs.map((output) => {
    const k = parameterValue(output.parameters.classification)
    return { name: output.name, classification: k === undefined ? undefined : typeof k === 'number' ? k : NaN }
  })
  return { modelName: message.model_name, modelVersion: message.model_version, id: message.id === '' ? undefined : message.id, inputs, outputs }
}

/** The call's deadline on performance.now()'s clock, and an abort signal for a cancelled call. */
function callOptions(call: ServerUnaryCall<unknown, unknown>): RequestOptions {
  const abort = new AbortController()
  call.once('cancelled', () => abort.abort())
  const deadline = call.getDeadline()
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline
  return Number.isFinite(deadlineMs) ? { signal: abort.signal, deadlineAt: performance.now() + (deadlineMs - Date.now()) } : { signal: abort.signal }
}

function grpcError(err: unknown, log: Logger, rpc: string): Partial<StatusObject> {
  const se = toServiceError(err)
  if (se.kind === 'internal') log.error({ err, rpc }, 'gRPC call failed')
  else log.info({ rpc, code: se.code }, 'gRPC call refused')
  const metadata = new Metadata()
  if (se.retryAfterSeconds !== undefined) metadata.set('retry-after', String(se.retryAfterSeconds))
  return { code: grpcStatusOf(se.kind), details: `${se.code}: ${se.message}`, metadata }
}

type UnaryHandler<Req, Res> = (request: Req, call: ServerUnaryCall<Req, Res>) => Res | Promise<Res>

/** Runs a handler and answers with its result, or with its error mapped to a status. */
async function answer<Req, Res>(rpc: string, handler: UnaryHandler<Req, Res>, call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>, log: Logger): Promise<void> {
  let result: Res
  try {
    result = await handler(call.request, call)
  } catch (err) {
    callback(grpcError(err, log, rpc))
    return
  }
  callback(null, result)
}

function unary<Req, Res>(rpc: string, log: Logger, handler: UnaryHandler<Req, Res>) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
    void answer(rpc, handler, call, callback, log)
  }
}

/** What every handler needs: the core, the settings, where to log and what to count. */
interface DoorContext {
  readonly service: ClassifyService
  readonly settings: Settings
  readonly log: Logger
  readonly metrics: ServiceMetrics | undefined
}

/**
 * With --api-key, the calls that need the key (ModelInfer always; the health RPCs with
 * --auth-health) must carry it in their metadata, as `authorization: Bearer <key>` or
 * `x-api-key: <key>`, exactly as on the HTTP door; metadata RPCs stay open, as model listings are.
 */
function requireApiKey(door: DoorContext, call: ServerUnaryCall<unknown, unknown>, access: 'inference' | 'health'): void {
  const key = door.settings.apiKey
  if (key === undefined || (access === 'health' && !door.settings.authHealth)) return
  if (!isAuthorized(call.metadata.getMap(), key)) throw new ServiceError('UNAUTHENTICATED')
}

/** ModelInfer, counted in request_success/failure_total like the HTTP inference routes (one outcome per call). */
async function modelInfer(door: DoorContext, request: ModelInferRequestMessage, call: ServerUnaryCall<ModelInferRequestMessage, ModelInferResponseMessage>): Promise<ModelInferResponseMessage> {
  let response: InferResponse
  let items: number | undefined
  try {
    requireApiKey(door, call, 'inference')
    const options = callOptions(call)
    const inferRequest = toInferRequest(request)
    items = inferRequest.inputs[0]?.shape[0]
    response = await infer(door.service, inferRequest, options)
  } catch (err) {
    door.metrics?.recordRequest(request.model_name, toServiceError(err).code)
    throw err
  }
  door.metrics?.recordRequest(response.modelName, 'success')
  door.log.info({ model: response.modelName, items, batchSize: response.batchSize }, 'inferred')
  return {
    model_name: response.modelName,
    model_version: response.modelVersion,
    id: response.id ?? '',
    // Raw contents for every output, as Triton answers: clients read them without a per-datatype field.
    outputs: response.outputs.map((o) => ({ name: o.name, datatype: o.datatype, shape: o.shape })),
    raw_output_contents: response.outputs.map(rawOutputBytes)
  }
}

function handlers(door: DoorContext): UntypedServiceImplementation {
  const { service, log } = door
  return {
    ServerLive: unary('ServerLive', log, (_request: unknown, call) => {
      requireApiKey(door, call, 'health')
      return { live: true }
    }),
    ServerReady: unary('ServerReady', log, (_request: unknown, call) => {
      requireApiKey(door, call, 'health')
      return { ready: service.ready }
    }),
    ModelReady: unary('ModelReady', log, (request: ModelRefMessage, call) => {
      requireApiKey(door, call, 'health')
      return { ready: isModelReady(service, request.name, request.version) }
    }),
    ServerMetadata: unary('ServerMetadata', log, (): ServerMetadata => serverMetadata()),
    ModelMetadata: unary('ModelMetadata', log, (request: ModelRefMessage): ModelMetadata => modelMetadata(service, request.name, request.version)),
    ModelInfer: unary('ModelInfer', log, (request: ModelInferRequestMessage, call: ServerUnaryCall<ModelInferRequestMessage, ModelInferResponseMessage>) => modelInfer(door, request, call))
  }
}

/**
 * Starts the gRPC door on settings.host:settings.grpcPort (0: a free port). With `metrics`,
 * ModelInfer calls are counted as the HTTP inference routes are.
 */
export async function startGrpcServer(service: ClassifyService, settings: Settings, logger: Logger, metrics?: ServiceMetrics): Promise<GrpcServerHandle> {
  const log = logger.child({ door: 'grpc' })
  const definition = loadInferenceProto()[SERVICE_NAME] as ServiceDefinition
  const server = new Server({ 'grpc.max_receive_message_length': settings.bodyLimitBytes + MESSAGE_ENVELOPE_BYTES })
  server.addService(definition, handlers({ service, settings, log, metrics }))
  const host = settings.host.includes(':') ? `[${settings.host}]` : settings.host
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${settings.grpcPort}`, ServerCredentials.createInsecure(), (err, bound) => (err === null ? resolve(bound) : reject(err)))
  })
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          log.warn({ drainTimeoutMs: settings.drainTimeoutMs }, 'drain timeout passed; cancelling gRPC calls still in progress')
          server.forceShutdown()
          resolve()
        }, settings.drainTimeoutMs)
        server.tryShutdown(() => {
          clearTimeout(force)
          resolve()
        })
      })
  }
}
