import type { Server } from 'node:net'
import type { Logger } from 'pino'
import { floodWarning } from './flood-warning.js'

/**
 * Caps a listening server's open connections: over the cap, Node closes a new connection as soon
 * as it is accepted ('drop'), logged at warn at most once per 10 s with the count.
 */
export function capConnections(server: Server, maxConnections: number, log: Logger, setting: string): void {
  server.maxConnections = maxConnections
  server.on('drop', floodWarning(log, { maxConnections }, `connection refused: ${setting} are open`))
}
