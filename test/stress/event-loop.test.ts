import { readFile } from 'node:fs/promises'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { syntheticModelRepository } from '../helpers/models.js'
import { photoPaths } from '../helpers/photos.js'
import { startTestServer, type TestServer } from '../helpers/server.js'

/**
 * Stress tier: the event loop stays free while sixteen photos are decoded and run, because ONNX
 * Runtime runs in worker threads and sharp on libuv's pool.
 *
 * Tolerance: event-loop delay p99 under 150 ms and every /health/live probe answered within
 * 300 ms (measured on 2 cores: p99 16 ms, slowest probe 40 ms). One ResNet-50 batch of 16 takes
 * about a second there: on the main thread it would block the loop that long, so these bounds
 * still tell the two apart on a machine shared with other jobs.
 */

const EVENT_LOOP_P99_MS = 150
const LIVE_MAX_MS = 300

let server: TestServer
let photos: Buffer[]

beforeAll(async () => {
  server = await startTestServer(await syntheticModelRepository())
  photos = await Promise.all(
    photoPaths()
      .slice(0, 16)
      .map((p) => readFile(p))
  )
})
afterAll(async () => {
  await server?.close()
})

describe('the event loop under a batch of sixteen photos', () => {
  it('keeps the event loop free while a large batch runs', async () => {
    const h = monitorEventLoopDelay({ resolution: 5 })
    h.enable()
    const work = Promise.all(
      photos.map((body) =>
        fetch(`${server.url}/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body }).then((res) =>
          expect(res.status).toBe(200)
        )
      )
    )
    const liveTimes: number[] = []
    let done = false
    void work.then(() => (done = true))
    while (!done) {
      const t0 = performance.now()
      const res = await fetch(`${server.url}/health/live`)
      expect(res.status).toBe(200)
      liveTimes.push(performance.now() - t0)
      await new Promise((r) => setTimeout(r, 20))
    }
    await work
    h.disable()
    const p99 = h.percentile(99) / 1e6
    console.log(
      `event-loop delay p99 ${p99.toFixed(1)} ms, max ${(h.max / 1e6).toFixed(1)} ms; /health/live max ${Math.max(...liveTimes).toFixed(1)} ms over ${liveTimes.length} probes`
    )
    expect(liveTimes.length).toBeGreaterThan(3)
    expect(p99).toBeLessThan(EVENT_LOOP_P99_MS)
    expect(Math.max(...liveTimes)).toBeLessThan(LIVE_MAX_MS)
  })
})
