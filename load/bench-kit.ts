import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import sharp from 'sharp'

/** Shared pieces of the load scripts: progress on stderr, a server process and its CPU time, photos, statistics. */

export function progress(message: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`)
}

/** The item with the largest `key` (the first of equals); `items` must not be empty. */
export function maxBy<T>(items: readonly T[], key: (item: T) => number): T {
  return items.reduce((best, item) => (key(item) > key(best) ? item : best))
}

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

export interface LatencySummary {
  readonly p50: number
  readonly p95: number
  readonly p99: number
}

/** Nearest-rank percentiles of latencies in ms; zeros when nothing completed. */
export function latencySummary(latenciesMs: readonly number[]): LatencySummary {
  if (latenciesMs.length === 0) return { p50: 0, p95: 0, p99: 0 }
  const s = Float64Array.from(latenciesMs).sort()
  const at = (p: number): number => s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!
  return { p50: at(50), p95: at(95), p99: at(99) }
}

const PHOTOS = 'test/fixtures/photos'

export interface BenchPhoto {
  readonly path: string
  readonly width: number
  readonly height: number
  readonly bytes: Buffer
}

async function readPhoto(path: string): Promise<BenchPhoto> {
  const bytes = await readFile(path)
  const { width = 0, height = 0 } = await sharp(bytes).metadata()
  return { path, width, height, bytes }
}

/** The test photo whose size is closest to width×height. */
export async function photoNearest(width: number, height: number): Promise<BenchPhoto> {
  let best: { photo: BenchPhoto; score: number } | undefined
  for (const name of (await readdir(PHOTOS)).filter((f) => f.endsWith('.jpg'))) {
    const photo = await readPhoto(join(PHOTOS, name))
    const score = Math.abs(photo.width - width) + Math.abs(photo.height - height)
    if (best === undefined || score < best.score) best = { photo, score }
  }
  if (best === undefined) throw new Error(`no JPEG in ${PHOTOS}`)
  return best.photo
}

/**
 * A camera-sized JPEG (no fixture is that large): the 1024×768 photo enlarged with sharp, written
 * once under .cache/ so every run sends the same bytes.
 */
export async function largePhoto(width = 4000, height = 3000): Promise<BenchPhoto> {
  const path = `.cache/load/photo-${width}x${height}.jpg`
  if (!existsSync(path)) {
    const source = await photoNearest(1024, 768)
    await mkdir('.cache/load', { recursive: true })
    await writeFile(path, await sharp(source.bytes).resize(width, height, { fit: 'fill' }).jpeg({ quality: 90 }).toBuffer())
  }
  return readPhoto(path)
}

/** Which build of the service a load run starts: the TypeScript sources (tsx) or the compiled dist/ (the GPU host has no tsx). */
export type ServerEntry = 'tsx' | 'dist'

export interface BenchServer {
  readonly url: string
  /** host:port of the gRPC door, when the service logged one. */
  readonly grpcAddress: string | undefined
  readonly pid: number
  /** User + system CPU seconds the server process (all its threads) has used so far. */
  cpuSeconds(): Promise<number>
  stop(): Promise<void>
}

const CLOCK_TICKS_PER_SECOND = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  } catch {
    return 100
  }
})()

/** utime + stime of a Linux process from /proc/<pid>/stat (fields 14 and 15, after the command name). */
export async function processCpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // fields[0] is field 3 (state), so utime (14) and stime (15) are at 11 and 12.
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND
}

function grpcAddressOf(entry: Record<string, unknown>): string | undefined {
  if (typeof entry.msg !== 'string' || !/grpc/i.test(entry.msg)) return undefined
  if (typeof entry.address === 'string') return entry.address.replace(/^(0\.0\.0\.0|\[::\])/, '127.0.0.1')
  if (typeof entry.port === 'number') return `127.0.0.1:${entry.port}`
  return undefined
}

/**
 * Starts the service in its own process on free ports and waits for "HTTP listening" (and the
 * gRPC door's line when it logs one first). The pid is the Node process itself, so its CPU time
 * includes the inference worker threads and sharp's threads.
 */
export async function startBenchServer(args: string[], entry: ServerEntry = 'tsx', env: Record<string, string> = {}): Promise<BenchServer> {
  const main = entry === 'tsx' ? ['--import', 'tsx', 'src/main.ts'] : ['dist/src/main.js']
  const child: ChildProcess = spawn(process.execPath, [...main, '--host', '127.0.0.1', '--port', '0', '--grpc-port', '0', '--log-level', 'info', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const exited = once(child, 'exit')
  const pid = child.pid!
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  // The last lines the server wrote, shown if it dies under load (otherwise a run only says "fetch failed").
  const tail: string[] = []
  let stopping = false
  void exited.then(([code, signal]) => {
    if (stopping) return
    const last = [...tail, ...stderr.split('\n').slice(-20)].filter((l) => l !== '').join('\n')
    progress(`server ${pid} exited (code ${String(code)}, signal ${String(signal)}) while in use; its last lines:\n${last}`)
  })
  let grpcAddress: string | undefined
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      tail.push(line.slice(0, 2000))
      if (tail.length > 20) tail.shift()
      let logged: Record<string, unknown>
      try {
        logged = JSON.parse(line) as Record<string, unknown>
      } catch {
        return
      }
      grpcAddress ??= grpcAddressOf(logged)
      if (logged.msg === 'HTTP listening') resolve(String(logged.address))
    })
    void exited.then(([code]) => reject(new Error(`server exited (${String(code)}) before listening: ${stderr}`)))
  })
  return {
    url,
    get grpcAddress() {
      return grpcAddress
    },
    pid,
    cpuSeconds: () => processCpuSeconds(pid),
    async stop() {
      stopping = true
      child.kill('SIGTERM')
      await exited
    }
  }
}
