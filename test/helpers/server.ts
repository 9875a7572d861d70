import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { bodyBudgetOf, type BodyBudget } from '../../src/body-budget.js'
import { loadSettings, type LogLevel, type Settings } from '../../src/config.js'
import { ClassifyService, type ServiceEvents } from '../../src/core/classify-service.js'
import { createNormalizer } from '../../src/core/pixel-normalizer.js'
import { buildApp } from '../../src/http/app.js'
import { createLogger } from '../../src/log-settings.js'
import { ServiceMetrics } from '../../src/metrics.js'

export interface TestServer {
  readonly service: ClassifyService
  readonly app: FastifyInstance
  readonly settings: Settings
  readonly metrics: ServiceMetrics
  /** The logger the service and door write through (startTestGrpc's door uses it too, as main.ts's does). */
  readonly log: Logger
  /** The HTTP door's body budget (startTestGrpc shares it when given it). */
  readonly bodyBudget: BodyBudget
  /** http://127.0.0.1:<port> */
  readonly url: string
  close(): Promise<void>
}

/** Quiet unless RS_TEST_LOG is set (then at that level). */
export function testLogger(): Logger {
  return createLogger((process.env.RS_TEST_LOG ?? 'silent') as LogLevel)
}

/** The real service and HTTP door, listening on 127.0.0.1, port 0. `flags` are CLI flags as in production. */
export async function startTestServer(
  repository: string,
  flags: string[] = [],
  events: ServiceEvents = {},
  log: Logger = testLogger()
): Promise<TestServer> {
  const settings = loadSettings(
    ['--model-repository', repository, '--port', '0', '--grpc-port', '0', '--host', '127.0.0.1', '--provider', 'cpu', ...flags],
    {}
  )
  const metrics = new ServiceMetrics()
  const service = await ClassifyService.start(settings, log, {
    onBatch(model, size, inferMs, version) {
      metrics.events.onBatch(model, size, inferMs, version)
      events.onBatch?.(model, size, inferMs, version)
    },
    onStage(model, stage, ms, version) {
      metrics.events.onStage(model, stage, ms, version)
      events.onStage?.(model, stage, ms, version)
    }
  })
  metrics.observe(service)
  const bodyBudget = bodyBudgetOf(settings)
  const app = await buildApp(service, settings, log, metrics, bodyBudget)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  return {
    service,
    app,
    settings,
    metrics,
    log,
    bodyBudget,
    url: `http://127.0.0.1:${port}`,
    async close() {
      await app.close()
      await service.close(5_000)
    }
  }
}

/** A model's float32 input tensor for a photo, decoded and normalised by the server's own code. */
export async function modelInputTensor(server: TestServer, model: string, photo: Buffer): Promise<Float32Array> {
  const { preprocess, input } = server.service.model(model).entry.config
  const tensor = new Float32Array(3 * preprocess.crop * preprocess.crop)
  createNormalizer(preprocess, input.layout)(await server.service.preprocess(model, photo), tensor, 0)
  return tensor
}

/** One sample of the server's own metrics, 0 when absent; `labels` as the exposition writes them (`model="resnet50"`). */
export async function metricValue(server: TestServer, name: string, labels: string): Promise<number> {
  const { body } = await server.metrics.exposition()
  const line = body.split('\n').find((l) => l.startsWith(`${name}{${labels}} `))
  return line === undefined ? 0 : Number(line.split(' ').pop())
}

/** The class indices /classify answers for a JPEG, best first: the reference other doors must match. */
export async function classifyIndices(server: TestServer, model: string, photo: Buffer, topk = 5): Promise<number[]> {
  const res = await fetch(`${server.url}/classify?model=${model}&topk=${topk}`, {
    method: 'POST',
    headers: { 'content-type': 'image/jpeg' },
    body: photo
  })
  if (res.status !== 200) throw new Error(`/classify answered ${res.status}`)
  return ((await res.json()) as { predictions: Array<{ index: number }> }).predictions.map((p) => p.index)
}

/** POST /classify with a JPEG: the status, the code when refused, the predictions when answered. */
export async function classifyJpeg(
  url: string,
  photo: Buffer,
  model?: string
): Promise<{ status: number; code: string | undefined; predictions: unknown[] | undefined }> {
  const res = await fetch(`${url}/classify${model === undefined ? '' : `?model=${model}`}`, {
    method: 'POST',
    headers: { 'content-type': 'image/jpeg' },
    body: photo
  })
  const body = (await res.json()) as { code?: string; predictions?: unknown[] }
  return { status: res.status, code: body.code, predictions: body.predictions }
}

/**
 * The protocol extensions the server implements, by Triton's names, sorted: what GET /v2 and gRPC
 * ServerMetadata must list (tooling reads the list before it uses an extension).
 */
export const IMPLEMENTED_EXTENSIONS: readonly string[] = [
  ...['binary_tensor_data', 'classification', 'logging', 'model_configuration', 'model_repository'],
  ...['model_repository(unload_dependents)', 'schedule_policy', 'statistics', 'trace']
]
