/**
 * IEEE 754 binary16 ("half") conversions, bit-exact: float32 → float16 rounds to nearest, ties to
 * even, as a GPU's conversion instruction and numpy's astype(float16) do. Node 20 has no
 * Float16Array, so halves travel as their bit patterns in a Uint16Array.
 */

const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)

/** The binary16 bits of the binary32 bits `x` (see float32ToFloat16Bits). */
function halfBitsOfSingleBits(x: number): number {
  const sign = (x >>> 16) & 0x8000
  const exponent = (x >>> 23) & 0xff
  const mantissa = x & 0x7fffff
  if (exponent === 0xff) {
    // Infinity stays infinity; a NaN keeps its top payload bits and is made quiet, so it stays a NaN.
    return mantissa === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mantissa >>> 13)
  }
  // The exponent rebiased from 127 to 15.
  const e = exponent - 112
  if (e >= 0x1f) return sign | 0x7c00 // beyond 65520 after rounding: overflow to infinity
  if (e <= 0) {
    // A half subnormal (or zero): units of 2^-24. Below 2^-25 everything rounds to ±0.
    if (e < -10) return sign
    const significand = mantissa | 0x800000
    const shift = 14 - e
    const half = significand >>> shift
    const rest = significand & ((1 << shift) - 1)
    const halfway = 1 << (shift - 1)
    // A carry out of the mantissa yields the smallest normal half, 0x0400: the right encoding.
    return sign | (rest > halfway || (rest === halfway && (half & 1) === 1) ? half + 1 : half)
  }
  const half = (e << 10) | (mantissa >>> 13)
  const rest = mantissa & 0x1fff
  // A carry can ripple into the exponent, and from 0x7bff (65504) to 0x7c00 (infinity): both correct.
  return sign | (rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1) ? half + 1 : half)
}

/** The binary16 bit pattern nearest to `value` once it is rounded to float32 (ties to even). */
export function float32ToFloat16Bits(value: number): number {
  f32[0] = value
  return halfBitsOfSingleBits(u32[0]!)
}

/** The value of a binary16 bit pattern (exact: every half is a float32 and a double). */
export function float16BitsToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1
  const exponent = (bits >>> 10) & 0x1f
  const mantissa = bits & 0x3ff
  if (exponent === 0) return sign * mantissa * 2 ** -24
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15)
}

/** Element-wise float32ToFloat16Bits, into a fresh array. */
export function float32ArrayToFloat16Bits(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length)
  const halves = new Uint16Array(values.length)
  for (let i = 0; i < values.length; i++) halves[i] = halfBitsOfSingleBits(bits[i]!)
  return halves
}
