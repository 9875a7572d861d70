import type { Multipart, MultipartFile } from '@fastify/multipart'
import type { FastifyRequest } from 'fastify'
import type { IncomingMessage } from 'node:http'
import { ServiceError, isServiceError } from '../errors.js'
import { bodyCutOff } from './error-status.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route's multipart limits; set on every route whose bodyTypes include multipart/form-data. */
    multipart?: MultipartLimits
  }
}

/** What one multipart body may hold. The parser streams; these bound what it reads and keeps. */
export interface MultipartLimits {
  /** Files in the body. */
  readonly files: number
  /** Text fields in the body (no route reads them; a few are tolerated from form builders). */
  readonly fields: number
  /** Bytes of one text field. */
  readonly fieldBytes: number
  /** Bytes of all files together, and so of any one file. */
  readonly fileBytes: number
}

/** Text fields a route tolerates beside its files (form builders add a few; none is read), and the bytes of each. */
export const TOLERATED_FIELDS = { fields: 8, fieldBytes: 1024 } as const

/**
 * The most bytes a multipart body may carry: its files, plus per part a boundary line and headers
 * (busboy caps a part's headers; real clients send two lines well under 1 KiB), plus slack.
 */
export function multipartBodyLimit(limits: MultipartLimits): number {
  return limits.fileBytes + (limits.files + limits.fields) * 1024 + 4096
}

function noLimits(): never {
  throw new ServiceError('INTERNAL', 'A multipart route declares no limits.')
}

/**
 * What an error raised while reading a multipart body means. busboy reports malformed bodies as
 * plain Errors without a code, and nothing else in the parser throws those: the body, not the
 * server, is at fault. ServiceErrors, the plugin's coded errors (FST_*, mapped in error-status.ts)
 * and any error of a body whose connection went away are left for the door's error mapping.
 */
function multipartError(err: unknown, request: FastifyRequest): unknown {
  if (isServiceError(err) || bodyCutOff(request.raw)) return err
  if (err instanceof Error && typeof (err as { code?: unknown }).code === 'string') return err
  return new ServiceError('BAD_MULTIPART', undefined, { cause: err })
}

/**
 * How long the parser may leave a body that has arrived whole unread, while a part or the end is
 * awaited, before the request is refused. @fastify/busboy skips a part without `Content-Disposition:
 * form-data` (or with another disposition) and, when that part is larger than a stream buffer
 * (16 KiB), stops reading there for good: the request hung past every timeout (it had been
 * received), holding its share of the body budget and its connection (attacker review). Once the
 * body is in, the rest of it is parsed in microseconds, so a second without progress is a stall.
 */
const PARSER_STALL_MS = 1_000
const STALL_LOOK_MS = 250

/** When the parser last took a chunk of each multipart body being read (multipartParts keeps it). */
const lastRead = new WeakMap<IncomingMessage, number>()

/**
 * Rejects BAD_MULTIPART once the body has arrived whole (`complete`) and the parser has taken none
 * of it for PARSER_STALL_MS, counted from the later of its last chunk and the start of the wait;
 * `stop` ends the watch.
 */
function stallWatch(raw: IncomingMessage): { readonly stalled: Promise<never>; stop(): void } {
  const startedAt = performance.now()
  let timer: NodeJS.Timeout | undefined
  const stalled = new Promise<never>((_resolve, reject) => {
    const look = (): void => {
      const since = Math.max(startedAt, lastRead.get(raw) ?? startedAt)
      if (raw.complete && performance.now() - since >= PARSER_STALL_MS) {
        reject(
          new ServiceError(
            'BAD_MULTIPART',
            'The body arrived whole but its parts could not be read to their end: each part needs Content-Disposition: form-data with a name (a part without it stops the parser).'
          )
        )
        return
      }
      timer = setTimeout(look, STALL_LOOK_MS)
    }
    timer = setTimeout(look, STALL_LOOK_MS)
  })
  stalled.catch(() => {})
  return { stalled, stop: () => clearTimeout(timer) }
}

/** A file part's bytes; a malformed body is BAD_MULTIPART, as in multipartParts. */
export async function partBytes(part: MultipartFile, request: FastifyRequest): Promise<Buffer> {
  const watch = stallWatch(request.raw)
  try {
    return await Promise.race([part.toBuffer(), watch.stalled])
  } catch (err) {
    throw multipartError(err, request)
  } finally {
    watch.stop()
  }
}

/**
 * The parts of a multipart body, in order, within the route's limits: counts and one file's size
 * by the parser, a text field over its size refused when it ends, and the body's total size
 * counted as it arrives, so a body over its limit (a 100 MB text field, say) is refused at that
 * byte, not read to its end. After a refusal the rest of the body is not read; the answer closes
 * the connection (see sendError).
 */
export async function* multipartParts(request: FastifyRequest): AsyncGenerator<Multipart, void, undefined> {
  const limits = request.routeOptions.config.multipart ?? noLimits()
  const maxBytes = multipartBodyLimit(limits)
  const raw = request.raw
  let received = 0
  let current: Multipart | undefined
  let refuse: (err: ServiceError) => void = () => {}
  const overLimit = new Promise<never>((_resolve, reject) => {
    refuse = reject
  })
  // Settled only by a refusal, which the loop below observes through the race.
  overLimit.catch(() => {})
  const count = (chunk: Buffer): void => {
    lastRead.set(raw, performance.now())
    received += chunk.byteLength
    if (received <= maxBytes) return
    raw.off('data', count)
    // Stop feeding the parser and stop reading the socket; nothing more of this body is wanted.
    raw.unpipe()
    raw.pause()
    const err = new ServiceError('BODY_TOO_LARGE', `The multipart body is over ${maxBytes} bytes.`)
    if (current?.type === 'file') current.file.destroy(err)
    refuse(err)
  }

  const parts = request.parts({
    limits: {
      files: limits.files,
      fields: limits.fields,
      parts: limits.files + limits.fields,
      fieldSize: limits.fieldBytes,
      fileSize: limits.fileBytes
    }
  })
  // The first next() creates the parser and pipes the request into it, synchronously; the counter
  // joins in the same tick, before any chunk flows.
  let next = parts.next()
  raw.on('data', count)
  try {
    for (;;) {
      const watch = stallWatch(raw)
      let result: IteratorResult<Multipart>
      try {
        result = await Promise.race([next, overLimit, watch.stalled])
      } finally {
        watch.stop()
      }
      if (result.done === true) return
      current = result.value
      // busboy hands over a file part whose Content-Disposition names no field (only a filename).
      if ((current.fieldname as string | undefined) === undefined) {
        throw new ServiceError('BAD_MULTIPART', 'A part has no name: send Content-Disposition: form-data; name="image".')
      }
      if (current.type === 'field' && current.valueTruncated) {
        throw new ServiceError('BAD_MULTIPART', `Text field "${current.fieldname.slice(0, 64)}" is over ${limits.fieldBytes} bytes.`)
      }
      yield current
      next = parts.next()
    }
  } catch (err) {
    throw multipartError(err, request)
  } finally {
    raw.off('data', count)
    lastRead.delete(raw)
  }
}
