/**
 * Seeded random weights for a ResNet, for when no trained weights exist (none can be downloaded
 * here). The numbers mean nothing, but the network behaves like a network: activations stay in
 * range at every depth, and different photos give different, non-degenerate softmax outputs, so
 * the service, batching and preprocessing can be exercised and compared on real images.
 *
 * Bump SYNTHETIC_WEIGHTS_REVISION whenever the numbers a seed produces change: caches of built
 * models key on it.
 */
export const SYNTHETIC_WEIGHTS_REVISION = 1

/**
 * sfc32 (Chris Doty-Humphrey's Small Fast Counting generator): 128 bits of state, passes PractRand,
 * and needs only 32-bit integer ops, which V8 runs without allocating. Seeded through splitmix32 so
 * nearby seeds (1, 2, 3) start far apart.
 */
export class SeededRandom {
  private a: number
  private b: number
  private c: number
  private d: number

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new Error(`seed must be a safe integer, got ${seed}`)
    let s = (seed >>> 0) ^ Math.imul(Math.floor(seed / 2 ** 32) >>> 0, 0x9e3779b9)
    const splitmix32 = (): number => {
      s = (s + 0x9e3779b9) | 0
      let z = s
      z = Math.imul(z ^ (z >>> 16), 0x21f0aaad)
      z = Math.imul(z ^ (z >>> 15), 0x735a2d97)
      return (z ^ (z >>> 15)) >>> 0
    }
    this.a = splitmix32()
    this.b = splitmix32()
    this.c = splitmix32()
    this.d = splitmix32()
    for (let i = 0; i < 12; i++) this.nextUint32()
  }

  nextUint32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0
    this.d = (this.d + 1) | 0
    this.a = this.b ^ (this.b >>> 9)
    this.b = (this.c + (this.c << 3)) | 0
    this.c = (this.c << 21) | (this.c >>> 11)
    this.c = (this.c + t) | 0
    return t >>> 0
  }

  /** Uniform in the open interval (−1, 1). */
  private nextSigned(): number {
    return (this.nextUint32() + 0.5) / 2 ** 31 - 1
  }

  /**
   * Fills `out` with normal samples N(0, std²): Marsaglia's polar form of Box–Muller, which needs
   * no sin/cos and yields two samples per accepted pair.
   */
  fillNormal(out: Float32Array, std: number): Float32Array {
    let i = 0
    while (i < out.length) {
      let u: number
      let v: number
      let r: number
      do {
        u = this.nextSigned()
        v = this.nextSigned()
        r = u * u + v * v
      } while (r >= 1 || r === 0)
      const f = std * Math.sqrt((-2 * Math.log(r)) / r)
      out[i++] = u * f
      if (i < out.length) out[i++] = v * f
    }
    return out
  }
}

/** Makes each row of a row-major [rows, rowLength] matrix sum to zero. */
function subtractRowMeans(matrix: Float32Array, rowLength: number): void {
  for (let start = 0; start < matrix.length; start += rowLength) {
    let sum = 0
    for (let i = start; i < start + rowLength; i++) sum += matrix[i]!
    const mean = sum / rowLength
    for (let i = start; i < start + rowLength; i++) matrix[i] = matrix[i]! - mean
  }
}

export interface BatchNormWeights {
  readonly scale: Float32Array
  readonly shift: Float32Array
  readonly runningMean: Float32Array
  readonly runningVariance: Float32Array
}

/** Where a BatchNormalization sits decides its scale (see residualBranchScale). */
export type BatchNormRole = 'main' | 'residual-branch-end'

/**
 * Spread (std) of the logits a typical photo gets. Over 1000 classes, spreads of 1.5–4 give top-1
 * probabilities of a few percent to a few tens of percent: neither flat nor one-hot.
 */
const TARGET_LOGIT_STD = 2
/**
 * How much the pooled features of one photo vary across channels (std), measured on 8 skimage
 * photos at all three depths: 0.08–0.19, nearly independent of depth thanks to the branch scaling.
 * Centred filters pass on only the variance of a rectified input (0.34 of its square mean, where
 * He assumes 0.5), so activations shrink a little per conv; the classifier makes up for it.
 */
const POOLED_FEATURE_SPREAD = 0.1

/**
 * The weights of one ResNet, drawn from a single seeded stream in the order the builder asks for
 * them; the same seed and architecture give bit-identical weights.
 */
export class SyntheticResNetWeights {
  private readonly random: SeededRandom
  private readonly residualBranchScale: number

  /** `residualBlocks`: the number of bottleneck blocks in the whole network (16, 33 or 50). */
  constructor(seed: number, residualBlocks: number) {
    this.random = new SeededRandom(seed)
    /*
     * Why: in inference mode a BatchNormalization with mean 0 / variance 1 normalises nothing, so
     * nothing stops activations from growing with depth. He initialisation keeps each conv + ReLU
     * at about the same second moment q, so each block adds a branch of second moment ~q·γ² to a
     * trunk of ~q. With γ = 1 the activations grow ~16% per block (measured: max |logit| 48 at
     * ResNet-50, 7,500 at ResNet-152, every softmax one-hot). γ = 1/√L in the last BN of every
     * branch (L = blocks in the network) bounds the growth by (1 + 1/L)^L ≤ e in second moment at
     * every depth (measured on 5 photos: max |logit| 5–13 at all three), keeps every branch contributing
     * (unlike Fixup's / Goyal et al.'s zero-γ, which would leave the branches dead weight), and
     * keeps the mapping near enough to the shortcut path that different photos stay different.
     */
    this.residualBranchScale = 1 / Math.sqrt(residualBlocks)
  }

  /**
   * He (Kaiming) normal initialisation for a ReLU network, std = √(2 / fan_in), OIHW layout, then
   * each filter shifted to zero mean. Why: post-ReLU activations all have a positive mean, and a
   * random filter turns that shared mean into a large random per-channel offset, the same for every
   * photo. Layer after layer those offsets swamp what the photo contributes (some channels always
   * on, some always dead) and every photo gets the same top-5. A zero-mean filter cancels the shared
   * component (exactly when its input channels' means are equal, which it then keeps roughly true
   * for the next layer): the idea behind weight centring / Weight Standardization (Qiao et al.
   * 2019). The stem's filters are centred too: with no biases and BN shift 0 the whole network is
   * positively homogeneous, so logits scale with the input's magnitude, and a large flat area (the
   * dark sky of skimage's rocket.jpg) would otherwise dominate. Centred, the stem sees edges and
   * colour differences, not overall brightness; measured on 8 photos, the top-1 probability of the
   * most confident photo fell from 0.93 to under 0.5 and the same class no longer won everywhere.
   */
  convWeight(outChannels: number, inChannels: number, kernel: number): Float32Array {
    const fanIn = inChannels * kernel * kernel
    const weight = this.random.fillNormal(new Float32Array(outChannels * fanIn), Math.sqrt(2 / fanIn))
    subtractRowMeans(weight, fanIn)
    return weight
  }

  batchNorm(channels: number, role: BatchNormRole): BatchNormWeights {
    return {
      scale: new Float32Array(channels).fill(role === 'residual-branch-end' ? this.residualBranchScale : 1),
      shift: new Float32Array(channels),
      runningMean: new Float32Array(channels),
      runningVariance: new Float32Array(channels).fill(1)
    }
  }

  /**
   * The classifier, [numClasses, features] as Gemm with transB. Why each row has zero mean: the
   * pooled features are post-ReLU, so every photo shares a large positive component along the
   * all-ones direction; a random row would turn it into the same logit pattern (and the same top-1)
   * for every photo. Rows orthogonal to it leave the logits to what differs between photos.
   */
  classifier(numClasses: number, features: number): { weight: Float32Array; bias: Float32Array } {
    const weight = this.random.fillNormal(
      new Float32Array(numClasses * features),
      TARGET_LOGIT_STD / (POOLED_FEATURE_SPREAD * Math.sqrt(features))
    )
    subtractRowMeans(weight, features)
    const bias = this.random.fillNormal(new Float32Array(numClasses), 0.01)
    return { weight, bias }
  }
}
