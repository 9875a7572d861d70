/**
 * Reading the service's /metrics (Prometheus text exposition) for the load suite: what the server
 * counted between two scrapes. Counters and histograms are cumulative, so a scenario's share is the
 * difference of a scrape taken before it and one taken after.
 */

export interface PrometheusSample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

const SAMPLE_LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g

export function parsePrometheusText(text: string): PrometheusSample[] {
  const samples: PrometheusSample[] = []
  for (const line of text.split('\n')) {
    if (line.length === 0 || line.startsWith('#')) continue
    const match = SAMPLE_LINE.exec(line)
    if (match === null) continue
    const labels: Record<string, string> = {}
    for (const [, key, value] of (match[2] ?? '').matchAll(LABEL)) labels[key!] = value!
    samples.push({ name: match[1]!, labels, value: Number(match[3]) })
  }
  return samples
}

/** The sum of a metric over all its label sets (every model together); 0 when absent. */
export function totalOf(samples: readonly PrometheusSample[], name: string): number {
  let total = 0
  for (const s of samples) if (s.name === name) total += s.value
  return total
}

export interface HistogramTotals {
  /** Cumulative counts by upper bound, as exposed (`le`), summed over label sets; +Inf last. */
  readonly buckets: ReadonlyArray<{ readonly le: number; readonly count: number }>
  readonly sum: number
  readonly count: number
}

export function histogramOf(samples: readonly PrometheusSample[], name: string): HistogramTotals {
  const byBound = new Map<number, number>()
  for (const s of samples) {
    if (s.name !== `${name}_bucket`) continue
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le)
    byBound.set(le, (byBound.get(le) ?? 0) + s.value)
  }
  const buckets = [...byBound.entries()].sort((a, b) => a[0] - b[0]).map(([le, count]) => ({ le, count }))
  return { buckets, sum: totalOf(samples, `${name}_sum`), count: totalOf(samples, `${name}_count`) }
}

/** after − before, bucket by bucket (both scrapes come from the same process, so the bounds match). */
export function histogramDifference(before: HistogramTotals, after: HistogramTotals): HistogramTotals {
  const earlier = new Map(before.buckets.map((b) => [b.le, b.count]))
  return {
    buckets: after.buckets.map((b) => ({ le: b.le, count: b.count - (earlier.get(b.le) ?? 0) })),
    sum: after.sum - before.sum,
    count: after.count - before.count
  }
}

/**
 * Observations per bucket (not cumulative): "batches of 5–6 images: 12". The label is the range the
 * bucket covers, from just above the previous bound to its own.
 */
export function bucketShares(histogram: HistogramTotals): Array<{ readonly range: string; readonly upTo: number; readonly count: number }> {
  const shares = []
  let previousBound = 0
  let previousCount = 0
  for (const { le, count } of histogram.buckets) {
    const lower = Number.isInteger(previousBound) ? previousBound + 1 : previousBound
    const range = le === Infinity ? `>${previousBound}` : lower >= le ? `${le}` : `${lower}–${le}`
    shares.push({ range, upTo: le, count: count - previousCount })
    previousBound = le
    previousCount = count
  }
  return shares
}
