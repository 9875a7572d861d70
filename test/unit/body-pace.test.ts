import { describe, expect, it } from 'vitest'
import { BODY_PACE_GRACE_MS, SILENT_WAIT_MS, WAITING_SHOWN_BYTES, bodyPace, bytesDue, silentAtItsTurn } from '../../src/body-pace.js'

/** The pace a body holding a share of the body budget must keep once another request needs it (src/body-pace.ts). Unit tier, the clock faked. */

describe('bytesDue', () => {
  it('is nothing during the grace, then a straight line to the whole length at the window', () => {
    expect(bytesDue(1000, 0, 30_000, 0)).toBe(0)
    expect(bytesDue(1000, 15_000, 30_000, 0)).toBe(500)
    expect(bytesDue(1000, 30_000, 30_000, 0)).toBe(1000)
    expect(bytesDue(1000, 60_000, 30_000, 0)).toBe(1000)
    expect(bytesDue(1000, 5_000, 30_000, 5_000)).toBe(0)
    expect(bytesDue(1000, 17_500, 30_000, 5_000)).toBe(500)
    expect(bytesDue(1000, BODY_PACE_GRACE_MS, 30_000)).toBe(0)
  })

  it('gives at most half the window as grace', () => {
    expect(bytesDue(1000, 1_000, 2_000, 5_000)).toBe(0)
    expect(bytesDue(1000, 1_500, 2_000, 5_000)).toBe(500)
  })

  it('a client sending at the steady rate that finishes at the window is never behind, however late its first byte within the grace', () => {
    for (const delay of [0, 250, BODY_PACE_GRACE_MS])
      for (let t = delay; t <= 30_000; t += 250) expect((2000 * (t - delay)) / 30_000).toBeGreaterThanOrEqual(bytesDue(1000, t, 30_000))
  })
})

describe('bodyPace', () => {
  it('is behind once the bytes fall short of the line, counting the slack', () => {
    let clock = 0
    let received = 0
    // 29,000 bytes over the 29 s after the grace: one byte due per millisecond.
    const pace = bodyPace({ lengthBytes: 29_000, windowMs: 30_000, received: () => received, slackBytes: 100 }, () => clock)
    clock = BODY_PACE_GRACE_MS
    expect(pace.behind()).toBe(false) // the grace: nothing due
    clock = BODY_PACE_GRACE_MS + 100
    expect(pace.behind()).toBe(false) // 100 due, 100 of slack
    clock = BODY_PACE_GRACE_MS + 1000
    expect(pace.behind()).toBe(true) // 1000 due
    received = 900
    expect(pace.behind()).toBe(false)
  })
})

describe('silentAtItsTurn', () => {
  it('refuses at its turn a request that waited SILENT_WAIT_MS having shown less than WAITING_SHOWN_BYTES, or less than all of a shorter one', () => {
    expect(silentAtItsTurn(38_000_000, 1, SILENT_WAIT_MS)).toBe(true)
    expect(silentAtItsTurn(38_000_000, WAITING_SHOWN_BYTES - 1, SILENT_WAIT_MS)).toBe(true)
    expect(silentAtItsTurn(38_000_000, WAITING_SHOWN_BYTES, SILENT_WAIT_MS)).toBe(false)
    expect(silentAtItsTurn(38_000_000, 0, SILENT_WAIT_MS - 1)).toBe(false) // granted before a second of waiting
    expect(silentAtItsTurn(1000, 999, SILENT_WAIT_MS)).toBe(true)
    expect(silentAtItsTurn(1000, 1000, SILENT_WAIT_MS)).toBe(false) // all of it came
  })
})
