import type { Server } from 'node:net'
import type { Logger } from 'pino'

/**
 * Caps a listening server's open connections: over the cap, Node closes a new connection as soon
 * as it is accepted ('drop'), logged at warn at most once per 10 s, so that a flood of refused
 * connections does not become a flood of log lines.
 */
export function capConnections(server: Server, maxConnections: number, log: Logger, setting: string): void {
  server.maxConnections = maxConnections
  let lastWarning = 0
  server.on('drop', () => {
    const now = Date.now()
    if (now - lastWarning < 10_000) return
    lastWarning = now
    log.warn({ maxConnections }, `connection refused: ${setting} are open`)
  })
}
