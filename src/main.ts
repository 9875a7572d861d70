import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { createServer } from 'node:net'
import { resolve } from 'node:path'
import { helpText, wantsHelp } from './config-help.js'
import type { Settings } from './config.js'
import type { ClassifyService } from './core/classify-service.js'

/** The process: settings, the core service, its doors, and a graceful exit on SIGTERM, SIGHUP or SIGINT. */

/** A bind error that is the host's fault: a name that does not resolve, or an address not on this machine. */
const UNBINDABLE_HOST = /ENOTFOUND|EAI_AGAIN|EAI_NONAME|EADDRNOTAVAIL|Name resolution failed/

/** A repeated signal sooner than this after the first is the same one delivered twice (see stop()). */
const REPEAT_SIGNAL_MS = 1_000

async function main(): Promise<void> {
  // Help needs only the settings table: it is printed before sharp, ONNX Runtime or fastify load.
  if (wantsHelp(process.argv.slice(2))) {
    process.stdout.write(helpText())
    process.exit(0)
  }
  const [
    { createLogger },
    { ConfigError, DEFAULT_MODEL_REPOSITORY, describeSettings, loadSettings },
    core,
    { startGrpcServer },
    { buildApp },
    { ServiceMetrics },
    { ensureDefaultModel },
    { bodyBudgetOf }
  ] = await Promise.all([
    import('./log-settings.js'),
    import('./config.js'),
    import('./core/classify-service.js'),
    import('./grpc/server.js'),
    import('./http/app.js'),
    import('./metrics.js'),
    import('./repository/default-model.js'),
    import('./body-budget.js')
  ])
  let settings: Settings
  try {
    settings = loadSettings()
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    console.error(`resnet-serve: invalid setting: ${err.message} (all settings: --help)`)
    process.exit(2)
  }
  const log = createLogger(settings.logLevel)
  log.info({ settings: describeSettings(settings) }, 'starting')

  // The synthetic model is built into the default ./models when it is missing, never into a folder
  // named by hand: a mistyped --model-repository would otherwise be created and served from.
  if (!existsSync(settings.modelRepository) && settings.modelRepository !== resolve(DEFAULT_MODEL_REPOSITORY)) {
    log.fatal({ modelRepository: settings.modelRepository }, 'cannot start: the model repository does not exist')
    console.error(
      `resnet-serve: invalid setting: the model repository ${settings.modelRepository} does not exist (--model-repository, MODEL_REPOSITORY). Create it (an empty folder gets the synthetic ResNet-50 with --model-control-mode none, unless --no-build-default-model), or name the folder that holds your models.`
    )
    process.exit(2)
  }

  // A port that cannot be bound ends the start with one line naming the flag to change, not a stack
  // trace: --host when the address is not one of this machine's, else the port's flag.
  type Door = 'HTTP' | 'gRPC'
  const cannotBind = (door: Door, port: number, portFlag: string, err: unknown): never => {
    const problem = (err as Error).message
    const flag = UNBINDABLE_HOST.test(`${(err as NodeJS.ErrnoException).code} ${problem}`) ? '--host' : portFlag
    log.fatal({ problem, host: settings.host, port }, `cannot start: the ${door} port cannot be bound`)
    console.error(`resnet-serve: cannot start ${door} on ${settings.host}:${port}: ${problem} (set ${flag})`)
    process.exit(1)
  }
  // Both ports are tried before the models load (minutes for a large repository), so a port in use
  // or a wrong --host ends the start at once. Each is bound and closed again rather than held:
  // fastify and grpc-js each open their own listener and take none already open. Another process
  // may take a port meanwhile; the real bind below then reports it the same way.
  for (const [door, port, flag] of [
    ['HTTP', settings.port, '--port'],
    ['gRPC', settings.grpcPort, '--grpc-port']
  ] as const) {
    await new Promise<void>((resolve, reject) => {
      const probe = createServer().once('error', reject)
      probe.listen({ host: settings.host, port }, () => probe.close(() => resolve()))
    }).catch((err: unknown) => cannotBind(door, port, flag, err))
  }

  const metrics = new ServiceMetrics()
  let service: ClassifyService
  try {
    // Only the mode that serves the repository as it is gets a placeholder: under poll or explicit an
    // empty repository is where models are about to go (Triton starts empty), and a synthetic
    // resnet50 written there would be the default for good, ahead of the real model copied in.
    if (settings.buildDefaultModel && settings.modelControlMode === 'none') await ensureDefaultModel(settings.modelRepository, log)
    else await mkdir(settings.modelRepository, { recursive: true })
    service = await core.ClassifyService.start(settings, log, metrics.events)
  } catch (err) {
    if (err instanceof Error) {
      log.fatal({ problem: err.message }, 'cannot start: the model repository or a model failed to load')
      console.error(`resnet-serve: cannot start: ${err.message}`)
      process.exit(1)
    }
    throw err
  }

  metrics.observe(service)
  // One budget for the request bytes both doors hold, so the memory they can be made to hold is one figure.
  const bodyBudget = bodyBudgetOf(settings)
  const app = await buildApp(service, settings, log, metrics, bodyBudget)
  const bound = async <T>(door: Door, port: number, flag: string, listen: () => Promise<T>): Promise<T> => {
    try {
      return await listen()
    } catch (err) {
      return cannotBind(door, port, flag, err)
    }
  }
  const address = await bound('HTTP', settings.port, '--port', () => app.listen({ host: settings.host, port: settings.port }))
  // fastify's address is one URL to reach it by (127.0.0.1 for 0.0.0.0); host is what it is bound to.
  log.info(
    { host: settings.host, address, pid: process.pid, models: service.modelNames(), defaultModel: service.defaultModel },
    'HTTP listening'
  )
  const grpc = await bound('gRPC', settings.grpcPort, '--grpc-port', () => startGrpcServer(service, settings, log, metrics, bodyBudget))
  log.info({ host: settings.host, port: grpc.port }, 'gRPC listening')

  // Every line of the shutdown names the signal that began it, so a log shows who stopped the server.
  const closeDoors = (signal: NodeJS.Signals): void => {
    const drainLog = log.child({ signal })
    drainLog.info({ drainTimeoutMs: settings.drainTimeoutMs }, 'shutting down: no new connections, finishing accepted requests')
    const force = setTimeout(() => {
      drainLog.error('drain timeout passed; exiting with work unfinished')
      process.exit(1)
    }, settings.drainTimeoutMs + 5_000)
    force.unref()
    // At the drain timeout, work still queued is refused SHUTTING_DOWN on both doors alike (503,
    // UNAVAILABLE); the batches running then finish and are answered, so the doors can close.
    const abandon = setTimeout(() => {
      drainLog.warn({ drainTimeoutMs: settings.drainTimeoutMs }, 'drain timeout passed; refusing work still queued')
      service.abandonQueued()
    }, settings.drainTimeoutMs)
    abandon.unref()
    // Both doors stop accepting first; requests already in progress still finish through the service.
    Promise.all([app.close(), grpc.close()])
      .then(() => service.close())
      .then(() => {
        drainLog.info('stopped')
        process.exit(0)
      })
      .catch((err: unknown) => {
        drainLog.error({ err }, 'error while shutting down')
        process.exit(1)
      })
  }

  // SIGTERM (Kubernetes, systemd, podman stop) first drains: readiness answers 503 while both ports
  // keep serving for --drain-grace-ms, the time a load balancer takes to stop routing here; then the
  // doors close. SIGINT (Ctrl-C), or a second signal 1 s or more into the grace, closes them at once.
  // SIGHUP (the terminal or an SSH session closing, a supervisor's stop signal) drains as SIGTERM:
  // Node's default for it is to die at once, cutting every request in flight.
  let grace: NodeJS.Timeout | undefined
  let graceFrom = 0
  let closing = false
  const stop = (signal: NodeJS.Signals): void => {
    if (closing) return
    service.beginDrain()
    if (grace !== undefined && signal !== 'SIGINT') {
      // A signal to the process group (systemd's KillMode=control-group, supervisord's stopasgroup,
      // `kill -- -PGID`) reaches this process directly and again through `npm start`, which
      // forwards it: two within milliseconds are one request, not an operator asking twice.
      const afterMs = Math.round(performance.now() - graceFrom)
      if (afterMs < REPEAT_SIGNAL_MS) {
        log.info({ signal, afterMs }, 'signal repeated within 1 s (one signal delivered twice): the grace period continues')
        return
      }
      log.info({ signal, afterMs }, 'signal repeated: ending the grace period now')
    }
    if (grace !== undefined || signal === 'SIGINT' || settings.drainGraceMs === 0) {
      clearTimeout(grace)
      closing = true
      closeDoors(signal)
      return
    }
    log.info({ signal, drainGraceMs: settings.drainGraceMs }, 'draining: readiness answers 503, still serving until the grace period ends')
    graceFrom = performance.now()
    grace = setTimeout(() => {
      closing = true
      closeDoors(signal)
    }, settings.drainGraceMs)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  process.on('SIGHUP', stop)
}

await main()
