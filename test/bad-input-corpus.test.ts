import { readdir, readFile } from 'node:fs/promises'
import autocannon from 'autocannon'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ERRORS } from '../src/errors.js'
import { badInputCorpus, CORPUS_SERVER_FLAGS, type BadInput } from './fixtures/bad-inputs.js'
import { syntheticModelRepository } from './helpers/models.js'
import { readPhoto } from './helpers/photos.js'
import { startServerProcess } from './helpers/process.js'
import { startTestServer, type TestServer } from './helpers/server.js'

/**
 * Every case of the hostile-input corpus (test/fixtures/bad-inputs.ts) gets its documented status
 * and code, and the same server then classifies a good photo as it did before. Then ten thousand
 * cheap bad requests leave a server process's memory and open files where they were.
 */

interface ErrorAnswer {
  statusCode?: number
  code?: string
  message?: string
  predictions?: Array<{ index: number; probability: number } | { error: { code: string } }>
}

const corpus = await badInputCorpus()
let server: TestServer
let goodPhoto: Buffer
let goodAnswerBefore: unknown

async function send(request: BadInput['request']): Promise<{ status: number; body: ErrorAnswer }> {
  const res = await fetch(`${server.url}${request.path}`, { method: request.method, headers: request.headers, body: request.body })
  return { status: res.status, body: (await res.json()) as ErrorAnswer }
}

async function classify(image: Buffer): Promise<unknown> {
  const res = await fetch(`${server.url}/classify`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: image })
  expect(res.status).toBe(200)
  return ((await res.json()) as ErrorAnswer).predictions
}

beforeAll(async () => {
  server = await startTestServer(await syntheticModelRepository(), [...CORPUS_SERVER_FLAGS])
  goodPhoto = await readPhoto('chelsea')
  goodAnswerBefore = await classify(goodPhoto)
})
afterAll(async () => {
  await server?.close()
})

describe('the bad-input corpus', () => {
  it('has at least 30 cases, each named once', () => {
    expect(corpus.length).toBeGreaterThanOrEqual(30)
    expect(new Set(corpus.map((c) => c.name)).size).toBe(corpus.length)
  })

  for (const c of corpus) {
    const { expected } = c
    const what = expected.code ?? ('itemCode' in expected ? `200, item ${expected.itemCode}` : 'accepted')
    it(`${c.name} → ${expected.status} ${what}`, async () => {
      const { status, body } = await send(c.request)
      expect(status).toBe(expected.status)
      if (expected.code !== undefined) {
        expect(body.code).toBe(expected.code)
        expect(body.statusCode).toBe(expected.status)
        expect(body.message?.startsWith(ERRORS[expected.code].message)).toBe(true)
      } else if ('itemCode' in expected) {
        expect(body.predictions).toHaveLength(1)
        expect(body.predictions![0]).toEqual({ error: { code: expected.itemCode, message: expect.any(String) } })
      } else {
        expect(body.predictions).toHaveLength(5)
        if ('sameAnswerAs' in expected && expected.sameAnswerAs !== undefined) expect(body.predictions).toEqual(await classify(expected.sameAnswerAs))
      }
      // Whatever went wrong, the answer names no file, module or stack frame.
      expect(JSON.stringify(body)).not.toMatch(/\/work\/|\/tmp\/|node_modules|\.ts:\d+|\.js:\d+|\bat \S+ \(/)
    })
  }

  it('then still classifies a good photo exactly as before', async () => {
    expect(await classify(goodPhoto)).toEqual(goodAnswerBefore)
    const ready = await fetch(`${server.url}/health/ready`)
    expect(ready.status).toBe(200)
  })
})

/** Resident set size of a process, in bytes. */
async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) * 1024
}

async function openFilesOf(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length
}

describe('ten thousand bad requests', () => {
  it('leave the server process with the memory and open files it had', async () => {
    const child = await startServerProcess(['--model-repository', await syntheticModelRepository(), '--provider', 'cpu', ...CORPUS_SERVER_FLAGS])
    try {
      const cheap = corpus.filter((c) => c.cheap && c.expected.status !== 200)
      expect(cheap.length).toBeGreaterThanOrEqual(20)
      const requests = cheap.map((c) => ({ method: c.request.method, path: c.request.path, headers: { ...c.request.headers }, body: c.request.body }))
      const hammer = async (amount: number): Promise<autocannon.Result> =>
        autocannon({ url: child.url, connections: 16, amount, requests, timeout: 30 })
      // Warm-up: lazy modules, JIT, sharp's thread pool, the 16 keep-alive connections' buffers.
      await hammer(2_000)
      await new Promise((r) => setTimeout(r, 500))
      const before = { rss: await rssOf(child.child.pid!), files: await openFilesOf(child.child.pid!) }
      const result = await hammer(10_000)
      await new Promise((r) => setTimeout(r, 1_000))
      const after = { rss: await rssOf(child.child.pid!), files: await openFilesOf(child.child.pid!) }

      expect(result.errors).toBe(0)
      expect(result.timeouts).toBe(0)
      expect(result['5xx']).toBe(0)
      expect(result['2xx']).toBe(0)
      expect(result.requests.sent).toBeGreaterThanOrEqual(10_000)
      expect(after.rss, `RSS ${before.rss} → ${after.rss}`).toBeLessThanOrEqual(before.rss * 1.1)
      expect(after.files, `open files ${before.files} → ${after.files}`).toBeLessThanOrEqual(Math.ceil(before.files * 1.1))
      // The process still classifies.
      const res = await fetch(`${child.url}/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: goodPhoto })
      expect(res.status).toBe(200)
    } finally {
      child.child.kill('SIGTERM')
      await child.exited
    }
  })
})
