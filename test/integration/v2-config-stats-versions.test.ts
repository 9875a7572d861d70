import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestGrpc, type GrpcTestDoor } from '../helpers/grpc.js'
import { readPhoto } from '../helpers/photos.js'
import { startTestServer, type TestServer } from '../helpers/server.js'
import { removeTempDirs } from '../helpers/tiny-model.js'
import { addTinyVersion, tinyRepository } from '../helpers/versioned-models.js'

/**
 * Configuration and statistics of a model whose version folders are served side by side (tiny real
 * classifiers, policy all): the configuration states the policy, and each version counts what ran
 * on it, as Triton reports them.
 */

interface VersionStats {
  name: string
  version: string
  inference_count: number
  execution_count: number
  inference_stats: { success: { count: number; ns: number }; queue: { count: number } }
}

let server: TestServer
let grpc: GrpcTestDoor

async function stats(path: string): Promise<VersionStats[]> {
  const res = await fetch(`${server.url}${path}`)
  expect(res.status, path).toBe(200)
  return ((await res.json()) as { model_stats: VersionStats[] }).model_stats
}

async function infer(path: string): Promise<string> {
  const photo = await readPhoto('clock')
  const res = await fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ inputs: [{ name: 'input', datatype: 'BYTES', shape: [1], data: [photo.toString('base64')] }] })
  })
  expect(res.status, path).toBe(200)
  return ((await res.json()) as { model_version: string }).model_version
}

beforeAll(async () => {
  const repository = await tinyRepository({
    multi: { versions: [1, 2, 3], versionPolicy: { all: {} } },
    pinned: { versions: [1, 2], versionPolicy: { specific: { versions: [1] } } }
  })
  server = await startTestServer(repository)
  grpc = await startTestGrpc(server)
})

afterAll(async () => {
  await grpc?.close()
  await server?.close()
  await removeTempDirs()
})

describe('configuration and statistics of versioned models', () => {
  it('the configuration states the version policy', async () => {
    const config = async (model: string): Promise<unknown> =>
      ((await (await fetch(`${server.url}/v2/models/${model}/config`)).json()) as { version_policy: unknown }).version_policy
    expect(await config('multi')).toEqual({ all: {} })
    expect(await config('pinned')).toEqual({ specific: { versions: [1] } })
    const reply = await grpc.call<{ config: { version_policy: { policy_choice: string } } }>('ModelConfig', { name: 'pinned' })
    expect(reply.config.version_policy).toMatchObject({ policy_choice: 'specific', specific: { versions: [1] } })
  })

  it('each served version counts what ran on it; a model without a version answers all of its versions', async () => {
    expect(await infer('/v2/models/multi/versions/1/infer')).toBe('1')
    expect(await infer('/v2/models/multi/versions/1/infer')).toBe('1')
    expect(await infer('/v2/models/multi/infer')).toBe('3')

    const byVersion = new Map((await stats('/v2/models/multi/stats')).map((s) => [s.version, s]))
    expect([...byVersion.keys()].sort()).toEqual(['1', '2', '3'])
    const counts = (v: string) => {
      const s = byVersion.get(v)!
      return [s.inference_count, s.inference_stats.success.count, s.inference_stats.queue.count]
    }
    expect(counts('1')).toEqual([2, 2, 2])
    expect(counts('2')).toEqual([0, 0, 0])
    expect(counts('3')).toEqual([1, 1, 1])
    expect(byVersion.get('1')!.inference_stats.success.ns).toBeGreaterThan(0)

    expect(await stats('/v2/models/multi/versions/1/stats')).toEqual([byVersion.get('1')])
    const all = await stats('/v2/models/stats')
    expect(all.map((s) => `${s.name}/${s.version}`).sort()).toEqual(['multi/1', 'multi/2', 'multi/3', 'pinned/1'])
    const overGrpc = await grpc.call<{ model_stats: VersionStats[] }>('ModelStatistics', { name: 'multi' })
    expect(overGrpc.model_stats.map((s) => [s.version, s.inference_count]).sort()).toEqual([
      ['1', 2],
      ['2', 0],
      ['3', 1]
    ])
  })

  it('a reload to a new version answers the new version, counting from zero, and stops listing the old one', async () => {
    const repository = await tinyRepository({ live: { versions: [1] } })
    const explicit = await startTestServer(repository, ['--model-control-mode', 'explicit', '--load-model', 'live'])
    try {
      const listed = async (): Promise<Array<[string, number]>> => {
        const res = await fetch(`${explicit.url}/v2/models/live/stats`)
        expect(res.status).toBe(200)
        return ((await res.json()) as { model_stats: VersionStats[] }).model_stats.map((s) => [s.version, s.inference_count])
      }
      const photo = (await readPhoto('clock')).toString('base64')
      const inferLive = async (): Promise<void> => {
        const res = await fetch(`${explicit.url}/v2/models/live/infer`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ inputs: [{ name: 'input', datatype: 'BYTES', shape: [1], data: [photo] }] })
        })
        expect(res.status).toBe(200)
      }
      await inferLive()
      expect(await listed()).toEqual([['1', 1]])
      await addTinyVersion(repository, 'live', 2)
      expect((await fetch(`${explicit.url}/v2/repository/models/live/load`, { method: 'POST' })).status).toBe(200)
      expect(await listed()).toEqual([['2', 0]])
      await inferLive()
      await inferLive()
      expect(await listed()).toEqual([['2', 2]])
    } finally {
      await explicit.close()
    }
  })

  it('a version folder the policy leaves out is not served: NOT_FOUND for its statistics and configuration', async () => {
    for (const path of ['/v2/models/pinned/versions/2/stats', '/v2/models/pinned/versions/2/config']) {
      const res = await fetch(`${server.url}${path}`)
      expect(res.status, path).toBe(404)
      expect(((await res.json()) as { error: string }).error).toMatch(/^MODEL_NOT_FOUND: /)
    }
  })
})
