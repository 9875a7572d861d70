import type { IncomingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import { Transform, type TransformCallback } from 'node:stream'
import { createGunzip, createInflate, type Gunzip, type Inflate } from 'node:zlib'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { ServiceError } from '../errors.js'

/**
 * Compressed request bodies (`Content-Encoding: gzip` or `deflate`, what tritonclient's
 * request_compression_algorithm sends) on the routes that take them. The body is inflated as it
 * arrives and the route's body limit applies to the inflated bytes: inflating stops, and the
 * request is refused BODY_TOO_LARGE, at the first chunk past the limit, so a small body that
 * inflates to gigabytes (a zip bomb) costs the limit and one zlib chunk, never the whole. The
 * declared Content-Length is checked against the bytes received, as for any body.
 */

/** The body's coding, lower-cased; undefined for none or `identity`. Others are returned as given, to be refused. */
export function contentEncodingOf(headers: IncomingHttpHeaders): string | undefined {
  const header = headers['content-encoding']
  if (header === undefined) return undefined
  const coding = header.trim().toLowerCase()
  return coding === '' || coding === 'identity' ? undefined : coding
}

/**
 * Inflated bytes per zlib step: each step is one trip to the libuv pool, so 64 KiB (zlib's default
 * is 16) takes a 22 MB body in some 350 steps instead of 1400, and a bomb past the limit is no
 * more than one step past it when it is stopped.
 */
const INFLATE_CHUNK_BYTES = 64 * 1024

/** x-gzip is gzip's old name (RFC 9110 §8.4.1.3); HTTP's deflate is the zlib format (RFC 1950), as Python's zlib.compress writes it. */
function decoderFor(coding: string): Gunzip | Inflate | undefined {
  if (coding === 'gzip' || coding === 'x-gzip') return createGunzip({ chunkSize: INFLATE_CHUNK_BYTES })
  if (coding === 'deflate') return createInflate({ chunkSize: INFLATE_CHUNK_BYTES })
  return undefined
}

/** Counts inflated bytes and fails the body at the first chunk past the limit. */
class InflatedBody extends Transform {
  /** Bytes received on the wire: fastify checks them against Content-Length and the limit. */
  receivedEncodedLength = 0
  private inflated = 0

  constructor(private readonly limit: number) {
    super()
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.inflated += chunk.byteLength
    if (this.inflated > this.limit) {
      done(new ServiceError('BODY_TOO_LARGE', `The body inflates to more than this route's ${this.limit} bytes.`))
      return
    }
    done(null, chunk)
  }
}

/**
 * A preParsing hook: the inflated body for fastify to read in place of the raw one, or the raw one
 * when the body is not encoded. Throws UNSUPPORTED_MEDIA_TYPE for a coding other than gzip or deflate.
 */
export async function inflateRequestBody(request: FastifyRequest, _reply: FastifyReply, payload: Readable): Promise<Readable> {
  const coding = contentEncodingOf(request.headers)
  if (coding === undefined) return payload
  const decoder = decoderFor(coding)
  if (decoder === undefined) {
    throw new ServiceError(
      'UNSUPPORTED_MEDIA_TYPE',
      `Content-Encoding "${coding.slice(0, 40)}" is not supported; send gzip, deflate or none.`
    )
  }
  const body = new InflatedBody(request.routeOptions.bodyLimit)
  const stopDecoding = (): void => {
    payload.unpipe(decoder)
    decoder.destroy()
  }
  payload.on('data', (chunk: Buffer) => {
    body.receivedEncodedLength += chunk.byteLength
  })
  decoder.on('error', () => {
    stopDecoding()
    body.destroy(new ServiceError('BAD_REQUEST', `The body is not valid ${coding} data (Content-Encoding: ${coding}).`))
  })
  body.on('error', stopDecoding)
  payload.pipe(decoder).pipe(body)
  return body
}
