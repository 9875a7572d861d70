import { describe, expect, it } from 'vitest'
import { HeaderParsePool } from '../../src/http/header-parse-pool.js'
import { INLINE_PARSE_BYTES } from '../../src/http/parse-lane.js'

/**
 * The worker threads that parse large V2 inference headers (src/http/header-parse-pool.ts): real
 * workers, real JSON. Only a worker packs FP32 data into a Float32Array, so the type of what comes
 * back says where the parse ran.
 */

function body(values: number): Buffer {
  const data = Array.from({ length: values }, (_, i) => i / 8)
  return Buffer.from(JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [values], data }] }))
}

function parse(pool: HeaderParsePool, bytes: Buffer, withLength = false): Promise<unknown> {
  return pool.parse(bytes, bytes.byteLength, withLength)
}

const dataOf = (header: unknown): unknown => (header as { inputs: Array<{ data: unknown }> }).inputs[0]!.data

describe('HeaderParsePool', () => {
  it('parses a large header in a worker, packed; a small one in place; many at once, each its own', async () => {
    const pool = new HeaderParsePool(2)
    try {
      const small = body(10)
      expect(small.byteLength).toBeLessThanOrEqual(INLINE_PARSE_BYTES)
      expect(dataOf(await parse(pool, small))).toEqual(Array.from({ length: 10 }, (_, i) => i / 8))

      const sizes = [5_000, 20_000, 40_000, 7_000, 60_000, 10_000]
      const headers = await Promise.all(sizes.map((n) => parse(pool, body(n))))
      headers.forEach((header, k) => {
        const data = dataOf(header)
        expect(data).toBeInstanceOf(Float32Array)
        expect((data as Float32Array).length).toBe(sizes[k])
        expect((data as Float32Array)[sizes[k]! - 1]).toBe((sizes[k]! - 1) / 8)
      })
    } finally {
      await pool.close()
    }
  })

  it("a worker's refusals are the same errors as in place: invalid JSON, past the cost limits", async () => {
    const pool = new HeaderParsePool(1)
    try {
      const truncated = body(5_000).subarray(0, -3)
      await expect(parse(pool, Buffer.from(truncated), true)).rejects.toMatchObject({
        code: 'BAD_REQUEST',
        message: expect.stringContaining(
          `The first ${truncated.byteLength} bytes (Inference-Header-Content-Length) are not valid JSON.`
        ) as string
      })
      const deep = Buffer.from(`{"inputs":[{"data":${'['.repeat(40_000)}1${']'.repeat(40_000)}}]}`)
      await expect(parse(pool, deep)).rejects.toMatchObject({
        code: 'BAD_REQUEST',
        message: expect.stringMatching(/nests deeper than/) as string
      })
      // The worker is still there for the next one.
      expect(dataOf(await parse(pool, body(5_000)))).toBeInstanceOf(Float32Array)
    } finally {
      await pool.close()
    }
  })

  it('close refuses what is still queued, and later headers are parsed in place', async () => {
    const pool = new HeaderParsePool(1)
    const running = parse(pool, body(200_000))
    const queued = parse(pool, body(200_000))
    const ends = Promise.allSettled([running, queued])
    await pool.close()
    const [first, second] = await ends
    expect(second).toMatchObject({ status: 'rejected', reason: { code: 'SHUTTING_DOWN' } })
    // The one a worker had is refused too, or answered if it finished first: it never hangs (it did).
    expect(first.status === 'fulfilled' || (first.reason as { code?: string }).code === 'SHUTTING_DOWN').toBe(true)
    expect(dataOf(await parse(pool, body(5_000)))).toBeInstanceOf(Array)
  })
})
