/**
 * What an embedded ICC profile asks of lcms, read from its tag table before the decode converts
 * the image to sRGB with it. lcms builds the transform while sharp builds the pipeline, outside the
 * decode timeout, and a profile's float transform (D2Bx/B2Dx, multi-process elements) may chain any
 * number of stages over one shared matrix: 440 bytes of profile took 9 s, 672 bytes 36 s, in PNG,
 * JPEG, WebP and TIFF alike. Photos carry sRGB, Display P3, Adobe RGB or a printer's CMYK profile:
 * matrix/TRC or lookup-table profiles of a few kilobytes to a few hundred, with a few dozen tags.
 */

/** Bytes a profile may have. */
export const MAX_ICC_BYTES = 1 << 20
/** Tags a profile may have. */
export const MAX_ICC_TAGS = 100

const HEADER_BYTES = 128
/** Tags lcms reads as float transforms (multi-process element chains): D2B0–D2B3, B2D0–B2D3. */
const FLOAT_TRANSFORM_TAGS = /^(D2B|B2D)[0-3]$/

/** Why the profile costs more to apply than the server allows, or undefined. */
export function iccProfileRefusal(icc: Uint8Array): string | undefined {
  if (icc.byteLength > MAX_ICC_BYTES) return `an ICC profile of more than ${MAX_ICC_BYTES} bytes`
  if (icc.byteLength < HEADER_BYTES + 4) return undefined
  const view = new DataView(icc.buffer, icc.byteOffset, icc.byteLength)
  const count = view.getUint32(HEADER_BYTES)
  if (count > MAX_ICC_TAGS) return `an ICC profile of more than ${MAX_ICC_TAGS} tags`
  const text = (at: number): string => String.fromCharCode(icc[at]!, icc[at + 1]!, icc[at + 2]!, icc[at + 3]!)
  for (let i = 0; i < count; i++) {
    const entry = HEADER_BYTES + 4 + i * 12
    if (entry + 12 > icc.byteLength) break
    const offset = view.getUint32(entry + 4)
    if (FLOAT_TRANSFORM_TAGS.test(text(entry)) || (offset + 4 <= icc.byteLength && text(offset) === 'mpet')) {
      return 'an ICC profile with float transforms (multi-process elements)'
    }
  }
  return undefined
}
