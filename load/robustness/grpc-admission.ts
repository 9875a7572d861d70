import { connect, constants, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2'
import { parseArgs } from 'node:util'
import { status } from '@grpc/grpc-js'
import { grpcFrame, grpcTestClient, openGrpcStream, rawGrpcCall, type GrpcCallError } from '../../test/helpers/grpc.js'
import { syntheticModelRepository } from '../../test/helpers/models.js'
import { startBenchServer } from '../kit/bench-server.js'
import { fp32BatchModelInfer } from './attack-inputs.js'
import { rssMiB } from './attack-probes.js'
import { podLine, preparePod } from '../kit/pod.js'
import { copiesIn, inferWire, lengthDelimited, repeatedField } from '../../test/helpers/protobuf-wire.js'

/**
 * What hostile ModelInfer messages cost the gRPC door: each is sent once to a server process
 * started with --api-key, while /health/live is probed every 100 ms and the server's RSS sampled
 * every 25 ms. Prints per message: the answer's status and code, time to answer, the server's CPU
 * seconds, worst liveness latency (the prober shares this process's event loop with the client
 * that writes the message), RSS before → peak → 2 s after. Then a legitimate FP32 batch of
 * --items images, which must be answered OK, and --calls legitimate batches of 16 sent at once,
 * whose messages the body budget (--body-budget-bytes) must hold within bounds: each must be
 * answered, OK or QUEUE_FULL, and the peak stays within the budget plus what the admitted requests
 * become (their queued images and running batches) above the baseline. Last,
 * --streams ModelStreamInfer calls at once, each sending 3 such batches and closing: their messages
 * share that budget (5.8 GB sent by 200 streams took the server 2.2 GB over its baseline before).
 * Then --idle CxS: C connections each open S ModelStreamInfer streams and send nothing; 3 s later,
 * how each stands (still open, refused TOO_MANY_CALLS by --max-grpc-calls, refused by HTTP/2's
 * 128 streams a connection, or on a connection told GOAWAY when more than --max-grpc-calls calls
 * began in one turn of the server's event loop). 100 000 idle streams took the server 1.4 GiB before
 * those caps.
 * Last, --rapid CxSxR: C connections each open S ModelStreamInfer streams and reset each at once
 * (HTTP/2 "rapid reset"), R rounds 200 ms apart, and how each connection stands 2 s later: the
 * server tells a connection GOAWAY ENHANCE_YOUR_CALM once --max-grpc-calls calls have begun in one
 * turn of its event loop. Before that bound, 200x2000x5 took this server (uncapped heap) from
 * 774 to 3613 MiB, and exhausted the V8 heap of the built server in a pod's 1.5 GiB.
 *
 * --pod runs the server as the CPU pod does (load/kit/pod.ts: dist/, the image's allocator, inside
 * a memory cgroup of the manifest's limit; `npm run build` first) and ends with the cgroup's peak
 * and OOM kills. Without it the server runs from the sources with glibc malloc and no limit.
 *
 *   npm run load:grpc-admission -- [--megabytes 16] [--items 64] [--calls 256] [--streams 200] [--idle 50x2000] [--rapid 200x2000x5] [--pod]
 */

const { values } = parseArgs({
  options: {
    megabytes: { type: 'string', default: '16' },
    items: { type: 'string', default: '64' },
    calls: { type: 'string', default: '256' },
    streams: { type: 'string', default: '200' },
    idle: { type: 'string', default: '50x2000' },
    rapid: { type: 'string', default: '200x2000x5' },
    pod: { type: 'boolean', default: false }
  }
})
const attackBytes = Number(values.megabytes) * 1024 * 1024
const items = Number(values.items)
const KEY = 'admission-bench'
const MODEL = 'resnet50'

const pod = values.pod ? await preparePod() : undefined
if (pod !== undefined) console.error(`pod: ${pod.describe}`)
const server = await startBenchServer(
  ['--model-repository', await syntheticModelRepository(), '--provider', 'cpu', '--api-key', KEY],
  pod?.server
)
while (server.grpcAddress === undefined) await new Promise((resolve) => setTimeout(resolve, 50))
const client = grpcTestClient(server.grpcAddress)

const modelName = inferWire.modelName(MODEL)
const entries = (bytesEach: number): number => copiesIn(attackBytes, bytesEach)
const millions = (bytesEach: number): string => `${(entries(bytesEach) / 1e6).toFixed(1)} M`

const fp32Batch = (n: number): Buffer => fp32BatchModelInfer(MODEL, n)

const STREAM_MESSAGES = 3

const [idleConnections, idlePerConnection] = values.idle.split('x').map(Number) as [number, number]
const [rapidConnections, rapidPerConnection, rapidRounds] = values.rapid.split('x').map(Number) as [number, number, number]

/** The outcome (status and code) of each of `n` ModelInfer calls sending `message` at once. */
const calls =
  (n: number, key = true) =>
  (message: Buffer): Promise<string[]> =>
    Promise.all(
      Array.from({ length: n }, () =>
        client.callRaw('ModelInfer', message, { metadata: key ? { 'x-api-key': KEY } : {} }).then(
          () => 'OK',
          (err: GrpcCallError) => `${status[err.code]} ${err.details.split(':')[0]!.slice(0, 40)}`
        )
      )
    )

interface Attack {
  readonly name: string
  readonly message: () => Buffer
  /** Sends it: the outcome of each call, stream or connection. */
  readonly send: (message: Buffer) => Promise<string[]>
}

const attacks: Attack[] = [
  {
    name: `${millions(2)} empty outputs, no key`,
    send: calls(1, false),
    message: () => Buffer.concat([modelName, repeatedField(inferWire.emptyOutput, entries(2))])
  },
  {
    name: `${millions(2)} empty outputs, with key`,
    send: calls(1),
    message: () => Buffer.concat([modelName, repeatedField(inferWire.emptyOutput, entries(2))])
  },
  {
    name: `${millions(2)} empty parameters`,
    send: calls(1),
    message: () => Buffer.concat([modelName, repeatedField(inferWire.emptyParameter, entries(2))])
  },
  {
    name: `${millions(2)} empty bytes_contents`,
    send: calls(1),
    message: () => Buffer.concat([modelName, inferWire.input('input', 'BYTES', [1], repeatedField(lengthDelimited(8, ''), entries(2)))])
  },
  {
    name: `${millions(1)} shape dimensions`,
    send: calls(1),
    message: () => Buffer.concat([modelName, lengthDelimited(5, lengthDelimited(3, Buffer.alloc(entries(1))))])
  },
  {
    name: `${millions(1)} uint_contents`,
    send: calls(1),
    message: () =>
      Buffer.concat([modelName, inferWire.input('input', 'UINT8', [1, 224, 224, 3], lengthDelimited(4, Buffer.alloc(entries(1))))])
  },
  {
    name: `${millions(1)} int64_contents`,
    send: calls(1),
    message: () => Buffer.concat([modelName, inferWire.input('input', 'INT64', [1], lengthDelimited(3, Buffer.alloc(entries(1))))])
  },
  { name: `FP32 batch of ${items} (legitimate)`, send: calls(1), message: () => fp32Batch(items) },
  { name: `${values.calls} FP32 batches of 16 at once`, send: calls(Number(values.calls)), message: () => fp32Batch(16) },
  {
    name: `${values.streams} streams of ${STREAM_MESSAGES} FP32 batches of 16`,
    send: (message) => Promise.all(Array.from({ length: Number(values.streams) }, () => streamed(message))),
    message: () => fp32Batch(16)
  },
  {
    name: `${idleConnections} connections × ${idlePerConnection} idle streams`,
    send: idleStreams,
    message: () => Buffer.alloc(0)
  },
  {
    name: `${rapidConnections} connections × ${rapidPerConnection} streams reset at once × ${rapidRounds}`,
    send: rapidResets,
    message: () => Buffer.alloc(0)
  }
]

const grpcPort = Number(server.grpcAddress.slice(server.grpcAddress.lastIndexOf(':') + 1))

/** One ModelStreamInfer call that sends `message` STREAM_MESSAGES times, as HTTP/2 takes them, and closes: its end status. */
async function streamed(message: Buffer): Promise<string> {
  const call = rawGrpcCall(grpcPort, 'ModelStreamInfer', { 'x-api-key': KEY })
  const frame = grpcFrame(message)
  for (let i = 0; i < STREAM_MESSAGES; i++) {
    if (!call.stream.write(frame)) await new Promise((resolve) => call.stream.once('drain', resolve))
  }
  call.stream.end()
  return call.ended
    .then(
      (end) => `${status[end.code]}${end.details === '' || end.details === 'OK' ? '' : ` ${end.details.split(':')[0]!.slice(0, 40)}`}`,
      (err: Error) => err.message.slice(0, 40)
    )
    .finally(() => call.close())
}

/** Opens the --idle streams, sends nothing on them, and tells after 3 s how each stands; then hangs up. */
async function idleStreams(): Promise<string[]> {
  const outcomes: string[] = []
  const sessions = Array.from({ length: idleConnections }, () => connect(`http://127.0.0.1:${grpcPort}`))
  const goaways = sessions.map(() => false)
  sessions.forEach((session, c) => session.once('goaway', () => (goaways[c] = true)))
  for (const session of sessions) {
    session.on('error', () => undefined)
    for (let i = 0; i < idlePerConnection; i++) {
      const at = outcomes.push('open') - 1
      const stream = openGrpcStream(session, 'ModelStreamInfer', { 'x-api-key': KEY })
      const settle = (h: IncomingHttpHeaders): void => {
        if (h['grpc-status'] === undefined) return
        outcomes[at] = `${status[Number(h['grpc-status'])]} ${decodeURIComponent(String(h['grpc-message'] ?? '')).split(':')[0]}`
      }
      stream.on('response', settle)
      stream.on('trailers', settle)
      stream.on('close', () => {
        if (outcomes[at] === 'open') outcomes[at] = `RST_STREAM ${stream.rstCode}`
      })
    }
  }
  await new Promise((resolve) => setTimeout(resolve, 3_000))
  // Streams of a connection told to go away are over for the server, whatever the client holds.
  const standing = outcomes.map((o, i) => (o === 'open' && goaways[Math.floor(i / idlePerConnection)] ? 'open, connection told GOAWAY' : o))
  for (const session of sessions) session.destroy()
  return standing
}

/** Opens the --rapid connections, resets streams on them in rounds, and tells 2 s later how each connection stands; then hangs up. */
async function rapidResets(): Promise<string[]> {
  const sessions = await Promise.all(
    Array.from(
      { length: rapidConnections },
      () =>
        new Promise<ClientHttp2Session>((resolve) => {
          const session = connect(`http://127.0.0.1:${grpcPort}`)
          session.on('error', () => undefined)
          session.once('remoteSettings', () => resolve(session))
        })
    )
  )
  const outcomes = sessions.map(() => 'open')
  sessions.forEach((session, i) =>
    session.once(
      'goaway',
      (code: number) => (outcomes[i] = code === constants.NGHTTP2_ENHANCE_YOUR_CALM ? 'GOAWAY ENHANCE_YOUR_CALM' : `GOAWAY ${code}`)
    )
  )
  for (let round = 0; round < rapidRounds; round++) {
    for (const session of sessions) {
      for (let i = 0; i < rapidPerConnection && !session.closed && !session.destroyed; i++) {
        const stream = openGrpcStream(session, 'ModelStreamInfer', { 'x-api-key': KEY })
        stream.close(constants.NGHTTP2_CANCEL)
      }
      // Each connection's burst goes out before the next is made, and GOAWAYs are heard.
      await new Promise((resolve) => setImmediate(resolve))
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  await new Promise((resolve) => setTimeout(resolve, 2_000))
  for (const session of sessions) session.destroy()
  return outcomes
}

interface Row {
  readonly attack: string
  readonly megabytes: string
  readonly answer: string
  readonly answerS: string
  /** CPU the server process spent from sending to 2 s after the answer (all its threads). */
  readonly serverCpuS: string
  readonly worstLiveMs: number
  readonly rss: string
}

const rows: Row[] = []
for (const attack of attacks) {
  const message = attack.message()
  const rssBefore = await rssMiB(server.pid)
  let peak = rssBefore
  const sampler = setInterval(
    () =>
      void rssMiB(server.pid).then(
        (r) => (peak = Math.max(peak, r)),
        () => undefined
      ),
    25
  )
  let worstLiveMs = 0
  let probing = true
  const prober = (async () => {
    while (probing && server.running) {
      const t0 = performance.now()
      // A server that died answers nothing: the row says so.
      await fetch(`${server.url}/health/live`).then(
        (r) => r.arrayBuffer(),
        () => undefined
      )
      worstLiveMs = Math.max(worstLiveMs, performance.now() - t0)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  })()
  const cpuBefore = await server.cpuSeconds()
  const t0 = performance.now()
  const answers = await attack.send(message)
  const counts = new Map<string, number>()
  for (const a of answers) counts.set(a, (counts.get(a) ?? 0) + 1)
  const many = answers.length > 1
  const answer = [...counts].map(([a, n]) => (many ? `${n}× ${a}` : a)).join(', ')
  const answerS = ((performance.now() - t0) / 1000).toFixed(2)
  await new Promise((resolve) => setTimeout(resolve, 2_000))
  probing = false
  await prober
  clearInterval(sampler)
  const died = !server.running
  const rssAfter = died ? 'DIED' : Math.round(await rssMiB(server.pid))
  const serverCpuS = died ? '-' : ((await server.cpuSeconds()) - cpuBefore).toFixed(2)
  rows.push({
    attack: attack.name,
    megabytes: (message.byteLength / 1024 / 1024).toFixed(1),
    answer,
    answerS,
    serverCpuS,
    worstLiveMs: Math.round(worstLiveMs),
    rss: `${Math.round(rssBefore)} → ${Math.round(peak)} → ${rssAfter}`
  })
  console.error(`done: ${attack.name}`)
  if (died) break
}
console.table(rows)
client.close()
const survived = server.running
await server.stop()
if (pod !== undefined) {
  const usage = await pod.usage()
  console.log(`${podLine(pod.limitMiB, usage)}, server ${survived ? 'alive to the end' : 'DIED'}`)
  if (!survived || usage.oomKills > 0) process.exitCode = 1
}
