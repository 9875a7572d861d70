import sharp, { type Metadata, type Sharp, type SharpOptions } from 'sharp'
import { abortCode, ServiceError } from '../errors.js'
import { collectGarbage } from '../collect-garbage.js'
import type { PreprocessConfig } from '../repository/model-config.js'
import type { AdmissionOptions, DecodeBudget, DecodePermit } from './decode-budget.js'
import { sniffImageFormat, type AcceptedFormat } from './image-sniff.js'
import { jpegStructureRefusal } from './jpeg-scans.js'
import { pngHeaderRefusal } from './png-chunks.js'
import { tiffStructureRefusal } from './tiff-ifds.js'
import { MAX_WEBP_CHUNKS, countWebpChunks } from './webp-chunks.js'
import { avifItemsRefusal } from './avif-items.js'
import { gifStructureRefusal } from './gif-frames.js'
import { iccProfileRefusal } from './icc-profile.js'

/**
 * Encoded image → the crop×crop×3 RGB pixels a model's batcher receives (decode on the libuv
 * threadpool through sharp); pixel-normalizer.ts turns those pixels into the model's float32 CHW
 * tensor in the inference worker. The geometry is torchvision's `Resize(resize) + CenterCrop(crop)` on
 * `PIL.Image.open(...).convert('RGB')`, reproduced to within a fraction of a grey level
 * (test/system/preprocess-parity.test.ts):
 *
 * - shorter side → `resize`, longer side → trunc(resize × long / short), resized with `fit: 'fill'`
 *   and a linear (triangle) kernel that widens with the scale factor, as PIL's antialiased
 *   bilinear does. A JPEG at least twice as large as needed is shrunk while it decodes (libjpeg's
 *   DCT scaling by 2, 4 or 8) as far as it goes (`preprocess.decode: "fast"`, the default: a
 *   4000×3000 JPEG decodes with about 15% less CPU); `"exact"` leaves at least a factor of 2 to the
 *   kernel (sharp's `fastShrinkOnLoad: false`), a few hundredths of a grey level closer to
 *   torchvision (parity and speed figures: docs/models.md);
 * - centre crop at round-half-to-even((size − crop) / 2), Python's round().
 *
 * Colour: EXIF orientation is applied first; embedded ICC profiles and CMYK are converted to sRGB
 * (PIL ignores profiles: the one deliberate difference, and the right one for a server); greyscale
 * becomes three equal channels; 16-bit becomes 8-bit. Alpha is dropped, not composited, as PIL's
 * convert('RGB') does: what a transparent pixel stores is what the model sees. Only the first
 * frame of an animation or page of a multi-page file is decoded.
 *
 * Admission, cheapest check first, each before any pixel is decoded: the format from the magic
 * bytes (image-sniff.ts; only the accepted formats' loaders are unblocked in libvips at all), for
 * JPEG the number of scans (jpeg-scans.ts), then the header (size, aspect ratio), then a share of
 * the decode budget sized from the header (decodeCostBytes, decode-budget.ts). Each decoding pass
 * runs under sharp's timeout, and a client that has gone is not decoded for.
 */

/** Formats decoded at all, checked from the header before any pixel is; `heif` only with AV1 (AVIF). */
const ACCEPTED_FORMATS: ReadonlySet<string> = new Set(['jpeg', 'png', 'webp', 'gif', 'tiff', 'heif'])

/**
 * Why a file costs more to open than the server allows (its structure walked without decoding: what
 * libvips would read while opening it, outside the decode timeout), or undefined.
 */
function structureRefusal(format: AcceptedFormat, bytes: Uint8Array, maxJpegScans: number): string | undefined {
  switch (format) {
    case 'jpeg':
      return jpegStructureRefusal(bytes, maxJpegScans)
    case 'png':
      return pngHeaderRefusal(bytes)
    case 'webp':
      return countWebpChunks(bytes) > MAX_WEBP_CHUNKS ? `a WebP of more than ${MAX_WEBP_CHUNKS} chunks` : undefined
    case 'gif':
      return gifStructureRefusal(bytes)
    case 'tiff':
      return tiffStructureRefusal(bytes)
    case 'avif':
      return avifItemsRefusal(bytes)
  }
}

/** Files up to this size are walked at once (well under a millisecond); larger ones after a turn of the event loop. */
const WALK_INLINE_BYTES = 1 << 20

/** sharp's name (metadata().format) for each sniffed format. */
const SHARP_FORMAT: Readonly<Record<AcceptedFormat, string>> = {
  jpeg: 'jpeg',
  png: 'png',
  webp: 'webp',
  gif: 'gif',
  tiff: 'tiff',
  avif: 'heif'
}

/** A longer elongation would make the resized long side huge (10000×10 → 256000×256). */
export const MAX_ASPECT_RATIO = 32

/**
 * Defaults when the caller gives none (the server passes its settings: src/config.ts, where the
 * reasons are documented): libjpeg's progressive script writes 10 scans for colour, 6 for grey and
 * 18 for CMYK; mozjpeg's optimised scripts 5–6 (measured with sharp, whose libvips uses mozjpeg).
 */
export const DEFAULT_MAX_JPEG_SCANS = 32
export const DEFAULT_DECODE_TIMEOUT_SECONDS = 20

// libvips' operation cache keys on the input buffer and would keep decoded images of past requests alive.
// sharp.concurrency (libvips threads per image) is left to sharp: 1 under glibc malloc, the cores
// under jemalloc (the Docker images preload it). Measured with load/robustness/decode-memory.ts under jemalloc,
// one thread took 1.7× as long for the same peak and resting RSS; the decode budget bounds how many
// images decode at once either way.
sharp.cache(false)

// Only the accepted formats' loaders may run, whatever the bytes claim to be: libvips otherwise
// picks a loader by content, and SVG (librsvg), PDF, matrix and others are among them. The sniffer
// refuses everything else first; this is the second line. Buffer loaders are what the server uses;
// the file loaders stay open for tools and tests that read fixtures by path in the same process.
sharp.block({ operation: ['VipsForeignLoad'] })
sharp.unblock({
  operation: ['Jpeg', 'Png', 'Webp', 'Nsgif', 'Tiff', 'Heif'].flatMap((f) => [`VipsForeignLoad${f}Buffer`, `VipsForeignLoad${f}File`])
})

/** Python's round(): halves go to the even neighbour (torchvision's CenterCrop offset). */
function roundHalfToEven(x: number): number {
  const floor = Math.floor(x)
  const fraction = x - floor
  if (fraction !== 0.5) return Math.round(x)
  return floor % 2 === 0 ? floor : floor + 1
}

/**
 * curl's -d/--data strips CR and LF from a file before sending it, which corrupts any image; a
 * photo of a few KB without one such byte is otherwise about one in ten million.
 */
const STRIPPED_LINE_BREAKS_MIN_BYTES = 4096

function linesStripped(bytes: Uint8Array): boolean {
  return bytes.byteLength >= STRIPPED_LINE_BREAKS_MIN_BYTES && !bytes.includes(0x0a) && !bytes.includes(0x0d)
}

interface SharpErrorContext {
  readonly timeoutSeconds: number
  readonly maxInputPixels: number
  readonly bytes: Uint8Array
}

/** An error out of sharp as the client's ServiceError; with the fix when curl -d has mangled the body. */
function mapSharpError(err: unknown, context: SharpErrorContext): ServiceError {
  const mapped = sharpErrorCode(err, context)
  if (mapped.code !== 'CORRUPT_IMAGE' || !linesStripped(context.bytes)) return mapped
  return new ServiceError(
    'CORRUPT_IMAGE',
    '(It holds no CR or LF byte, as a file sent with curl -d/--data does: curl strips them. Send files with --data-binary @file.)',
    { cause: mapped.cause }
  )
}

/** Every error out of sharp becomes a ServiceError; the original stays as `cause`. */
function sharpErrorCode(err: unknown, limits: SharpErrorContext): ServiceError {
  if (err instanceof ServiceError) return err
  const message = err instanceof Error ? err.message : String(err)
  if (/exceeds pixel limit/i.test(message)) {
    return new ServiceError('IMAGE_TOO_LARGE', `(its header declares more than ${limits.maxInputPixels} pixels, --max-input-pixels)`, {
      cause: err
    })
  }
  // Bytes that passed the sniffer but that no unblocked loader takes (a signature and nothing behind it).
  if (/unsupported image format/i.test(message)) return new ServiceError('NOT_AN_IMAGE', undefined, { cause: err })
  if (/^timeout: \d+% complete/.test(message)) {
    return new ServiceError('IMAGE_TOO_COMPLEX', `(decoding ran over ${limits.timeoutSeconds} s)`, { cause: err })
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

/** Bytes per sample of each libvips band format. */
const SAMPLE_BYTES: Readonly<Record<string, number>> = {
  uchar: 1,
  char: 1,
  ushort: 2,
  short: 2,
  uint: 4,
  int: 4,
  float: 4,
  complex: 8,
  double: 8,
  dpcomplex: 16
}

/**
 * Per-pixel bytes a loader holds for the whole image, beyond streaming, from peak-RSS measurements
 * of single 7000×7000 decodes (25 MP for AVIF) through this file's pipelines (load/robustness/decode-memory.ts
 * prints the table again): libwebp decodes to RGBA and libvips copies it (8); libnsgif renders each
 * frame as RGBA (4, +1 margin); libheif + libaom hold YUV planes, reference frames and RGB (18–19
 * measured, 20 per sample); a progressive JPEG's coefficients take 2 bytes per sample of every
 * component at its own resolution (see jpegCoefficientBytes). Baseline JPEG, non-interlaced PNG
 * and TIFF stream row by row; TIFF is counted whole anyway, since one strip may be the image.
 */
const WEBP_BYTES_PER_PIXEL = 8
const GIF_BYTES_PER_PIXEL = 5
const AVIF_BYTES_PER_SAMPLE_PER_PIXEL = 20
/** libheif and libaom allocate about this much whatever the image's size. */
const AVIF_FIXED_BYTES = 8 * 2 ** 20
/** Line buffers of the loader and the resize, per column of the source and byte per sample: ~33 MiB at 7000 columns measured. */
const ROW_BUFFER_BYTES_PER_COLUMN = 5 * 1024

/** Sampled components per pixel of a JPEG from its chroma subsampling (4:2:0 → 1 + ¼ + ¼). */
function jpegComponentsPerPixel(metadata: Metadata): number {
  switch (metadata.chromaSubsampling) {
    case '4:2:0':
      return 1.5
    case '4:2:2':
    case '4:4:0':
      return 2
    case '4:2:0:4':
      return 2.5
    default:
      // 4:4:4, 4:4:4:4, greyscale and anything unusual: every component at full resolution.
      return metadata.channels
  }
}

/**
 * The memory a decode of this image may hold at its peak, estimated from its header: the bytes
 * its loader keeps for the whole image (width × height × channels × bytes per sample, or the
 * format's own figure above), the full-size 8-bit RGB copy that the alpha and enlargement paths
 * make, and row buffers. It is the currency of the decode budget: an upper estimate, so that the
 * budget bounds real memory (measured against peak RSS in load/robustness/decode-memory.ts).
 */
export function decodeCostBytes(metadata: Metadata, enlarging: boolean): number {
  const { width, height, channels } = metadata
  const pixels = width * height
  const sample = SAMPLE_BYTES[metadata.depth] ?? 8
  const decoded = channels * sample
  let held: number
  switch (metadata.format) {
    case 'jpeg':
      held = metadata.isProgressive ? 2 * jpegComponentsPerPixel(metadata) : 0
      break
    case 'png':
      // Adam7 interlacing needs the whole image before the first full row.
      held = metadata.isProgressive ? decoded : 0
      break
    case 'webp':
      held = WEBP_BYTES_PER_PIXEL
      break
    case 'gif':
      held = GIF_BYTES_PER_PIXEL
      break
    case 'heif':
      held = AVIF_BYTES_PER_SAMPLE_PER_PIXEL * sample
      break
    default:
      held = decoded
  }
  // Orientations other than 1 rotate or flip: libvips materialises the decoded image for that.
  if ((metadata.orientation ?? 1) > 1) held = Math.max(held, decoded)
  const rgbCopy = metadata.hasAlpha || enlarging ? 3 : 0
  const fixed = metadata.format === 'heif' ? AVIF_FIXED_BYTES : 0
  return Math.ceil(pixels * (held + rgbCopy) + width * ROW_BUFFER_BYTES_PER_COLUMN * sample + fixed)
}

/** What an ImagePreprocessor may spend; the server passes its settings and its one DecodeBudget. */
export interface DecodeLimits {
  readonly maxInputPixels: number
  readonly maxJpegScans?: number
  readonly decodeTimeoutSeconds?: number
  /** Shared by every model's preprocessor; without one, decodes are not admitted (tools, tests). */
  readonly budget?: DecodeBudget
  /**
   * Admission for header reads (slots only), shared likewise: libvips reads a file's whole
   * structure to open it, with no timeout, before the budget can price the decode.
   */
  readonly headerReads?: DecodeBudget
}

export class ImagePreprocessor {
  private readonly resize: number
  private readonly crop: number
  private readonly maxInputPixels: number
  private readonly maxJpegScans: number
  private readonly timeoutSeconds: number
  private readonly budget: DecodeBudget | undefined
  private readonly headerReads: DecodeBudget | undefined
  private readonly inputOptions: SharpOptions
  /** preprocess.decode 'fast' (the default): JPEG shrink-on-load as far as it goes; 'exact' leaves the last factor of 2 to the resize. */
  private readonly fastShrinkOnLoad: boolean

  constructor(config: PreprocessConfig, limits: DecodeLimits) {
    if (config.crop > config.resize) throw new Error(`preprocess.crop (${config.crop}) is larger than preprocess.resize (${config.resize})`)
    this.resize = config.resize
    this.crop = config.crop
    this.maxInputPixels = limits.maxInputPixels
    this.maxJpegScans = limits.maxJpegScans ?? DEFAULT_MAX_JPEG_SCANS
    this.timeoutSeconds = limits.decodeTimeoutSeconds ?? DEFAULT_DECODE_TIMEOUT_SECONDS
    this.budget = limits.budget
    this.headerReads = limits.headerReads
    this.fastShrinkOnLoad = config.decode !== 'exact'
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
   * CORRUPT_IMAGE, IMAGE_TOO_LARGE, IMAGE_ASPECT_RATIO, IMAGE_TOO_COMPLEX, and while waiting for
   * the decode budget DECODE_QUEUE_FULL, DEADLINE_EXCEEDED or CLIENT_CLOSED.
   */
  async decode(bytes: Uint8Array, options: AdmissionOptions = {}): Promise<Buffer> {
    if (bytes.length === 0) throw new ServiceError('EMPTY_BODY')
    const sniffed = sniffImageFormat(bytes)
    if (sniffed === undefined) throw new ServiceError('NOT_AN_IMAGE')
    if (!sniffed.accepted) throw new ServiceError('UNSUPPORTED_IMAGE_FORMAT', `(${sniffed.name})`)
    // The walks below run on the event loop, up to a few tens of ms for a large file at their
    // bounds; the images of one request arrive together, so a large one waits a turn of the loop
    // first, and the loop takes its I/O between two walks.
    if (bytes.byteLength > WALK_INLINE_BYTES) await new Promise<void>((resolve) => setImmediate(resolve))
    const refusal = structureRefusal(sniffed.format, bytes, this.maxJpegScans)
    if (refusal !== undefined) throw new ServiceError('IMAGE_TOO_COMPLEX', `(${refusal})`)
    let metadata: Metadata
    // At most --decode-concurrency header reads at once, the rest waiting in order: one whose client
    // has gone or whose deadline has passed meanwhile is never started (a cancelled gRPC call of 64
    // hostile images once left them all queued on libuv's threads, blocking every decode for minutes).
    const headerPermit = await this.admit(this.headerReads, 1, options)
    try {
      // Header only: the format, size and orientation are checked before any pixel is decoded.
      // (A fresh sharp instance per pass: reading the header and decoding on one instance measured
      // no cheaper, 1.06–1.08× the CPU per image in paired rounds.)
      metadata = await sharp(bytes, this.inputOptions).metadata()
    } catch (err) {
      throw mapSharpError(err, { timeoutSeconds: this.timeoutSeconds, maxInputPixels: this.maxInputPixels, bytes })
    } finally {
      headerPermit.release()
    }
    this.checkHeader(metadata, SHARP_FORMAT[sniffed.format])
    const profile = metadata.icc === undefined ? undefined : iccProfileRefusal(metadata.icc)
    if (profile !== undefined) throw new ServiceError('IMAGE_TOO_COMPLEX', `(${profile})`)

    const { width, height } = metadata.autoOrient
    const enlarging = Math.min(width, height) < this.resize
    const permit = await this.admit(this.budget, decodeCostBytes(metadata, enlarging), options)
    try {
      const resized = resizedSize(width, height, this.resize)
      const { left, top } = centreCropOffset(resized.width, resized.height, this.crop)
      const pixels = enlarging
        ? await this.enlarge(bytes, width, height, resized, left, top, options.signal)
        : await this.reduce(bytes, metadata.hasAlpha, resized, left, top, options.signal)
      if (pixels.length !== this.crop * this.crop * 3) {
        throw new ServiceError('INTERNAL', `The decoder gave ${pixels.length} bytes, not ${this.crop}×${this.crop}×3.`)
      }
      if ((enlarging || metadata.hasAlpha) && width * height * 3 >= COLLECT_AFTER_COPY_BYTES) collectGarbage?.()
      return pixels
    } catch (err) {
      throw mapSharpError(err, { timeoutSeconds: this.timeoutSeconds, maxInputPixels: this.maxInputPixels, bytes })
    } finally {
      permit.release()
    }
  }

  /** A share of `budget` (none to take without one); a client already gone gets none. */
  private async admit(budget: DecodeBudget | undefined, cost: number, options: AdmissionOptions): Promise<DecodePermit> {
    if (budget !== undefined) return budget.acquire(cost, options)
    if (options.signal?.aborted) throw new ServiceError(abortCode(options.signal))
    return NO_PERMIT
  }

  /**
   * Shrinking, the common case: one sharp pipeline. libvips' linear kernel widens with the shrink
   * factor as PIL's antialiased bilinear does, which lands within a fraction of a grey level of it.
   */
  private async reduce(
    bytes: Uint8Array,
    hasAlpha: boolean,
    resized: Size,
    left: number,
    top: number,
    signal: AbortSignal | undefined
  ): Promise<Buffer> {
    const source = hasAlpha ? await this.decodeRgb(bytes, 0, signal) : this.decoder(bytes, signal)
    return source
      .resize({ width: resized.width, height: resized.height, fit: 'fill', kernel: 'linear', fastShrinkOnLoad: this.fastShrinkOnLoad })
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
  private async enlarge(
    bytes: Uint8Array,
    width: number,
    height: number,
    resized: Size,
    left: number,
    top: number,
    signal: AbortSignal | undefined
  ): Promise<Buffer> {
    const scaleX = resized.width / width
    const scaleY = resized.height / height
    const columns = paddedSourceWindow(left, this.crop, scaleX, width + 2)
    const rows = paddedSourceWindow(top, this.crop, scaleY, height + 2)
    const padded = await this.decodeRgb(bytes, 1, signal)
    const { data, info } = await padded
      .extract({ left: columns.start, top: rows.start, width: columns.length, height: rows.length })
      .affine(
        [
          [scaleX, 0],
          [0, scaleY]
        ],
        {
          // Output x' = x − left maps to padded source x = (x + 0.5) / s + 0.5, PIL's sampling point.
          idx: columns.start - 0.5,
          idy: rows.start - 0.5,
          odx: -0.5 - left,
          ody: -0.5 - top,
          interpolator: 'bilinear'
        }
      )
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

  private checkHeader(metadata: Metadata, sniffed: string): void {
    const { format } = metadata
    if (!ACCEPTED_FORMATS.has(format) || format !== sniffed || (format === 'heif' && metadata.compression !== 'av1')) {
      const name = format === 'heif' ? `HEIF/${metadata.compression ?? 'unknown'}` : format.toUpperCase()
      throw new ServiceError('UNSUPPORTED_IMAGE_FORMAT', `(${name})`)
    }
    const { width, height } = metadata
    if (!(width > 0 && height > 0)) throw new ServiceError('CORRUPT_IMAGE', 'The header declares no size.')
    // sharp checks this too; checked here so that no decoder's own check is relied upon.
    if (width * height > this.maxInputPixels) {
      throw new ServiceError('IMAGE_TOO_LARGE', `(${width}×${height}; at most ${this.maxInputPixels} pixels, --max-input-pixels)`)
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
  private async decodeRgb(bytes: Uint8Array, border: number, signal: AbortSignal | undefined): Promise<Sharp> {
    let image = this.decoder(bytes, signal).removeAlpha().toColourspace('srgb')
    if (border > 0) image = image.extend({ top: border, bottom: border, left: border, right: border, extendWith: 'copy' })
    const { data, info } = await image.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true })
    return sharp(data, { raw: { width: info.width, height: info.height, channels: info.channels } })
  }

  /**
   * A pipeline that decodes `bytes`, under the decode timeout. libvips cannot be stopped from
   * outside once it runs, so a client that has gone is checked for before each decoding pass:
   * its decode is not started, or not continued into its second pass.
   */
  private decoder(bytes: Uint8Array, signal: AbortSignal | undefined): Sharp {
    if (signal?.aborted) throw new ServiceError(abortCode(signal), '(before decoding)')
    return sharp(bytes, this.inputOptions).timeout({ seconds: this.timeoutSeconds })
  }
}

const NO_PERMIT: DecodePermit = Object.freeze({ release: () => {} })

/**
 * The full-size RGB copy of the alpha and enlargement paths comes back from sharp as a Buffer that
 * only V8's garbage collector frees (measured: 145 MB held 30 s after a 7000×7000 RGBA PNG in an
 * idle process). A collection right after such a decode, before its share of the budget is given
 * back, frees it at once: a pause of a few milliseconds on a heap of tens of MB, after a decode of
 * hundreds.
 */
const COLLECT_AFTER_COPY_BYTES = 32 * 2 ** 20
