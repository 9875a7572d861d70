import { describe, expect, it } from 'vitest'
import { INLINE_PARSE_BYTES, ParseLane } from '../../src/http/parse-lane.js'

/** The lane JSON bodies are parsed through: large ones in order, one per turn of the event loop; small ones at once. Unit tier. */

const LARGE = INLINE_PARSE_BYTES + 1

describe('ParseLane', () => {
  it('runs its work in order, with a turn of the event loop between two (what a parse queued ran before the next parse)', async () => {
    const lane = new ParseLane()
    const events: string[] = []
    const runs = [
      lane.run(LARGE, () => {
        events.push('parse 1')
        setImmediate(() => events.push('loop turned'))
        return 1
      }),
      lane.run(LARGE, () => {
        events.push('parse 2')
        return 2
      }),
      lane.run(LARGE, () => {
        events.push('parse 3')
        return 3
      })
    ]
    expect(await Promise.all(runs)).toEqual([1, 2, 3])
    expect(events).toEqual(['parse 1', 'loop turned', 'parse 2', 'parse 3'])
  })

  it('a parse that throws rejects its own run only; the lane goes on', async () => {
    const lane = new ParseLane()
    const failed = lane.run(LARGE, () => {
      throw new Error('not JSON')
    })
    const next = lane.run(LARGE, () => 'ok')
    await expect(failed).rejects.toThrow('not JSON')
    expect(await next).toBe('ok')
    // Idle again, it starts on the next run.
    expect(await lane.run(LARGE, () => 'again')).toBe('again')
  })

  it("a small body is parsed at once, even while large ones wait their turn (a binary request's JSON header waited a turn of the loop)", async () => {
    const lane = new ParseLane()
    const events: string[] = []
    const large = lane.run(LARGE, () => events.push('large'))
    const small = lane.run(INLINE_PARSE_BYTES, () => events.push('small'))
    // Already run when run() returns: no turn of the loop in between.
    expect(events).toEqual(['small'])
    await Promise.all([large, small])
    expect(events).toEqual(['small', 'large'])
    await expect(lane.run(10, () => JSON.parse('{'))).rejects.toThrow(SyntaxError)
  })
})
