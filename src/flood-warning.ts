import type { Logger } from 'pino'

const WARN_INTERVAL_MS = 10_000

/**
 * Counts an event a flood can repeat (a refused connection, a refused call), and logs it at warn
 * at most once per 10 s with how many there were since the last line: the first at once, the rest
 * when the 10 s are over. A flood of refusals must not become a flood of log lines.
 */
export function floodWarning(log: Logger, fields: Record<string, unknown>, msg: string): () => void {
  let count = 0
  let pending: NodeJS.Timeout | undefined
  const flush = (): void => {
    pending = undefined
    if (count === 0) return
    log.warn({ ...fields, count }, msg)
    count = 0
    pending = setTimeout(flush, WARN_INTERVAL_MS).unref()
  }
  return () => {
    count++
    if (pending === undefined) flush()
  }
}
