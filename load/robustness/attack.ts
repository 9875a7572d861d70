import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { loadSettings } from '../../src/config.js'
import { syntheticModelRepository } from '../../test/helpers/models.js'
import {
  bulkySvg,
  deepV2Json,
  emptyOutputsModelInfer,
  fp32BatchModelInfer,
  hugeRgbaPng,
  jpegSegmentFlood,
  multipart,
  nanV2Binary,
  openBrackets,
  pngTextFlood,
  structureFloods,
  progressiveScanBomb,
  v2LongName,
  v2ValueFlood,
  webpChunkFlood
} from './attack-inputs.js'
import { ProbeThread, openFds, rssMiB, type ProbeReport } from './attack-probes.js'
import { announceModelInfer, sendHttp, sendModelInfer, sendRaw, type Outcome } from './attack-senders.js'
import { BODY_PACE_GRACE_MS } from '../../src/body-pace.js'
import { startBenchServer, type BenchServer } from '../kit/bench-server.js'
import { podLine, preparePod } from '../kit/pod.js'
import { progress } from '../kit/progress.js'
import { median } from '../kit/stats.js'

/**
 * Admission under attack: each class of hostile request (bodies that are cheap to send and costly
 * to parse, decode or hold) is sent in turn to one server process, while a thread of its own
 * probes GET /health/live every 100 ms, samples the server's RSS every 25 ms and classifies a good
 * photo every second. After each attack it waits --settle-seconds and prints, against the targets:
 *
 * - liveness: no probe slower than 1 s (nor failed);
 * - good photo: every probe answered 200 within 2 × its idle latency + one batch's (every-budget:
 *   200 or 429, no time limit);
 * - RSS peak: within the RSS before + the decode budget (the server's decode-budget setting, when it
 *   has one) + 200 MiB, + the body budget for the attack that also fills it (every-budget: all the
 *   budgets at once, the most admission lets in); RSS after settling: within +20% of before;
 * - no 5xx other than 503/504 (gRPC: no INTERNAL, UNKNOWN or DATA_LOSS);
 * - no fd leak: open fds after settling at most FD_SLACK above before;
 * - answer: the refusal the service should give, where there is one.
 *
 * A target not met is a finding, printed as NOT MET; the exit code is then 1.
 *
 * --server-env NAME=VALUE (repeatable) starts the server with that environment too, e.g. the
 * allocator the container uses (LD_PRELOAD=…, MALLOC_ARENA_MAX=2).
 *
 * --pod runs the server as the CPU pod does (load/kit/pod.ts: dist/, the image's allocator and
 * flags, inside a memory cgroup of the manifest's limit; `npm run build` first) and ends with the
 * cgroup's peak and OOM kills; an OOM kill is a target not met.
 *
 *   npm run load:attack [-- --only deep-json-unknown,v2-nan] [--settle-seconds 30] [--cap-seconds 60] [--json out.json] [--server-env NAME=VALUE] [--pod]
 */

const { values } = parseArgs({
  options: {
    only: { type: 'string' },
    'settle-seconds': { type: 'string', default: '30' },
    'cap-seconds': { type: 'string', default: '60' },
    json: { type: 'string' },
    'server-env': { type: 'string', multiple: true },
    pod: { type: 'boolean', default: false }
  }
})
const settleMs = Number(values['settle-seconds']) * 1000
const capMs = Number(values['cap-seconds']) * 1000

const KEY = 'attack-harness-key'
const MODEL = 'resnet50'
const MiB = 1024 * 1024
const LIVENESS_LIMIT_MS = 1000
const RSS_HEADROOM_MiB = 200
const RSS_AFTER_FACTOR = 1.2
/** Open fds may differ by a few between two idle moments (the probes' own keep-alive sockets). */
const FD_SLACK = 3
/** A client that gives up on a decode it sent (to see whether the server keeps decoding). */
const ABANDON_MS = 10_000

interface Target {
  readonly url: string
  readonly grpcAddress: string
}

interface Attack {
  readonly name: string
  readonly what: string
  /** Codes the service should answer with; '4xx' stands for any 4xx. Undefined: none is specified. */
  readonly expected?: readonly string[]
  /**
   * It fills every budget at once: its RSS peak may also add the body budget, and the good photo
   * may be refused 429 meanwhile (admission's answer when it is full; nothing else but 200), or
   * wait behind the queue it filled (no latency limit).
   */
  readonly fillsBudgets?: boolean
  /** How much longer than its limit the good photo may take: it waits its turn in a line the attack keeps full. */
  readonly photoMayWaitMs?: number
  run(target: Target): Promise<Outcome[]>
}

const withKey = { 'x-api-key': KEY }
const times = <T>(n: number, f: () => Promise<T>): Promise<T[]> => Promise.all(Array.from({ length: n }, f))
const rawHead = (path: string, headers: Record<string, string>): string =>
  [`POST ${path} HTTP/1.1`, 'Host: attack', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)].join('\r\n')

/**
 * A whole request over a socket of its own: a server that refuses early answers and closes while
 * the body is still being sent, which fetch reports as a failed request, not as the answer.
 */
function post(target: Target, path: string, headers: Record<string, string>, body: Uint8Array | string, cap = capMs): Promise<Outcome> {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body
  return sendRaw(target.url, { head: rawHead(path, { ...headers, 'Content-Length': String(bytes.byteLength) }), body: bytes, capMs: cap })
}

const photo = await readFile('test/fixtures/photos/chelsea.jpg')

/** 40 uploads of 15 MiB that stop one byte short: each holds its body's budget until it times out. */
function stalledUploads(t: Target): Promise<Outcome[]> {
  const size = 15 * MiB
  const body = Buffer.alloc(size - 1, 0xab)
  const head = rawHead('/classify', { ...withKey, 'Content-Type': 'image/jpeg', 'Content-Length': String(size) })
  return times(40, () => sendRaw(t.url, { head, body, capMs }))
}

/** 8 concurrent 7000×7000 RGBA PNGs: a decode of each needs ~190 MiB, so they fill the decode budget. */
async function concurrentPngs(t: Target): Promise<Outcome[]> {
  const png = await hugeRgbaPng()
  return times(8, () => post(t, '/classify', { ...withKey, 'content-type': 'image/png' }, png))
}

const ATTACKS: readonly Attack[] = [
  {
    name: 'v2-nan',
    what: 'V2 binary FP32 tensor holding a NaN',
    expected: ['400'],
    async run(t) {
      const { headerLength, body } = nanV2Binary()
      return [
        await post(
          t,
          `/v2/models/${MODEL}/infer`,
          { ...withKey, 'content-type': 'application/octet-stream', 'inference-header-content-length': String(headerLength) },
          body
        )
      ]
    }
  },
  {
    name: 'v2-deep-data',
    what: 'V2 JSON data nested 10,000 deep',
    expected: ['400'],
    run: async (t) => [await post(t, `/v2/models/${MODEL}/infer`, { ...withKey, 'content-type': 'application/json' }, deepV2Json(10_000))]
  },
  {
    name: 'v2-value-flood',
    what: 'V2 JSON of 3 M base64 strings behind BYTES shape [1], 30 KB gzipped (21 MB inflated)',
    expected: ['400'],
    run: async (t) => [
      await post(
        t,
        `/v2/models/${MODEL}/infer`,
        { ...withKey, 'content-type': 'application/json', 'content-encoding': 'gzip' },
        v2ValueFlood(3_000_000)
      )
    ]
  },
  {
    name: 'v2-long-name',
    what: 'V2 JSON whose input name is 20 MB, 20 KB gzipped',
    expected: ['400'],
    run: async (t) => [
      await post(
        t,
        `/v2/models/${MODEL}/infer`,
        { ...withKey, 'content-type': 'application/json', 'content-encoding': 'gzip' },
        v2LongName(20_000_000)
      )
    ]
  },
  {
    name: 'long-boundary',
    what: 'multipart photo with a 300-character boundary',
    expected: ['400'],
    async run(t) {
      const { contentType, body } = multipart(
        [{ name: 'image', filename: 'chelsea.jpg', contentType: 'image/jpeg', data: photo }],
        'b'.repeat(300)
      )
      return [await post(t, '/classify', { ...withKey, 'content-type': contentType }, body)]
    }
  },
  {
    name: 'deep-json-unknown',
    what: '16 MB of `[` to /nope and /v2/nope, no key',
    expected: ['404'],
    async run(t) {
      const body = openBrackets(16_000_000)
      return [
        await post(t, '/nope', { 'content-type': 'application/json' }, body),
        await post(t, '/v2/nope', { 'content-type': 'application/json' }, body)
      ]
    }
  },
  {
    name: 'deep-json-batch',
    what: '22 MB of `[` to the batch route, without and with the key',
    expected: ['401', '400'],
    async run(t) {
      const body = openBrackets(22_000_000)
      const path = `/v1/models/${MODEL}:classify`
      return [
        await post(t, path, { 'content-type': 'application/json' }, body),
        await post(t, path, { ...withKey, 'content-type': 'application/json' }, body)
      ]
    }
  },
  {
    name: 'svg-as-png',
    what: '14.7 MB SVG sent as image/png',
    expected: ['415'],
    run: async (t) => [await post(t, '/classify', { ...withKey, 'content-type': 'image/png' }, bulkySvg())]
  },
  {
    name: 'grpc-keyless',
    what: 'gRPC ModelInfer of 16 MB (~8 M empty outputs), no key',
    expected: ['UNAUTHENTICATED', 'RESOURCE_EXHAUSTED'],
    run: async (t) => [await sendModelInfer(t.grpcAddress, emptyOutputsModelInfer(MODEL, 16 * MiB), {}, capMs)]
  },
  {
    name: 'grpc-empty-outputs',
    what: 'gRPC ModelInfer of 16 MB (~8 M empty outputs), with the key',
    expected: ['INVALID_ARGUMENT', 'RESOURCE_EXHAUSTED'],
    run: async (t) => [await sendModelInfer(t.grpcAddress, emptyOutputsModelInfer(MODEL, 16 * MiB), withKey, capMs)]
  },
  {
    name: 'multipart-text-field',
    what: 'multipart with a 100 MB text field before the photo',
    expected: ['413'],
    async run(t) {
      const { contentType, body } = multipart([
        { name: 'note', data: Buffer.alloc(100 * 1_000_000, 'x') },
        { name: 'image', filename: 'chelsea.jpg', contentType: 'image/jpeg', data: photo }
      ])
      return [await post(t, '/classify', { ...withKey, 'content-type': contentType }, body)]
    }
  },
  {
    name: 'slow-body',
    what: 'a 1000-byte body sent at 1 byte/s',
    expected: ['408', 'closed'],
    run: async (t) => [
      await sendRaw(t.url, {
        head: rawHead('/classify', { ...withKey, 'Content-Type': 'image/jpeg', 'Content-Length': '1000' }),
        trickle: { bytes: 1000, intervalMs: 1000 },
        capMs
      })
    ]
  },
  {
    name: 'unterminated-multipart',
    what: 'a chunked multipart body whose closing boundary never comes',
    expected: ['408', 'closed'],
    async run(t) {
      const { contentType, body } = multipart(
        [{ name: 'image', filename: 'chelsea.jpg', contentType: 'image/jpeg', data: photo }],
        undefined,
        false
      )
      const chunk = Buffer.concat([Buffer.from(`${body.byteLength.toString(16)}\r\n`), body, Buffer.from('\r\n')])
      return [
        await sendRaw(t.url, {
          head: rawHead('/classify', { ...withKey, 'Content-Type': contentType, 'Transfer-Encoding': 'chunked' }),
          body: chunk,
          capMs
        })
      ]
    }
  },
  {
    name: 'multipart-skipped-parts',
    what: '12 multipart uploads of 16 MB whose one part has no form-data disposition (busboy skips it)',
    expected: ['400'],
    async run(t) {
      // Sent whole: such a part once stopped the parser for good, the answer never came and the body's share stayed taken.
      const body = Buffer.concat([
        Buffer.from('--zz\r\nContent-Type: image/jpeg\r\n\r\n'),
        Buffer.alloc(16 * MiB, 0x61),
        Buffer.from('\r\n--zz--\r\n')
      ])
      return times(12, () => post(t, '/classify', { ...withKey, 'content-type': 'multipart/form-data; boundary=zz' }, body))
    }
  },
  {
    name: 'stalled-uploads',
    what: '40 uploads of 15 MiB that stop one byte short',
    expected: ['408', '429', 'closed'],
    run: stalledUploads
  },
  {
    name: 'jpeg-scan-bomb',
    what: `4 progressive JPEGs of 4096² with 10,000 extra scans, abandoned after ${ABANDON_MS / 1000} s`,
    expected: ['4xx'],
    async run(t) {
      const bomb = await progressiveScanBomb()
      return times(4, () => post(t, '/classify', { ...withKey, 'content-type': 'image/jpeg' }, bomb, ABANDON_MS))
    }
  },
  {
    name: 'jpeg-segment-flood',
    what: '4 concurrent 64×64 JPEGs behind 16 MB of empty APP2 segments each',
    expected: ['400'],
    async run(t) {
      const flood = await jpegSegmentFlood()
      return times(4, () => post(t, '/classify', { ...withKey, 'content-type': 'image/jpeg' }, flood))
    }
  },
  {
    name: 'webp-chunk-flood',
    what: '8 concurrent WebPs behind 16 MB of empty chunks each',
    expected: ['400'],
    async run(t) {
      const flood = await webpChunkFlood()
      return times(8, () => post(t, '/classify', { ...withKey, 'content-type': 'image/webp' }, flood))
    }
  },
  {
    name: 'png-text-flood',
    what: '4 concurrent PNGs behind 300 zTXt chunks that inflate to 48 MiB each',
    expected: ['400'],
    async run(t) {
      const flood = await pngTextFlood()
      return times(4, () => post(t, '/classify', { ...withKey, 'content-type': 'image/png' }, flood))
    }
  },
  {
    name: 'structure-floods',
    what: 'small files whose structure is the cost (PNG warning chunks, TIFF tags, shared TIFF arrays, GIF frames), each twice at once',
    expected: ['400'],
    async run(t) {
      const floods = await structureFloods()
      return (
        await Promise.all(
          floods.map(({ contentType, data }) => times(2, () => post(t, '/classify', { ...withKey, 'content-type': contentType }, data)))
        )
      ).flat()
    }
  },
  {
    name: 'png-concurrent',
    what: '8 concurrent 7000×7000 RGBA PNGs',
    run: concurrentPngs
  },
  {
    name: 'png-batch',
    what: 'one batch request of 32 7000×7000 RGBA PNGs',
    async run(t) {
      const png = await hugeRgbaPng()
      const { contentType, body } = multipart(
        Array.from({ length: 32 }, (_, i) => ({ name: 'images', filename: `${i}.png`, contentType: 'image/png', data: png }))
      )
      return [await post(t, `/v1/models/${MODEL}:classify`, { ...withKey, 'content-type': contentType }, body)]
    }
  },
  {
    name: 'announce-cycle',
    what: 'for 12 s, every 500 ms: 12 gRPC messages announcing 38 MB and 6 uploads announcing 16 MiB, one byte of each sent',
    expected: ['DEADLINE_EXCEEDED', 'RESOURCE_EXHAUSTED', '408', '429', 'closed', 'reset'],
    // Shares announced are held for a grace before an upload that needs room can take them back.
    photoMayWaitMs: 2 * BODY_PACE_GRACE_MS,
    async run(t) {
      const head = rawHead('/classify', { ...withKey, 'Content-Type': 'image/jpeg', 'Content-Length': String(16 * MiB) })
      const sent: Array<Promise<Outcome>> = []
      for (const end = performance.now() + 12_000; performance.now() < end;) {
        for (let i = 0; i < 12; i++) sent.push(announceModelInfer(t.grpcAddress, 38_000_000, 1, withKey, capMs))
        for (let i = 0; i < 6; i++) sent.push(sendRaw(t.url, { head, body: Buffer.alloc(1), capMs }))
        await new Promise((resolve) => setTimeout(resolve, 500))
      }
      return Promise.all(sent)
    }
  },
  {
    // Each budget is sized alone; this is their sum, the most admission lets in at one time.
    name: 'every-budget',
    what: 'at once: 8 concurrent 7000×7000 RGBA PNGs, 40 stalled 15 MiB uploads, 64 gRPC ModelInfer batches of 16 FP32 images',
    fillsBudgets: true,
    async run(t) {
      const batch = fp32BatchModelInfer(MODEL, 16)
      // The PNGs first, so that their decodes hold the decode budget before the bodies fill theirs.
      const pngs = concurrentPngs(t)
      await new Promise((resolve) => setTimeout(resolve, 1000))
      const outcomes = await Promise.all([pngs, stalledUploads(t), times(64, () => sendModelInfer(t.grpcAddress, batch, withKey, capMs))])
      return outcomes.flat()
    }
  }
]

const names = ATTACKS.map((a) => a.name)
const only = values.only?.split(',').map((s) => s.trim())
const unknown = only?.filter((n) => !names.includes(n)) ?? []
if (unknown.length > 0) throw new Error(`unknown attack ${unknown.join(', ')}; the attacks are: ${names.join(', ')}`)
const chosen = ATTACKS.filter((a) => only === undefined || only.includes(a.name))

const repository = await syntheticModelRepository()
const serverArgs = ['--model-repository', repository, '--provider', 'cpu', '--api-key', KEY]
const serverEnv = Object.fromEntries(
  (values['server-env'] ?? []).map((pair) => {
    const at = pair.indexOf('=')
    if (at < 1) throw new Error(`--server-env takes NAME=VALUE; got "${pair}"`)
    return [pair.slice(0, at), pair.slice(at + 1)]
  })
)
const pod = values.pod ? await preparePod() : undefined
if (pod !== undefined) progress(`pod: ${pod.describe}`)
const maxBatchSize = (JSON.parse(await readFile(join(repository, MODEL, 'config.json'), 'utf8')) as { batching: { maxBatchSize: number } })
  .batching.maxBatchSize

/** The settings the server starts with (its flags and the environment the harness adds). */
const serverSettings = loadSettings(serverArgs, serverEnv)

/** The server's decode budget in MiB, from its settings when it has such a setting (0 otherwise). */
function decodeBudgetMiB(): { mib: number; setting: string | undefined } {
  const settings = serverSettings as unknown as Record<string, unknown>
  const key = Object.keys(settings).find((k) => /decode/i.test(k) && /bytes/i.test(k) && typeof settings[k] === 'number')
  return key === undefined ? { mib: 0, setting: undefined } : { mib: (settings[key] as number) / MiB, setting: key }
}

/** The body budget both doors share, in MiB: what an attack that fills it may add. */
const bodyBudgetMiB = serverSettings.bodyBudgetBytes / MiB

interface Calibration {
  readonly idlePhotoMs: number
  readonly oneBatchMs: number
}

/** Idle latency of the good photo (median of 5) and of one batch of maxBatchSize copies (median of 3). */
async function calibrate(target: Target): Promise<Calibration> {
  const fetchPost = (path: string, contentType: string, body: Uint8Array | string): Promise<Outcome> =>
    sendHttp(`${target.url}${path}`, { method: 'POST', headers: { ...withKey, 'content-type': contentType }, body }, capMs)
  const single = (): Promise<Outcome> => fetchPost('/classify', 'image/jpeg', photo)
  const batchBody = JSON.stringify({ instances: Array.from({ length: maxBatchSize }, () => ({ b64: photo.toString('base64') })) })
  const batch = (): Promise<Outcome> => fetchPost(`/v1/models/${MODEL}:classify`, 'application/json', batchBody)
  await single()
  await batch()
  // A V2 tensor as JSON numbers starts the thread that parses them (src/http/header-parse-pool.ts),
  // as any server with JSON clients has it: its fds are the server's, not an attack's leak.
  const json = JSON.stringify({
    inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 224, 224], data: new Array(3 * 224 * 224).fill(0) }]
  })
  const warmed = await fetchPost(`/v2/models/${MODEL}/infer`, 'application/json', json)
  if (warmed.code !== '200') throw new Error(`the JSON tensor warm-up was answered ${warmed.code}`)
  const singles: number[] = []
  for (let i = 0; i < 5; i++) singles.push((await single()).seconds * 1000)
  const batches: number[] = []
  for (let i = 0; i < 3; i++) batches.push((await batch()).seconds * 1000)
  return { idlePhotoMs: median(singles), oneBatchMs: median(batches) }
}

interface Checks {
  readonly liveness: boolean
  readonly photo: boolean
  readonly rssPeak: boolean
  readonly rssAfter: boolean
  readonly no5xx: boolean
  readonly fds: boolean
  /** Undefined for an attack with no `expected` answers: only that the server copes is checked. */
  readonly answer: boolean | undefined
}

interface AttackResult {
  readonly name: string
  readonly what: string
  readonly outcomes: Record<string, number>
  readonly slowestOutcomeS: number
  readonly liveProbes: number
  readonly worstLiveMs: number
  readonly liveFailures: number
  readonly photoProbes: number
  /** Good photos answered 429 during an attack that fills every budget (allowed there). */
  readonly refusedWhileFull: number
  readonly photoMaxMs: number
  readonly photoLimitMs: number
  readonly photoFailures: Record<string, number>
  readonly rssMiB: { readonly before: number; readonly peak: number; readonly after: number; readonly peakLimit: number }
  readonly fds: { readonly before: number; readonly after: number }
  readonly serverDied: boolean
  readonly checks: Checks
}

function countBy(codes: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const c of codes) counts[c] = (counts[c] ?? 0) + 1
  return counts
}

const SERVER_ERRORS_GRPC = new Set(['INTERNAL', 'UNKNOWN', 'DATA_LOSS'])
const isServerError = (code: string): boolean => (/^5\d\d$/.test(code) && code !== '503' && code !== '504') || SERVER_ERRORS_GRPC.has(code)
const matches = (code: string, expected: string): boolean => code === expected || (expected === '4xx' && /^4\d\d$/.test(code))

class Harness {
  private constructor(
    private server: BenchServer,
    private probes: ProbeThread,
    readonly calibration: Calibration,
    private readonly budgetMiB: number
  ) {}

  static async start(budgetMiB: number): Promise<Harness> {
    const server = await Harness.startServer()
    progress(`server ${server.pid} at ${server.url}; calibrating the good photo`)
    const calibration = await calibrate(Harness.targetOf(server))
    progress(`idle photo ${calibration.idlePhotoMs.toFixed(0)} ms, one batch of ${maxBatchSize} ${calibration.oneBatchMs.toFixed(0)} ms`)
    return new Harness(server, Harness.openProbes(server), calibration, budgetMiB)
  }

  private static async startServer(): Promise<BenchServer> {
    const server = await startBenchServer(serverArgs, { ...pod?.server, env: { ...pod?.server.env, ...serverEnv } })
    while (server.grpcAddress === undefined) await new Promise((resolve) => setTimeout(resolve, 50))
    return server
  }

  private static targetOf(server: BenchServer): Target {
    return { url: server.url, grpcAddress: server.grpcAddress! }
  }

  private static openProbes(server: BenchServer): ProbeThread {
    return ProbeThread.open({ url: server.url, pid: server.pid, photo: new Uint8Array(photo), apiKey: KEY })
  }

  get photoLimitMs(): number {
    return 2 * this.calibration.idlePhotoMs + this.calibration.oneBatchMs
  }

  async run(attack: Attack): Promise<AttackResult> {
    const { pid } = this.server
    const before = { rss: await rssMiB(pid), fds: await openFds(pid) }
    this.probes.start()
    const outcomes = await attack.run(Harness.targetOf(this.server))
    progress(`${attack.name}: answered ${counts(countBy(outcomes.map((o) => o.code)))}; settling ${settleMs / 1000} s`)
    await new Promise((resolve) => setTimeout(resolve, settleMs))
    const report: ProbeReport = await this.probes.stop()
    const serverDied = !this.server.running
    const after = serverDied ? { rss: NaN, fds: NaN } : { rss: await rssMiB(pid), fds: await openFds(pid) }
    if (serverDied) await this.restart()
    return this.judge(attack, outcomes, report, before, after, serverDied)
  }

  private judge(
    attack: Attack,
    outcomes: readonly Outcome[],
    report: ProbeReport,
    before: { rss: number; fds: number },
    after: { rss: number; fds: number },
    serverDied: boolean
  ): AttackResult {
    const codes = outcomes.map((o) => o.code)
    const photoMaxMs = Math.max(0, ...report.photos.map((p) => p.ms))
    const full = attack.fillsBudgets === true
    const refusedWhileFull = full ? report.photos.filter((p) => p.status === '429').length : 0
    const photoFailures = countBy(report.photos.filter((p) => p.status !== '200' && !(full && p.status === '429')).map((p) => p.status))
    const peakLimit = before.rss + this.budgetMiB + (full ? bodyBudgetMiB : 0) + RSS_HEADROOM_MiB
    const photoLimitMs = this.photoLimitMs + (attack.photoMayWaitMs ?? 0)
    return {
      name: attack.name,
      what: attack.what,
      outcomes: countBy(codes),
      slowestOutcomeS: Math.max(...outcomes.map((o) => o.seconds)),
      liveProbes: report.liveProbes,
      worstLiveMs: report.worstLiveMs,
      liveFailures: report.liveFailures,
      photoProbes: report.photos.length,
      photoMaxMs,
      // With every budget full, an admitted photo waits behind the queue the attack filled.
      photoLimitMs: full ? NaN : photoLimitMs,
      photoFailures,
      refusedWhileFull,
      rssMiB: { before: before.rss, peak: report.rssPeakMiB, after: after.rss, peakLimit },
      fds: { before: before.fds, after: after.fds },
      serverDied,
      checks: {
        liveness: !serverDied && report.worstLiveMs <= LIVENESS_LIMIT_MS && report.liveFailures === 0,
        photo: report.photos.length > 0 && Object.keys(photoFailures).length === 0 && (full || photoMaxMs <= photoLimitMs),
        rssPeak: report.rssPeakMiB <= peakLimit,
        rssAfter: after.rss <= before.rss * RSS_AFTER_FACTOR,
        no5xx: !serverDied && !codes.some(isServerError),
        fds: after.fds <= before.fds + FD_SLACK,
        answer: attack.expected === undefined ? undefined : codes.every((c) => attack.expected!.some((e) => matches(c, e)))
      }
    }
  }

  private async restart(): Promise<void> {
    progress(`server ${this.server.pid} died; starting another for the next attack`)
    await this.probes.close()
    this.server = await Harness.startServer()
    this.probes = Harness.openProbes(this.server)
  }

  async close(): Promise<void> {
    await this.probes.close()
    await this.server.stop()
  }
}

/** A figure rounded to a whole number; '-' where there is none (a dead server's RSS, no limit). */
const whole = (v: number): string => (Number.isFinite(v) ? v.toFixed(0) : '-')
const verdict = (ok: boolean | undefined): string => (ok === undefined ? '-' : ok ? 'met' : 'NOT MET')
const counts = (c: Record<string, number>): string =>
  Object.entries(c)
    .map(([code, n]) => (n === 1 ? code : `${code}×${n}`))
    .join(' ') || '-'

function printResult(r: AttackResult): void {
  const lines = [
    `${r.name}: ${r.what}${r.serverDied ? '  (THE SERVER DIED)' : ''}`,
    `  answers ${counts(r.outcomes)} (slowest ${r.slowestOutcomeS.toFixed(1)} s)`,
    `  liveness worst ${r.worstLiveMs.toFixed(0)} ms of ${r.liveProbes} probes${r.liveFailures > 0 ? `, ${r.liveFailures} failed` : ''} (limit ${LIVENESS_LIMIT_MS})`,
    `  good photo max ${r.photoMaxMs.toFixed(0)} ms of ${r.photoProbes} probes (limit ${whole(r.photoLimitMs)})${Object.keys(r.photoFailures).length > 0 ? `, not 200: ${counts(r.photoFailures)}` : ''}${r.refusedWhileFull > 0 ? `, 429 while full: ${r.refusedWhileFull}` : ''}`,
    `  RSS ${whole(r.rssMiB.before)} → ${whole(r.rssMiB.peak)} → ${whole(r.rssMiB.after)} MiB after ${settleMs / 1000} s (peak limit ${whole(r.rssMiB.peakLimit)}, after limit ${whole(r.rssMiB.before * RSS_AFTER_FACTOR)})`,
    `  fds ${r.fds.before} → ${r.fds.after}`,
    `  targets: ${Object.entries(r.checks)
      .map(([k, v]) => `${k} ${verdict(v)}`)
      .join(', ')}`
  ]
  console.log(lines.join('\n'))
}

const budget = decodeBudgetMiB()
progress(
  `${chosen.length} attacks: ${chosen.map((a) => a.name).join(', ')}; decode budget ${budget.setting === undefined ? 'none (no such setting)' : `${budget.mib.toFixed(0)} MiB (${budget.setting})`}`
)
const harness = await Harness.start(budget.mib)
console.log(
  `decode budget ${budget.setting === undefined ? 'none' : `${budget.mib.toFixed(0)} MiB`}; good photo idle ${harness.calibration.idlePhotoMs.toFixed(0)} ms, one batch of ${maxBatchSize} ${harness.calibration.oneBatchMs.toFixed(0)} ms: photo limit ${harness.photoLimitMs.toFixed(0)} ms; settle ${settleMs / 1000} s, cap ${capMs / 1000} s\n`
)
const results: AttackResult[] = []
try {
  for (const attack of chosen) {
    progress(`${attack.name}: ${attack.what}`)
    const result = await harness.run(attack)
    printResult(result)
    results.push(result)
  }
} finally {
  await harness.close()
}
const podUsage = await pod?.usage()

const notMet = results.filter((r) => Object.values(r.checks).some((v) => v === false))
console.log('\nattack                   answers                live ms  photo ms  RSS MiB before→peak→after  fds    targets not met')
for (const r of results) {
  const missed = Object.entries(r.checks)
    .filter(([, v]) => v === false)
    .map(([k]) => k)
  const rss = `${whole(r.rssMiB.before)}→${whole(r.rssMiB.peak)}→${whole(r.rssMiB.after)}`
  console.log(
    `${r.name.padEnd(24)} ${counts(r.outcomes).slice(0, 22).padEnd(22)} ${r.worstLiveMs.toFixed(0).padStart(7)} ${r.photoMaxMs.toFixed(0).padStart(9)}  ${rss.padEnd(26)} ${`${r.fds.before}→${r.fds.after}`.padEnd(6)} ${missed.join(', ') || '-'}`
  )
}
console.log(
  `${results.length - notMet.length} of ${results.length} attacks met every target${notMet.length > 0 ? `; not met: ${notMet.map((r) => r.name).join(', ')}` : ''}`
)
if (podUsage !== undefined) console.log(`${podLine(pod!.limitMiB, podUsage)}${podUsage.oomKills > 0 ? ' (NOT MET)' : ''}`)
if (values.json !== undefined) {
  await writeFile(
    values.json,
    JSON.stringify(
      {
        settleSeconds: settleMs / 1000,
        capSeconds: capMs / 1000,
        decodeBudgetMiB: budget.mib,
        photoLimitMs: harness.photoLimitMs,
        ...(podUsage === undefined ? {} : { pod: { limitMiB: pod!.limitMiB, ...podUsage } }),
        results
      },
      null,
      1
    )
  )
}
process.exitCode = notMet.length === 0 && (podUsage?.oomKills ?? 0) === 0 ? 0 : 1
