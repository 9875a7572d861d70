import type { BenchServer } from './bench-server.js'
import { bucketShares, histogramDifference, histogramOf, parsePrometheusText, totalOf, type PrometheusSample } from './prometheus-text.js'

/**
 * What the server did during one load level, read from outside the process: its CPU time from
 * /proc and its own counters from /metrics, each taken just before and just after the level.
 */

export interface ServerSnapshot {
  readonly cpuSeconds: number
  readonly metrics: readonly PrometheusSample[]
}

/** Per-image means in ms; inference is per model execution, which every image of the batch waits for. */
export interface StageTimes {
  readonly queueMs: number
  readonly preprocessMs: number
  readonly inferenceMs: number
  readonly postprocessMs: number
}

export interface ServerWindow {
  readonly cpuSeconds: number
  /** Images the model ran (resnet_serve_inferences_total) and model executions. */
  readonly inferences: number
  readonly executions: number
  readonly meanBatchSize: number
  /** Executions per batch-size bucket of resnet_serve_batch_size. */
  readonly batchSizes: ReadonlyArray<{ readonly range: string; readonly upTo: number; readonly count: number }>
  readonly stages: StageTimes
  /**
   * p99 of the event-loop delay over the window (prom-client's nodejs_eventloop_lag_p99_seconds:
   * its perf_hooks histogram is reset at every scrape, so the scrape after a level covers exactly
   * that level; resolution 10 ms).
   */
  readonly eventLoopDelayP99Ms: number
}

async function scrape(url: string): Promise<PrometheusSample[]> {
  const response = await fetch(`${url}/metrics`)
  if (!response.ok) throw new Error(`GET /metrics answered ${response.status}`)
  return parsePrometheusText(await response.text())
}

/** Take before a level; the scrape also resets the event-loop delay histogram. */
export async function snapshotServer(server: BenchServer): Promise<ServerSnapshot> {
  const metrics = await scrape(server.url)
  return { cpuSeconds: await server.cpuSeconds(), metrics }
}

const PREFIX = 'resnet_serve_'

function meanMs(before: ServerSnapshot, after: ServerSnapshot, stage: string): number {
  const h = histogramDifference(
    histogramOf(before.metrics, `${PREFIX}${stage}_duration_seconds`),
    histogramOf(after.metrics, `${PREFIX}${stage}_duration_seconds`)
  )
  return h.count > 0 ? (1000 * h.sum) / h.count : 0
}

export function serverWindow(before: ServerSnapshot, after: ServerSnapshot): ServerWindow {
  const inferences = totalOf(after.metrics, `${PREFIX}inferences_total`) - totalOf(before.metrics, `${PREFIX}inferences_total`)
  const executions = totalOf(after.metrics, `${PREFIX}executions_total`) - totalOf(before.metrics, `${PREFIX}executions_total`)
  const batch = histogramDifference(histogramOf(before.metrics, `${PREFIX}batch_size`), histogramOf(after.metrics, `${PREFIX}batch_size`))
  return {
    cpuSeconds: after.cpuSeconds - before.cpuSeconds,
    inferences,
    executions,
    meanBatchSize: executions > 0 ? inferences / executions : 0,
    batchSizes: bucketShares(batch).filter((b) => b.count > 0 || b.upTo !== Infinity),
    stages: {
      queueMs: meanMs(before, after, 'queue'),
      preprocessMs: meanMs(before, after, 'preprocess'),
      inferenceMs: meanMs(before, after, 'inference'),
      postprocessMs: meanMs(before, after, 'postprocess')
    },
    eventLoopDelayP99Ms: 1000 * totalOf(after.metrics, 'nodejs_eventloop_lag_p99_seconds')
  }
}
