/** Turning one image's class scores into the answer: softmax, then the k best with their labels. */

/** Predictions per image when the request asks for no number (fewer when --max-topk or the model's classes are fewer). */
export const DEFAULT_TOPK = 5

export interface Prediction {
  readonly index: number
  readonly label: string
  readonly probability: number
}

/** Numerically stable softmax (max subtracted first); writes into `out`, which may alias `scores`. */
export function softmax(scores: Float32Array, out: Float32Array = new Float32Array(scores.length)): Float32Array {
  let max = -Infinity
  for (let i = 0; i < scores.length; i++) if (scores[i]! > max) max = scores[i]!
  let sum = 0
  for (let i = 0; i < scores.length; i++) {
    const e = Math.exp(scores[i]! - max)
    out[i] = e
    sum += e
  }
  for (let i = 0; i < out.length; i++) out[i] = out[i]! / sum
  return out
}

/**
 * The k highest entries, best first; ties keep the lower index first. A partial insertion sort:
 * k is small (≤ maxTopk) and one pass over 1000 scores beats sorting them all.
 */
export function topK(values: Float32Array, k: number): number[] {
  const n = Math.min(k, values.length)
  const best: number[] = []
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!
    if (best.length === n && v <= values[best[n - 1]!]!) continue
    let j = best.length < n ? best.length : n - 1
    while (j > 0 && values[best[j - 1]!]! < v) {
      best[j] = best[j - 1]!
      j--
    }
    best[j] = i
  }
  return best
}

export function predictions(scores: Float32Array, labels: readonly string[], k: number, scoresAreProbabilities: boolean): Prediction[] {
  const probs = scoresAreProbabilities ? scores : softmax(scores)
  return topK(probs, k).map((index) => ({ index, label: labels[index]!, probability: probs[index]! }))
}

/** The index of the first NaN or ±Infinity in `values`, or -1. */
export function firstNonFinite(values: Float32Array): number {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return i
  return -1
}
