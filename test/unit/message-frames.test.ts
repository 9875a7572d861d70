import { describe, expect, it } from 'vitest'
import { MessageFrames } from '../../src/grpc/message-frames.js'
import { grpcFrame } from '../helpers/grpc.js'

/** Following gRPC messages through a call's bytes, however HTTP/2 cuts them into chunks. Unit tier. */

function follow(chunks: Uint8Array[]): string[] {
  const seen: string[] = []
  const frames = new MessageFrames({
    start: (bytes, compressed) => seen.push(`start ${bytes}${compressed ? ' compressed' : ''}`),
    end: () => seen.push('end')
  })
  for (const chunk of chunks) frames.write(chunk)
  if (frames.inMessage) seen.push('(in a message)')
  return seen
}

const body = Buffer.concat([grpcFrame(Buffer.alloc(7, 1)), grpcFrame(Buffer.alloc(0)), grpcFrame(Buffer.alloc(300, 2), true)])
const whole = ['start 7', 'end', 'start 0', 'end', 'start 300 compressed', 'end']

describe('MessageFrames', () => {
  it('finds each message, empty and compressed ones too, in one chunk', () => {
    expect(follow([body])).toEqual(whole)
  })

  it('finds the same messages when the bytes come one at a time, or cut at every place in two', () => {
    expect(follow([...body].map((b) => Uint8Array.of(b)))).toEqual(whole)
    for (let cut = 1; cut < body.byteLength; cut++) expect(follow([body.subarray(0, cut), body.subarray(cut)])).toEqual(whole)
  })

  it('tells a message started as soon as its 5-byte prefix is in, before its bytes', () => {
    const big = grpcFrame(Buffer.alloc(1000))
    expect(follow([big.subarray(0, 4)])).toEqual([])
    expect(follow([big.subarray(0, 5)])).toEqual(['start 1000', '(in a message)'])
    expect(follow([big.subarray(0, 999)])).toEqual(['start 1000', '(in a message)'])
  })

  it('reads a length of up to 4 GiB − 1 without a sign error', () => {
    const prefix = Buffer.from([0, 0xff, 0xff, 0xff, 0xff])
    expect(follow([prefix])).toEqual([`start ${2 ** 32 - 1}`, '(in a message)'])
  })
})
