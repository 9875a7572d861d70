import { describe, expect, it } from 'vitest'
import { predictions, softmax, topK } from '../../src/core/postprocess.js'

/** From one image's class scores to the answer: softmax, the k best, their labels. */

const close = (a: number, b: number, eps = 1e-6): boolean => Math.abs(a - b) <= eps

describe('softmax', () => {
  it('sums to 1 and keeps the order of the scores', () => {
    const p = softmax(Float32Array.from([1, 3, 2, -1]))
    expect(
      close(
        p.reduce((s, x) => s + x, 0),
        1
      )
    ).toBe(true)
    expect(
      [...p]
        .map((x, i) => [x, i])
        .sort((a, b) => b[0]! - a[0]!)
        .map(([, i]) => i)
    ).toEqual([1, 2, 0, 3])
  })

  it('is the textbook value on a small case', () => {
    const p = softmax(Float32Array.from([0, Math.log(3)]))
    expect(close(p[0]!, 0.25)).toBe(true)
    expect(close(p[1]!, 0.75)).toBe(true)
  })

  it('stays finite on logits whose exponentials overflow (the maximum is subtracted first)', () => {
    const p = softmax(Float32Array.from([1000, 999, -1000]))
    expect([...p].every(Number.isFinite)).toBe(true)
    expect(close(p[0]! / p[1]!, Math.E, 1e-4)).toBe(true)
    expect(p[2]).toBe(0)
  })

  it('equal scores give equal probabilities', () => {
    expect([...softmax(new Float32Array(4).fill(7))]).toEqual([0.25, 0.25, 0.25, 0.25])
  })

  it('writes into `out`, which may be the scores themselves', () => {
    const scores = Float32Array.from([1, 2, 3])
    const expected = [...softmax(scores)]
    expect(softmax(scores, scores)).toBe(scores)
    expect([...scores]).toEqual(expected)
  })
})

describe('topK', () => {
  it('the k highest, best first', () => {
    expect(topK(Float32Array.from([0.1, 0.5, 0.2, 0.9, 0.3]), 3)).toEqual([3, 1, 4])
  })

  it('ties keep the lower index first', () => {
    expect(topK(Float32Array.from([1, 2, 2, 1, 2]), 4)).toEqual([1, 2, 4, 0])
  })

  it('k larger than the scores gives them all, sorted', () => {
    expect(topK(Float32Array.from([2, 3, 1]), 10)).toEqual([1, 0, 2])
  })

  it('agrees with a full sort on 1000 random scores for every k up to 20', () => {
    let seed = 42
    const random = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31
    const scores = Float32Array.from({ length: 1000 }, random)
    const sorted = [...scores.keys()].sort((a, b) => scores[b]! - scores[a]! || a - b)
    for (let k = 1; k <= 20; k++) expect(topK(scores, k)).toEqual(sorted.slice(0, k))
  })
})

describe('predictions', () => {
  const labels = ['cat', 'dog', 'fish']

  it('softmax of logits, then the k best with their labels', () => {
    const preds = predictions(Float32Array.from([0, Math.log(3), -50]), labels, 2, false)
    expect(preds.map((p) => [p.index, p.label])).toEqual([
      [1, 'dog'],
      [0, 'cat']
    ])
    expect(close(preds[0]!.probability, 0.75, 1e-5)).toBe(true)
  })

  it('a model that outputs probabilities is answered as it is, not softmaxed again', () => {
    const preds = predictions(Float32Array.from([0.2, 0.7, 0.1]), labels, 1, true)
    expect(preds).toEqual([{ index: 1, label: 'dog', probability: Math.fround(0.7) }])
  })
})
