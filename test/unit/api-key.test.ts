import { describe, expect, it } from 'vitest'
import { isAuthorized, presentedKey } from '../../src/api-key.js'

/** The API key check both doors share: HTTP headers or gRPC metadata, compared in constant time. */

describe('isAuthorized', () => {
  it.each([
    [{ authorization: 'Bearer k3y' }, true],
    [{ authorization: 'bearer k3y' }, true],
    [{ authorization: 'Bearer  k3y ' }, true],
    [{ 'x-api-key': 'k3y' }, true],
    [{ authorization: 'Basic k3y' }, false],
    [{ authorization: 'Bearer k3y2' }, false],
    [{ authorization: 'Bearer k3' }, false],
    [{ 'x-api-key': ['k3y', 'k3y'] }, false],
    [{ 'x-api-key': '' }, false],
    [{}, false]
  ])('%j → %s', (headers, expected) => {
    expect(isAuthorized(headers, 'k3y')).toBe(expected)
  })

  it('takes gRPC metadata maps too (lower-case keys); binary metadata carries no key', () => {
    expect(isAuthorized({ 'x-api-key': 'k3y' }, 'k3y')).toBe(true)
    expect(isAuthorized({ 'x-api-key': Buffer.from('k3y') }, 'k3y')).toBe(false)
  })
})

describe('presentedKey', () => {
  it('the bearer token wins over x-api-key; a malformed Authorization header falls back to x-api-key', () => {
    expect(presentedKey({ authorization: 'Bearer one', 'x-api-key': 'two' })).toBe('one')
    expect(presentedKey({ authorization: 'Bearer one two', 'x-api-key': 'two' })).toBe('two')
    expect(presentedKey({})).toBeUndefined()
  })
})
