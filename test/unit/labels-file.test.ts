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
  it('regression: reads JSON labels as TorchServe and Keras ship them (index_to_name.json was one line, "has 1 labels")', () => {
    expect(parseLabels('{"0": "tench", "1": "goldfish"}')).toEqual(['tench', 'goldfish'])
    expect(parseLabels('{"1": ["n01443537", "goldfish"], "0": ["n01440764", "tench"]}')).toEqual(['tench', 'goldfish'])
    expect(parseLabels('\uFEFF["tench", "goldfish, Carassius auratus"]\n')).toEqual(['tench', 'goldfish, Carassius auratus'])
    // Text that only starts like JSON is a labels file of lines.
    expect(parseLabels('[unused]\ntench\n')).toEqual(['[unused]', 'tench'])
  })
  it('refuses JSON that does not name every class index from 0, saying what is wrong', () => {
    for (const [json, problem] of [
      [{ 0: 'a', 2: 'c' }, 'is JSON with 2 entries but a class index 2 (its indexes must run from 0 without gaps).'],
      [{ 99999999: 'a' }, 'is JSON with 1 entries but a class index 99999999 (its indexes must run from 0 without gaps).'],
      [{ 0: 'a', tench: 'b' }, 'is JSON whose key "tench" is not a class index (0, 1, 2, …).'],
      [{ 0: 'a', 1: 7 }, 'is JSON whose entry "1" is not a class name (a string, or [id, name], on one line).'],
      [{ 0: 'a', 1: 'two\nlines' }, 'is JSON whose entry "1" is not a class name (a string, or [id, name], on one line).'],
      [['a', ''], 'is JSON whose entry "1" is not a class name (a string, or [id, name], on one line).'],
      [{}, 'is JSON with no class names.']
    ] as const) {
      expect(parseLabels(JSON.stringify(json)), JSON.stringify(json)).toBe(problem)
    }
  })
})
