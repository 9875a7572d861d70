import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import sharp from 'sharp'
import { startServerProcess } from '../test/helpers/process.js'

/** Shared pieces of the load scripts: progress on stderr, a server process, a photo, statistics. */

export function progress(message: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`)
}

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

const PHOTOS = 'test/fixtures/photos'

/** The test photo closest to 500×375, the size the speed targets are stated for. */
export async function benchImage(): Promise<string> {
  let best: { path: string; score: number } | undefined
  for (const name of (await readdir(PHOTOS)).filter((f) => f.endsWith('.jpg'))) {
    const path = join(PHOTOS, name)
    const { width = 0, height = 0 } = await sharp(path).metadata()
    const score = Math.abs(width - 500) + Math.abs(height - 375)
    if (best === undefined || score < best.score) best = { path, score }
  }
  if (best === undefined) throw new Error(`no JPEG in ${PHOTOS}`)
  return best.path
}

export interface BenchServer {
  readonly url: string
  stop(): Promise<void>
}

export async function startBenchServer(args: string[]): Promise<BenchServer> {
  const server = await startServerProcess(args)
  return {
    url: server.url,
    async stop() {
      server.child.kill('SIGTERM')
      await server.exited
    }
  }
}
