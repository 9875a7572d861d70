import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import { badInputCorpus, CORPUS_SERVER_FLAGS } from '../../test/fixtures/bad-inputs.js'
import { photoPaths } from '../../test/helpers/photos.js'
import { startSyntheticServerProcess } from '../../test/helpers/process.js'

/**
 * Soak: --minutes (default 10) of mixed traffic against a server process, one good photo to two
 * cheap bad requests (test/fixtures/bad-inputs.ts), with autocannon. Every --sample-seconds it reads
 * the server's RSS (/proc) and its event-loop p99 delay (/metrics, nodejs_eventloop_lag_p99_seconds,
 * which prom-client resets at each scrape), and times one good /classify request of its own (a probe
 * beside autocannon's connections: the latency a client sees under this load). Passes when no request got an unexpected 5xx or a
 * connection error, RSS after warm-up stays within ±10% of its median, and the event-loop p99
 * stays under 50 ms.
 *
 *   npm run load:soak -- --minutes 10 [--connections 8] [--sample-seconds 5]
 */

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    connections: { type: 'string', default: '8' },
    'sample-seconds': { type: 'string', default: '5' }
  }
})
const connections = Number(values.connections)
const durationS = Math.round(Number(values.minutes) * 60)
const sampleMs = Number(values['sample-seconds']) * 1000
const RSS_BAND = 0.1
const EVENT_LOOP_P99_LIMIT_MS = 50
/** Samples from the first fifth of the run (at least 20 s) are warm-up: allocator and JIT settle. */
const warmUpS = Math.max(20, durationS / 5)

const good = await Promise.all(
  photoPaths()
    .slice(0, 6)
    .map(async (path) => ({
      method: 'POST' as const,
      path: '/classify',
      headers: { 'content-type': 'image/jpeg' },
      body: await readFile(path)
    }))
)
const bad = (await badInputCorpus())
  .filter((c) => c.cheap && c.expected.status !== 200)
  .map((c) => ({ method: c.request.method, path: c.request.path, headers: { ...c.request.headers }, body: c.request.body }))
// One good request, then two bad ones, round and round.
const requests = good.flatMap((g, i) => [g, bad[(2 * i) % bad.length]!, bad[(2 * i + 1) % bad.length]!])
for (let i = 2 * good.length; i < bad.length; i += 2) requests.push(good[i % good.length]!, bad[i]!, bad[(i + 1) % bad.length]!)

const server = await startSyntheticServerProcess(CORPUS_SERVER_FLAGS)
const pid = server.child.pid!

async function rssMiB(): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) / 1024
}

async function eventLoopP99Ms(): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text()
  const line = /^nodejs_eventloop_lag_p99_seconds (\S+)$/m.exec(text)
  return line === null ? NaN : Number(line[1]) * 1000
}

/**
 * autocannon's own latencies are not used: when the server closes a connection after an answer
 * (a 413 does, the body is not read), autocannon reconnects without dropping that connection's
 * queue of sent requests, so later answers are matched to stale start times (seconds "late").
 */
async function probeMs(): Promise<number> {
  const t0 = performance.now()
  const res = await fetch(`${server.url}/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: good[0]!.body })
  await res.arrayBuffer()
  return res.status === 200 ? performance.now() - t0 : NaN
}

interface Sample {
  readonly atS: number
  readonly rssMiB: number
  readonly eventLoopP99Ms: number
  readonly probeMs: number
}

const samples: Sample[] = []
const started = performance.now()
const sampler = setInterval(() => {
  const atS = (performance.now() - started) / 1000
  void Promise.all([rssMiB(), eventLoopP99Ms(), probeMs()]).then(([rss, lag, probe]) =>
    samples.push({ atS, rssMiB: rss, eventLoopP99Ms: lag, probeMs: probe })
  )
}, sampleMs)

process.stderr.write(
  `soaking ${server.url} for ${durationS} s with ${values.connections} connections (${good.length} good photos, ${bad.length} bad requests in the mix)\n`
)
const result = await autocannon({ url: server.url, connections, duration: durationS, requests, timeout: 30 })
clearInterval(sampler)
await new Promise((r) => setTimeout(r, 200))
server.child.kill('SIGTERM')
const exitCode = await server.exited

const statusCounts: Record<string, number> = {}
for (const [status, stat] of Object.entries(result.statusCodeStats ?? {})) statusCounts[status] = stat.count ?? 0
// Nothing in this mix should meet a full queue, a deadline or a shutdown: every 5xx is unexpected.
const unexpected5xx = Object.entries(statusCounts)
  .filter(([s]) => Number(s) >= 500)
  .reduce((n, [, c]) => n + c, 0)
const settled = samples.filter((s) => s.atS >= warmUpS)
const sortedRss = settled.map((s) => s.rssMiB).sort((a, b) => a - b)
const medianRss = sortedRss[sortedRss.length >> 1] ?? NaN
const rssMin = sortedRss[0] ?? NaN
const rssMax = sortedRss[sortedRss.length - 1] ?? NaN
const lags = settled.map((s) => s.eventLoopP99Ms).filter(Number.isFinite)
const worstLag = Math.max(...lags)
const probes = settled
  .map((s) => s.probeMs)
  .filter(Number.isFinite)
  .sort((a, b) => a - b)
const probeAt = (q: number): number => Math.round(probes[Math.min(probes.length - 1, Math.floor(q * probes.length))] ?? NaN)
const checks = {
  noUnexpected5xx: unexpected5xx === 0 && result.errors === 0 && result.timeouts === 0,
  rssWithinBand: rssMin >= medianRss * (1 - RSS_BAND) && rssMax <= medianRss * (1 + RSS_BAND),
  eventLoopP99Under50ms: worstLag < EVENT_LOOP_P99_LIMIT_MS,
  exit0: exitCode === 0
}
console.log(
  JSON.stringify(
    {
      durationS,
      requests: result.requests.total,
      requestsPerS: Math.round(result.requests.average),
      probeLatencyMs: {
        p50: probeAt(0.5),
        p90: probeAt(0.9),
        max: probeAt(1),
        probes: probes.length,
        failed: settled.length - probes.length
      },
      statusCounts,
      unexpected5xx,
      connectionErrors: result.errors,
      timeouts: result.timeouts,
      rssMiB: {
        afterWarmUpS: Math.round(warmUpS),
        median: Math.round(medianRss),
        min: Math.round(rssMin),
        max: Math.round(rssMax),
        first: Math.round(samples[0]?.rssMiB ?? NaN),
        samples: settled.length
      },
      eventLoopP99Ms: {
        worst: Number(worstLag.toFixed(2)),
        median: Number((lags.sort((a, b) => a - b)[lags.length >> 1] ?? NaN).toFixed(2))
      },
      exitCode,
      checks
    },
    null,
    1
  )
)
process.exitCode = Object.values(checks).every(Boolean) ? 0 : 1
