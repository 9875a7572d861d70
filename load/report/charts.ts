import * as vega from 'vega'
import { compile, type TopLevelSpec } from 'vega-lite'
import { highest, type LevelResult, type ScenarioResult, type SuiteResult } from '../kit/suite-results.js'

interface Series {
  readonly scenario: ScenarioResult
  readonly group: string
  readonly label: string
  readonly levels: readonly LevelResult[]
}

/** One line per (scenario, group): e.g. "classify · 1024×768". */
function seriesOf(result: SuiteResult): Series[] {
  const series: Series[] = []
  for (const scenario of result.scenarios) {
    const groups = [...new Set(scenario.levels.map((l) => l.group))]
    for (const group of groups) {
      const label = groups.length > 1 ? `${scenario.name} · ${group}` : scenario.name
      series.push({ scenario, group, label, levels: scenario.levels.filter((l) => l.group === group) })
    }
  }
  return series
}

/** One chart as SVG, rendered headless (no browser, no canvas). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' })
  return view.toSVG()
}

/** The report's charts by name, as vega-lite specs: throughput, latency, batch sizes, stage times. */
export function charts(result: SuiteResult): Record<string, TopLevelSpec> {
  const series = seriesOf(result)
  const levelsRun = [...new Set(result.scenarios.flatMap((s) => s.levels.map((l) => l.concurrency)))].sort((a, b) => a - b)
  const concurrencyAxis = {
    field: 'concurrency',
    type: 'quantitative',
    scale: { type: 'log', base: 2 },
    axis: { values: levelsRun },
    title: 'concurrent requests'
  } as const
  const throughput = series.flatMap((s) =>
    s.levels.map((l) => ({ series: s.label, concurrency: l.concurrency, imagesPerSecond: l.imagesPerSecond }))
  )
  const rawLines = result.scenarios
    .filter((s) => s.levels.length > 0)
    .map((s) => ({ series: `raw session (${s.name} run)`, raw: s.rawBestImagesPerSecond }))
  const latency = series.flatMap((s) =>
    s.levels.flatMap((l) =>
      (['p50', 'p95', 'p99'] as const).map((p) => ({ series: s.label, concurrency: l.concurrency, percentile: p, ms: l.latencyMs[p] }))
    )
  )
  const batches = series.flatMap((s) => {
    const top = highest(s.levels)
    return top.server.batchSizes.map((b, order) => ({
      series: `${s.label} (c=${top.concurrency})`,
      range: b.range,
      order,
      executions: b.count
    }))
  })
  const stages = series.flatMap((s) => {
    const t = highest(s.levels).server.stages
    return [
      { series: s.label, stage: '1 queue', ms: t.queueMs },
      { series: s.label, stage: '2 preprocess', ms: t.preprocessMs },
      { series: s.label, stage: '3 inference (batch)', ms: t.inferenceMs },
      { series: s.label, stage: '4 postprocess', ms: t.postprocessMs }
    ]
  })
  return {
    throughput: {
      title: `Images/s vs concurrency (${result.provider}, ${result.host.cores} cores); dashed: raw ONNX Runtime session`,
      width: 560,
      height: 320,
      layer: [
        {
          data: { values: throughput },
          mark: { type: 'line', point: true },
          encoding: {
            x: concurrencyAxis,
            y: { field: 'imagesPerSecond', type: 'quantitative', title: 'images/s' },
            color: { field: 'series', type: 'nominal' }
          }
        },
        {
          data: { values: rawLines },
          mark: { type: 'rule', strokeDash: [4, 4], opacity: 0.5 },
          encoding: { y: { field: 'raw', type: 'quantitative' }, tooltip: { field: 'series' } }
        }
      ]
    },
    latency: {
      title: 'Latency percentiles vs concurrency (client side)',
      data: { values: latency },
      facet: { field: 'series', type: 'nominal', title: null },
      columns: 4,
      resolve: { scale: { y: 'independent' } },
      spec: {
        width: 200,
        height: 150,
        mark: { type: 'line', point: true },
        encoding: {
          x: concurrencyAxis,
          y: { field: 'ms', type: 'quantitative', title: 'ms' },
          color: { field: 'percentile', type: 'nominal', sort: ['p50', 'p95', 'p99'] }
        }
      }
    },
    'batch-sizes': {
      title: 'Model executions by batch size at the highest concurrency (resnet_serve_batch_size from /metrics)',
      data: { values: batches },
      facet: { field: 'series', type: 'nominal', title: null },
      columns: 4,
      resolve: { scale: { y: 'independent' } },
      spec: {
        width: 200,
        height: 130,
        mark: 'bar',
        encoding: {
          x: { field: 'range', type: 'ordinal', sort: { field: 'order' }, title: 'images per execution' },
          y: { field: 'executions', type: 'quantitative' }
        }
      }
    },
    stages: {
      title: "Where a request's time goes at the highest concurrency (mean ms per image, stage histograms from /metrics)",
      data: { values: stages },
      width: 560,
      height: { step: 22 },
      mark: 'bar',
      encoding: {
        y: { field: 'series', type: 'nominal', title: null },
        x: { field: 'ms', type: 'quantitative', title: 'ms', stack: 'zero' },
        color: { field: 'stage', type: 'nominal', sort: 'ascending' },
        order: { field: 'stage' }
      }
    }
  }
}
