import { VariantUsageError, writeModelVariant } from '../model-tools/model-variant.js'
import { UsageError, parseFlags, runCommand } from './command-line.js'

/**
 * npm run model:variant -- --name NAME [--uint8-input] [--fp16] [--out-name NAME] [--repository DIR]
 * (npm run model:prologue and model:fp16 are this command with one flag set.) Exit codes: 0 written;
 * 1 the model cannot be rewritten or the result does not load; 2 the command line must change.
 */

const USAGE = `Usage: npm run model:variant -- --name NAME [--uint8-input] [--fp16] [options]
       npm run model:prologue -- --name NAME [options]      (= --uint8-input)
       npm run model:fp16 -- --name NAME [options]          (= --fp16)

Writes a variant of a model folder of the repository as a new folder beside it.

  --name NAME            the model folder to start from
  --uint8-input          take uint8 NHWC RGB pixels and normalise inside the graph (prologue)
  --fp16                 float16 weights and compute, float32 at the edges (for GPUs)
  --out-name NAME        the new folder (default NAME-u8, NAME-fp16 or NAME-u8-fp16)
  --pixels-input NAME    the uint8 input's name (default pixels)
  --repository DIR       model repository (default ./models)
  --force                replace an existing folder of the output name
  -h, --help             this text`

async function main(argv: string[]): Promise<number | 'help'> {
  const { values } = parseFlags({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      name: { type: 'string' },
      'uint8-input': { type: 'boolean', default: false },
      fp16: { type: 'boolean', default: false },
      'out-name': { type: 'string' },
      'pixels-input': { type: 'string' },
      repository: { type: 'string', default: './models' },
      force: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false }
    }
  })
  if (values.help) return 'help'
  if (values.name === undefined) throw new UsageError('--name is required.')
  try {
    const written = await writeModelVariant({
      repository: values.repository,
      name: values.name,
      uint8Input: values['uint8-input'],
      fp16: values.fp16,
      outName: values['out-name'],
      pixelsInputName: values['pixels-input'],
      force: values.force
    })
    const mib = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`
    const { input } = written.config
    console.log(
      [
        `Wrote ${written.name} to ${written.dir}`,
        `  input        "${input.name}" ${input.datatype} ${input.layout}`,
        `  model.onnx   ${mib(written.modelBytes)} (source ${mib(written.sourceBytes)}), rewritten in ${(written.rewriteMs / 1000).toFixed(1)} s`,
        ...(written.foldedBatchNorms === undefined
          ? []
          : [`  fp16         ${written.foldedBatchNorms} BatchNormalization folded into Conv (in float32) first`]),
        `Validated as the server does at start-up (config, files, labels, ONNX signature, one run on the CPU).`
      ].join('\n')
    )
    return 0
  } catch (err) {
    if (err instanceof VariantUsageError) throw new UsageError(err.message)
    // RepositoryError (the source folder is broken), graphs the rewrite refuses, ONNX Runtime's refusals.
    console.error(`model:variant: ${(err as Error).message}`)
    return 1
  }
}

await runCommand('model:variant', USAGE, main)
