import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { KeepAliveClient } from '../../load/kit/keep-alive-client.js'

/** The load suite's one-request-at-a-time client (load/kit/keep-alive-client.ts) against a real HTTP server. */

let server: Server | undefined
afterEach(async () => {
  server?.closeAllConnections()
  server?.close()
  server = undefined
})

async function serve(
  handler: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void
): Promise<{ url: string; connections: () => number }> {
  let connections = 0
  server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => handler(req, res, Buffer.concat(chunks)))
  })
  server.on('connection', () => connections++)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, connections: () => connections }
}

describe('KeepAliveClient', () => {
  it('sends the same request each time on one connection and reads each answer by its Content-Length', async () => {
    const seen: string[] = []
    const { url, connections } = await serve((req, res, body) => {
      seen.push(`${req.method} ${req.url} ${req.headers['content-type']} ${body.toString()}`)
      const answer = JSON.stringify({ n: seen.length, pad: 'x'.repeat(100_000) })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(answer) }).end(answer)
    })
    const client = KeepAliveClient.post(`${url}/classify?model=m`, { 'content-type': 'image/jpeg' }, Buffer.from('pixels'))
    for (let n = 1; n <= 3; n++) {
      const { status, body } = await client.send()
      expect(status).toBe(200)
      expect((JSON.parse(body.toString()) as { n: number }).n).toBe(n)
    }
    client.close()
    expect(seen).toEqual(Array(3).fill('POST /classify?model=m image/jpeg pixels'))
    expect(connections()).toBe(1)
  })

  it('passes an error status through with its body', async () => {
    const { url } = await serve((_req, res) => res.writeHead(429, { 'content-length': 4 }).end('busy'))
    const client = KeepAliveClient.post(url, {}, Buffer.alloc(0))
    const { status, body } = await client.send()
    expect([status, body.toString()]).toEqual([429, 'busy'])
    client.close()
  })

  it('connects again after the server closed the connection', async () => {
    const { url, connections } = await serve((_req, res) => res.writeHead(200, { 'content-length': 2, connection: 'close' }).end('ok'))
    const client = KeepAliveClient.post(url, {}, Buffer.alloc(0))
    expect((await client.send()).body.toString()).toBe('ok')
    expect((await client.send()).body.toString()).toBe('ok')
    expect(connections()).toBe(2)
    client.close()
  })

  it('refuses an answer it cannot read (chunked) instead of waiting for ever', async () => {
    const { url } = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('part')
      res.end()
    })
    const client = KeepAliveClient.post(url, {}, Buffer.alloc(0))
    await expect(client.send()).rejects.toThrow(/Content-Length/)
  })

  it('fails when the server closes without answering', async () => {
    const { url } = await serve((req) => req.socket.destroy())
    const client = KeepAliveClient.post(url, {}, Buffer.alloc(0))
    await expect(client.send()).rejects.toThrow(/closed the connection/)
  })
})
