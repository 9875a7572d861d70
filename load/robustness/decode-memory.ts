import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import sharp, { type Sharp } from 'sharp'
import { decodeCostBytes, ImagePreprocessor } from '../../src/core/preprocess.js'
import { configFromPreset } from '../../src/repository/model-config.js'
import { syntheticModelRepository } from '../../test/helpers/models.js'
import { readPhoto } from '../../test/helpers/photos.js'
import { startBenchServer } from '../kit/bench-server.js'
import { progress } from '../kit/progress.js'

/**
 * What decoding costs in memory, and whether the process gives it back.
 *
 * 1. Calibration (each in its own process, so nothing is reused from an earlier decode): one decode
 *    of each kind of large image through ImagePreprocessor; its peak RSS increase (VmHWM after
 *    resetting it) beside decodeCostBytes, the decode budget's estimate. The estimate must not be
 *    below the measurement by more than noise.
 * 2. Burst: a server process (synthetic ResNet-50, --provider cpu) per allocator variant gets
 *    --burst (8) concurrent 7000×7000 RGBA PNGs on /classify, then a batch request of --batch (32)
 *    of them; RSS sampled every 25 ms. Printed per variant: RSS at rest → peak → 30 s after, the
 *    statuses and the wall time. Variants: glibc malloc (sharp then runs libvips single-threaded),
 *    MALLOC_ARENA_MAX=2, jemalloc by LD_PRELOAD (sharp then runs libvips on all cores; also with
 *    VIPS_CONCURRENCY=1), and glibc without the decode budget (how it was).
 *
 *   npm run load:decode-memory [-- --only calibrate|burst] [--variants glibc,arena2,jemalloc] [--burst 8] [--batch 32] [--after-seconds 30]
 */

const { values } = parseArgs({
  options: {
    only: { type: 'string' },
    variants: { type: 'string' },
    burst: { type: 'string', default: '8' },
    batch: { type: 'string', default: '32' },
    'after-seconds': { type: 'string', default: '30' },
    'calibrate-one': { type: 'string' }
  }
})

const MiB = 2 ** 20
const SIDE = 7000
const JEMALLOC = '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2'
const CACHE = '.cache/load'
/** Generous: the burst's images are decoded one or two at a time. */
const REQUEST_TIMEOUT_MS = 600_000

function mib(bytes: number): string {
  return (bytes / MiB).toFixed(0)
}

async function procStatusKiB(pid: number | 'self', field: 'VmRSS' | 'VmHWM'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)![1])
}

const noise = (channels: 3 | 4, side = SIDE): Sharp =>
  sharp({ create: { width: side, height: side, channels, background: '#808080', noise: { type: 'gaussian', mean: 128, sigma: 12 } } })

/** Large images of each kind the cost model tells apart; written once under .cache/load/. */
const KINDS: Record<string, () => Promise<Buffer>> = {
  'PNG RGB': () => noise(3).png().toBuffer(),
  'PNG RGBA': () => noise(4).png().toBuffer(),
  'PNG RGB interlaced': () => noise(3).png({ progressive: true }).toBuffer(),
  'PNG RGBA 16-bit': () => noise(4).toColourspace('rgb16').png().toBuffer(),
  'JPEG baseline': () => noise(3).jpeg().toBuffer(),
  'JPEG baseline, orientation 6': () => noise(3).withMetadata({ orientation: 6 }).jpeg().toBuffer(),
  'JPEG progressive 4:2:0': () => noise(3).jpeg({ progressive: true }).toBuffer(),
  'JPEG progressive 4:4:4': () => noise(3).jpeg({ progressive: true, chromaSubsampling: '4:4:4' }).toBuffer(),
  'WebP RGB': () => noise(3).webp({ quality: 60 }).toBuffer(),
  'WebP RGBA': () => noise(4).webp({ quality: 60 }).toBuffer(),
  'TIFF deflate': () => noise(3).tiff({ compression: 'deflate' }).toBuffer(),
  GIF: () => noise(3).gif().toBuffer(),
  'AVIF 5000²': () => noise(3, 5000).avif({ quality: 50, effort: 0 }).toBuffer()
}

async function cachedImage(name: string, build: () => Promise<Buffer>): Promise<Buffer> {
  const path = `${CACHE}/decode-memory-${name.replace(/[^A-Za-z0-9]+/g, '-')}.bin`
  if (existsSync(path)) return readFile(path)
  const bytes = await build()
  await mkdir(CACHE, { recursive: true })
  await writeFile(path, bytes)
  return bytes
}

/** Child: one decode of one kind; prints a JSON line with the peak RSS increase and the estimate. */
async function calibrateOne(kind: string): Promise<void> {
  const bytes = await cachedImage(kind, KINDS[kind]!)
  const pre = new ImagePreprocessor(configFromPreset('torchvision', { synthetic: true }).preprocess, { maxInputPixels: 50_000_000 })
  // Warm: sharp's thread pool and the code paths, on a small image of the same kind of pipeline.
  await pre.decode(await readPhoto('chelsea'))
  const metadata = await sharp(bytes).metadata()
  const estimate = decodeCostBytes(metadata, false)
  await writeFile('/proc/self/clear_refs', '5')
  const before = await procStatusKiB('self', 'VmRSS')
  const t0 = performance.now()
  await pre.decode(bytes)
  const ms = performance.now() - t0
  const peak = (await procStatusKiB('self', 'VmHWM')) - before
  console.log(JSON.stringify({ kind, encodedBytes: bytes.length, peakBytes: peak * 1024, estimate, ms }))
}

async function runChild(args: string[], env: Record<string, string> = {}): Promise<string> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'load/robustness/decode-memory.ts', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
  if (code !== 0) throw new Error(`child ${args.join(' ')} exited ${String(code)}`)
  return out
}

async function calibrate(): Promise<void> {
  progress('calibration: one decode per process, peak RSS increase against the estimate')
  const rows: string[] = []
  for (const kind of Object.keys(KINDS)) {
    await cachedImage(kind, KINDS[kind]!)
    const line = (await runChild(['--calibrate-one', kind])).trim().split('\n').pop()!
    const r = JSON.parse(line) as { kind: string; encodedBytes: number; peakBytes: number; estimate: number; ms: number }
    const ratio = r.peakBytes / r.estimate
    rows.push(
      `| ${r.kind} | ${(r.encodedBytes / 1e6).toFixed(1)} MB | ${mib(r.peakBytes)} | ${mib(r.estimate)} | ${ratio.toFixed(2)} | ${r.ms.toFixed(0)} |`
    )
    progress(rows[rows.length - 1]!)
  }
  console.log(
    '\n| image (7000×7000 unless named) | encoded | peak RSS +MiB | estimate MiB | peak / estimate | decode ms |\n|---|---|---|---|---|---|'
  )
  for (const row of rows) console.log(row)
}

interface Variant {
  readonly name: string
  readonly env: Record<string, string>
  readonly flags: string[]
}

const VARIANTS: Record<string, Variant> = {
  glibc: { name: 'glibc malloc (sharp: libvips 1 thread)', env: {}, flags: [] },
  arena2: { name: 'glibc, MALLOC_ARENA_MAX=2 (libvips on all cores)', env: { MALLOC_ARENA_MAX: '2' }, flags: [] },
  'arena2-vips1': {
    name: 'glibc, MALLOC_ARENA_MAX=2, VIPS_CONCURRENCY=1',
    env: { MALLOC_ARENA_MAX: '2', VIPS_CONCURRENCY: '1' },
    flags: []
  },
  jemalloc: { name: 'jemalloc LD_PRELOAD (libvips on all cores)', env: { LD_PRELOAD: JEMALLOC }, flags: [] },
  'jemalloc-vips1': { name: 'jemalloc LD_PRELOAD, VIPS_CONCURRENCY=1', env: { LD_PRELOAD: JEMALLOC, VIPS_CONCURRENCY: '1' }, flags: [] },
  'glibc-gc': { name: 'glibc malloc, --expose-gc', env: { NODE_OPTIONS: '--expose-gc' }, flags: [] },
  'arena2-gc': { name: 'glibc, MALLOC_ARENA_MAX=2, --expose-gc', env: { MALLOC_ARENA_MAX: '2', NODE_OPTIONS: '--expose-gc' }, flags: [] },
  'jemalloc-gc': { name: 'jemalloc, --expose-gc', env: { LD_PRELOAD: JEMALLOC, NODE_OPTIONS: '--expose-gc' }, flags: [] },
  'jemalloc-vips1-gc': {
    name: 'jemalloc, VIPS_CONCURRENCY=1, --expose-gc',
    env: { LD_PRELOAD: JEMALLOC, VIPS_CONCURRENCY: '1', NODE_OPTIONS: '--expose-gc' },
    flags: []
  },
  'glibc-no-budget': {
    name: 'glibc, no decode budget (8 slots, 64 GiB)',
    env: {},
    flags: ['--decode-concurrency', '8', '--decode-budget-bytes', String(64 * 1024 * MiB)]
  },
  'jemalloc-no-budget': {
    name: 'jemalloc, no decode budget (8 slots, 64 GiB)',
    env: { LD_PRELOAD: JEMALLOC },
    flags: ['--decode-concurrency', '8', '--decode-budget-bytes', String(64 * 1024 * MiB)]
  }
}

interface BurstResult {
  readonly restMiB: number
  readonly peakMiB: number
  readonly afterMiB: number
  readonly statuses: Record<string, number>
  readonly seconds: number
}

async function burst(
  variant: Variant,
  rgba: Buffer,
  count: number,
  batch: number,
  afterSeconds: number
): Promise<{ burst: BurstResult; batch: BurstResult | undefined }> {
  const server = await startBenchServer(['--model-repository', await syntheticModelRepository(), '--provider', 'cpu', ...variant.flags], {
    env: variant.env
  })
  try {
    const photo = await readPhoto('chelsea')
    for (let i = 0; i < 20; i++)
      await fetch(`${server.url}/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: photo })
    await new Promise((r) => setTimeout(r, 2000))
    const sample = async (): Promise<number> => (await procStatusKiB(server.pid, 'VmRSS')) / 1024
    const phase = async (what: string, send: () => Promise<Record<string, number>>): Promise<BurstResult> => {
      progress(`${variant.name}: ${what}`)
      const restMiB = await sample()
      let peakMiB = restMiB
      const sampler = setInterval(() => {
        void sample().then(
          (v) => (peakMiB = Math.max(peakMiB, v)),
          () => {}
        )
      }, 25)
      const t0 = performance.now()
      const statuses = await send()
      const seconds = (performance.now() - t0) / 1000
      progress(`  answered in ${seconds.toFixed(1)} s; RSS peak ${peakMiB.toFixed(0)} MiB; waiting ${afterSeconds} s`)
      await new Promise((r) => setTimeout(r, afterSeconds * 1000))
      clearInterval(sampler)
      return { restMiB, peakMiB, afterMiB: await sample(), statuses, seconds }
    }
    const count1 = (statuses: Record<string, number>, key: string): void => {
      statuses[key] = (statuses[key] ?? 0) + 1
    }
    const burstResult = await phase(`${count} concurrent`, async () => {
      const statuses: Record<string, number> = {}
      await Promise.all(
        Array.from({ length: count }, async () => {
          const res = await fetch(`${server.url}/classify`, {
            method: 'POST',
            headers: { 'content-type': 'image/png' },
            body: rgba,
            signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS)
          })
          const body = (await res.json()) as { code?: string }
          count1(statuses, res.status === 200 ? '200' : `${res.status} ${body.code ?? ''}`)
        })
      )
      return statuses
    })
    let batchResult: BurstResult | undefined
    if (batch > 0) {
      const b64 = rgba.toString('base64')
      batchResult = await phase(`batch of ${batch}`, async () => {
        const res = await fetch(`${server.url}/v1/models/resnet50:classify`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ instances: Array.from({ length: batch }, () => ({ b64 })), topk: 1 }),
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS)
        })
        const statuses: Record<string, number> = {}
        if (res.status !== 200) {
          count1(statuses, `request ${res.status}`)
          return statuses
        }
        const { predictions } = (await res.json()) as { predictions: Array<{ error?: { code: string } }> }
        for (const p of predictions) count1(statuses, p.error === undefined ? 'item ok' : `item ${p.error.code}`)
        return statuses
      })
    }
    return { burst: burstResult, batch: batchResult }
  } finally {
    await server.stop()
  }
}

function row(variant: string, what: string, r: BurstResult): string {
  const statuses = Object.entries(r.statuses)
    .map(([k, v]) => `${v}× ${k}`)
    .join(', ')
  return `| ${variant} | ${what} | ${r.restMiB.toFixed(0)} | ${r.peakMiB.toFixed(0)} (+${(r.peakMiB - r.restMiB).toFixed(0)}) | ${r.afterMiB.toFixed(0)} (+${(r.afterMiB - r.restMiB).toFixed(0)}) | ${r.seconds.toFixed(1)} | ${statuses} |`
}

async function bursts(): Promise<void> {
  const count = Number(values.burst)
  const batch = Number(values.batch)
  const afterSeconds = Number(values['after-seconds'])
  const names = (values.variants ?? 'glibc,arena2,arena2-vips1,jemalloc,jemalloc-vips1,glibc-no-budget').split(',')
  const rgba = await cachedImage('RGBA flat 7000', () =>
    sharp({ create: { width: SIDE, height: SIDE, channels: 4, background: { r: 40, g: 120, b: 200, alpha: 0.5 } } })
      .png({ compressionLevel: 9 })
      .toBuffer()
  )
  progress(
    `burst: ${count} concurrent ${SIDE}×${SIDE} RGBA PNGs (${(rgba.length / 1e3).toFixed(0)} KB each), then a batch of ${batch}; RSS ${afterSeconds} s after each`
  )
  const rows: string[] = []
  for (const name of names) {
    const variant = VARIANTS[name]
    if (variant === undefined) throw new Error(`unknown variant ${name}; known: ${Object.keys(VARIANTS).join(', ')}`)
    if (variant.env.LD_PRELOAD !== undefined && !existsSync(variant.env.LD_PRELOAD)) {
      progress(`${name}: ${variant.env.LD_PRELOAD} missing (apt-get install libjemalloc2); skipped`)
      continue
    }
    const result = await burst(variant, rgba, count, batch, afterSeconds)
    rows.push(row(variant.name, `${count} concurrent`, result.burst))
    if (result.batch !== undefined) rows.push(row(variant.name, `batch of ${batch}`, result.batch))
    progress(rows.slice(-2).join('\n'))
  }
  console.log(
    `\n| allocator | burst | RSS at rest MiB | peak MiB | ${afterSeconds} s after MiB | wall s | answers |\n|---|---|---|---|---|---|---|`
  )
  for (const r of rows) console.log(r)
}

if (values['calibrate-one'] !== undefined) {
  await calibrateOne(values['calibrate-one'])
} else {
  if (values.only !== 'burst') await calibrate()
  if (values.only !== 'calibrate') await bursts()
}
