import { pino } from 'pino'
import { ConfigError, describeSettings, loadSettings, type Settings } from './config.js'
import { ClassifyService } from './core/classify-service.js'
import { startGrpcServer, type GrpcServerHandle } from './grpc/server.js'
import { buildApp } from './http/app.js'
import { ServiceMetrics } from './metrics.js'
import { ensureDefaultModel } from './repository/default-model.js'
import { RepositoryError } from './repository/repository.js'

/** The process: settings, the core service, its doors, and a graceful exit on SIGTERM/SIGINT. */

async function main(): Promise<void> {
  let settings: Settings
  try {
    settings = loadSettings()
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    console.error(`resnet-serve: invalid setting: ${err.message}`)
    process.exit(2)
  }
  const log = pino({ level: settings.logLevel, base: { service: 'resnet-serve' } })
  log.info({ settings: describeSettings(settings) }, 'starting')

  const metrics = new ServiceMetrics()
  let service: ClassifyService
  try {
    if (settings.buildDefaultModel) await ensureDefaultModel(settings.modelRepository, log)
    service = await ClassifyService.start(settings, log, metrics.events)
  } catch (err) {
    if (err instanceof RepositoryError || err instanceof Error) {
      log.fatal({ problem: err.message }, 'cannot start: a model failed to load')
      console.error(`resnet-serve: cannot start: ${err.message}`)
      process.exit(1)
    }
    throw err
  }

  metrics.observe(service)
  const app = await buildApp(service, settings, log, metrics)
  const address = await app.listen({ host: settings.host, port: settings.port })
  log.info({ address, pid: process.pid, models: service.modelNames(), defaultModel: service.defaultModel }, 'HTTP listening')
  let grpc: GrpcServerHandle
  try {
    grpc = await startGrpcServer(service, settings, log, metrics)
  } catch (err) {
    log.fatal({ problem: (err as Error).message, port: settings.grpcPort }, 'cannot start: the gRPC port cannot be bound')
    console.error(`resnet-serve: cannot start gRPC on ${settings.host}:${settings.grpcPort}: ${(err as Error).message} (set --grpc-port)`)
    process.exit(1)
  }
  log.info({ host: settings.host, port: grpc.port }, 'gRPC listening')

  let stopping = false
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return
    stopping = true
    log.info({ signal, drainTimeoutMs: settings.drainTimeoutMs }, 'shutting down: no new requests, finishing accepted ones')
    const force = setTimeout(() => {
      log.error('drain timeout passed; exiting with work unfinished')
      process.exit(1)
    }, settings.drainTimeoutMs + 5_000)
    force.unref()
    // Both doors stop accepting first; requests already in progress still finish through the service.
    Promise.all([app.close(), grpc.close()])
      .then(() => service.close())
      .then(() => {
        log.info('stopped')
        process.exit(0)
      })
      .catch((err: unknown) => {
        log.error({ err }, 'error while shutting down')
        process.exit(1)
      })
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
}

await main()
