import { afterAll, describe, expect, it } from 'vitest'
import { startTestGrpc } from '../helpers/grpc.js'
import { readPhoto } from '../helpers/photos.js'
import { startTestServer, type TestServer } from '../helpers/server.js'
import { removeTempDirs } from '../helpers/tiny-model.js'
import { tinyRepository } from '../helpers/versioned-models.js'

/** Version folders (`<model>/<n>/model.onnx`) served side by side, chosen by version, per the version policy. */

afterAll(async () => {
  await removeTempDirs()
})

interface InferAnswer {
  status: number
  version: string | undefined
  error: string | undefined
}

async function inferPhoto(server: TestServer, path: string): Promise<InferAnswer> {
  const photo = await readPhoto('clock')
  const res = await fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      inputs: [{ name: 'input', datatype: 'BYTES', shape: [1], data: [photo.toString('base64')] }],
      outputs: [{ name: 'logits', parameters: { classification: 1 } }]
    })
  })
  const body = (await res.json()) as { model_version?: string; error?: string }
  return { status: res.status, version: body.model_version, error: body.error }
}

async function metadataVersions(server: TestServer, model: string): Promise<string[]> {
  const res = await fetch(`${server.url}/v2/models/${model}`)
  expect(res.status).toBe(200)
  return ((await res.json()) as { versions: string[] }).versions
}

async function readyStatus(server: TestServer, path: string): Promise<number> {
  return (await fetch(`${server.url}${path}`)).status
}

describe('model versions', () => {
  it('policy all: every version serves, a request names one or gets the newest; metadata and ready per version', async () => {
    const repository = await tinyRepository({ multi: { versions: [1, 2, 3], versionPolicy: { all: {} } } })
    const server = await startTestServer(repository)
    try {
      expect(await metadataVersions(server, 'multi')).toEqual(['1', '2', '3'])
      for (const v of ['1', '2', '3']) {
        const answer = await inferPhoto(server, `/v2/models/multi/versions/${v}/infer`)
        expect([answer.status, answer.version]).toEqual([200, v])
        expect(await readyStatus(server, `/v2/models/multi/versions/${v}/ready`)).toBe(200)
        const meta = await fetch(`${server.url}/v2/models/multi/versions/${v}`)
        expect(meta.status).toBe(200)
      }
      expect(await inferPhoto(server, '/v2/models/multi/infer')).toMatchObject({ status: 200, version: '3' })
      const classify = await fetch(`${server.url}/classify?model=multi`, {
        method: 'POST',
        headers: { 'content-type': 'image/jpeg' },
        body: await readPhoto('clock')
      })
      expect(((await classify.json()) as { version: string }).version).toBe('3')
      const missing = await inferPhoto(server, '/v2/models/multi/versions/4/infer')
      expect(missing.status).toBe(404)
      // The message said "No model of that name is loaded" for a model that was loaded (only the version was not served).
      expect(missing.error).toBe(
        'MODEL_NOT_FOUND: No such model or version. Version "4" of "multi" is not served; served versions are 3, 2, 1.'
      )
      expect(await readyStatus(server, '/v2/models/multi/versions/4/ready')).toBe(404)

      // gRPC: model_version picks the version; metadata and readiness per version.
      const grpc = await startTestGrpc(server)
      try {
        const photo = await readPhoto('clock')
        for (const version of ['1', '3', '']) {
          const response = await grpc.call<{ model_version: string }>('ModelInfer', {
            model_name: 'multi',
            model_version: version,
            inputs: [{ name: 'input', datatype: 'BYTES', shape: [1], contents: { bytes_contents: [photo] } }]
          })
          expect(response.model_version).toBe(version === '' ? '3' : version)
        }
        expect(await grpc.call('ModelMetadata', { name: 'multi', version: '2' })).toMatchObject({ versions: ['1', '2', '3'] })
        expect(await grpc.call('ModelReady', { name: 'multi', version: '2' })).toEqual({ ready: true })
        expect(await grpc.call('ModelReady', { name: 'multi', version: '4' })).toEqual({ ready: false })
      } finally {
        await grpc.close()
      }
    } finally {
      await server.close()
    }
  })

  it('default policy (latest 1, as Triton), latest N and specific versions; a flat folder is version 1', async () => {
    const repository = await tinyRepository({
      newest: { versions: [1, 2, 5] },
      latest2: { versions: [1, 2, 3], versionPolicy: { latest: { numVersions: 2 } } },
      picked: { versions: [1, 2, 3], versionPolicy: { specific: { versions: [1, 3] } } },
      flat: {}
    })
    const server = await startTestServer(repository)
    try {
      expect(await metadataVersions(server, 'newest')).toEqual(['5'])
      expect(await metadataVersions(server, 'latest2')).toEqual(['2', '3'])
      expect(await metadataVersions(server, 'picked')).toEqual(['1', '3'])
      expect(await metadataVersions(server, 'flat')).toEqual(['1'])
      expect(await readyStatus(server, '/v2/models/newest/versions/2/ready')).toBe(404)
      expect(await readyStatus(server, '/v2/models/latest2/versions/1/ready')).toBe(404)
      expect(await readyStatus(server, '/v2/models/picked/versions/2/ready')).toBe(404)
      expect((await inferPhoto(server, '/v2/models/picked/versions/1/infer')).version).toBe('1')
      expect((await inferPhoto(server, '/v2/models/picked/infer')).version).toBe('3')
      expect((await inferPhoto(server, '/v2/models/flat/versions/1/infer')).version).toBe('1')
      const listing = (await (await fetch(`${server.url}/models`)).json()) as { models: Array<{ name: string; version: string }> }
      expect(listing.models.map((m) => [m.name, m.version])).toEqual([
        ['flat', '1'],
        ['latest2', '3'],
        ['newest', '5'],
        ['picked', '3']
      ])
    } finally {
      await server.close()
    }
  })

  it('a specific policy naming a version without a folder stops the start with the fix', async () => {
    const repository = await tinyRepository({ picked: { versions: [1], versionPolicy: { specific: { versions: [1, 7] } } } })
    await expect(startTestServer(repository)).rejects.toThrow(/versionPolicy\.specific names version 7, which has no folder/)
  })

  it('regression: a folder without version folders took a specific policy naming another version and went on serving 1', async () => {
    const flat = await tinyRepository({ flat: { versionPolicy: { specific: { versions: [77] } } } })
    await expect(startTestServer(flat)).rejects.toThrow(
      /versionPolicy\.specific names version 77, but the folder has no numbered version folders: it is one version, config\.json's version \(1\)/
    )
    const named = await tinyRepository({ flat: { versionPolicy: { specific: { versions: [1] } } } })
    const server = await startTestServer(named)
    await server.close()
  })
})
