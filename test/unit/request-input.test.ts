import { describe, expect, it } from 'vitest'
import { loadSettings } from '../../src/config.js'
import { isServiceError } from '../../src/errors.js'
import { decodeBase64Item, jsonBatchBodyLimit } from '../../src/http/request-input.js'

/** What the HTTP routes read the same way: base64 images, and how large a JSON body of them may be. */

describe('decodeBase64Item', () => {
  const bytes = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x10, 0xfb, 0x3e])

  it('takes the standard and the URL-safe alphabet, with or without padding', () => {
    for (const b64 of [bytes.toString('base64'), bytes.toString('base64url'), bytes.toString('base64').replace(/=+$/, '')]) {
      expect(Buffer.from(decodeBase64Item(b64) as Uint8Array).equals(bytes), b64).toBe(true)
    }
  })

  it.each([
    ['', 'EMPTY_BODY'],
    ['not base64!', 'INVALID_BASE64'],
    ['abcde', 'INVALID_BASE64'],
    ['abc==', 'INVALID_BASE64'],
    ['ab=c', 'INVALID_BASE64']
  ])('%j → %s, for the item slot (not thrown)', (b64, code) => {
    const item = decodeBase64Item(b64)
    expect(isServiceError(item) && item.code).toBe(code)
  })
})

describe('jsonBatchBodyLimit', () => {
  it('holds --body-limit-bytes of images in base64 plus the JSON around --max-batch-items of them', () => {
    const settings = loadSettings(['--body-limit-bytes', '3000000', '--max-batch-items', '64'], {})
    const limit = jsonBatchBodyLimit(settings)
    const items = Array.from({ length: 64 }, () => ({ b64: Buffer.alloc(3_000_000 / 64).toString('base64') }))
    const body = JSON.stringify({ instances: items, topk: 1000 })
    expect(body.length).toBeLessThanOrEqual(limit)
    // and not much more: the base64 itself is 4/3 of the images.
    expect(limit).toBeLessThan(4_000_000 * 1.01 + 64 * 64 + 4096)
  })
})
