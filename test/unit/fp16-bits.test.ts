import { describe, expect, it } from 'vitest'
import { float16BitsToNumber, float32ArrayToFloat16Bits, float32ToFloat16Bits } from '../../src/model-tools/fp16.js'

/** The binary16 conversions the FP16 variant stores its weights with: bit-exact against IEEE 754. */

describe('float32 → float16 bits', () => {
  it('rounds edge values as IEEE 754 does (ties to even, subnormals, overflow to infinity, NaN)', () => {
    const cases: Array<[number, number]> = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [1 + 2 ** -11, 0x3c00], // halfway between 1 and the next half: ties to the even 1
      [1 + 3 * 2 ** -11, 0x3c02], // halfway between 0x3c01 and 0x3c02: ties to the even 0x3c02
      [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above halfway rounds up
      [65504, 0x7bff], // the largest half
      [65519.99, 0x7bff],
      [65520, 0x7c00], // halfway to 2^16 rounds to even, which is infinity
      [1e6, 0x7c00],
      [-1e6, 0xfc00],
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
      [2 ** -14, 0x0400], // the smallest normal
      [2 ** -14 - 2 ** -24, 0x03ff], // the largest subnormal
      [2 ** -24, 0x0001], // the smallest subnormal
      [2 ** -25, 0x0000], // halfway to the smallest subnormal: ties to the even 0
      [1.5 * 2 ** -25, 0x0001],
      [-3 * 2 ** -25, 0x8002], // 1.5 subnormal units: ties to the even 2
      [1e-10, 0x0000],
      [2 ** -14 - 2 ** -25, 0x0400] // halfway between the largest subnormal and the smallest normal: carries into the exponent
    ]
    for (const [value, bits] of cases) expect(float32ToFloat16Bits(value).toString(16), `${value}`).toBe(bits.toString(16))
    expect(Number.isNaN(float16BitsToNumber(float32ToFloat16Bits(NaN)))).toBe(true)
    // A NaN whose payload sits only in the bits a half drops must stay NaN, not become infinity.
    const tinyPayloadNaN = new Float32Array(new Uint32Array([0x7f800001]).buffer)[0]!
    expect(Number.isNaN(float16BitsToNumber(float32ToFloat16Bits(tinyPayloadNaN)))).toBe(true)
  })

  it('maps every half to itself and every midpoint between neighbours to the even one', () => {
    for (let bits = 0; bits < 0x10000; bits++) {
      const value = float16BitsToNumber(bits)
      if (Number.isNaN(value)) continue
      expect(float32ToFloat16Bits(value)).toBe(bits)
    }
    for (let bits = 0; bits < 0x7bff; bits++) {
      const low = float16BitsToNumber(bits)
      const high = float16BitsToNumber(bits + 1)
      const middle = (low + high) / 2 // exact in float32: halves have 11 significant bits
      const even = bits % 2 === 0 ? bits : bits + 1
      if (float32ToFloat16Bits(middle) !== even)
        expect.fail(`midpoint above 0x${bits.toString(16)} rounded to 0x${float32ToFloat16Bits(middle).toString(16)}`)
    }
    const values = Float32Array.from([0.1, -0.1, 3.14159, 70000, 2 ** -20])
    expect([...float32ArrayToFloat16Bits(values)]).toEqual([...values].map(float32ToFloat16Bits))
  })
})
