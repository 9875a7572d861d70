import { resolve } from 'node:path'
import { writeSyntheticModelFolder } from '../model-tools/model-folder.js'
import {
  RESNET_DEPTHS,
  RESNET_VARIANTS,
  countResNet,
  isResNetDepth,
  isResNetVariant,
  type ResNetDepth,
  type ResNetVariant
} from '../model-tools/resnet.js'
import { UsageError, parseFlags, runCommand } from './command-line.js'

/**
 * npm run model:build -- [--depth 50|101|152 | --all] [--variant v1|v1.5] [--seed N] [--name NAME]
 *                        [--repository DIR] [--count-only]
 *
 * Writes ResNet model folders with synthetic (seeded random, untrained) weights into the model
 * repository. Counts go to stdout, progress to stderr. Exit code 2 for bad flags.
 */

const USAGE = `Usage: npm run model:build -- [options]

Writes a ResNet (He et al. 2015) with SYNTHETIC seeded random weights into the model repository.

  --depth 50|101|152     which ResNet (default 50)
  --all                  all three depths (names resnet50, resnet101, resnet152)
  --variant v1|v1.5      v1: stride on the first 1x1 (the paper); v1.5: on the 3x3 (torchvision). Default v1.5
  --seed N               weight seed, a non-negative integer (default 1)
  --name NAME            folder name (default resnet<depth>; not with --all)
  --repository DIR       model repository root (default ./models)
  --count-only           print parameter and multiply-add counts, write nothing
  -h, --help             this text`

interface BuildRequest {
  readonly depths: readonly ResNetDepth[]
  readonly variant: ResNetVariant
  readonly variantGiven: boolean
  readonly seed: number
  readonly name: string | undefined
  readonly repository: string
  readonly countOnly: boolean
}

function parseRequest(argv: string[]): BuildRequest | 'help' {
  const parsed = parseFlags({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      depth: { type: 'string' },
      all: { type: 'boolean', default: false },
      variant: { type: 'string' },
      seed: { type: 'string', default: '1' },
      name: { type: 'string' },
      repository: { type: 'string', default: './models' },
      'count-only': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false }
    }
  })
  const v = parsed.values
  if (v.help) return 'help'
  if (v.all && v.depth !== undefined) throw new UsageError('--all and --depth exclude each other.')
  if (v.all && v.name !== undefined)
    throw new UsageError('--name names one model; with --all the names are resnet50, resnet101, resnet152.')
  const depth = Number(v.depth ?? 50)
  if (!isResNetDepth(depth)) throw new UsageError(`--depth must be one of ${RESNET_DEPTHS.join(', ')}, got "${v.depth}".`)
  const variant = v.variant ?? 'v1.5'
  if (!isResNetVariant(variant)) throw new UsageError(`--variant must be one of ${RESNET_VARIANTS.join(', ')}, got "${variant}".`)
  if (!/^\d+$/.test(v.seed) || !Number.isSafeInteger(Number(v.seed))) {
    throw new UsageError(`--seed must be a non-negative integer, got "${v.seed}".`)
  }
  if (v.name !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(v.name)) {
    throw new UsageError(`--name must be 1–64 letters, digits, '_', '.', '-' and start with a letter or digit, got "${v.name}".`)
  }
  return {
    depths: v.all ? RESNET_DEPTHS : [depth],
    variant,
    variantGiven: v.variant !== undefined,
    seed: Number(v.seed),
    name: v.name,
    repository: resolve(v.repository),
    countOnly: v['count-only']
  }
}

const millions = (n: number): string => `${(n / 1e6).toFixed(2)} M`
const billions = (n: number): string => `${(n / 1e9).toFixed(2)} G`

function printCounts(request: BuildRequest): void {
  // With --all and no --variant, both variants side by side: they differ only in multiply-adds.
  const variants = request.depths.length > 1 && !request.variantGiven ? RESNET_VARIANTS : [request.variant]
  const rows = request.depths.flatMap((depth) => variants.map((variant) => ({ depth, variant, ...countResNet({ depth, variant }) })))
  console.log('model        variant  parameters             multiply-adds (224x224)')
  for (const r of rows) {
    console.log(
      `${`ResNet-${r.depth}`.padEnd(13)}${r.variant.padEnd(9)}${r.parameters.toLocaleString('en-US').padStart(11)} (${millions(r.parameters)})  ${r.multiplyAdds.toLocaleString('en-US').padStart(14)} (${billions(r.multiplyAdds)})`
    )
  }
}

async function build(request: BuildRequest): Promise<void> {
  const started = performance.now()
  for (const depth of request.depths) {
    const name = request.name ?? `resnet${depth}`
    const modelStarted = performance.now()
    let lastPercent = -1
    // On a terminal one line redrawn; elsewhere (a container's log, CI) a line per quarter, since
    // carriage returns there join every step into one line.
    const tty = process.stderr.isTTY === true
    const step = tty ? 10 : 25
    const { dir, parameters, multiplyAdds } = await writeSyntheticModelFolder({
      root: request.repository,
      name,
      depth,
      variant: request.variant,
      seed: request.seed,
      onProgress: (done, total) => {
        const percent = Math.floor((100 * done) / total)
        if (percent >= lastPercent + step || done === total) {
          lastPercent = percent
          process.stderr.write(tty ? `\r${name}: ${percent}%` : `${name}: ${percent}%\n`)
        }
      }
    })
    if (tty) process.stderr.write('\n')
    const seconds = ((performance.now() - modelStarted) / 1000).toFixed(1)
    console.log(
      `${name}: ResNet-${depth} ${request.variant}, seed ${request.seed}, ${parameters.toLocaleString('en-US')} parameters, ` +
        `${multiplyAdds.toLocaleString('en-US')} multiply-adds per image, written to ${dir} in ${seconds} s (SYNTHETIC weights, not trained)`
    )
  }
  console.log(`total ${((performance.now() - started) / 1000).toFixed(1)} s`)
}

async function main(argv: string[]): Promise<number | 'help'> {
  const request = parseRequest(argv)
  if (request === 'help') return 'help'
  if (request.countOnly) {
    const started = performance.now()
    printCounts(request)
    console.log(`counted in ${(performance.now() - started).toFixed(1)} ms`)
    return 0
  }
  await build(request)
  return 0
}

await runCommand('model:build', USAGE, main)
