import { DEFAULT_MODEL_REPOSITORY } from '../config.js'
import { PRESET_NAMES, type PresetName } from '../repository/model-config.js'
import { RepositoryError } from '../repository/repository.js'
import { describeImport, importModel, ImportError } from '../model-tools/import-model.js'
import { UsageError, parseFlags, runCommand } from './command-line.js'

/**
 * `npm run model:add -- <model.onnx> --name NAME --preset PRESET [...]`: the command-line door to
 * importModel. Exit codes: 0 imported; 1 the model cannot be served as it is; 2 the command line
 * must change (bad flags, missing file, name taken, ambiguous input or output).
 */

const USAGE = `Usage: npm run model:add -- <model.onnx> --name NAME --preset ${PRESET_NAMES.join('|')} [options]

Copies an exported ONNX ResNet into the model repository as NAME/ (model.onnx, labels.txt,
config.json) and validates it as the server will at start-up.

Options:
  --name NAME                 folder and model name (letters, digits, ".", "_", "-")
  --preset PRESET             preprocessing the network was trained with: ${PRESET_NAMES.join(', ')}
  --repository DIR            model repository (default ./models)
  --labels FILE               class names, one per line, or JSON from index to name (TorchServe's
                              index_to_name.json); default: the shipped ImageNet-1k labels
  --input NAME                image input, when the model has several and none has the preset's name
  --output NAME               class-score output, likewise
  --output-kind KIND          logits (the server applies softmax) or probabilities; default:
                              probabilities when the output comes from a Softmax, else logits
  --max-batch-size N          most images per model run (1–1024, default 16)
  --max-queue-delay-ms N      longest wait to fill a batch (0–10000, default 0)
  --synthetic                 the weights are seeded random numbers, not trained
  --force                     replace an existing NAME/ folder
  -h, --help                  this text`

function integerFlag(flag: string, raw: string | undefined, min: number, max: number): number | undefined {
  if (raw === undefined) return undefined
  const n = /^\d+$/.test(raw.trim()) ? Number(raw) : NaN
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new UsageError(`--${flag} must be an integer from ${min} to ${max}; got "${raw}".`)
  return n
}

function numberFlag(flag: string, raw: string | undefined, min: number, max: number): number | undefined {
  if (raw === undefined) return undefined
  const n = raw.trim() === '' ? NaN : Number(raw)
  if (!Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${flag} must be a number from ${min} to ${max}; got "${raw}".`)
  return n
}

async function main(argv: string[]): Promise<number | 'help'> {
  const { values, positionals } = parseFlags({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      name: { type: 'string' },
      preset: { type: 'string' },
      repository: { type: 'string', default: DEFAULT_MODEL_REPOSITORY },
      labels: { type: 'string' },
      input: { type: 'string' },
      output: { type: 'string' },
      'output-kind': { type: 'string' },
      'max-batch-size': { type: 'string' },
      'max-queue-delay-ms': { type: 'string' },
      synthetic: { type: 'boolean', default: false },
      force: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false }
    }
  })
  if (values.help) return 'help'
  if (positionals.length !== 1)
    throw new UsageError(
      positionals.length === 0
        ? 'give the ONNX file to import.'
        : `give one ONNX file; got ${positionals.length} arguments (${positionals.join(' ')}).`
    )
  if (values.name === undefined) throw new UsageError('--name is required.')
  if (values.preset === undefined) throw new UsageError(`--preset is required (${PRESET_NAMES.join(', ')}).`)
  if (!(PRESET_NAMES as readonly string[]).includes(values.preset))
    throw new UsageError(`unknown --preset "${values.preset}"; use one of: ${PRESET_NAMES.join(', ')}.`)
  const outputKind = values['output-kind']
  if (outputKind !== undefined && outputKind !== 'logits' && outputKind !== 'probabilities')
    throw new UsageError(`--output-kind must be logits or probabilities; got "${outputKind}".`)
  const maxBatchSize = integerFlag('max-batch-size', values['max-batch-size'], 1, 1024)
  const maxQueueDelayMs = numberFlag('max-queue-delay-ms', values['max-queue-delay-ms'], 0, 10_000)
  try {
    const imported = await importModel({
      source: positionals[0]!,
      name: values.name,
      preset: values.preset as PresetName,
      repository: values.repository,
      labels: values.labels,
      inputName: values.input,
      outputName: values.output,
      ...(outputKind === undefined ? {} : { outputKind }),
      maxBatchSize,
      maxQueueDelayMs,
      synthetic: values.synthetic,
      force: values.force
    })
    console.log(describeImport(imported, positionals[0]!))
    return 0
  } catch (err) {
    if (!(err instanceof ImportError || err instanceof RepositoryError)) throw err
    console.error(`model:add: ${err.message}`)
    return err instanceof ImportError && err.usage ? 2 : 1
  }
}

await runCommand('model:add', USAGE, main)
