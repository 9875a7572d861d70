import { describe, expect, it } from 'vitest'
import { ServiceError } from '../../src/errors.js'
import { withRequestParameters } from '../../src/open-inference/request-parameters.js'

/** Triton's `timeout` (µs) and `priority` request parameters, as both doors read them. */

const NOW = 1000

describe('withRequestParameters', () => {
  it('turns timeout microseconds into a deadline on the same clock', () => {
    expect(withRequestParameters({ timeout: 250_000 }, {}, NOW)).toEqual({ deadlineAt: 1250, priority: undefined })
  })

  it('keeps the sooner of the timeout and a deadline already set, either way round', () => {
    expect(withRequestParameters({ timeout: 250_000 }, { deadlineAt: 1100 }, NOW).deadlineAt).toBe(1100)
    expect(withRequestParameters({ timeout: 50_000 }, { deadlineAt: 1100 }, NOW).deadlineAt).toBe(1050)
  })

  it('timeout 0 means none, as in Triton', () => {
    expect(withRequestParameters({ timeout: 0 }, { deadlineAt: 1100 }, NOW).deadlineAt).toBe(1100)
    expect(withRequestParameters({ timeout: 0 }, {}, NOW).deadlineAt).toBeUndefined()
  })

  it('passes the priority through and keeps the signal', () => {
    const signal = new AbortController().signal
    expect(withRequestParameters({ priority: 2 }, { signal }, NOW)).toEqual({ signal, deadlineAt: undefined, priority: 2 })
  })

  it('returns the options unchanged without either parameter', () => {
    const options = { deadlineAt: 5 }
    expect(withRequestParameters(undefined, options, NOW)).toBe(options)
    expect(withRequestParameters({ binary_data_output: true }, options, NOW)).toBe(options)
  })

  it.each([
    ['a negative timeout', { timeout: -1 }, /"timeout" must be a whole number ≥ 0 \(microseconds/],
    ['a fractional timeout', { timeout: 1.5 }, /"timeout"/],
    ['a string timeout', { timeout: '100' }, /"timeout"/],
    ['a boolean priority', { priority: true }, /"priority" must be a whole number ≥ 0 \(a level, 1 the highest/],
    ['a priority beyond 2^53', { priority: 2 ** 60 }, /"priority"/]
  ])('refuses %s with BAD_REQUEST', (_name, parameters, message) => {
    let caught: unknown
    try {
      withRequestParameters(parameters, {}, NOW)
    } catch (err) {
      caught = err
    }
    expect(caught).toBeInstanceOf(ServiceError)
    expect((caught as ServiceError).code).toBe('BAD_REQUEST')
    expect((caught as ServiceError).message).toMatch(message)
  })
})
