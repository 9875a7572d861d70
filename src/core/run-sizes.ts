/**
 * Which batch sizes each session of a model runs. On CUDA a session must keep one input shape:
 * ONNX Runtime's CUDA convolutions (cuDNN 9 frontend, onnxruntime 1.20 and later) rebuild their
 * execution plans whenever a run's input shape differs from the previous run's, including a shape
 * the session has run before. For ResNet-50 on an H200 that is 0.1–1.1 s a run against 2–16 ms
 * for a repeated shape (docs/gpu-report.md), and onnxruntime-node cannot set the algorithm search
 * that would make it cheaper. So on CUDA each session is given one batch size, pads every batch
 * it runs to that size, and runs it once before the model reports ready ("fixed shapes"). On the
 * CPU there is no such cost: batches run at their own size on any session.
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

/** The small size a second fixed-shape session runs by default, so a light load is not padded to the maximum. */
const SMALL_FIXED_SIZE = 16

/** The batching settings of a model's config.json that decide its run sizes. */
export interface RunSizeSettings {
  readonly padTo?: readonly number[] | undefined
  readonly fixedShapes?: boolean | undefined
}

export interface RunPlan {
  /** Each session runs one input shape (its capacity), padding smaller batches to it. */
  readonly fixedShapes: boolean
  /** Per session, the largest batch it takes. */
  readonly capacities: readonly number[]
  /** Per session, the sizes it runs once before the model reports ready. */
  readonly warmUp: ReadonlyArray<readonly number[]>
  /** The sizes batches are padded to ([] when they run at their own size): Triton's preferred_batch_size. */
  readonly paddedSizes: readonly number[]
  /** The size a batch of `n` runs at on session `session`. */
  runSize(n: number, session: number): number
}

function sortedSizes(listed: readonly number[], max: number): number[] {
  return [...new Set([...listed.filter((s) => s < max), max])].sort((a, b) => a - b)
}

/**
 * `max` is the largest batch the model takes, `sessions` how many sessions it has. `padTo` absent
 * means the provider's default; `[]` turns padding off (and with it fixed shapes, unless asked for).
 * Throws, with the fix, when fixed shapes are asked for with more sizes than sessions or with no padding.
 */
export function runPlan(max: number, provider: 'cuda' | 'cpu', sessions: number, settings: RunSizeSettings): RunPlan {
  const { padTo } = settings
  const paddingOff = padTo !== undefined && padTo.length === 0
  const fixedShapes = settings.fixedShapes ?? (provider === 'cuda' && !paddingOff)
  if (fixedShapes) {
    if (paddingOff) {
      throw new Error(
        "batching.fixedShapes pads every batch to its session's size, and batching.padTo [] turns padding off: drop one of them."
      )
    }
    const sizes = sortedSizes(padTo ?? (sessions > 1 ? [Math.min(SMALL_FIXED_SIZE, max)] : []), max)
    if (sizes.length > sessions) {
      throw new Error(
        `with batching.fixedShapes each session runs one batch size, and ${sizes.join(', ')} (batching.padTo and the maximum ${max}) need ${sizes.length} sessions where the model has ${sessions}: raise --sessions-per-model to ${sizes.length} or list fewer sizes in batching.padTo.`
      )
    }
    const capacities = Array.from({ length: sessions }, (_, i) => sizes[i] ?? max)
    return {
      fixedShapes,
      capacities,
      warmUp: capacities.map((size) => [size]),
      paddedSizes: sizes,
      runSize: (_n, session) => capacities[session]!
    }
  }
  const capacities = new Array<number>(sessions).fill(max)
  const listed = padTo ?? (provider === 'cuda' ? sizeLadder(max) : [])
  if (listed.length === 0) {
    return { fixedShapes, capacities, warmUp: capacities.map(() => [max]), paddedSizes: [], runSize: (n) => n }
  }
  const ladder = sortedSizes(listed, max)
  return {
    fixedShapes,
    capacities,
    warmUp: capacities.map(() => ladder),
    paddedSizes: ladder,
    runSize(n) {
      for (const size of ladder) if (size >= n) return size
      return n
    }
  }
}
