import type { FastifyInstance } from 'fastify'
import type { Socket } from 'node:net'

/**
 * Connections that have not sent a byte when the HTTP door closes. Node's server.close() closes
 * idle keep-alive connections, but not one that was accepted and never sent a request: that one
 * held close() until its client gave up (over a minute). It has nothing to finish, so it is
 * destroyed as the listener closes. A connection with part of a request keeps it until the
 * request is answered or --headers-timeout-ms passes.
 */
export function closeSilentConnectionsOnClose(app: FastifyInstance): void {
  const open = new Set<Socket>()
  app.server.on('connection', (socket: Socket) => {
    open.add(socket)
    socket.once('close', () => open.delete(socket))
  })
  // fastify calls server.close() right after the preClose hooks, with only microtasks in between:
  // no connection can be accepted after this one ran.
  app.addHook('preClose', async () => {
    for (const socket of open) if (socket.bytesRead === 0) socket.destroy()
  })
}
