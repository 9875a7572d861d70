import sharp, { type Metadata, type Sharp, type SharpOptions } from 'sharp'
import { ServiceError } from '../errors.js'
import type { PreprocessConfig } from '../repository/model-config.js'

/**
 * Encoded image → the crop×crop×3 RGB pixels a model's batcher receives (decode on the libuv
 * threadpool through sharp), and those pixels → the model's float32 CHW tensor (in the inference
 * worker). The geometry is torchvision's `Resize(resize) + CenterCrop(crop)` on
 * `PIL.Image.open(...).convert('RGB')`, reproduced to within a fraction of a grey level
 * (test/preprocess-parity.test.ts):
 *
 * - shorter side → `resize`, longer side → trunc(resize × long / short), resized with `fit: 'fill'`
 *   and a linear (triangle) kernel that widens with the scale factor, as PIL's antialiased
 *   bilinear does; no shrink-on-load, which would move pixels (MEASUREMENTS.md);
 * - centre crop at round-half-to-even((size − crop) / 2), Python's round().
 *
 * Colour: EXIF orientation is applied first; embedded ICC profiles and CMYK are converted to sRGB
 * (PIL ignores profiles: the one deliberate difference, and the right one for a server); greyscale
 * becomes three equal channels; 16-bit becomes 8-bit. Alpha is dropped, not composited, as PIL's
 * convert('RGB') does: what a transparent pixel stores is what the model sees. Only the first
 * frame of an animation or page of a multi-page file is decoded.
 */

/** Formats decoded at all, checked from the header before any pixel is; `heif` only with AV1 (AVIF). */
const ACCEPTED_FORMATS: ReadonlySet<string> = new Set(['jpeg', 'png', 'webp', 'gif', 'tiff', 'heif'])

/** A longer elongation would make the resized long side huge (10000×10 → 256000×256). */
export const MAX_ASPECT_RATIO = 32

/**
 * Image formats sharp does not recognise (or is not built to decode) but a client may well send:
 * answered as UNSUPPORTED_IMAGE_FORMAT, naming the format, rather than NOT_AN_IMAGE.
 */
const UNACCEPTED_SIGNATURES: ReadonlyArray<{ readonly name: string; readonly magic: readonly number[] }> = [
  { name: 'PDF', magic: [0x25, 0x50, 0x44, 0x46, 0x2d] }, // %PDF-
  { name: 'BMP', magic: [0x42, 0x4d] }, // BM
  { name: 'Photoshop', magic: [0x38, 0x42, 0x50, 0x53] }, // 8BPS
  { name: 'JPEG 2000', magic: [0x00, 0x00, 0x00, 0x0c, 0x6a, 0x50, 0x20, 0x20] },
  { name: 'JPEG 2000', magic: [0xff, 0x4f, 0xff, 0x51] },
  { name: 'JPEG XL', magic: [0xff, 0x0a] },
  { name: 'JPEG XL', magic: [0x00, 0x00, 0x00, 0x0c, 0x4a, 0x58, 0x4c, 0x20] }
]

// libvips' operation cache keys on the input buffer and would keep decoded images of past requests alive.
sharp.cache(false)

/** Python's round(): halves go to the even neighbour (torchvision's CenterCrop offset). */
function roundHalfToEven(x: number): number {
  const floor = Math.floor(x)
  const fraction = x - floor
  if (fraction !== 0.5) return Math.round(x)
  return floor % 2 === 0 ? floor : floor + 1
}

function sniffUnaccepted(bytes: Uint8Array): string | undefined {
  for (const { name, magic } of UNACCEPTED_SIGNATURES) {
    if (bytes.length >= magic.length && magic.every((b, i) => bytes[i] === b)) return name
  }
  return undefined
}

/** Every error out of sharp becomes a ServiceError; the original stays as `cause`. */
function mapSharpError(err: unknown, bytes: Uint8Array): ServiceError {
  if (err instanceof ServiceError) return err
  const message = err instanceof Error ? err.message : String(err)
  if (/exceeds pixel limit/i.test(message)) return new ServiceError('IMAGE_TOO_LARGE', undefined, { cause: err })
  if (/unsupported image format/i.test(message)) {
    const format = sniffUnaccepted(bytes)
    return format === undefined
      ? new ServiceError('NOT_AN_IMAGE', undefined, { cause: err })
      : new ServiceError('UNSUPPORTED_IMAGE_FORMAT', `(${format})`, { cause: err })
  }
  if (/buffer is empty/i.test(message)) return new ServiceError('EMPTY_BODY', undefined, { cause: err })
  // Whatever else the decoder says (truncation, bad Huffman data, libpng read errors, bad IFDs) means
  // these bytes cannot be decoded.
  return new ServiceError('CORRUPT_IMAGE', undefined, { cause: err })
}

/** The resized size torchvision's Resize(size) gives (torchvision 0.14 `_compute_resized_output_size`). */
export function resizedSize(width: number, height: number, resize: number): { width: number; height: number } {
  const short = Math.min(width, height)
  const long = Math.max(width, height)
  // Same double arithmetic and truncation as Python's int(size * long / short).
  const newLong = Math.trunc((resize * long) / short)
  return width <= height ? { width: resize, height: newLong } : { width: newLong, height: resize }
}

/** The top-left corner of torchvision's CenterCrop(crop) on an image of the given size. */
export function centreCropOffset(width: number, height: number, crop: number): { left: number; top: number } {
  return { left: roundHalfToEven((width - crop) / 2), top: roundHalfToEven((height - crop) / 2) }
}

export class ImagePreprocessor {
  private readonly resize: number
  private readonly crop: number
  private readonly maxInputPixels: number
  private readonly inputOptions: SharpOptions

  constructor(config: PreprocessConfig, limits: { maxInputPixels: number }) {
    if (config.crop > config.resize) throw new Error(`preprocess.crop (${config.crop}) is larger than preprocess.resize (${config.resize})`)
    this.resize = config.resize
    this.crop = config.crop
    this.maxInputPixels = limits.maxInputPixels
    this.inputOptions = {
      limitInputPixels: limits.maxInputPixels,
      // Truncated JPEGs and PNGs would otherwise decode with a grey or black tail. 'truncated'
      // rather than sharp's stricter default 'warning': benign libjpeg warnings (extraneous bytes
      // before a marker, common from cameras) do not stop PIL, and should not stop us either.
      failOn: 'truncated',
      autoOrient: true
    }
  }

  /**
   * Decodes one encoded image into a fresh crop×crop×3 RGB (HWC, uint8) buffer that the caller owns.
   * Rejects with a ServiceError only: EMPTY_BODY, NOT_AN_IMAGE, UNSUPPORTED_IMAGE_FORMAT,
   * CORRUPT_IMAGE, IMAGE_TOO_LARGE or IMAGE_ASPECT_RATIO.
   */
  async decode(bytes: Uint8Array): Promise<Buffer> {
    if (bytes.length === 0) throw new ServiceError('EMPTY_BODY')
    let metadata: Metadata
    try {
      // Header only: the format, size and orientation are checked before any pixel is decoded.
      metadata = await sharp(bytes, this.inputOptions).metadata()
    } catch (err) {
      throw mapSharpError(err, bytes)
    }
    this.checkHeader(metadata)

    const { width, height } = metadata.autoOrient
    const resized = resizedSize(width, height, this.resize)
    const { left, top } = centreCropOffset(resized.width, resized.height, this.crop)
    try {
      const source = metadata.hasAlpha ? await this.decodeDroppingAlpha(bytes) : sharp(bytes, this.inputOptions)
      const { data, info } = await source
        .resize({ width: resized.width, height: resized.height, fit: 'fill', kernel: 'linear', fastShrinkOnLoad: false })
        .extract({ left, top, width: this.crop, height: this.crop })
        .removeAlpha()
        .toColourspace('srgb')
        .raw({ depth: 'uchar' })
        .toBuffer({ resolveWithObject: true })
      if (info.channels !== 3 || data.length !== this.crop * this.crop * 3) {
        throw new ServiceError('INTERNAL', `The decoder gave ${info.width}×${info.height}×${info.channels}, not ${this.crop}×${this.crop}×3.`)
      }
      return data
    } catch (err) {
      throw mapSharpError(err, bytes)
    }
  }

  private checkHeader(metadata: Metadata): void {
    const { format } = metadata
    if (!ACCEPTED_FORMATS.has(format) || (format === 'heif' && metadata.compression !== 'av1')) {
      const name = format === 'heif' ? `HEIF/${metadata.compression ?? 'unknown'}` : format.toUpperCase()
      throw new ServiceError('UNSUPPORTED_IMAGE_FORMAT', `(${name})`)
    }
    const { width, height } = metadata
    if (!(width > 0 && height > 0)) throw new ServiceError('CORRUPT_IMAGE', 'The header declares no size.')
    // sharp checks this too; checked here so that no decoder's own check is relied upon.
    if (width * height > this.maxInputPixels) {
      throw new ServiceError('IMAGE_TOO_LARGE', `(${width}×${height}; at most ${this.maxInputPixels} pixels)`)
    }
    if (Math.max(width, height) > MAX_ASPECT_RATIO * Math.min(width, height)) {
      throw new ServiceError('IMAGE_ASPECT_RATIO', `(${width}×${height})`)
    }
  }

  /**
   * sharp resizes images with alpha premultiplied and drops alpha only at the end, which turns
   * transparent pixels black. PIL's convert('RGB') drops alpha first and keeps the stored colour,
   * so such images are decoded to RGB at full size first: one extra full-size copy, for them only.
   */
  private async decodeDroppingAlpha(bytes: Uint8Array): Promise<Sharp> {
    const { data, info } = await sharp(bytes, this.inputOptions)
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true })
    return sharp(data, { raw: { width: info.width, height: info.height, channels: info.channels } })
  }
}

/**
 * Returns a function writing one image's crop×crop×3 RGB pixels as float32 CHW, in the model's
 * colour order, at `target[offset … offset + 3·crop·crop)`:  (p · scale − mean[c]) / std[c].
 * It runs on the inference worker's hot path for every image of every batch, so it allocates
 * nothing per call and looks each value up in a 3×256 table of p · a[c] + b[c] (a = scale / std,
 * b = −mean / std), computed once: the same float32 values as the arithmetic, about a quarter faster.
 */
export function createNormalizer(config: PreprocessConfig): (pixels: Uint8Array, target: Float32Array, offset: number) => void {
  const plane = config.crop * config.crop
  // Model channel c reads source channel sc (R = 0, G = 1, B = 2); its 256 values start at table[c * 256].
  const [s0, s1, s2] = config.colorOrder === 'BGR' ? [2, 1, 0] : [0, 1, 2]
  const table = new Float32Array(3 * 256)
  for (let c = 0; c < 3; c++) {
    const a = config.scale / config.std[c]!
    const b = -config.mean[c]! / config.std[c]!
    for (let p = 0; p < 256; p++) table[c * 256 + p] = p * a + b
  }
  return (pixels, target, offset) => {
    if (pixels.length < plane * 3) throw new RangeError(`expected ${plane * 3} pixel bytes, got ${pixels.length}`)
    if (offset < 0 || offset + plane * 3 > target.length) throw new RangeError(`target too small for an image at offset ${offset}`)
    const o1 = offset + plane
    const o2 = o1 + plane
    for (let i = 0, p = 0; i < plane; i++, p += 3) {
      target[offset + i] = table[pixels[p + s0]!]!
      target[o1 + i] = table[256 + pixels[p + s1]!]!
      target[o2 + i] = table[512 + pixels[p + s2]!]!
    }
  }
}
