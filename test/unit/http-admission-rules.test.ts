import { describe, expect, it } from 'vitest'
import { routeAccess } from '../../src/http/access.js'
import { mediaTypeOf } from '../../src/http/admission.js'
import { multipartBodyLimit, TOLERATED_FIELDS } from '../../src/http/multipart-body.js'
import { BATCH_ROUTE } from '../../src/http/routes/batch.js'

/** The rules the HTTP door's admission hooks apply before a body byte is read. */

describe('routeAccess', () => {
  it.each([
    ['/classify', 'inference'],
    [BATCH_ROUTE, 'inference'],
    ['/v2/models/:model/infer', 'inference'],
    ['/v2/models/:model/versions/:version/infer', 'inference'],
    ['/health/ready', 'health'],
    ['/v2/health/live', 'health'],
    ['/metrics', 'metrics'],
    ['/models', 'open'],
    ['/v2/models/:model', 'open'],
    ['/docs/json', 'open'],
    ['/', 'open'],
    [undefined, 'open']
  ])('%s → %s', (url, access) => {
    expect(routeAccess(url)).toBe(access)
  })
})

describe('mediaTypeOf', () => {
  it('the type without parameters, lower-cased; undefined when there is no header', () => {
    expect(mediaTypeOf({ 'content-type': 'Multipart/Form-Data; boundary=x' })).toBe('multipart/form-data')
    expect(mediaTypeOf({ 'content-type': ' image/jpeg ' })).toBe('image/jpeg')
    expect(mediaTypeOf({})).toBeUndefined()
  })
})

describe('multipartBodyLimit', () => {
  it('the files plus a kibibyte of part headers per part, plus slack', () => {
    expect(multipartBodyLimit({ files: 1, ...TOLERATED_FIELDS, fileBytes: 1000 })).toBe(1000 + 9 * 1024 + 4096)
    expect(multipartBodyLimit({ files: 65, fields: 0, fieldBytes: 0, fileBytes: 16 << 20 })).toBe((16 << 20) + 65 * 1024 + 4096)
  })
})
