import { describe, expect, it } from 'vitest'
import { ParseLane } from '../../src/http/parse-lane.js'

/** The lane JSON bodies are parsed through: in order, one per turn of the event loop. Unit tier. */

describe('ParseLane', () => {
  it('runs its work in order, with a turn of the event loop between two (what a parse queued ran before the next parse)', async () => {
    const lane = new ParseLane()
    const events: string[] = []
    const runs = [
      lane.run(() => {
        events.push('parse 1')
        setImmediate(() => events.push('loop turned'))
        return 1
      }),
      lane.run(() => {
        events.push('parse 2')
        return 2
      }),
      lane.run(() => {
        events.push('parse 3')
        return 3
      })
    ]
    expect(await Promise.all(runs)).toEqual([1, 2, 3])
    expect(events).toEqual(['parse 1', 'loop turned', 'parse 2', 'parse 3'])
  })

  it('a parse that throws rejects its own run only; the lane goes on', async () => {
    const lane = new ParseLane()
    const failed = lane.run(() => {
      throw new Error('not JSON')
    })
    const next = lane.run(() => 'ok')
    await expect(failed).rejects.toThrow('not JSON')
    expect(await next).toBe('ok')
    // Idle again, it starts on the next run.
    expect(await lane.run(() => 'again')).toBe('again')
  })
})
