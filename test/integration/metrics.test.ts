import { readFile } from 'node:fs/promises'
import { register as globalRegistry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { UNKNOWN_MODEL_LABEL } from '../../src/metrics.js'
import { photoPaths } from '../helpers/photos.js'
import { syntheticModelRepository } from '../helpers/models.js'
import { startTestServer, type TestServer } from '../helpers/server.js'

/** GET /metrics on a real server: counts read off the Prometheus text match what the server did. */

let server: TestServer
let photos: Buffer[]
/** Sizes of the model executions, as the core reports them (independent of the metrics module). */
const executions: number[] = []

beforeAll(async () => {
  server = await startTestServer(await syntheticModelRepository(), [], { onBatch: (_model, size) => executions.push(size) })
  photos = await Promise.all(
    photoPaths()
      .slice(0, 12)
      .map((p) => readFile(p))
  )
  expect(photos).toHaveLength(12)
})
afterAll(async () => {
  await server?.close()
})

interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

/** The samples of a Prometheus text exposition (comments skipped, label order ignored). */
function parseExposition(text: string): Sample[] {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line)
    if (m === null) throw new Error(`not a sample line: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!
    samples.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return samples
}

async function scrape(): Promise<{ samples: Sample[]; text: string; contentType: string | null }> {
  const res = await fetch(`${server.url}/metrics`)
  expect(res.status).toBe(200)
  const text = await res.text()
  return { samples: parseExposition(text), text, contentType: res.headers.get('content-type') }
}

/** The value of the one sample with exactly these labels; 0 when the series does not exist yet. */
function value(samples: Sample[], name: string, labels: Record<string, string>): number {
  const matches = samples.filter(
    (s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === JSON.stringify(Object.entries(labels).sort())
  )
  expect(matches.length, `${name}${JSON.stringify(labels)}`).toBeLessThanOrEqual(1)
  return matches[0]?.value ?? 0
}

function delta(before: Sample[], after: Sample[], name: string, labels: Record<string, string>): number {
  return value(after, name, labels) - value(before, name, labels)
}

const model = { model: 'resnet50' }

async function classify(image: Uint8Array, query = ''): Promise<number> {
  const res = await fetch(`${server.url}/classify${query}`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: image })
  await res.arrayBuffer()
  return res.status
}

describe('GET /metrics', () => {
  it('counts N requests run as M batches: inferences N, executions M, and every stage timed', async () => {
    const before = (await scrape()).samples
    executions.length = 0
    const statuses = await Promise.all(photos.map((p) => classify(p)))
    expect(statuses.every((s) => s === 200)).toBe(true)
    const after = (await scrape()).samples

    const n = photos.length
    const m = executions.length
    expect(executions.reduce((a, b) => a + b, 0)).toBe(n)
    expect(m).toBeGreaterThan(0)
    expect(delta(before, after, 'resnet_serve_request_success_total', model)).toBe(n)
    expect(delta(before, after, 'resnet_serve_inferences_total', model)).toBe(n)
    expect(delta(before, after, 'resnet_serve_executions_total', model)).toBe(m)
    expect(delta(before, after, 'resnet_serve_batch_size_count', model)).toBe(m)
    expect(delta(before, after, 'resnet_serve_batch_size_sum', model)).toBe(n)
    for (const stage of ['queue', 'preprocess', 'postprocess']) {
      expect(delta(before, after, `resnet_serve_${stage}_duration_seconds_count`, model), stage).toBe(n)
      expect(delta(before, after, `resnet_serve_${stage}_duration_seconds_sum`, model), stage).toBeGreaterThan(0)
    }
    expect(delta(before, after, 'resnet_serve_inference_duration_seconds_count', model)).toBe(m)
    expect(delta(before, after, 'resnet_serve_inference_duration_seconds_sum', model)).toBeGreaterThan(0)
    expect(value(after, 'resnet_serve_inference_duration_seconds_bucket', { ...model, le: '+Inf' })).toBe(
      value(after, 'resnet_serve_executions_total', model)
    )
  })

  it('counts failures by reason, for /classify and for each failed item of a batch', async () => {
    const before = (await scrape()).samples
    expect(await classify(Buffer.from('this is text, not an image'))).toBe(400)
    expect(await classify(photos[0]!, '?model=no-such-model')).toBe(404)
    expect(await classify(photos[0]!, '?topk=0')).toBe(400)
    const batch = await fetch(`${server.url}/v1/models/resnet50:classify`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        instances: [{ b64: photos[0]!.toString('base64') }, { b64: '%%%' }, { b64: Buffer.from('text').toString('base64') }]
      })
    })
    expect(batch.status).toBe(200)
    const tooLarge = await fetch(`${server.url}/classify`, {
      method: 'POST',
      headers: { 'content-type': 'image/jpeg' },
      body: Buffer.alloc(server.settings.bodyLimitBytes + 1)
    })
    expect(tooLarge.status).toBe(413)
    const after = (await scrape()).samples

    const failures = (labels: Record<string, string>): number => delta(before, after, 'resnet_serve_request_failure_total', labels)
    expect(failures({ ...model, reason: 'NOT_AN_IMAGE' })).toBe(2)
    expect(failures({ ...model, reason: 'INVALID_TOPK' })).toBe(1)
    expect(failures({ ...model, reason: 'INVALID_BASE64' })).toBe(1)
    expect(failures({ ...model, reason: 'BODY_TOO_LARGE' })).toBe(1)
    // A client-chosen model name never becomes a label value.
    expect(failures({ model: UNKNOWN_MODEL_LABEL, reason: 'MODEL_NOT_FOUND' })).toBe(1)
    expect(after.some((s) => s.labels.model === 'no-such-model')).toBe(false)
    expect(delta(before, after, 'resnet_serve_request_success_total', model)).toBe(1)
  })

  it('serves Prometheus text with the queue gauge and the process metrics, and counts nothing for itself', async () => {
    const first = await scrape()
    expect(first.contentType).toMatch(/^text\/plain; version=0\.0\.4/)
    expect(value(first.samples, 'resnet_serve_pending_requests', model)).toBe(0)
    expect(first.text).toMatch(/^# TYPE resnet_serve_pending_requests gauge$/m)
    expect(first.text).toMatch(/^# TYPE resnet_serve_batch_size histogram$/m)
    for (const name of [
      'nodejs_eventloop_lag_seconds',
      'process_cpu_user_seconds_total',
      'process_resident_memory_bytes',
      'nodejs_heap_size_used_bytes'
    ]) {
      expect(
        first.samples.some((s) => s.name === name),
        name
      ).toBe(true)
    }
    const health = await fetch(`${server.url}/health/ready`)
    expect(health.status).toBe(200)
    const second = await scrape()
    for (const name of ['resnet_serve_request_success_total', 'resnet_serve_request_failure_total']) {
      const total = (samples: Sample[]): number => samples.filter((s) => s.name === name).reduce((a, s) => a + s.value, 0)
      expect(total(second.samples), name).toBe(total(first.samples))
    }
  })

  it("keeps its metrics off prom-client's global registry, so servers in one process never mix counts", () => {
    expect(server.metrics.registry).not.toBe(globalRegistry)
    expect(globalRegistry.getSingleMetric('resnet_serve_inferences_total')).toBeUndefined()
    expect(server.metrics.registry.getSingleMetric('resnet_serve_inferences_total')).toBeDefined()
  })
})
