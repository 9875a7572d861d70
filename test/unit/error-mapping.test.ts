import { status, type Metadata } from '@grpc/grpc-js'
import Fastify, { errorCodes } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ERRORS, ServiceError, echoed, toServiceError, type ErrorCode, type ErrorKind } from '../../src/errors.js'
import { grpcStatusName, libraryStatusError, statusOf } from '../../src/grpc/error-status.js'
import { errorBody, errorBodyFor, httpServiceError, httpStatusOf, invalidFieldCode, v2ErrorBody } from '../../src/http/error-status.js'

/**
 * Any thrown value → one ServiceError (src/errors.ts), through each door's thin adapter: fastify's
 * errors by their code and schema refusals by the field on HTTP, grpc-js's own statuses on gRPC;
 * then each door maps the kind to its status in one function.
 */

const KINDS = [...new Set(Object.values(ERRORS).map((e) => e.kind))] as ErrorKind[]

describe('toServiceError', () => {
  it('keeps a ServiceError as it is', () => {
    const se = new ServiceError('QUEUE_FULL', '(3 queued)', { retryAfterSeconds: 2 })
    expect(toServiceError(se)).toBe(se)
  })

  it('anything else is INTERNAL with the registry message only; the original is the cause, for the log', () => {
    for (const thrown of [new Error('/work/secret/path.ts:12 exploded'), 'a string', undefined, { code: 'ENOENT' }]) {
      const se = toServiceError(thrown)
      expect([se.code, se.message]).toEqual(['INTERNAL', ERRORS.INTERNAL.message])
      expect(se.cause).toBe(thrown)
    }
  })
})

describe('the HTTP adapter', () => {
  it.each<[string, ErrorCode, unknown]>([
    ['a body over the limit', 'BODY_TOO_LARGE', new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE()],
    ['a content type no parser takes', 'UNSUPPORTED_MEDIA_TYPE', new errorCodes.FST_ERR_CTP_INVALID_MEDIA_TYPE('text/plain')],
    ['an empty JSON body', 'EMPTY_BODY', new errorCodes.FST_ERR_CTP_EMPTY_JSON_BODY()],
    ['invalid JSON', 'BAD_REQUEST', new errorCodes.FST_ERR_CTP_INVALID_JSON_BODY()],
    ['a path that is not valid percent-encoding', 'BAD_REQUEST', new errorCodes.FST_ERR_BAD_URL('/%zz')],
    ['another 4xx a plugin raises', 'BAD_REQUEST', Object.assign(new Error('nope'), { statusCode: 406 })],
    ['a bug', 'INTERNAL', new TypeError('x is undefined')]
  ])('%s → %s', (_name, code, err) => {
    expect(httpServiceError(err).code).toBe(code)
  })

  it('a code with a vague message of its own gets a detail that names the problem, never the URL', () => {
    const se = httpServiceError(new errorCodes.FST_ERR_BAD_URL('/v2/%zz/secret'))
    expect(se.message).toMatch(/not valid percent-encoding/)
    expect(se.message).not.toMatch(/secret/)
  })

  it('invalidFieldCode: topk and deadline_ms have codes of their own, every other field is BAD_REQUEST', () => {
    expect([invalidFieldCode('topk'), invalidFieldCode('deadline_ms'), invalidFieldCode('model'), invalidFieldCode(undefined)]).toEqual([
      'INVALID_TOPK',
      'INVALID_DEADLINE',
      'BAD_REQUEST',
      'BAD_REQUEST'
    ])
    // Names from a request are looked up as data, never as properties of the map's prototype.
    expect([invalidFieldCode('constructor'), invalidFieldCode('__proto__'), invalidFieldCode('toString')]).toEqual([
      'BAD_REQUEST',
      'BAD_REQUEST',
      'BAD_REQUEST'
    ])
  })

  describe('schema refusals, from a real fastify instance (no port)', () => {
    // The door's own ajv options (src/http/app.ts): unknown properties are refused, not dropped.
    const app = Fastify({ ajv: { customOptions: { coerceTypes: true, removeAdditional: false, useDefaults: true } } })
    const seen: ErrorCode[] = []

    beforeAll(async () => {
      app.setErrorHandler((err, request, reply) => {
        const se = httpServiceError(err, request)
        seen.push(se.code)
        void reply.code(httpStatusOf(se.kind)).send(errorBody(se, httpStatusOf(se.kind)))
      })
      const querystring = {
        type: 'object',
        properties: {
          topk: { type: 'integer', minimum: 1 },
          deadline_ms: { type: 'integer', minimum: 1 },
          model: { type: 'string', maxLength: 4 }
        },
        additionalProperties: false
      }
      const body = { type: 'object', properties: { topk: { type: 'integer' }, instances: { type: 'array' } }, required: ['instances'] }
      app.post('/r', { schema: { querystring, body } }, async () => ({ ok: true }))
      await app.ready()
    })
    afterAll(() => app.close())

    it.each<[string, string, object, ErrorCode]>([
      ['topk below its minimum', '/r?topk=0', { instances: [] }, 'INVALID_TOPK'],
      ['topk not an integer', '/r?topk=many', { instances: [] }, 'INVALID_TOPK'],
      ['deadline_ms not an integer', '/r?deadline_ms=soon', { instances: [] }, 'INVALID_DEADLINE'],
      ['topk in the JSON body', '/r', { instances: [], topk: 'x' }, 'INVALID_TOPK'],
      ['another field', '/r?model=toolong', { instances: [] }, 'BAD_REQUEST'],
      ['a query parameter the route does not take', '/r?topkk=1', { instances: [] }, 'BAD_REQUEST'],
      ['a required field missing', '/r', { topk: 1 }, 'BAD_REQUEST']
    ])('%s (%s) → %s', async (_name, url, payload, code) => {
      const res = await app.inject({ method: 'POST', url, payload })
      expect(res.json()).toMatchObject({ code, statusCode: 400 })
      expect(seen.at(-1)).toBe(code)
    })
  })

  it("maps every kind to a status, and the /v2 paths get the protocol's body", () => {
    expect(KINDS.map((k) => [k, httpStatusOf(k)])).toEqual(KINDS.map((k) => [k, expect.any(Number)]))
    expect(new Set(KINDS.map(httpStatusOf)).size).toBe(KINDS.length)
    const se = new ServiceError('MODEL_NOT_FOUND')
    expect(errorBodyFor('/v2/models/x/infer')(se, 404)).toEqual(v2ErrorBody(se, 404))
    expect(errorBodyFor('/v2')(se, 404)).toEqual({ error: `MODEL_NOT_FOUND: ${ERRORS.MODEL_NOT_FOUND.message}` })
    expect(errorBodyFor('/v2x')(se, 404)).toEqual({
      statusCode: 404,
      code: 'MODEL_NOT_FOUND',
      error: 'Not Found',
      message: ERRORS.MODEL_NOT_FOUND.message
    })
    expect(errorBodyFor(undefined)(se, 404)).toEqual(errorBody(se, 404))
    // KServe V1's paths take KServe's shape too; this server's own /v1 route keeps the door's.
    expect(errorBodyFor('/v1/models/m:predict')).toBe(v2ErrorBody)
    expect(errorBodyFor('/v1/models/m?x=1')).toBe(v2ErrorBody)
    expect(errorBodyFor('/v1/models/m:classify')).toBe(errorBody)
  })
})

describe('the gRPC adapter', () => {
  it('a refusal leads its details with the registry code; Retry-After rides in the trailers', () => {
    const s = statusOf(new ServiceError('QUEUE_FULL', '(9 queued)', { retryAfterSeconds: 3 }))
    expect(s.code).toBe(status.RESOURCE_EXHAUSTED)
    expect(s.details).toBe(`QUEUE_FULL: ${ERRORS.QUEUE_FULL.message} (9 queued)`)
    expect((s.metadata as Metadata).get('retry-after')).toEqual(['3'])
    expect((statusOf(new ServiceError('BAD_REQUEST')).metadata as Metadata).get('retry-after')).toEqual([])
  })

  it('maps every kind to a status name grpc-js knows', () => {
    for (const kind of KINDS) expect(status[grpcStatusName(kind)], kind).toBeTypeOf('number')
  })

  it.each<[string, status, string, ErrorCode]>([
    ['a deadline that passed', status.DEADLINE_EXCEEDED, 'Deadline exceeded', 'DEADLINE_EXCEEDED'],
    ['a client that hung up', status.CANCELLED, 'Cancelled on client', 'CLIENT_CLOSED'],
    ['a message over the receive limit', status.RESOURCE_EXHAUSTED, 'Received message larger than max (20 vs. 10)', 'BODY_TOO_LARGE'],
    ['an unreadable grpc-timeout', status.INTERNAL, 'Invalid grpc-timeout value "soon"', 'INVALID_DEADLINE'],
    ['a message that does not decompress', status.INTERNAL, 'Failed to decompress message', 'BAD_REQUEST'],
    ['an encoding the server lacks', status.UNIMPLEMENTED, 'Received message compressed with unsupported encoding "br"', 'BAD_REQUEST'],
    ['a status grpc-js may add later', status.DATA_LOSS, 'something new', 'INTERNAL']
  ])("grpc-js's own status for %s (%i: %s) → %s, its words kept as the detail", (_name, code, details, expected) => {
    const se = libraryStatusError({ code, details })
    expect(se?.code).toBe(expected)
    expect(se?.detail).toBe(`(${details})`)
  })

  it('leaves OK and the statuses the door wrote itself alone', () => {
    expect(libraryStatusError({ code: status.OK, details: 'OK' })).toBeUndefined()
    expect(libraryStatusError(statusOf(new ServiceError('TOO_MANY_ITEMS')))).toBeUndefined()
    // A code-like prefix that is not in the registry is not the door's.
    expect(libraryStatusError({ code: status.INTERNAL, details: 'NOT_A_CODE: hello' })?.code).toBe('INTERNAL')
  })
})

describe('echoed', () => {
  it('repeats a short text whole and a long one cut, with its length', () => {
    expect(echoed('abc', 5)).toBe('abc')
    expect(echoed('abcdefgh', 5)).toBe('abcde… (8 characters)')
  })

  it('never cuts a surrogate pair in half (a lone surrogate is refused by strict JSON readers)', () => {
    const text = `${'a'.repeat(4)}😀${'b'.repeat(10)}`
    expect(echoed(text, 5)).toBe('aaaa… (16 characters)')
    expect(echoed(text, 6)).toBe('aaaa😀… (16 characters)')
  })
})
