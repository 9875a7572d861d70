import { describe, expect, it } from 'vitest'
import { MAX_JSON_DEPTH, MAX_JSON_VALUES, jsonExcess } from '../../src/http/json-cost.js'
import { packJsonTensors, parseInferenceHeader } from '../../src/http/v2-binary.js'

/**
 * The V2 infer body's JSON depth bound, without a server: nesting is counted by a scan before
 * JSON.parse, so a body of brackets costs a scan and never a parse or a recursive walk.
 */

const bytes = (text: string): Buffer => Buffer.from(text, 'utf8')
const depthAt = (text: string, limit = 3): number =>
  jsonExcess(bytes(text), Buffer.byteLength(text), { depth: limit, values: Infinity })?.at ?? -1

describe('jsonExcess: depth', () => {
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
    const limits = { depth: 3, values: Infinity }
    expect(jsonExcess(body, 3, limits)).toBeUndefined()
    expect(jsonExcess(body, body.byteLength, limits)).toEqual({ limit: 'depth', at: 6 })
  })
})

describe('jsonExcess: values', () => {
  const valuesAt = (text: string, values: number): number =>
    jsonExcess(bytes(text), Buffer.byteLength(text), { depth: 32, values })?.at ?? -1

  it('counts commas, opening brackets and braces, and strings, outside strings', () => {
    // An array or object counts 16, a comma 1.
    expect(valuesAt('[1,2,3]', 18)).toBe(-1)
    expect(valuesAt('[1,2,3,4]', 18)).toBe(6)
    expect(valuesAt('[[0],[0]]', 49)).toBe(-1)
    expect(valuesAt('[[0],[0]]', 48)).toBe(5)
    expect(valuesAt('{"a":"x,y,z,[,{:","b":[1]}', 100)).toBe(-1)
    // A string counts once more than a number; an object key 8 more: a million distinct keys in one object took JSON.parse 1.9 s.
    expect(valuesAt('["a","b"]', 19)).toBe(-1)
    expect(valuesAt('["a","b"]', 18)).toBe(5)
    expect(valuesAt('{"a":1}', 25)).toBe(-1)
    expect(valuesAt('{"a":1}', 23)).toBe(4)
    expect(valuesAt('{"a":1,"b":2}', 35)).toBe(-1)
    expect(valuesAt('{"a":1,"b":2}', 34)).toBe(10)
  })

  it('refuses 3 M base64 strings, 11 M numbers or 500,000 nested arrays before parsing (they froze the event loop 0.4–9 s), and passes six images of JSON numbers, flat or nested', () => {
    const refused = (body: string): string => {
      try {
        const b = bytes(body)
        parseInferenceHeader(b, b.byteLength, false)
      } catch (err) {
        return (err as Error).message
      }
      return 'parsed'
    }
    const header = (datatype: string, data: string): string =>
      `{"inputs":[{"name":"input","datatype":"${datatype}","shape":[1],"data":[${data}]}]}`
    for (const body of [
      header('BYTES', Array(3_000_000).fill('"AAAA"').join(',')),
      // Strings count twice: 600,000 short ones are over the limit, as 1,200,000 numbers are.
      header('BYTES', Array(600_000).fill('"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"').join(',')),
      header('FP32', Array(11_000_000).fill('0').join(',')),
      header('FP32', Array(4_000_000).fill('[0]').join(',')),
      // Regression: 500,000 one-element arrays (2 MB) counted 1 M values and passed; parsed, they held the server's event loop 0.4–0.8 s.
      header('FP32', Array(500_000).fill('[0]').join(',')),
      header('FP32', Array(255_000).fill('[[[0]]]').join(',')),
      header('FP32', Array(500_000).fill('{}').join(',')),
      `{"parameters":{${Array.from({ length: 200_000 }, (_, i) => `"k${i}":1`).join(',')}},"inputs":[]}`
    ]) {
      expect(refused(body)).toMatch(`more than ${MAX_JSON_VALUES} values`)
    }
    expect(
      refused(
        header(
          'FP32',
          Array(6 * 3 * 224 * 224)
            .fill('0.5')
            .join(',')
        )
      )
    ).toBe('parsed')
    // The same six images nested by their shape [6, 3, 224, 224]: 4,057 arrays.
    const row = `[${Array(224).fill('0.5').join(',')}]`
    const image = `[${Array(3)
      .fill(`[${Array(224).fill(row).join(',')}]`)
      .join(',')}]`
    expect(refused(header('FP32', Array(6).fill(image).join(',')))).toBe('parsed')
  })
})

describe('parseInferenceHeader', () => {
  it('refuses 10,000 levels of nesting as BAD_REQUEST without parsing them', () => {
    const body = bytes(`{"inputs":[{"data":${'['.repeat(10_000)}1${']'.repeat(10_000)}}]}`)
    expect(() => parseInferenceHeader(body, body.byteLength, false)).toThrow(
      expect.objectContaining({ code: 'BAD_REQUEST', message: expect.stringMatching(`deeper than ${MAX_JSON_DEPTH} levels`) as unknown })
    )
  })

  it('still reads a header whose tensor data nests four levels', () => {
    const header = { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 1, 1, 2], data: [[[[0.5, 1]]]] }] }
    const b = bytes(JSON.stringify(header))
    expect(parseInferenceHeader(b, b.byteLength, false)).toEqual(header)
  })
})

describe('packJsonTensors', () => {
  it('packs FP32 and UINT8 data, flat or nested, row-major, as the tensor bytes will hold them', () => {
    const header = {
      inputs: [
        {
          name: 'a',
          datatype: 'FP32',
          shape: [1, 2, 2],
          data: [
            [
              [0.1, 2],
              [3, -4]
            ]
          ]
        },
        { name: 'b', datatype: 'UINT8', shape: [4], data: [0, 1, 254, 255] }
      ]
    }
    const packed = packJsonTensors(header)
    expect(packed.map((p) => p.constructor.name)).toEqual(['Float32Array', 'Uint8Array'])
    expect(header.inputs[0]!.data).toEqual(new Float32Array([0.1, 2, 3, -4]))
    expect(header.inputs[1]!.data).toEqual(new Uint8Array([0, 1, 254, 255]))
  })

  it('leaves data it cannot pack as it is, for the route to name what is wrong', () => {
    const inputs = [
      { name: 'a', datatype: 'UINT8', shape: [2], data: [1, 256] },
      { name: 'b', datatype: 'UINT8', shape: [2], data: [1, 2.5] },
      { name: 'c', datatype: 'FP32', shape: [2], data: [1, '2'] },
      { name: 'd', datatype: 'FP32', shape: [2], data: [[1], null] },
      { name: 'e', datatype: 'BYTES', shape: [1], data: ['AAAA'] },
      { name: 'f', datatype: 'INT64', shape: [1], data: [1] },
      { name: 'g', datatype: 'FP32', shape: [1] }
    ]
    const before = structuredClone(inputs)
    expect(packJsonTensors({ inputs })).toEqual([])
    expect(inputs).toEqual(before)
    expect(packJsonTensors({ inputs: 'none' })).toEqual([])
    expect(packJsonTensors(null)).toEqual([])
  })
})
