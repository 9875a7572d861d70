import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { gzipSync } from 'node:zlib'
import sharp from 'sharp'
import { withSegments } from '../../test/fixtures/jpeg-scan-bomb.js'
import { manyFrameGif } from '../../test/fixtures/gif-frames.js'
import { chunk, smallPng, withChunks, zTXt } from '../../test/fixtures/png-chunks.js'
import { sharedArrayTiff, tiffWithTags } from '../../test/fixtures/tiff-pages.js'
import { extendedWebp, withJunkChunks } from '../../test/fixtures/webp-chunks.js'
import { inferWire } from '../../test/helpers/protobuf-wire.js'

/**
 * Hostile inputs for load/robustness/attack.ts, each small or legal-looking on the wire and expensive for a
 * server that does not bound its work: built from scratch (or once, cached under .cache/load/),
 * never taken from a real client.
 */

const CACHE = '.cache/load'

async function cached(name: string, build: () => Promise<Buffer>): Promise<Buffer> {
  const path = `${CACHE}/${name}`
  if (existsSync(path)) return readFile(path)
  const bytes = await build()
  await mkdir(CACHE, { recursive: true })
  await writeFile(path, bytes)
  return bytes
}

/** `[` repeated: never closed, so a parser that builds arrays as it goes holds one per byte. */
export function openBrackets(bytes: number): Buffer {
  return Buffer.alloc(bytes, '[')
}

/**
 * A 7000×7000 RGBA PNG of one colour: a few hundred KB on the wire, 196 MB once decoded (the
 * transparent or 16-bit images that are expanded to full size before any limit applies).
 */
export function hugeRgbaPng(side = 7000): Promise<Buffer> {
  return cached(`rgba-${side}.png`, () =>
    sharp({ create: { width: side, height: side, channels: 4, background: { r: 40, g: 120, b: 200, alpha: 0.5 } } })
      .png({ compressionLevel: 9 })
      .toBuffer()
  )
}

/** Entropy-coded bits as JPEG writes them: 0xFF followed by a stuffed 0x00, the last byte padded with ones. */
function entropyCoded(bits: string): Buffer {
  const padded = bits.padEnd(Math.ceil(bits.length / 8) * 8, '1')
  const out: number[] = []
  for (let i = 0; i < padded.length; i += 8) {
    const byte = Number.parseInt(padded.slice(i, i + 8), 2)
    out.push(byte)
    if (byte === 0xff) out.push(0)
  }
  return Buffer.from(out)
}

/** The largest end-of-band run one AC code can announce: EOB14, 2^14 plus 14 extra bits. */
const MAX_EOB_RUN = 2 ** 15 - 1

/**
 * A progressive JPEG bomb: a real side×side progressive JPEG (written by sharp), then `scans`
 * extra scans before its end. Each extra scan recodes the luma AC band with Ah = Al = 0, which is
 * a legal progression once the band is complete (no decoder warning, so `failOn` does not stop
 * it), and covers every block with a few end-of-band runs under a one-code Huffman table defined
 * once in front of them: ~35 bytes per scan that make the decoder visit all side²/64 blocks again.
 */
export function progressiveScanBomb(side = 4096, scans = 10_000): Promise<Buffer> {
  return cached(`scan-bomb-${side}-${scans}.jpg`, async () => {
    const base = await sharp({ create: { width: side, height: side, channels: 3, background: { r: 128, g: 128, b: 128 } } })
      .jpeg({ progressive: true, quality: 90 })
      .toBuffer()
    const lengths = Buffer.alloc(16)
    lengths[0] = 1
    // DHT: class 1 (AC), table 1: one code of length 1, for symbol 0xE0 (EOB14).
    const table = Buffer.concat([Buffer.from([0x11]), lengths, Buffer.from([0xe0])])
    const dht = Buffer.concat([Buffer.from([0xff, 0xc4, 0, table.byteLength + 2]), table])
    // SOS: one component (1, luma) with AC table 1, Ss = 1, Se = 63, Ah = Al = 0.
    const sos = Buffer.from([0xff, 0xda, 0x00, 0x08, 0x01, 0x01, 0x01, 0x01, 0x3f, 0x00])
    const blocks = Math.ceil(side / 8) ** 2
    const runs = Math.ceil(blocks / MAX_EOB_RUN)
    const scan = Buffer.concat([sos, entropyCoded(`0${'1'.repeat(14)}`.repeat(runs))])
    const end = base.byteLength - 2 // EOI
    return Buffer.concat([base.subarray(0, end), dht, Buffer.alloc(scan.byteLength * scans).fill(scan), base.subarray(end)])
  })
}

/** An SVG of about `bytes` made of small rectangles: XML that a renderer parses into a tree first. */
export function bulkySvg(bytes = 14_700_000): Buffer {
  const head = '<svg xmlns="http://www.w3.org/2000/svg" width="4096" height="4096">'
  const rect = (i: number): string =>
    `<rect x="${i % 4000}" y="${(i * 7) % 4000}" width="9" height="9" fill="#${(i % 4096).toString(16).padStart(3, '0')}"/>`
  const parts = [head]
  let size = head.length + 6
  for (let i = 0; size < bytes; i++) {
    const r = rect(i)
    parts.push(r)
    size += r.length
  }
  parts.push('</svg>')
  return Buffer.from(parts.join(''))
}

export interface MultipartBody {
  readonly contentType: string
  readonly body: Buffer
}

export interface MultipartPart {
  readonly name: string
  readonly filename?: string
  readonly contentType?: string
  readonly data: Buffer
}

/** A multipart/form-data body; `closed: false` leaves out the closing boundary. */
export function multipart(parts: readonly MultipartPart[], boundary = 'attack-boundary-7MA4YWxkTrZu0gW', closed = true): MultipartBody {
  const chunks: Buffer[] = []
  for (const part of parts) {
    const disposition = `form-data; name="${part.name}"${part.filename === undefined ? '' : `; filename="${part.filename}"`}`
    const type = part.contentType === undefined ? '' : `Content-Type: ${part.contentType}\r\n`
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: ${disposition}\r\n${type}\r\n`), part.data, Buffer.from('\r\n'))
  }
  if (closed) chunks.push(Buffer.from(`--${boundary}--\r\n`))
  return { contentType: `multipart/form-data; boundary=${boundary}`, body: Buffer.concat(chunks) }
}

/** A V2 infer body whose FP32 data array nests `depth` levels (each level one element). */
export function deepV2Json(depth: number): string {
  return `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3,224,224],"data":${'['.repeat(depth)}0${']'.repeat(depth)}}]}`
}

/** A V2 infer body of `count` one-quantum base64 strings behind BYTES shape [1], gzipped (3 M: 21 MB inflated, 30 KB sent). */
export function v2ValueFlood(count: number): Buffer {
  const data = Array<string>(count).fill('"AAAA"').join(',')
  return gzipSync(Buffer.from(`{"inputs":[{"name":"input","datatype":"BYTES","shape":[1],"data":[${data}]}]}`), { level: 9 })
}

/** A V2 infer body naming its input with `bytes` characters, gzipped: a refusal that repeats the name grows with it. */
export function v2LongName(bytes: number): Buffer {
  return gzipSync(Buffer.from(`{"inputs":[{"name":"${'n'.repeat(bytes)}","datatype":"BYTES","shape":[1],"data":["AAAA"]}]}`), { level: 9 })
}

/** A 64×64 JPEG behind 16 MB of empty APP2 segments (4 M of them), each of which libjpeg keeps for libvips. */
export async function jpegSegmentFlood(): Promise<Buffer> {
  const small = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#888' } })
    .jpeg()
    .toBuffer()
  return withSegments(small, 0xe2, 4_000_000)
}

/** A small WebP behind 16 MB of empty chunks (2 M of them), each of which libwebp's demuxer keeps. */
export async function webpChunkFlood(): Promise<Buffer> {
  return withJunkChunks(await extendedWebp(), 2_000_000)
}

/** A 64×48 PNG behind 300 zTXt chunks of 48 KB, each 48 MiB of zeros inflated (14.7 MB in all). */
export async function pngTextFlood(): Promise<Buffer> {
  const bomb = zTXt(48 << 20)
  return withChunks(
    await smallPng(),
    Array.from({ length: 300 }, () => bomb)
  )
}

/**
 * Files whose structure, not their pixels, is the cost (what libvips reads while it opens them,
 * before the decode budget and outside the decode timeout), each small: 1.4 M zero-length gAMA
 * chunks (16.7 MB, a libpng warning each), a TIFF page of 4000 private tags (48 KB), 64 TIFF pages
 * sharing 200,000-strip arrays (under 10 KB), and a GIF of 200,000 frames.
 */
export async function structureFloods(): Promise<Array<{ contentType: string; data: Buffer }>> {
  const gama = chunk('gAMA', Buffer.alloc(0))
  return [
    {
      contentType: 'image/png',
      data: withChunks(
        await smallPng(),
        Array.from({ length: 1_390_000 }, () => gama)
      )
    },
    { contentType: 'image/tiff', data: tiffWithTags(4000) },
    { contentType: 'image/tiff', data: sharedArrayTiff(64, 200_000) },
    { contentType: 'image/gif', data: await manyFrameGif(200_000) }
  ]
}

/** A V2 binary-extension body: one FP32 [1, 3, crop, crop] tensor, all zeros but one NaN. */
export function nanV2Binary(crop = 224): { headerLength: number; body: Buffer } {
  const values = new Float32Array(3 * crop * crop)
  values[values.length >> 1] = Number.NaN
  const header = Buffer.from(
    JSON.stringify({
      inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, crop, crop], parameters: { binary_data_size: values.byteLength } }]
    })
  )
  return { headerLength: header.byteLength, body: Buffer.concat([header, Buffer.from(values.buffer)]) }
}

/** ModelInferRequest field numbers (src/grpc/inference.proto). */
const MODEL_NAME_FIELD_TAG = 0x0a // field 1, length-delimited
const EMPTY_OUTPUT = Buffer.from([0x32, 0x00]) // field 6 (outputs), length-delimited, empty

/** A ModelInferRequest of about `bytes`: the model's name, then empty `outputs` entries to the end (~bytes/2 of them). */
export function emptyOutputsModelInfer(model: string, bytes: number): Buffer {
  const name = Buffer.from(model)
  const head = Buffer.concat([Buffer.from([MODEL_NAME_FIELD_TAG, name.byteLength]), name])
  const count = Math.floor((bytes - head.byteLength) / EMPTY_OUTPUT.byteLength)
  return Buffer.concat([head, Buffer.alloc(count * EMPTY_OUTPUT.byteLength).fill(EMPTY_OUTPUT)])
}

/** A legitimate ModelInferRequest: a batch of `n` FP32 images of 3×224×224 (zeros) as raw_input_contents, ~0.6 MB an image. */
export function fp32BatchModelInfer(model: string, n: number): Buffer {
  return Buffer.concat([
    inferWire.modelName(model),
    inferWire.input('input', 'FP32', [n, 3, 224, 224]),
    inferWire.rawInputContents(Buffer.alloc(n * 3 * 224 * 224 * 4))
  ])
}
