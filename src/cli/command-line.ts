import { parseArgs, type ParseArgsConfig } from 'node:util'

/**
 * What the model commands share: strict flags, `--help` answered with the usage text (exit code 0),
 * and a command line that must change answered with the problem and the usage text (exit code 2).
 */

/** The command line must change (a bad or missing flag): exit code 2, with the usage text. */
export class UsageError extends Error {}

/** node:util's parseArgs, with its refusals (an unknown flag, a missing value) as UsageErrors. */
export function parseFlags<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config)
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
}

/**
 * Runs a command on this process's arguments and sets the exit code from what `main` returns:
 * 'help' prints the usage text and exits 0; a UsageError prints its message and the usage text and
 * exits 2. Other errors are the command's own to report (uncaught, they exit 1 with a stack).
 */
export async function runCommand(name: string, usage: string, main: (argv: string[]) => Promise<number | 'help'>): Promise<void> {
  try {
    const result = await main(process.argv.slice(2))
    if (result === 'help') console.log(usage)
    process.exitCode = result === 'help' ? 0 : result
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    console.error(`${name}: ${err.message}\n\n${usage}`)
    process.exitCode = 2
  }
}
