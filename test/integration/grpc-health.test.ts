import { fileURLToPath } from 'node:url'
import { Client, Metadata, credentials, status, type ServiceDefinition, type ServiceError as GrpcCallError } from '@grpc/grpc-js'
import { loadSync } from '@grpc/proto-loader'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
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
