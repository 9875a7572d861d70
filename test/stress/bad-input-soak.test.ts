import { readdir, readFile } from 'node:fs/promises'
import autocannon from 'autocannon'
import { describe, expect, it } from 'vitest'
import { badInputCorpus, CORPUS_SERVER_FLAGS } from '../fixtures/bad-inputs.js'
import { readPhoto } from '../helpers/photos.js'
import { startSyntheticServerProcess } from '../helpers/process.js'

/**
 * Stress tier: ten thousand cheap bad requests (test/fixtures/bad-inputs.ts) leave a server
 * process's memory and open files where they were, with no error, timeout or 5xx.
 *
 * Tolerance: RSS and open files after the burst at most 10% above their level after a warm-up of
 * 2,000 such requests (measured: 622 → 623 MiB, 40 → 40 files). 10% of ~620 MiB is ~60 MiB, so a
 * leak of 6 KiB or more per request fails it, as does one socket or file left open per request;
 * slower drift is what `npm run load:soak` watches over minutes.
 */

const GROWTH_TOLERANCE = 1.1

const corpus = await badInputCorpus()

/** Resident set size of a process, in bytes. */
async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) * 1024
}

async function openFilesOf(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length
}

describe('ten thousand bad requests', () => {
  it('leave the server process with the memory and open files it had', async () => {
    const child = await startSyntheticServerProcess(CORPUS_SERVER_FLAGS)
    try {
      const cheap = corpus.filter((c) => c.cheap && c.expected.status !== 200)
      expect(cheap.length).toBeGreaterThanOrEqual(20)
      const requests = cheap.map((c) => ({
        method: c.request.method,
        path: c.request.path,
        headers: { ...c.request.headers },
        body: c.request.body
      }))
      const hammer = async (amount: number): Promise<autocannon.Result> =>
        autocannon({ url: child.url, connections: 16, amount, requests, timeout: 30 })
      // Warm-up: lazy modules, JIT, sharp's thread pool, the 16 keep-alive connections' buffers.
      await hammer(2_000)
      await new Promise((r) => setTimeout(r, 500))
      const before = { rss: await rssOf(child.child.pid!), files: await openFilesOf(child.child.pid!) }
      const result = await hammer(10_000)
      await new Promise((r) => setTimeout(r, 1_000))
      const after = { rss: await rssOf(child.child.pid!), files: await openFilesOf(child.child.pid!) }

      expect(result.errors).toBe(0)
      expect(result.timeouts).toBe(0)
      expect(result['5xx']).toBe(0)
      expect(result['2xx']).toBe(0)
      expect(result.requests.sent).toBeGreaterThanOrEqual(10_000)
      console.log(
        `RSS ${(before.rss / 2 ** 20).toFixed(0)} → ${(after.rss / 2 ** 20).toFixed(0)} MiB, open files ${before.files} → ${after.files}`
      )
      expect(after.rss, `RSS ${before.rss} → ${after.rss}`).toBeLessThanOrEqual(before.rss * GROWTH_TOLERANCE)
      expect(after.files, `open files ${before.files} → ${after.files}`).toBeLessThanOrEqual(Math.ceil(before.files * GROWTH_TOLERANCE))
      // The process still classifies.
      const res = await fetch(`${child.url}/classify`, {
        method: 'POST',
        headers: { 'content-type': 'image/jpeg' },
        body: await readPhoto('chelsea')
      })
      expect(res.status).toBe(200)
    } finally {
      child.child.kill('SIGTERM')
      await child.exited
    }
  })
})
