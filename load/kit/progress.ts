/** A progress line on stderr, stamped with the time of day; stdout is kept for the figures. */
export function progress(message: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`)
}
