// Writes the settings table of docs/configuration.md from SETTINGS (src/config.ts), between its
// two marker comments; test/unit/docs.test.ts fails when the file and the code disagree.
//   npm run docs:settings
import { readFileSync, writeFileSync } from 'node:fs'
import { settingsTable } from '../src/config-help.js'

export const DOC = 'docs/configuration.md'
export const START =
  '<!-- settings-table: generated from SETTINGS in src/config.ts by `npm run docs:settings`; edit the descriptions there -->'
export const END = '<!-- end settings-table -->'

/** The document with its table section replaced by the one the code generates. */
export function withGeneratedTable(text: string): string {
  const start = text.indexOf(START)
  const end = text.indexOf(END)
  if (start === -1 || end < start) throw new Error(`${DOC} has lost its settings-table markers (${START} … ${END})`)
  return `${text.slice(0, start + START.length)}\n\n${settingsTable()}\n\n${text.slice(end)}`
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const text = readFileSync(DOC, 'utf8')
  const next = withGeneratedTable(text)
  if (next !== text) writeFileSync(DOC, next)
  console.log(next === text ? `${DOC}: table up to date` : `${DOC}: table rewritten`)
}
