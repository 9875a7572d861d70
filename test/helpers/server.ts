import type { FastifyInstance } from 'fastify'
import { pino, type Logger } from 'pino'
import { loadSettings, type Settings } from '../../src/config.js'
import { ClassifyService, type ServiceEvents } from '../../src/core/classify-service.js'
import { buildApp } from '../../src/http/app.js'
import { ServiceMetrics } from '../../src/metrics.js'

export interface TestServer {
  readonly service: ClassifyService
  readonly app: FastifyInstance
  readonly settings: Settings
  readonly metrics: ServiceMetrics
  /** http://127.0.0.1:<port> */
  readonly url: string
  close(): Promise<void>
}

/** Quiet unless RS_TEST_LOG is set (then at that level). */
export function testLogger(): Logger {
  return pino({ level: process.env.RS_TEST_LOG ?? 'silent' })
}

/** The real service and HTTP door, listening on 127.0.0.1, port 0. `flags` are CLI flags as in production. */
export async function startTestServer(repository: string, flags: string[] = [], events: ServiceEvents = {}): Promise<TestServer> {
  const settings = loadSettings(['--model-repository', repository, '--port', '0', '--grpc-port', '0', '--host', '127.0.0.1', '--provider', 'cpu', ...flags], {})
  const log = testLogger()
  const metrics = new ServiceMetrics()
  const service = await ClassifyService.start(settings, log, {
    onBatch(model, size, inferMs) {
      metrics.events.onBatch(model, size, inferMs)
      events.onBatch?.(model, size, inferMs)
    },
    onStage(model, stage, ms) {
      metrics.events.onStage(model, stage, ms)
      events.onStage?.(model, stage, ms)
    }
  })
  metrics.observe(service)
  const app = await buildApp(service, settings, log, metrics)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  return {
    service,
    app,
    settings,
    metrics,
    url: `http://127.0.0.1:${port}`,
    async close() {
      await app.close()
      await service.close(5_000)
    }
  }
}
