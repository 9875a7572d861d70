import { cp, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { afterAll, describe, expect, it } from 'vitest'
import { readPhoto } from '../helpers/photos.js'
import { startTestServer, type TestServer } from '../helpers/server.js'
import { removeTempDirs, tempDir } from '../helpers/tiny-model.js'
import { addTinyVersion, tinyRepository, waitFor, writeTinyModelFolder } from '../helpers/versioned-models.js'

/**
 * Zero failed requests while models change: 16 clients classify one model without pause while it
 * is reloaded with a new version and another model is loaded and unloaded (explicit mode), or
 * while poll mode picks up a folder copied in, a new version, and a folder removed. Every answer
 * must be 200, from the old version or the new one.
 */

afterAll(async () => {
  await removeTempDirs()
})

const CLIENTS = 16
/** A ceiling, not a timing check: each wait below is for a condition, up to a minute on a busy machine. */
const RUN = { timeout: 300_000 }

interface Answer {
  readonly startedAt: number
  readonly status: number
  readonly version: string | undefined
  readonly body: string
}

/** Clients that classify `model` in a loop (alternating /classify and /v2 infer) until stopped. */
function startClients(server: TestServer, model: string, photo: Buffer) {
  const answers: Answer[] = []
  let stopped = false
  const v2Body = JSON.stringify({
    inputs: [{ name: 'input', datatype: 'BYTES', shape: [1], data: [photo.toString('base64')] }],
    outputs: [{ name: 'logits', parameters: { classification: 1 } }]
  })
  async function client(id: number): Promise<void> {
    for (let i = 0; !stopped; i++) {
      const startedAt = performance.now()
      const viaV2 = (id + i) % 2 === 0
      const res = viaV2
        ? await fetch(`${server.url}/v2/models/${model}/infer`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: v2Body
          })
        : await fetch(`${server.url}/classify?model=${model}&topk=1`, {
            method: 'POST',
            headers: { 'content-type': 'image/jpeg' },
            body: photo
          })
      const body = await res.text()
      let version: string | undefined
      if (res.status === 200) {
        const parsed = JSON.parse(body) as { version?: string; model_version?: string }
        version = viaV2 ? parsed.model_version : parsed.version
      }
      answers.push({ startedAt, status: res.status, version, body: res.status === 200 ? '' : body })
    }
  }
  const running = Promise.all(Array.from({ length: CLIENTS }, (_, id) => client(id)))
  return {
    answers,
    count: (check: (a: Answer) => boolean) => answers.filter(check).length,
    async stop(): Promise<void> {
      stopped = true
      await running
    }
  }
}

function expectAllAnswered(answers: readonly Answer[], versions: readonly string[]): void {
  const failures = answers.filter((a) => a.status !== 200)
  expect(failures.slice(0, 3), `${failures.length} of ${answers.length} requests failed`).toEqual([])
  expect(new Set(answers.map((a) => a.version))).toEqual(new Set(versions))
}

async function post(server: TestServer, path: string): Promise<number> {
  return (await fetch(`${server.url}${path}`, { method: 'POST' })).status
}

async function indexEntries(server: TestServer): Promise<Array<{ name: string; version?: string; state: string }>> {
  const res = await fetch(`${server.url}/v2/repository/index`, { method: 'POST' })
  return (await res.json()) as Array<{ name: string; version?: string; state: string }>
}

describe('zero failed requests while models change under load', () => {
  it('explicit mode: a reload with a new version, and another model loaded and unloaded', RUN, async () => {
    const repository = await tinyRepository({ main: { versions: [1] }, other: {} })
    const server = await startTestServer(repository, ['--model-control-mode', 'explicit', '--load-model', 'main'])
    const clients = startClients(server, 'main', await readPhoto('clock'))
    try {
      await waitFor('answers from version 1', () => clients.count((a) => a.version === '1') >= 3 * CLIENTS)

      await addTinyVersion(repository, 'main', 2)
      expect(await post(server, '/v2/repository/models/main/load')).toBe(200)
      const switchedAt = performance.now()
      expect(await post(server, '/v2/repository/models/other/load')).toBe(200)
      const other = await fetch(`${server.url}/classify?model=other`, {
        method: 'POST',
        headers: { 'content-type': 'image/jpeg' },
        body: await readPhoto('clock')
      })
      expect(other.status).toBe(200)
      expect(await post(server, '/v2/repository/models/other/unload')).toBe(200)
      await waitFor('answers from version 2', () => clients.count((a) => a.startedAt > switchedAt) >= 3 * CLIENTS)
      await clients.stop()

      expectAllAnswered(clients.answers, ['1', '2'])
      // Requests that started after the load answered all went to the new version.
      expect(clients.answers.filter((a) => a.startedAt > switchedAt && a.version !== '2')).toEqual([])
      // The old version has drained and closed: only version 2 is left.
      expect(server.service.modelVersions('main').map((m) => m.info.version)).toEqual(['2'])
      expect((await indexEntries(server)).filter((e) => e.state === 'READY')).toEqual([
        { name: 'main', version: '2', state: 'READY', reason: '' }
      ])
    } finally {
      await clients.stop()
      await server.close()
    }
  })

  it('poll mode: a folder copied in, a new version of the busy model, a folder removed', RUN, async () => {
    const repository = await tinyRepository({ main: { versions: [1] } })
    const server = await startTestServer(repository, ['--model-control-mode', 'poll', '--repository-poll-secs', '1'])
    const clients = startClients(server, 'main', await readPhoto('clock'))
    try {
      await waitFor('answers from version 1', () => clients.count((a) => a.version === '1') >= 3 * CLIENTS)

      // Copied file by file, as `cp -r` does: a look at the folder mid-copy fails to load, and the next one loads it.
      const staging = await tempDir('rs-poll-staging-')
      await writeTinyModelFolder(staging, 'copied')
      await cp(join(staging, 'copied'), join(repository, 'copied'), { recursive: true })
      await waitFor('the copied model to serve', () => server.service.isModelReady('copied'))
      const copied = await fetch(`${server.url}/classify?model=copied`, {
        method: 'POST',
        headers: { 'content-type': 'image/jpeg' },
        body: await readPhoto('clock')
      })
      expect(copied.status).toBe(200)

      await addTinyVersion(repository, 'main', 2)
      await waitFor('answers from version 2', () => clients.count((a) => a.version === '2') >= 3 * CLIENTS)

      await rm(join(repository, 'copied'), { recursive: true })
      await waitFor('the removed model to unload', async () => !(await indexEntries(server)).some((e) => e.name === 'copied'))
      await clients.stop()

      expectAllAnswered(clients.answers, ['1', '2'])
      expect(server.service.modelVersions('main').map((m) => m.info.version)).toEqual(['2'])
      expect((await fetch(`${server.url}/v2/health/ready`)).status).toBe(200)
    } finally {
      await clients.stop()
      await server.close()
    }
  })
})
