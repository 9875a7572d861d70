import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { describe, expect, it } from 'vitest'
import { SETTINGS } from '../../src/config.js'

/** Runs the real entry point with `args` and collects what it prints. */
async function runEntryPoint(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const [code] = (await once(child, 'exit')) as [number | null]
  return { code, stdout, stderr }
}

describe('--help', () => {
  it('prints every flag with its variable and default, and exits 0 without starting anything', async () => {
    const { code, stdout, stderr } = await runEntryPoint(['--help'])
    expect(code).toBe(0)
    expect(stderr).toBe('')
    for (const s of SETTINGS) expect(stdout).toMatch(new RegExp(`^  --${s.flag}\\b.*env ${s.env}\\b`, 'm'))
    expect(stdout).toContain('default 8080')
    // No log line: settings were not loaded, no model and no port was touched.
    expect(stdout).not.toContain('"msg"')
  })

  it('-h wins over other flags, even invalid ones (regression: "Unknown option \'--help\'", exit 2)', async () => {
    const { code, stdout } = await runEntryPoint(['--port', 'not-a-port', '-h'])
    expect(code).toBe(0)
    expect(stdout).toMatch(/^Usage: /)
  })

  it('an invalid setting points at --help', async () => {
    const { code, stderr } = await runEntryPoint(['--no-such-flag'])
    expect(code).toBe(2)
    expect(stderr).toMatch(/Unknown option '--no-such-flag'.*\(all settings: --help\)/s)
  })
})
