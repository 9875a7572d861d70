import type { Server } from 'node:net'
import type { Logger } from 'pino'
import { floodWarning } from './flood-warning.js'

/**
 * Caps a listening server's open connections: over the cap, Node closes a new connection as soon
 * as it is accepted ('drop'), logged at warn at most once per 10 s with the count. An HTTP server
 * then also closes its keep-alive connections idle between requests, so the next client gets in:
 * 520 connections that each sent one request and then held still kept every new client, liveness
 * probes included, out for the whole keep-alive timeout. Node leaves alone a connection with a
 * request in progress, and one that has sent nothing yet (the headers timeout closes that one).
 * A server that is not Node's HTTP server passes its own `reclaim` (the gRPC door: connection-calls.ts).
 */
export function capConnections(
  server: Server,
  maxConnections: number,
  log: Logger,
  setting: string,
  reclaim = (server as Partial<{ closeIdleConnections(): void }>).closeIdleConnections?.bind(server)
): void {
  server.maxConnections = maxConnections
  const warn = floodWarning(log, { maxConnections }, `connection refused: ${setting} are open`)
  server.on('drop', () => {
    warn()
    reclaim?.()
  })
}
