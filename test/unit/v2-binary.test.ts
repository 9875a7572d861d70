import { describe, expect, it } from 'vitest'
import { MAX_JSON_DEPTH, jsonTooDeepAt } from '../../src/http/json-depth.js'
import { readInferenceBody } from '../../src/http/v2-binary.js'

/**
 * The V2 infer body's JSON depth bound, without a server: nesting is counted by a scan before
 * JSON.parse, so a body of brackets costs a scan and never a parse or a recursive walk.
 */

const bytes = (text: string): Buffer => Buffer.from(text, 'utf8')
const depthAt = (text: string, limit = 3): number => jsonTooDeepAt(bytes(text), Buffer.byteLength(text), limit)

describe('jsonTooDeepAt', () => {
  it('finds the bracket or brace that opens one level too many', () => {
    expect(depthAt('[[[1]]]')).toBe(-1)
    expect(depthAt('[[[[1]]]]')).toBe(3)
    expect(depthAt('{"a":[{"b":1}]}')).toBe(-1)
    expect(depthAt('{"a":[{"b":[1]}]}')).toBe(11)
    expect(depthAt('[[[]],[[]],[[]]]')).toBe(-1)
  })

  it('does not count brackets inside strings, escaped quotes included', () => {
    expect(depthAt('["[[[[[[", "\\"[[[[", "\\\\"]')).toBe(-1)
    expect(depthAt('["\\\\", [[[1]]]]')).toBe(9)
    expect(depthAt('["é[[[[", [1]]')).toBe(-1)
  })

  it('stops at the given end (the binary tensors after the header are not JSON)', () => {
    const body = Buffer.concat([bytes('[1]'), Buffer.from('[[[[[[[[')])
    expect(jsonTooDeepAt(body, 3, 3)).toBe(-1)
    expect(jsonTooDeepAt(body, body.byteLength, 3)).toBe(6)
  })
})

describe('readInferenceBody', () => {
  it('refuses 10,000 levels of nesting as BAD_REQUEST without parsing them', () => {
    const body = bytes(`{"inputs":[{"data":${'['.repeat(10_000)}1${']'.repeat(10_000)}}]}`)
    expect(() => readInferenceBody(body, undefined)).toThrow(
      expect.objectContaining({ code: 'BAD_REQUEST', message: expect.stringMatching(`deeper than ${MAX_JSON_DEPTH} levels`) as unknown })
    )
  })

  it('still reads a header whose tensor data nests four levels', () => {
    const header = { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 1, 1, 2], data: [[[[0.5, 1]]]] }] }
    expect(readInferenceBody(bytes(JSON.stringify(header)), undefined).header).toEqual(header)
  })
})
