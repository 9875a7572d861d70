import { SETTINGS, plainText } from './config.js'

/**
 * The settings table in two renderings: `--help` for a terminal and the table in
 * docs/configuration.md (scripts/settings-table.ts writes it; a test checks the file matches).
 * Both come from SETTINGS alone, so a new setting is documented by declaring it.
 */

type Setting = (typeof SETTINGS)[number]

/** Whether argv asks for help: `--help` or `-h` anywhere before a `--` terminator. */
export function wantsHelp(argv: readonly string[]): boolean {
  for (const arg of argv) {
    if (arg === '--') return false
    if (arg === '--help' || arg === '-h') return true
  }
  return false
}

function defaultOf(s: Setting): string | undefined {
  return 'fallback' in s && s.fallback !== undefined ? String(s.fallback) : undefined
}

/** The description with an enum's choices appended, as the table and the help show it. */
function meaning(s: Setting): string {
  return s.kind === 'enum' ? `${s.description} One of: ${(s.choices ?? []).join(', ')}.` : s.description
}

/** The value a flag takes, as --help shows it; a boolean flag takes none. */
const VALUE_HINTS: Readonly<Record<string, string>> = { boolean: '', integer: ' <n>', origins: ' <origins>', list: ' <names>' }

function valueHint(s: Setting): string {
  if (s.kind === 'enum') return ` <${(s.choices ?? []).join('|')}>`
  return VALUE_HINTS[s.kind] ?? ' <text>'
}

/** Words of `text` in lines of at most `width` characters, each prefixed with `indent`. */
function wrap(text: string, indent: string, width: number): string[] {
  const lines: string[] = []
  let line = ''
  for (const word of text.split(/\s+/)) {
    if (line.length > 0 && indent.length + line.length + 1 + word.length > width) {
      lines.push(indent + line)
      line = word
    } else {
      line = line.length === 0 ? word : `${line} ${word}`
    }
  }
  if (line.length > 0) lines.push(indent + line)
  return lines
}

/** What `--help` prints: usage, then each setting with its flag, variable, default and meaning. */
export function helpText(width = 100): string {
  const lines = [
    'Usage: npm start -- [flags]      or      node dist/src/main.js [flags]',
    '',
    'resnet-serve: image classification with ResNet ONNX models over HTTP (/classify, KServe V2) and gRPC.',
    'Each setting comes from its flag, else its environment variable, else its default; all are checked',
    'before anything starts (a bad value: exit code 2 and the fix). A boolean flag alone turns its',
    'setting on; --flag=false, --flag false or --no-flag turn it off, as its variable takes true or',
    'false. Details: docs/configuration.md.',
    ''
  ]
  for (const s of SETTINGS) {
    const fallback = defaultOf(s)
    lines.push(`  --${s.flag}${valueHint(s)}    env ${s.env}    ${fallback === undefined ? 'no fixed default' : `default ${fallback}`}`)
    lines.push(...wrap(plainText(meaning(s)), '      ', width))
  }
  lines.push('  -h, --help', '      Print this help and exit.', '')
  return lines.join('\n')
}

/** The markdown table of docs/configuration.md: flag, environment variable, default ("—" when derived), meaning. */
export function settingsTable(): string {
  const rows = SETTINGS.map((s) => {
    const fallback = defaultOf(s)
    return `| \`--${s.flag}\` | \`${s.env}\` | ${fallback === undefined ? '—' : `\`${fallback}\``} | ${meaning(s)} |`
  })
  return ['| flag | environment | default | what it does |', '|---|---|---|---|', ...rows].join('\n')
}
