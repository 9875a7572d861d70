import { stat } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { isPermissionDenied } from '../../src/repository/repository.js'

/**
 * Which failed file accesses are reported as unreadable rather than missing. The real denials are
 * in test/system/unreadable-model-files.test.ts; EPERM (a refusal by a security module or a
 * mount's rules, not by the mode) cannot be provoked there, so the codes are checked here.
 */

const failure = (code: string): NodeJS.ErrnoException => Object.assign(new Error(code), { code })

describe('isPermissionDenied', () => {
  it('EACCES and EPERM are a refusal; a missing file and a plain error are not', async () => {
    expect(isPermissionDenied(failure('EACCES'))).toBe(true)
    expect(isPermissionDenied(failure('EPERM'))).toBe(true)
    expect(isPermissionDenied(await stat('/no/such/model.onnx').catch((e: unknown) => e))).toBe(false)
    expect(isPermissionDenied(new Error('not a file'))).toBe(false)
    expect(isPermissionDenied(undefined)).toBe(false)
  })
})
