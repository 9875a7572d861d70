import { describe, expect, it } from 'vitest'
import { parseLabels } from '../../src/repository/repository.js'

describe('parseLabels (labels.txt, --labels)', () => {
  it('reads one class per line, LF or CRLF, with or without a final newline', () => {
    expect(parseLabels('tench\ngoldfish\n')).toEqual(['tench', 'goldfish'])
    expect(parseLabels('tench\r\ngoldfish')).toEqual(['tench', 'goldfish'])
  })
  it('drops a UTF-8 byte-order mark (Windows editors write one), which would otherwise be part of class 0', () => {
    expect(parseLabels('\uFEFFtench\ngoldfish\n')).toEqual(['tench', 'goldfish'])
  })
  it('drops blank lines at the end', () => {
    expect(parseLabels('tench\ngoldfish\n\n\r\n  \n')).toEqual(['tench', 'goldfish'])
  })
  it('refuses a blank line before the last class, naming the line: every later class would shift by one', () => {
    expect(parseLabels('tench\n\ngoldfish\n')).toBe('has an empty line (line 2) before its last class name.')
    expect(parseLabels('\n\n')).toBe('has no class names.')
  })
})
