/**
 * Which batch sizes a session runs. On CUDA the first run of each new input shape is slow (cuDNN
 * chooses its convolution algorithms per shape: 0.1–1.1 s per batch size for ResNet-50 on an H200,
 * docs/gpu-report.md), so a batch is padded with zero images up to the next size of a short ladder
 * and every size of the ladder is run once before the model reports ready. On the CPU there is no
 * such cost, so batches run at their own size and only the largest is warmed up.
 */

/** 1, 2, 3, 4, 6, 8, 12, 16, 24, … up to `max` (and `max` itself): padding wastes at most a third. */
export function sizeLadder(max: number): number[] {
  const sizes = new Set<number>()
  for (let p = 1; p <= max; p *= 2) {
    sizes.add(p)
    if (p >= 2 && p + p / 2 <= max) sizes.add(p + p / 2)
  }
  sizes.add(max)
  return [...sizes].sort((a, b) => a - b)
}

export interface RunSizes {
  /** The sizes warmed up before ready; with padding, the only sizes that run. */
  readonly warmUp: readonly number[]
  /** The size a batch of `n` runs at. */
  runSize(n: number): number
}

/**
 * `padTo` is the model's `batching.padTo`: a list of sizes, `[]` for no padding, or absent for the
 * provider's default (the ladder on CUDA, none on the CPU). `max` is the largest batch the model takes.
 */
export function runSizes(max: number, provider: 'cuda' | 'cpu', padTo: readonly number[] | undefined): RunSizes {
  const listed = padTo ?? (provider === 'cuda' ? sizeLadder(max) : [])
  const ladder = [...new Set([...listed.filter((s) => s < max), max])].sort((a, b) => a - b)
  if (listed.length === 0) return { warmUp: [max], runSize: (n) => n }
  return {
    warmUp: ladder,
    runSize(n) {
      for (const size of ladder) if (size >= n) return size
      return n
    }
  }
}
