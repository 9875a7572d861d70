// What one session pays per batch size, outside the service. On the GPU host, after the archives and
// `source .gpu/b/device.sh env`:
//   node load/gpu/first-run.mjs <repository> <model,...> <provider> <batch,...>   (prints Markdown)
//
// 1. The first three runs of each batch size in turn: the first run of a new input shape is what a
//    request pays when the batcher forms a size the session has not run (cuDNN chooses its
//    convolution algorithms per shape). Sizes the server's warm-up.
// 2. Then, with every size warmed, the sizes in a shuffled order (as the batcher forms them under
//    load), with the service's session options and with ONNX Runtime's defaults: the median run per
//    size. If these are far above the third runs of part 1, a change of shape costs time even when
//    the shape was seen before, and batches should keep one shape per session.
// 3. Two sessions in worker threads, as the service runs a model on CUDA (--sessions-per-model 2),
//    both running each size at once: every size warmed and repeated, then shuffled. If part 2 is
//    fast and this is slow, what slows the service's runs is sessions running side by side.
import { performance } from 'node:perf_hooks'
import { join } from 'node:path'
import ort from 'onnxruntime-node'
import { defaultThreadsPerSession } from '../../dist/src/config.js'
import { openSession } from '../../dist/src/core/onnx-session.js'
import { loadModelFolder } from '../../dist/src/repository/repository.js'
import { RawSessionPool } from '../../dist/load/kit/raw-session.js'

const [repository = '/tmp/gpu-models', models = 'resnet50', provider = 'cuda', batches = '1,2,3,4,8,16,32,64,128'] = process.argv.slice(2)
const sizes = batches.split(',').map(Number)
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

function feeds(session, n) {
  const meta = session.inputMetadata[0]
  const uint8 = meta.type === 'uint8'
  const dims = meta.shape[3] === 3 ? [n, 224, 224, 3] : [n, 3, 224, 224]
  const size = n * 3 * 224 * 224
  return {
    [session.inputNames[0]]: new ort.Tensor(uint8 ? 'uint8' : 'float32', uint8 ? new Uint8Array(size) : new Float32Array(size), dims)
  }
}

async function timed(session, input) {
  const t = performance.now()
  await session.run(input)
  return performance.now() - t
}

/** A fixed shuffle (xorshift), so every run of the probe sees the same order. */
function shuffled(list, rounds) {
  let x = 2463534242
  const out = []
  for (let r = 0; r < rounds; r++) out.push(...list)
  for (let i = out.length - 1; i > 0; i--) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    const j = (x >>> 0) % (i + 1)
    ;[out[i], out[j]] = [out[j], out[i]]
  }
  return out
}

console.log(
  `## First runs of each batch size (provider ${provider})\n\n| model | batch | first run ms | second run ms | third run ms |\n|---|---|---|---|---|`
)
const shuffledRows = []
for (const model of models.split(',')) {
  const path = join(repository, model, 'model.onnx')
  const variants = [
    [
      'ONNX Runtime defaults',
      () =>
        ort.InferenceSession.create(path, { executionProviders: provider === 'cuda' ? [{ name: 'cuda', deviceId: 0 }, 'cpu'] : ['cpu'] })
    ],
    [
      "the service's options",
      // Threads as the service gives each of a model's two CUDA sessions (src/config.ts).
      async () => (await openSession(path, { provider, cudaDeviceId: 0, threads: defaultThreadsPerSession(2) })).session
    ]
  ]
  for (const [options, open] of variants) {
    const t0 = performance.now()
    const session = await open()
    const openMs = performance.now() - t0
    const inputs = new Map(sizes.map((n) => [n, feeds(session, n)]))
    if (options === variants[0][0]) console.log(`| ${model} | (session open) | ${openMs.toFixed(0)} | | |`)
    const third = new Map()
    for (const n of sizes) {
      const times = []
      for (let i = 0; i < 3; i++) times.push(await timed(session, inputs.get(n)))
      if (options === variants[0][0]) console.log(`| ${model} | ${n} | ${times.map((t) => t.toFixed(1)).join(' | ')} |`)
      third.set(n, times[2])
    }
    const bySize = new Map(sizes.map((n) => [n, []]))
    for (const n of shuffled(sizes, 5)) bySize.get(n).push(await timed(session, inputs.get(n)))
    for (const n of sizes)
      shuffledRows.push(
        `| ${model} | ${options} | ${n} | ${third.get(n).toFixed(1)} | ${median(bySize.get(n)).toFixed(1)} | ${Math.max(...bySize.get(n)).toFixed(1)} |`
      )
    await session.release()
  }
}
console.log(
  `\n## Every size warmed, then the sizes in a shuffled order (5 runs each)\n\n| model | session options | batch | same size repeated ms | shuffled: median ms | shuffled: max ms |\n|---|---|---|---|---|---|`
)
console.log(shuffledRows.join('\n'))

// 3. Two sessions side by side (worker threads, the service's options and threads per session).
const pairRows = []
for (const model of models.split(',')) {
  const entry = await loadModelFolder(repository, model)
  const pool = await RawSessionPool.open(entry.modelPath, entry.config, { provider, inFlight: 2 })
  const repeated = new Map()
  for (const n of sizes) {
    const times = []
    for (let i = 0; i < 3; i++) times.push(await pool.runOnce(n))
    repeated.set(n, times[2])
  }
  const bySize = new Map(sizes.map((n) => [n, []]))
  for (const n of shuffled(sizes, 5)) bySize.get(n).push(await pool.runOnce(n))
  for (const n of sizes)
    pairRows.push(
      `| ${model} | ${n} | ${repeated.get(n).toFixed(1)} | ${median(bySize.get(n)).toFixed(1)} | ${Math.max(...bySize.get(n)).toFixed(1)} |`
    )
  await pool.close()
}
console.log(
  `\n## Two sessions side by side, both running each size at once (the slower of the two; 5 runs each)\n\n| model | batch | same size repeated ms | shuffled: median ms | shuffled: max ms |\n|---|---|---|---|---|`
)
console.log(pairRows.join('\n'))
