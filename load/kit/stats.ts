/** The statistics every load script reports with: median, percentiles, the best of a set. */

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
