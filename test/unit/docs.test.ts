import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { SETTINGS } from '../../src/config.js'
import { ERRORS, type ErrorCode } from '../../src/errors.js'
import { httpStatusOf } from '../../src/http/error-status.js'
import { grpcStatusName } from '../../src/grpc/error-status.js'

/** The docs are part of the API: every error code and every setting is documented, and correctly. */

describe('docs agree with the code', () => {
  it('docs/operations.md lists every error code with its HTTP and gRPC status', async () => {
    const text = await readFile('docs/operations.md', 'utf8')
    for (const code of Object.keys(ERRORS) as ErrorCode[]) {
      const row = text.split('\n').find((l) => l.startsWith(`| \`${code}\` |`))
      expect(row, `docs/operations.md has no row for ${code}`).toBeDefined()
      const cells = row!.split('|').map((c) => c.trim())
      expect(cells[2], `${code}: HTTP status`).toBe(String(httpStatusOf(ERRORS[code].kind)))
      expect(cells[3], `${code}: gRPC status`).toBe(grpcStatusName(ERRORS[code].kind))
    }
    const documented = [...text.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1])
    expect(
      documented.filter((c) => !(c! in ERRORS)),
      'codes documented but not in src/errors.ts'
    ).toEqual([])
  })

  it('docs/configuration.md lists every setting with its flag, environment variable and default', async () => {
    const text = await readFile('docs/configuration.md', 'utf8')
    for (const s of SETTINGS) {
      const row = text.split('\n').find((l) => l.startsWith(`| \`--${s.flag}\` |`))
      expect(row, `docs/configuration.md has no row for --${s.flag}`).toBeDefined()
      expect(row).toContain(`\`${s.env}\``)
      if ('fallback' in s && s.fallback !== undefined) expect(row).toContain(`\`${String(s.fallback)}\``)
    }
  })
})
