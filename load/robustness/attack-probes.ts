import { once } from 'node:events'
import { readFile, readdir } from 'node:fs/promises'
import { parentPort, workerData, type Worker } from 'node:worker_threads'
import { siblingModule, startModuleWorker } from '../../src/core/module-worker.js'

/**
 * The watchers of load/robustness/attack.ts, in a worker thread of their own so that what the harness does
 * on its main thread (writing 600 MB to stalled sockets, building bodies) never delays a probe
 * and shows up as the server's latency. While started, it probes GET /health/live (one at a time,
 * 100 ms apart), samples the server's VmRSS every 25 ms, and classifies a good photo every second;
 * on stop it answers what it saw.
 */

export interface ProbeInit {
  readonly url: string
  readonly pid: number
  readonly photo: Uint8Array
  readonly apiKey: string
}

export type ProbeRequest = { readonly type: 'start' } | { readonly type: 'stop' }

export interface PhotoProbe {
  readonly ms: number
  /** The HTTP status, or what went wrong ("timeout", "error"). */
  readonly status: string
}

export interface ProbeReport {
  readonly type: 'report'
  readonly liveProbes: number
  readonly worstLiveMs: number
  /** Probes that did not answer 200 within LIVE_TIMEOUT_MS. */
  readonly liveFailures: number
  readonly rssPeakMiB: number
  readonly photos: readonly PhotoProbe[]
}

const LIVE_INTERVAL_MS = 100
const LIVE_TIMEOUT_MS = 10_000
const RSS_INTERVAL_MS = 25
const PHOTO_INTERVAL_MS = 1000
const PHOTO_TIMEOUT_MS = 60_000

export async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) / 1024
}

export async function openFds(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Status of one request, or "timeout" / "error"; the body is read to the end. */
async function timedStatus(url: string, init: RequestInit, timeoutMs: number): Promise<PhotoProbe> {
  const t0 = performance.now()
  let status: string
  try {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) })
    await res.arrayBuffer()
    status = String(res.status)
  } catch (err) {
    status = (err as Error).name === 'TimeoutError' ? 'timeout' : 'error'
  }
  return { ms: performance.now() - t0, status }
}

class Watch {
  private running = true
  private liveProbes = 0
  private worstLiveMs = 0
  private liveFailures = 0
  private rssPeakMiB = 0
  private readonly photos: PhotoProbe[] = []
  private readonly loops: Array<Promise<void>>

  constructor(private readonly init: ProbeInit) {
    this.loops = [this.probeLiveness(), this.sampleRss(), this.probePhoto()]
  }

  private async probeLiveness(): Promise<void> {
    while (this.running) {
      const { ms, status } = await timedStatus(`${this.init.url}/health/live`, {}, LIVE_TIMEOUT_MS)
      this.liveProbes++
      this.worstLiveMs = Math.max(this.worstLiveMs, ms)
      if (status !== '200') this.liveFailures++
      await sleep(LIVE_INTERVAL_MS)
    }
  }

  private async sampleRss(): Promise<void> {
    while (this.running) {
      // A server that died has no /proc entry: the report then shows the peak until then.
      this.rssPeakMiB = Math.max(this.rssPeakMiB, await rssMiB(this.init.pid).catch(() => 0))
      await sleep(RSS_INTERVAL_MS)
    }
  }

  private async probePhoto(): Promise<void> {
    const headers = { 'content-type': 'image/jpeg', 'x-api-key': this.init.apiKey }
    while (this.running) {
      const probe = await timedStatus(`${this.init.url}/classify`, { method: 'POST', headers, body: this.init.photo }, PHOTO_TIMEOUT_MS)
      this.photos.push(probe)
      await sleep(Math.max(0, PHOTO_INTERVAL_MS - probe.ms))
    }
  }

  async stop(): Promise<ProbeReport> {
    this.running = false
    await Promise.all(this.loops)
    return {
      type: 'report',
      liveProbes: this.liveProbes,
      worstLiveMs: this.worstLiveMs,
      liveFailures: this.liveFailures,
      rssPeakMiB: this.rssPeakMiB,
      photos: this.photos
    }
  }
}

if (parentPort !== null && (workerData as { probe?: ProbeInit } | undefined)?.probe !== undefined) {
  const port = parentPort
  const init = (workerData as { probe: ProbeInit }).probe
  let watch: Watch | undefined
  port.on('message', (request: ProbeRequest) => {
    if (request.type === 'start') watch = new Watch(init)
    else void watch?.stop().then((report) => port.postMessage(report))
  })
}

/** The main thread's handle on the watchers: start before an attack, stop after its settling time. */
export class ProbeThread {
  private constructor(private readonly worker: Worker) {}

  static open(init: ProbeInit): ProbeThread {
    return new ProbeThread(startModuleWorker(siblingModule(import.meta.url, 'attack-probes'), { workerData: { probe: init } }))
  }

  start(): void {
    this.worker.postMessage({ type: 'start' } satisfies ProbeRequest)
  }

  async stop(): Promise<ProbeReport> {
    const answered = once(this.worker, 'message') as Promise<[ProbeReport]>
    this.worker.postMessage({ type: 'stop' } satisfies ProbeRequest)
    return (await answered)[0]
  }

  async close(): Promise<void> {
    await this.worker.terminate()
  }
}
