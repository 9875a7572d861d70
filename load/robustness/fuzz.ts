import { parseArgs } from 'node:util'
import fc from 'fast-check'
import { readPhoto } from '../../test/helpers/photos.js'
import { startSyntheticServerProcess } from '../../test/helpers/process.js'

/**
 * Property-based fuzzing of the HTTP door (fast-check): generated requests to POST /classify, the
 * batch endpoint and the /v2 infer route (when the server has it) must never get a 5xx other than
 * 503 or 504, never break the connection, and never stop the server. Runs for --seconds (default
 * 60) against a server process; prints the answers counted by status and code, and on failure the
 * shrunk request that broke the rule.
 *
 *   npm run load:fuzz -- --seconds 60 [--seed 42]
 */

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '60' }, seed: { type: 'string' } } })
const seconds = Number(values.seconds)
const seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed)

interface FuzzRequest {
  readonly path: string
  readonly contentType: string
  readonly body: Uint8Array | string
}

const photo = new Uint8Array(await readPhoto('chelsea'))
const photoBase64 = Buffer.from(photo).toString('base64')

/** A real JPEG with a few bytes overwritten and maybe cut short: reaches the decoder's error paths. */
const mutatedPhoto = fc
  .record({
    edits: fc.array(fc.tuple(fc.nat({ max: photo.length - 1 }), fc.integer({ min: 0, max: 255 })), { maxLength: 16 }),
    cut: fc.option(fc.nat({ max: photo.length }))
  })
  .map(({ edits, cut }) => {
    const copy = photo.slice(0, cut ?? photo.length)
    for (const [at, value] of edits) if (at < copy.length) copy[at] = value
    return copy
  })

const imageBytes = fc.oneof(fc.uint8Array({ maxLength: 4096 }), mutatedPhoto, fc.constant(photo))
const modelName = fc.oneof(
  fc.constant('resnet50'),
  fc.constantFrom('../resnet50', '%2e%2e', '/etc/passwd', '', 'RESNET50'),
  fc.string({ maxLength: 12 })
)
const queryValue = fc.oneof(
  fc.integer({ min: -5, max: 2000 }).map(String),
  fc.string({ maxLength: 8 }),
  fc.constantFrom('1e3', '0x10', 'NaN', '5.5')
)
const query = fc
  .record({ model: fc.option(modelName), topk: fc.option(queryValue), deadline_ms: fc.option(queryValue) }, { requiredKeys: [] })
  .map((q) => {
    const params = Object.entries(q)
      .filter(([, v]) => v !== null && v !== undefined)
      .map(([k, v]) => `${k}=${encodeURIComponent(String(v))}`)
    return params.length === 0 ? '' : `?${params.join('&')}`
  })
const contentType = fc.constantFrom(
  'image/jpeg',
  'image/png',
  'image/svg+xml',
  'application/octet-stream',
  'application/json',
  'text/plain',
  'multipart/form-data; boundary=x'
)

const classifyRequest = fc
  .record({ q: query, contentType, body: imageBytes })
  .map(({ q, contentType, body }): FuzzRequest => ({ path: `/classify${q}`, contentType, body }))

const base64ish = fc.oneof(
  fc.base64String({ maxLength: 200 }),
  fc.string({ maxLength: 50 }),
  mutatedPhoto.map((b) => Buffer.from(b).toString('base64')),
  fc.constant(photoBase64)
)
const batchBody = fc.oneof(
  fc
    .record({
      instances: fc.array(fc.record({ b64: base64ish }), { maxLength: 5 }),
      topk: fc.option(fc.integer({ min: -2, max: 2000 }), { nil: undefined })
    })
    .map((b) => JSON.stringify(b)),
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  fc.string({ maxLength: 100 })
)
const batchRequest = fc.record({ model: modelName, body: batchBody }).map(({ model, body }): FuzzRequest => ({
  path: `/v1/models/${encodeURIComponent(model)}:classify`,
  contentType: 'application/json',
  body
}))

const v2Tensor = fc.record(
  {
    name: fc.oneof(fc.constant('input'), fc.string({ maxLength: 8 })),
    shape: fc.array(fc.integer({ min: -2, max: 300 }), { maxLength: 5 }),
    datatype: fc.constantFrom('FP32', 'UINT8', 'BYTES', 'INT64', 'FP16', 'BOOL', 'nonsense'),
    data: fc.oneof(fc.array(fc.double(), { maxLength: 20 }), fc.array(base64ish, { maxLength: 3 }), fc.jsonValue({ maxDepth: 2 })),
    parameters: fc.option(fc.dictionary(fc.string({ maxLength: 10 }), fc.jsonValue({ maxDepth: 1 })), { nil: undefined })
  },
  { requiredKeys: ['name', 'datatype'] }
)
const v2Body = fc.oneof(
  fc
    .record({
      id: fc.option(fc.string(), { nil: undefined }),
      inputs: fc.array(v2Tensor, { maxLength: 3 }),
      outputs: fc.option(
        fc.array(
          fc.record({
            name: fc.string({ maxLength: 10 }),
            parameters: fc.option(fc.dictionary(fc.string({ maxLength: 15 }), fc.jsonValue({ maxDepth: 1 })), { nil: undefined })
          })
        ),
        { nil: undefined }
      )
    })
    .map((b) => JSON.stringify(b)),
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v))
)
const v2Request = fc
  .record({ model: modelName, body: v2Body })
  .map(({ model, body }): FuzzRequest => ({ path: `/v2/models/${encodeURIComponent(model)}/infer`, contentType: 'application/json', body }))

const server = await startSyntheticServerProcess(['--log-level', 'info'])
const routes = (await (await fetch(`${server.url}/docs/json`).catch(() => undefined))?.json().catch(() => undefined)) as
  { paths?: Record<string, unknown> } | undefined
const hasV2 = Object.keys(routes?.paths ?? {}).some((p) => p.startsWith('/v2/models/'))
const anyRequest = hasV2 ? fc.oneof(classifyRequest, batchRequest, v2Request) : fc.oneof(classifyRequest, batchRequest)

const counts = new Map<string, number>()
let requests = 0
let unexpected = 0

async function send(r: FuzzRequest): Promise<boolean> {
  let key: string
  let ok: boolean
  try {
    const res = await fetch(`${server.url}${r.path}`, { method: 'POST', headers: { 'content-type': r.contentType }, body: r.body })
    const text = await res.text()
    let code: string | undefined
    try {
      const body = JSON.parse(text) as { code?: string; error?: string }
      code = body.code ?? (typeof body.error === 'string' ? body.error.split(':')[0] : undefined)
    } catch {
      code = 'non-JSON'
    }
    key = `${res.status} ${code ?? ''}`.trim()
    ok = res.status < 500 || res.status === 503 || res.status === 504
  } catch (err) {
    key = `connection error ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`
    ok = false
  }
  requests++
  counts.set(key, (counts.get(key) ?? 0) + 1)
  if (!ok) unexpected++
  return ok
}

process.stderr.write(`fuzzing ${server.url} for ${seconds} s (seed ${seed}; routes: /classify, batch${hasV2 ? ', /v2 infer' : ''})\n`)
let failure: string | undefined
const started = performance.now()
try {
  await fc.assert(
    fc.asyncProperty(anyRequest, (r) => send(r)),
    { seed, numRuns: Number.MAX_SAFE_INTEGER, interruptAfterTimeLimit: seconds * 1000, markInterruptAsFailure: false }
  )
} catch (err) {
  failure = (err as Error).message
}
const elapsedS = (performance.now() - started) / 1000
const alive = await fetch(`${server.url}/health/live`)
  .then((r) => r.status === 200)
  .catch(() => false)
server.child.kill('SIGTERM')
const exitCode = await server.exited

console.log(
  JSON.stringify(
    {
      seed,
      seconds: Math.round(elapsedS),
      requests,
      routes: hasV2 ? ['/classify', 'batch', '/v2 infer'] : ['/classify', 'batch'],
      unexpected,
      aliveAfter: alive,
      exitCode,
      failure: failure?.split('\n').slice(0, 6).join('\n')
    },
    null,
    1
  )
)
for (const [key, n] of [...counts].sort((a, b) => b[1] - a[1])) console.log(`${String(n).padStart(7)}  ${key}`)
process.exitCode = failure === undefined && alive && exitCode === 0 ? 0 : 1
