import type { FastifyInstance } from 'fastify'
import type { Socket } from 'node:net'

/**
 * Connections that have not sent a byte when the HTTP door closes. Node's server.close() closes
 * idle keep-alive connections, but not one that was accepted and never sent a request: that one
 * held close() until its client gave up (over a minute). It has nothing to finish, so it is
 * destroyed, but only SILENT_GRACE_MS after the listener closes: a connection accepted just before
 * may have its request waiting in the kernel, unread while the event loop was busy, and destroying
 * it at once reset requests clients had fully sent (ECONNRESET, /health/ready probes included). A
 * connection with part of a request keeps it until the request is answered or
 * --headers-timeout-ms passes.
 */
const SILENT_GRACE_MS = 500

export function closeSilentConnectionsOnClose(app: FastifyInstance): void {
  const open = new Set<Socket>()
  app.server.on('connection', (socket: Socket) => {
    open.add(socket)
    socket.once('close', () => open.delete(socket))
  })
  // fastify calls server.close() right after the preClose hooks, with only microtasks in between:
  // no connection is accepted after this one ran.
  app.addHook('preClose', async () => {
    setTimeout(() => {
      for (const socket of open) if (socket.bytesRead === 0) socket.destroy()
    }, SILENT_GRACE_MS).unref()
  })
}
