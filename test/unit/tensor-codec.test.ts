import { describe, expect, it } from 'vitest'
import { firstNonFiniteFloat32, float32Text, rawOutputBytes, splitLengthPrefixed } from '../../src/open-inference/tensor-codec.js'
import { lengthPrefixed, splitLengthPrefixed as readLengthPrefixed, tensorBytes } from '../helpers/v2-bytes.js'

/** Tensor bytes as the protocol packs them, checked against the tests' own writer and reader (test/helpers/v2-bytes.ts). */

describe('BYTES in raw form', () => {
  it('splits length-prefixed elements, empty ones included', () => {
    const raw = lengthPrefixed(Buffer.from('ab'), Buffer.alloc(0), Buffer.from('xyz'))
    expect(splitLengthPrefixed(raw, 3).map((e) => Buffer.from(e).toString())).toEqual(['ab', '', 'xyz'])
  })

  it.each([
    ['a length cut short', Buffer.from([2, 0, 0]), 1, /ends inside an element's 4-byte length/],
    ['an element longer than what remains', lengthPrefixed(Buffer.from('abc')).subarray(0, 6), 1, /claims 3 bytes; only 2 remain/],
    ['more elements than the shape', lengthPrefixed(Buffer.from('a'), Buffer.from('b')), 1, /more elements than its shape's 1/],
    ['fewer elements than the shape', lengthPrefixed(Buffer.from('a')), 2, /holds 1 elements; its shape says 2/]
  ])('refuses %s', (_name, raw, count, message) => {
    expect(() => splitLengthPrefixed(raw, count)).toThrow(message)
  })

  it('reads from any byte offset (a slice of a larger body)', () => {
    const body = Buffer.concat([Buffer.from('xx'), lengthPrefixed(Buffer.from('hi'))])
    expect(Buffer.from(splitLengthPrefixed(body.subarray(2), 1)[0]!).toString()).toBe('hi')
  })
})

describe('rawOutputBytes', () => {
  it('FP32: the floats little-endian, without a copy', () => {
    const data = Float32Array.from([1.5, -2, 3])
    const raw = rawOutputBytes({ name: 'logits', datatype: 'FP32', shape: [1, 3], data })
    expect(Buffer.from(raw).equals(tensorBytes(data))).toBe(true)
    expect(raw.buffer).toBe(data.buffer)
  })

  it('BYTES: each UTF-8 string length-prefixed', () => {
    const raw = Buffer.from(rawOutputBytes({ name: 'logits', datatype: 'BYTES', shape: [1, 2], data: ['0.5:3:tabby cat', 'é'] }))
    expect(readLengthPrefixed(raw)).toEqual(['0.5:3:tabby cat', 'é'])
  })
})

describe('firstNonFiniteFloat32', () => {
  it('finds the first NaN or ±Infinity; -1 when all are finite, largest and subnormals included', () => {
    expect(firstNonFiniteFloat32(tensorBytes(Float32Array.from([0, -0, 3.4e38, -3.4e38, 1e-45])))).toBe(-1)
    expect(firstNonFiniteFloat32(tensorBytes(Float32Array.from([1, 2, Infinity, NaN])))).toBe(2)
    expect(firstNonFiniteFloat32(tensorBytes(Float32Array.from([1, -Infinity])))).toBe(1)
  })

  it('reads data that starts at an odd offset', () => {
    const body = Buffer.concat([Buffer.from([7]), tensorBytes(Float32Array.from([1, NaN]))])
    expect(firstNonFiniteFloat32(body.subarray(1))).toBe(1)
  })
})

describe('float32Text', () => {
  it('the shortest decimal that reads back as the same float32', () => {
    for (const value of [0.1, 1 / 3, 123.456, -7.25e-8, 3.4028234663852886e38]) {
      const f = Math.fround(value)
      const text = float32Text(f)
      expect(Math.fround(Number(text)), text).toBe(f)
      expect(text.replace(/^-|e.*$|\./g, '').length, text).toBeLessThanOrEqual(9)
    }
    expect(float32Text(Math.fround(0.1))).toBe('0.1')
  })
})
