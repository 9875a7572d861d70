import { fileURLToPath } from 'node:url'
import { Client, Metadata, credentials, status, type ServiceDefinition, type ServiceError as GrpcCallError } from '@grpc/grpc-js'
import { loadSync } from '@grpc/proto-loader'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MAX_WATCHES } from '../../src/grpc/health.js'
import { startTestGrpc, type GrpcTestDoor } from '../helpers/grpc.js'
import { startTestServer, type TestServer } from '../helpers/server.js'
import { removeTempDirs } from '../helpers/tiny-model.js'
import { tinyModelRepository } from '../helpers/tiny-repository.js'

/**
 * grpc.health.v1.Health on the gRPC door, called as Kubernetes' grpc probes and grpc_health_probe
 * call it (it answered UNIMPLEMENTED, so such a probe never saw the server ready): Check for the
 * server ("") and the inference service by name, NOT_FOUND for any other name; Watch's first answer
 * at once and the next when readiness changes (a SIGTERM drain), ended when the door closes. With
 * --api-key and without --auth-health it needs no key, as ServerReady does.
 */

const KEY = 'health-test-key'
const health = loadSync(fileURLToPath(new URL('../../src/grpc/health.proto', import.meta.url)), { keepCase: true, enums: String })[
  'grpc.health.v1.Health'
] as ServiceDefinition

let server: TestServer
let door: GrpcTestDoor
let client: Client

function check(service: string): Promise<{ status: string }> {
  const method = health.Check!
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      { service },
      new Metadata(),
      {},
      (err, response) => (err === null ? resolve(response as { status: string }) : reject(err))
    )
  })
}

/** A fresh Watch's first answer (or its error's status), the call then cancelled. */
function firstWatchAnswer(): Promise<string> {
  const method = health.Watch!
  const call = client.makeServerStreamRequest(method.path, method.requestSerialize, method.responseDeserialize, { service: '' })
  return new Promise<string>((resolve) => {
    call.once('data', (m: { status: string }) => resolve(m.status))
    call.once('error', (err: GrpcCallError) => resolve(status[err.code]))
  }).finally(() => call.cancel())
}

beforeAll(async () => {
  server = await startTestServer(await tinyModelRepository(), ['--api-key', KEY])
  door = await startTestGrpc(server)
  client = new Client(`127.0.0.1:${door.port}`, credentials.createInsecure())
})

afterAll(async () => {
  client?.close()
  await door?.close()
  await server?.close()
  await removeTempDirs()
})

describe('gRPC health checking (grpc.health.v1)', () => {
  it('Check: the server and the inference service are SERVING when ready, without the API key; another name is NOT_FOUND', async () => {
    expect(await check('')).toEqual({ status: 'SERVING' })
    expect(await check('inference.GRPCInferenceService')).toEqual({ status: 'SERVING' })
    const err = (await check('grpc.reflection.v1.ServerReflection').catch((e: unknown) => e)) as GrpcCallError
    expect(err.code).toBe(status.NOT_FOUND)
    expect(err.details).toMatch(/^ROUTE_NOT_FOUND: .*no service "grpc\.reflection\.v1\.ServerReflection"/)
  })

  it('at most MAX_WATCHES Watch calls are open at once; one more is RESOURCE_EXHAUSTED TOO_MANY_CALLS, and Check still answers (4,096 keyless Watches held every call slot)', async () => {
    const method = health.Watch!
    // Three connections, so HTTP/2's 128 streams per connection do not hold the extra calls back.
    const clients = [0, 1, 2].map(
      () => new Client(`127.0.0.1:${door.port}`, credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 })
    )
    const calls = Array.from({ length: MAX_WATCHES + 6 }, (_, i) =>
      clients[i % 3]!.makeServerStreamRequest(method.path, method.requestSerialize, method.responseDeserialize, { service: '' })
    )
    try {
      const outcomes = await Promise.all(
        calls.map(
          (call) =>
            new Promise<string>((resolve) => {
              call.once('data', (m: { status: string }) => resolve(m.status))
              call.once('error', (err: GrpcCallError) => resolve(`${status[err.code]} ${err.details.split(':')[0]}`))
            })
        )
      )
      expect(outcomes.filter((o) => o === 'SERVING')).toHaveLength(MAX_WATCHES)
      expect(outcomes.filter((o) => o !== 'SERVING')).toEqual(Array(6).fill('RESOURCE_EXHAUSTED TOO_MANY_CALLS'))
      expect(await check('')).toEqual({ status: 'SERVING' })
    } finally {
      for (const call of calls) call.cancel()
      for (const c of clients) c.close()
    }
    // The cancels reach the server a moment later: a Watch is let in again once they have.
    await expect.poll(() => firstWatchAnswer(), { timeout: 5_000, interval: 100 }).toBe('SERVING')
  })

  it('Watch answers at once, again when a drain begins (NOT_SERVING, as Check then says), and ends OK when the door closes', async () => {
    const method = health.Watch!
    const call = client.makeServerStreamRequest(method.path, method.requestSerialize, method.responseDeserialize, { service: '' })
    const seen: string[] = []
    const next = (): Promise<string> =>
      new Promise((resolve, reject) => {
        call.once('data', (m: { status: string }) => {
          seen.push(m.status)
          resolve(m.status)
        })
        call.once('error', reject)
      })
    const ended = new Promise<number>((resolve) => call.on('status', (s: { code: number }) => resolve(s.code)))
    expect(await next()).toBe('SERVING')
    const drained = next()
    server.service.beginDrain()
    expect(await drained).toBe('NOT_SERVING')
    expect(await check('')).toEqual({ status: 'NOT_SERVING' })
    await door.close()
    expect(await ended).toBe(status.OK)
    // One answer per change, none repeated while nothing changed.
    expect(seen).toEqual(['SERVING', 'NOT_SERVING'])
  })
})
