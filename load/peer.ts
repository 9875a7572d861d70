import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdir, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { availableParallelism, loadavg } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { pino } from 'pino'
import { ensureDefaultModel } from '../src/repository/default-model.js'
import { processCpuSeconds, type BenchServer } from './kit/bench-server.js'
import { runHttpLoad } from './kit/load-generators.js'
import { armRepository, pairedRounds, sourceTreeAt, type ArmServer, type RoundFigure } from './kit/paired-arms.js'
import { startBenchServer } from './kit/bench-server.js'
import { progress } from './kit/progress.js'
import { typicalPhoto } from './kit/scenario-plan.js'
import { RESULTS_DIR } from './kit/suite-results.js'
import { peerMarkdown, type PeerResult } from './report/benchmark-sections.js'

/**
 * resnet-serve beside what a Python user would build (load/peer/fastapi_resnet50.py: FastAPI +
 * uvicorn + PIL + torchvision transforms + PyTorch ResNet-50, random weights on both sides), on the
 * same cores with the same photo, in paired rounds at each concurrency. Benchmark only: it needs
 * Debian's python3-fastapi, python3-uvicorn, python3-torch and python3-torchvision for /usr/bin/python3.
 *
 *   npm run load:peer [-- --concurrency 1,16,64 --rounds 3 --duration 8 --peer-threads <cores> [--ref GITREF]]
 */

const PYTHON = '/usr/bin/python3'

const { values } = parseArgs({
  options: {
    concurrency: { type: 'string', default: '1,16,64' },
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '8' },
    // As many PyTorch threads as cores, as ONNX Runtime gets; 0 leaves PyTorch's own choice (1 on the
    // development machines, whose OpenMP runtime sees one thread: 2.1× slower at concurrency 1).
    'peer-threads': { type: 'string', default: String(availableParallelism()) },
    ref: { type: 'string' },
    repository: { type: 'string', default: '.cache/bench-models' },
    model: { type: 'string', default: 'resnet50' },
    out: { type: 'string', default: RESULTS_DIR }
  }
})
const concurrency = values.concurrency.split(',').map(Number)
const rounds = Number(values.rounds)
const duration = Number(values.duration)

async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  return port
}

/** The peer in its own process; ready when GET /health answers. Returns its PyTorch thread count too. */
async function startPeer(labels: string, threads: number): Promise<{ server: BenchServer; threads: number }> {
  const port = await freePort()
  const child = spawn(PYTHON, ['load/peer/fastapi_resnet50.py', '--port', String(port), '--labels', labels, '--threads', String(threads)], {
    stdio: ['ignore', 'inherit', 'inherit']
  })
  const exited = once(child, 'exit')
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 120_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the Python peer exited (${child.exitCode}) before answering`)
    try {
      const res = await fetch(`${url}/health`)
      if (res.ok) {
        const health = (await res.json()) as { threads: number }
        return {
          threads: health.threads,
          server: {
            url,
            grpcAddress: undefined,
            pid: child.pid!,
            get running() {
              return child.exitCode === null && child.signalCode === null
            },
            cpuSeconds: () => processCpuSeconds(child.pid!),
            mainThreadCpuSeconds: () => processCpuSeconds(child.pid!, child.pid!),
            async stop() {
              child.kill('SIGTERM')
              await exited
            }
          }
        }
      }
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error('the Python peer did not answer /health within 120 s')
    await new Promise((r) => setTimeout(r, 500))
  }
}

const startedAt = new Date().toISOString()
const loadAverageAtStart = loadavg()
await ensureDefaultModel(values.repository, pino({ level: 'warn' }))
const photo = await typicalPhoto()
const cwd = values.ref === undefined ? undefined : await sourceTreeAt(values.ref)
progress('starting resnet-serve and the Python peer')
const ours = await startBenchServer(
  ['--model-repository', await armRepository('peer', values.repository, values.model, (config) => config), '--provider', 'cpu'],
  { cwd }
)
let peer: Awaited<ReturnType<typeof startPeer>> | undefined
const levels: Array<{ concurrency: number; arms: RoundFigure[][] }> = []
try {
  peer = await startPeer(resolve(values.repository, values.model, 'labels.txt'), Number(values['peer-threads']))
  const arms: ArmServer[] = [
    { spec: { label: 'resnet-serve', args: [], env: {} }, server: ours },
    { spec: { label: 'FastAPI + PyTorch', args: [], env: {} }, server: peer.server }
  ]
  const load = (c: number, seconds: number, path: string) => (server: BenchServer) =>
    runHttpLoad(
      { url: `${server.url}${path}`, headers: { 'content-type': 'image/jpeg' }, body: photo.bytes, imagesPerRequest: 1 },
      c,
      seconds
    )
  const pathOf = (server: BenchServer): string => (server === ours ? `/classify?model=${values.model}` : '/classify')
  for (const a of arms) await load(4, 2, pathOf(a.server))(a.server)
  for (const c of concurrency) {
    progress(`concurrency ${c}: ${rounds} paired rounds of ${duration} s`)
    levels.push({
      concurrency: c,
      arms: await pairedRounds(arms, rounds, (server) => load(c, duration, pathOf(server))(server), `concurrency ${c}`)
    })
  }
} finally {
  await ours.stop()
  await peer?.server.stop()
}
const result: PeerResult = {
  startedAt,
  command: `load/peer.ts ${process.argv.slice(2).join(' ')}`.trim(),
  loadAverageAtStart,
  loadAverageAtEnd: loadavg(),
  cores: availableParallelism(),
  durationSeconds: duration,
  rounds,
  arms: ['resnet-serve', 'FastAPI + PyTorch'],
  peerThreads: peer?.threads ?? 0,
  levels
}
console.log(peerMarkdown(result))
await mkdir(values.out, { recursive: true })
const path = join(values.out, `peer-${startedAt.replace(/[:.]/g, '-')}.json`)
await writeFile(path, `${JSON.stringify(result, null, 2)}\n`)
progress(`results: ${path}`)
