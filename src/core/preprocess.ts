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
export function resizedSize(width: number, height: number, resize: number): Size {
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

interface Size {
  readonly width: number
  readonly height: number
}

/**
 * The source pixels (in an image with a one-pixel border) that output pixels [outStart, outStart +
 * count) of a bilinear enlargement by `scale` read: PIL samples output x at (x + 0.5) / scale − 0.5,
 * +1 for the border, and reads the pixel there and the next. One more on each side for safety.
 */
function paddedSourceWindow(outStart: number, count: number, scale: number, paddedSize: number): { start: number; length: number } {
  const first = Math.max(0, Math.floor((outStart + 0.5) / scale + 0.5) - 1)
  const last = Math.min(paddedSize - 1, Math.floor((outStart + count - 0.5) / scale + 0.5) + 2)
  return { start: first, length: last - first + 1 }
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
      const pixels =
        Math.min(width, height) < this.resize
          ? await this.enlarge(bytes, width, height, resized, left, top)
          : await this.reduce(bytes, metadata.hasAlpha, resized, left, top)
      if (pixels.length !== this.crop * this.crop * 3) {
        throw new ServiceError('INTERNAL', `The decoder gave ${pixels.length} bytes, not ${this.crop}×${this.crop}×3.`)
      }
      return pixels
    } catch (err) {
      throw mapSharpError(err, bytes)
    }
  }

  /**
   * Shrinking, the common case: one sharp pipeline. libvips' linear kernel widens with the shrink
   * factor as PIL's antialiased bilinear does, which lands within a fraction of a grey level of it.
   */
  private async reduce(bytes: Uint8Array, hasAlpha: boolean, resized: Size, left: number, top: number): Promise<Buffer> {
    const source = hasAlpha ? await this.decodeRgb(bytes, 0) : sharp(bytes, this.inputOptions)
    return source
      .resize({ width: resized.width, height: resized.height, fit: 'fill', kernel: 'linear', fastShrinkOnLoad: false })
      .extract({ left, top, width: this.crop, height: this.crop })
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer()
  }

  /**
   * Enlarging (shorter side below `resize`): libvips' resize samples enlargements half an output
   * pixel away from PIL (it maps output x to x / s − 0.5, PIL to (x + 0.5) / s − 0.5): a mean of
   * 10 and up to 108 grey levels off on a fine texture (grass.jpg). An affine transform with
   * PIL's offsets and the bilinear interpolator gives PIL's pixels give or take 1; a one-pixel
   * copied border stands in for PIL's clamping at the edges. Only the source window under the
   * crop is transformed, and the output is placed so that it starts at the crop: enlarging all of a
   * 1×32 image would materialise 770×8700 pixels (150 ms) for a 224×224 crop. libvips still sizes
   * the output from the whole window (at least 3 source pixels), so a 1×1 image yields 768×768 of
   * which the crop is kept (about 15 ms).
   */
  private async enlarge(bytes: Uint8Array, width: number, height: number, resized: Size, left: number, top: number): Promise<Buffer> {
    const scaleX = resized.width / width
    const scaleY = resized.height / height
    const columns = paddedSourceWindow(left, this.crop, scaleX, width + 2)
    const rows = paddedSourceWindow(top, this.crop, scaleY, height + 2)
    const padded = await this.decodeRgb(bytes, 1)
    const { data, info } = await padded
      .extract({ left: columns.start, top: rows.start, width: columns.length, height: rows.length })
      .affine([[scaleX, 0], [0, scaleY]], {
        // Output x' = x − left maps to padded source x = (x + 0.5) / s + 0.5, PIL's sampling point.
        idx: columns.start - 0.5,
        idy: rows.start - 0.5,
        odx: -0.5 - left,
        ody: -0.5 - top,
        interpolator: 'bilinear'
      })
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true })
    if (info.channels !== 3 || info.width < this.crop || info.height < this.crop) {
      throw new ServiceError('INTERNAL', `The enlarged window is ${info.width}×${info.height}×${info.channels}, smaller than the crop.`)
    }
    if (info.width === this.crop && info.height === this.crop) return data
    // libvips sizes the output from the window (ceil(window × scale)); the crop is its top-left corner.
    const rowBytes = this.crop * 3
    const out = Buffer.allocUnsafe(this.crop * rowBytes)
    for (let y = 0; y < this.crop; y++) data.copy(out, y * rowBytes, y * info.width * 3, y * info.width * 3 + rowBytes)
    return out
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
   * The oriented image as 8-bit RGB at full size, with `border` pixels copied out from each edge,
   * ready for a second pipeline. Alpha is dropped here, before any resampling, because sharp
   * resamples with alpha premultiplied and drops it only at the end, which would turn transparent
   * pixels black; PIL's convert('RGB') keeps their stored colour.
   */
  private async decodeRgb(bytes: Uint8Array, border: number): Promise<Sharp> {
    let image = sharp(bytes, this.inputOptions).removeAlpha().toColourspace('srgb')
    if (border > 0) image = image.extend({ top: border, bottom: border, left: border, right: border, extendWith: 'copy' })
    const { data, info } = await image.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true })
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
