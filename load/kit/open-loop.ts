import { Agent, request } from 'node:http'
import autocannon from 'autocannon'
import type { HttpLoad } from './load-generators.js'

/**
 * Open-loop load: requests arrive at a fixed rate whatever the service does, as users do, and each
 * latency is measured from the moment the request was meant to be sent. A closed loop (N clients,
 * each waiting for its answer before asking again) sends less when the service slows, so the
 * requests that would have waited are never sent and never measured: coordinated omission.
 * autocannon's `overallRate` paces its N connections but still waits for each one's answer, and
 * times from the actual send; `autocannonAtRate` runs it for comparison.
 */

export interface OpenLoopOutcome {
  readonly targetRate: number
  readonly seconds: number
  /** From the first send to the last answer (or the end of the drain time). */
  readonly elapsedSeconds: number
  readonly sent: number
  /** Answered with a 2xx. */
  readonly answered: number
  readonly errors: number
  /** Still unanswered when the drain time ran out (counted as late). */
  readonly unanswered: number
  /** Of answered requests, from the intended send time. */
  readonly latenciesMs: number[]
  /** Of answered requests, from the moment the request was written (what a closed-loop tool reports). */
  readonly latenciesFromSendMs: number[]
  /** Answered within the objective, per second of the run, and as a share of all requests sent. */
  readonly goodput: number
  readonly withinObjective: number
  readonly objectiveMs: number
  readonly maxInFlight: number
}

/**
 * `rate` requests per second for `seconds`, at evenly spaced intended times; requests in flight are
 * not capped below `maxConnections` (each on a kept-alive connection of its own). After the last
 * send, answers are awaited up to `drainSeconds`.
 */
export async function runOpenLoop(
  load: HttpLoad,
  rate: number,
  seconds: number,
  objectiveMs: number,
  { maxConnections = 1024, drainSeconds = 30 }: { maxConnections?: number; drainSeconds?: number } = {}
): Promise<OpenLoopOutcome> {
  const agent = new Agent({ keepAlive: true, maxSockets: maxConnections })
  const url = new URL(load.url)
  const total = Math.max(1, Math.round(rate * seconds))
  const latenciesMs: number[] = []
  const latenciesFromSendMs: number[] = []
  let sent = 0
  let answered = 0
  let errors = 0
  let inFlight = 0
  let maxInFlight = 0
  let settle: () => void = () => {}
  const allSettled = new Promise<void>((resolve) => (settle = resolve))
  let settled = 0
  const done = (): void => {
    inFlight--
    if (++settled === total) settle()
  }
  const send = (intended: number): void => {
    sent++
    inFlight++
    maxInFlight = Math.max(maxInFlight, inFlight)
    const start = performance.now()
    const req = request(
      {
        agent,
        host: url.hostname,
        port: url.port,
        path: url.pathname + url.search,
        method: 'POST',
        headers: { ...load.headers, 'content-length': String(load.body.byteLength) }
      },
      (res) => {
        res.resume()
        res.on('end', () => {
          const end = performance.now()
          if (res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300) {
            answered++
            latenciesMs.push(end - intended)
            latenciesFromSendMs.push(end - start)
          } else errors++
          done()
        })
      }
    )
    req.on('error', () => {
      errors++
      done()
    })
    req.end(load.body)
  }
  const t0 = performance.now()
  const interval = 1000 / rate
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const now = performance.now()
      // Every request whose time has come goes now, stamped with its own intended time: a late tick
      // (the event loop busy) delays the send but not the clock the latency is read from.
      while (sent < total && t0 + sent * interval <= now) send(t0 + sent * interval)
      if (sent < total) setTimeout(tick, Math.max(0, t0 + sent * interval - performance.now()))
      else resolve()
    }
    tick()
  })
  const sendSeconds = (performance.now() - t0) / 1000
  let timer: NodeJS.Timeout | undefined
  await Promise.race([allSettled, new Promise<void>((resolve) => (timer = setTimeout(resolve, drainSeconds * 1000)))])
  clearTimeout(timer)
  const elapsedSeconds = (performance.now() - t0) / 1000
  agent.destroy()
  const within = latenciesMs.filter((l) => l <= objectiveMs).length
  return {
    targetRate: rate,
    seconds: sendSeconds,
    elapsedSeconds,
    sent,
    answered,
    errors,
    unanswered: total - settled,
    latenciesMs,
    latenciesFromSendMs,
    goodput: within / Math.max(sendSeconds, seconds),
    withinObjective: within / total,
    objectiveMs,
    maxInFlight
  }
}

export interface AutocannonRateOutcome {
  readonly targetRate: number
  readonly connections: number
  /** Requests answered with a 2xx per second. */
  readonly achievedRate: number
  /** autocannon's own percentiles (ms, from each request's actual send). */
  readonly p50: number
  readonly p99: number
}

/** autocannon with `overallRate`, as a closed-loop tool paces: for comparison with runOpenLoop. */
export async function autocannonAtRate(load: HttpLoad, rate: number, connections: number, seconds: number): Promise<AutocannonRateOutcome> {
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    autocannon(
      {
        url: load.url,
        method: 'POST',
        headers: load.headers,
        body: load.body,
        connections,
        overallRate: rate,
        duration: seconds,
        timeout: 120
      },
      (err, res) => (err ? reject(err) : resolve(res))
    )
  })
  return {
    targetRate: rate,
    connections,
    achievedRate: result['2xx'] / seconds,
    p50: result.latency.p50,
    p99: result.latency.p99
  }
}
