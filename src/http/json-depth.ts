/**
 * JSON nested deeper than this is refused before it is parsed (the batch endpoint's body, a V2
 * inference header). A V2 header nests 3 levels around tensor data of rank 4 at most; nesting is
 * what makes a small body expensive (every level is an array object to build, then a stack frame
 * to walk), so 16 MB of `[` costs a scan, not a parse.
 */
export const MAX_JSON_DEPTH = 32

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d

/**
 * The offset of the first `[` or `{` of bytes [0, end) that opens a level deeper than `limit`, or
 * -1. Iterative; strings are skipped with indexOf (base64 images are most of a JSON body's bytes).
 * Malformed JSON is left for JSON.parse to describe: an unbalanced close only lowers the count.
 */
export function jsonTooDeepAt(body: Uint8Array, end: number, limit: number): number {
  let depth = 0
  for (let i = 0; i < end; i++) {
    const byte = body[i]!
    // Digits, signs, commas and spaces (most of a numeric tensor's bytes) all sort below `[`.
    if (byte < OPEN_BRACKET && byte !== QUOTE) continue
    if (byte === OPEN_BRACKET || byte === OPEN_BRACE) {
      if (++depth > limit) return i
    } else if (byte === CLOSE_BRACKET || byte === CLOSE_BRACE) {
      depth--
    } else if (byte === QUOTE) {
      i = closingQuote(body, i + 1, end)
    }
  }
  return -1
}

/** The offset of the quote that ends the string starting at `from` (`end` if it is unterminated). */
function closingQuote(body: Uint8Array, from: number, end: number): number {
  for (let i = from; i < end; i++) {
    i = body.indexOf(QUOTE, i)
    if (i === -1 || i >= end) return end
    let backslashes = 0
    while (body[i - 1 - backslashes] === BACKSLASH) backslashes++
    if (backslashes % 2 === 0) return i
  }
  return end
}
