/**
 * What a JSON body may cost to parse, checked by one scan before JSON.parse sees it (the batch
 * endpoint's body, a V2 inference header). Parsing is synchronous on the event loop, and its cost
 * is in the values, not the bytes: 22 MB of base64 in one string parses in milliseconds, 22 MB of
 * `0,` (11 M numbers) took 1.6 s here and 16 MB of `[0],` 1.9 s, with every other request waiting.
 */

/**
 * Levels of nesting. A V2 header nests 3 levels around tensor data of rank 4 at most; nesting is
 * what makes a small body expensive (every level is an array object to build, then a stack frame
 * to walk), so 16 MB of `[` costs a scan, not a parse.
 */
export const MAX_JSON_DEPTH = 32

/**
 * Values, counted as commas, each string once more, each object key (its colon) as KEY_WEIGHT and
 * each array or object (its opening bracket or brace) as CONTAINER_WEIGHT: 2^20 holds six
 * 3×224×224 images as JSON numbers (903,168), flat or nested (4,057 arrays), and parses in about
 * 0.2 s; larger tensors go as binary data (the binary tensor data extension), which costs no parse at all.
 */
export const MAX_JSON_VALUES = 2 ** 20

/**
 * What one object key counts for: a distinct key costs JSON.parse about 1.7 µs here against 0.15 µs
 * for a number (1 M keys in one object took 1.9 s), so the limit holds about 116,000 keys (with their quotes). A V2 header
 * has tens, a full batch-endpoint body 64 × 1.
 */
const KEY_WEIGHT = 8

/**
 * What one array or object counts for. Each is a heap object JSON.parse builds and the collector
 * then walks: 500,000 `[0]` (2 MB) held the event loop 0.4–0.8 s in the server, against 70 ms for
 * a million numbers, when a bracket counted as one value. At 16 the limit holds about 62,000
 * arrays; tensor data nested by its shape has one array per 224 numbers.
 */
const CONTAINER_WEIGHT = 16

const QUOTE = 0x22
const COMMA = 0x2c
const COLON = 0x3a
const BACKSLASH = 0x5c
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d

export interface JsonLimits {
  readonly depth: number
  readonly values: number
}

const DEFAULT_LIMITS: JsonLimits = { depth: MAX_JSON_DEPTH, values: MAX_JSON_VALUES }

/** Where bytes [0, end) first pass a limit: the byte offset and which; undefined within both. */
export interface JsonExcess {
  readonly limit: 'depth' | 'values'
  readonly at: number
}

/**
 * The first place bytes [0, end) nest deeper than `limits.depth` or hold more than `limits.values`
 * values (keys and containers weighted), or undefined. Iterative; strings are skipped with indexOf (base64 images are most of a
 * JSON body's bytes). Malformed JSON is left for JSON.parse to describe: an unbalanced close only
 * lowers the depth.
 */
export function jsonExcess(body: Uint8Array, end: number, limits: JsonLimits = DEFAULT_LIMITS): JsonExcess | undefined {
  let depth = 0
  let values = 0
  for (let i = 0; i < end; i++) {
    const byte = body[i]!
    // Digits, signs and spaces (most of a numeric tensor's bytes) all sort below `[`.
    if (byte < OPEN_BRACKET && byte !== QUOTE) {
      if (byte === COMMA) values++
      else if (byte === COLON) values += KEY_WEIGHT
      else continue
      if (values > limits.values) return { limit: 'values', at: i }
      continue
    }
    if (byte === OPEN_BRACKET || byte === OPEN_BRACE) {
      if (++depth > limits.depth) return { limit: 'depth', at: i }
      values += CONTAINER_WEIGHT
      if (values > limits.values) return { limit: 'values', at: i }
    } else if (byte === CLOSE_BRACKET || byte === CLOSE_BRACE) {
      depth--
    } else if (byte === QUOTE) {
      // A string counts once more than a number: each is an allocation, and a million 32-character
      // strings (a V2 body of base64 BYTES elements) parsed in 0.31–0.58 s here, a million numbers in 0.17–0.29 s.
      if (++values > limits.values) return { limit: 'values', at: i }
      i = closingQuote(body, i + 1, end)
    }
  }
  return undefined
}

/** The refusal of bytes [0, end) of a JSON body past the default limits, or undefined. */
export function jsonCostRefusal(body: Uint8Array, end: number): string | undefined {
  const excess = jsonExcess(body, end)
  if (excess === undefined) return undefined
  return excess.limit === 'depth'
    ? `The JSON nests deeper than ${MAX_JSON_DEPTH} levels (at byte ${excess.at}).`
    : `The JSON holds more than ${MAX_JSON_VALUES} values (at byte ${excess.at}); send large tensors as binary data (Inference-Header-Content-Length; tritonclient binary_data=True, KServe set_data_from_numpy(..., binary_data=True)) or over gRPC.`
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
