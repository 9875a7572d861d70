import { status } from '@grpc/grpc-js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { UNIMPLEMENTED_ROUTES, UNIMPLEMENTED_RPCS } from '../../src/open-inference/unimplemented-extensions.js'
import { callRefusal, startTestGrpc, type GrpcTestDoor } from '../helpers/grpc.js'
import { startTestServer, type TestServer } from '../helpers/server.js'
import { removeTempDirs } from '../helpers/tiny-model.js'
import { tinyModelRepository } from '../helpers/tiny-repository.js'

/**
 * Regression: Triton's shared-memory extensions, called as tritonclient calls them
 * (register_system_shared_memory, ...), were answered
 * 404 ROUTE_NOT_FOUND "No route answers this method and path" over REST, which reads as a wrong URL,
 * and over gRPC with grpc-js's bare "The server does not implement the method ...", the one status
 * without a registry code. Now each is 501 / UNIMPLEMENTED NOT_IMPLEMENTED saying what to do instead,
 * as Triton answers an extension it has turned off. (The logging extension is answered since
 * (log-settings.test.ts); it is refused so only by a door given a logger without settings. The
 * trace extension is answered too: trace.test.ts.)
 */

const KEY = 'unimplemented-test-key'

let server: TestServer
let grpc: GrpcTestDoor

beforeAll(async () => {
  server = await startTestServer(await tinyModelRepository(), ['--api-key', KEY])
  grpc = await startTestGrpc(server)
})

afterAll(async () => {
  await grpc?.close()
  await server?.close()
  await removeTempDirs()
})

/** The hint each extension's refusal gives. */
const HINTS = {
  system_shared_memory: /^NOT_IMPLEMENTED: .*System shared memory: send tensors in the request instead/,
  cuda_shared_memory: /^NOT_IMPLEMENTED: .*CUDA shared memory: send tensors in the request instead/,
  logging: /^NOT_IMPLEMENTED: .*--log-level/
} as const

/** tritonclient's bodies for the POST routes: a register request, a log update, or none. */
function tritonclientBody(url: string): string | undefined {
  if (url.endsWith('/register')) return JSON.stringify({ key: '/triton_shm', offset: 0, byte_size: 602112 })
  if (url === '/logging') return JSON.stringify({ log_verbose_level: 1 })
  return undefined
}

describe("Triton's unimplemented extensions", () => {
  it('REST: every route tritonclient calls is 501 NOT_IMPLEMENTED in the /v2 shape with the fix, key or none', async () => {
    expect(UNIMPLEMENTED_ROUTES.length).toBe(12)
    for (const { method, url, extension } of UNIMPLEMENTED_ROUTES) {
      if (extension === 'logging') continue
      const path = `/v2${url.replace(':region', 'triton_shm').replace(':model', 'tiny')}`
      // tritonclient sends these bodies with no Content-Type.
      const res = await fetch(`${server.url}${path}`, { method, body: method === 'POST' ? tritonclientBody(url) : undefined })
      expect([method, path, res.status, res.headers.get('content-type')]).toEqual([method, path, 501, 'application/json'])
      expect(((await res.json()) as { error: string }).error, path).toMatch(HINTS[extension])
    }
  })

  it('REST: another method on those paths is still 405, and an unknown path under them 404', async () => {
    const get = await fetch(`${server.url}/v2/systemsharedmemory/region/r/register`)
    expect([get.status, get.headers.get('allow')]).toEqual([405, 'POST'])
    expect((await fetch(`${server.url}/v2/logging/unheard-of`, { method: 'POST' })).status).toBe(404)
  })

  it('gRPC: every RPC of those extensions is UNIMPLEMENTED with the registry code and the fix', async () => {
    const requests: Record<string, object> = {
      SystemSharedMemoryRegister: { name: 'triton_shm', key: '/triton_shm', offset: 0, byte_size: 602112 },
      CudaSharedMemoryRegister: { name: 'cuda_shm', raw_handle: Buffer.alloc(64), device_id: 0, byte_size: 602112 },
      LogSettings: { settings: { log_verbose_level: { uint32_param: 1 } } }
    }
    expect(Object.keys(UNIMPLEMENTED_RPCS)).toHaveLength(7)
    for (const [rpc, extension] of Object.entries(UNIMPLEMENTED_RPCS)) {
      if (extension === 'logging') continue
      const refusal = await callRefusal(grpc.call(rpc, requests[rpc] ?? {}))
      expect([rpc, refusal.code]).toEqual([rpc, status[status.UNIMPLEMENTED]])
      expect(refusal.details, rpc).toMatch(HINTS[extension])
    }
  })
})
