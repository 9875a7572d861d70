import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { SETTINGS, plainText } from '../../src/config.js'
import { helpText } from '../../src/config-help.js'
import { ERRORS, type ErrorCode } from '../../src/errors.js'
import { httpStatusOf } from '../../src/http/error-status.js'
import { grpcStatusName } from '../../src/grpc/error-status.js'
import { DOC, withGeneratedTable } from '../../scripts/settings-table.js'

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

  it('the settings table in docs/configuration.md is the one generated from SETTINGS (npm run docs:settings)', async () => {
    const text = await readFile(DOC, 'utf8')
    expect(text, 'docs/configuration.md differs from SETTINGS: run npm run docs:settings').toBe(withGeneratedTable(text))
  })

  it('--help shows every setting with its flag, variable, default and meaning', () => {
    const help = helpText()
    for (const s of SETTINGS) {
      const line = help.split('\n').find((l) => l.startsWith(`  --${s.flag}`))
      expect(line, `--help has no line for --${s.flag}`).toBeDefined()
      expect(line).toContain(`env ${s.env}`)
      if ('fallback' in s && s.fallback !== undefined) expect(line).toContain(`default ${String(s.fallback)}`)
      expect(help.replace(/\s+/g, ' ')).toContain(plainText(s.description).replace(/\s+/g, ' '))
    }
    expect(help).not.toContain('`')
  })
})
