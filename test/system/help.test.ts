import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { SETTINGS } from '../../src/config.js'
import { syntheticModelRepository } from '../helpers/models.js'
import { readPhoto } from '../helpers/photos.js'
import { startServerProcess } from '../helpers/process.js'
import { removeTempDirs, tempDir } from '../helpers/tiny-model.js'

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

describe('start-up refusals a newcomer meets', () => {
  afterAll(removeTempDirs)

  it('a --model-repository that does not exist is refused (exit 2), not created and filled with the synthetic model', async () => {
    const missing = join(await tempDir('rs-missing-'), 'typo')
    const { code, stderr } = await runEntryPoint(['--model-repository', missing, '--provider', 'cpu'])
    expect(code).toBe(2)
    expect(stderr).toMatch(/the model repository .*typo does not exist \(--model-repository, MODEL_REPOSITORY\)/)
    expect(existsSync(missing)).toBe(false)
  })

  // Regression: a busy port was found only after every model had loaded and warmed up (minutes for
  // a large repository); both ports are now tried first.
  for (const [door, flag, other] of [
    ['HTTP', '--port', '--grpc-port'],
    ['gRPC', '--grpc-port', '--port']
  ] as const) {
    it(`a busy ${door} port stops the server before any model loads, with a line naming ${flag}, not a stack trace`, async () => {
      const busy = createServer()
      await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
      const port = (busy.address() as { port: number }).port
      try {
        const repository = await syntheticModelRepository()
        const { code, stdout, stderr } = await runEntryPoint([
          ...['--model-repository', repository, '--provider', 'cpu', '--host', '127.0.0.1', flag, String(port), other, '0']
        ])
        expect(code).toBe(1)
        expect(stderr).toMatch(new RegExp(`cannot start ${door} on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE.*\\(set ${flag}\\)`))
        expect(stderr).not.toMatch(/\n\s+at /)
        expect(stdout).not.toContain('inference session open')
      } finally {
        busy.close()
      }
    })
  }

  it('a --host that is no address of this machine names --host (regression: "ENOTFOUND (set --port)")', async () => {
    const repository = await syntheticModelRepository()
    const { code, stdout, stderr } = await runEntryPoint(['--model-repository', repository, '--provider', 'cpu', '--host', '999.1.1.1'])
    expect(code).toBe(1)
    expect(stderr).toMatch(/cannot start HTTP on 999\.1\.1\.1:8080: .*(ENOTFOUND|EAI_AGAIN).*\(set --host\)/)
    expect(stdout).not.toContain('inference session open')
  })

  it('regression: under poll or explicit an empty repository starts empty (a synthetic resnet50 was written into it, and under poll was the default for good, ahead of the real model copied in)', async () => {
    for (const mode of ['poll', 'explicit'] as const) {
      const repository = await tempDir(`rs-empty-${mode}-`)
      const server = await startServerProcess(['--model-repository', repository, '--provider', 'cpu', '--model-control-mode', mode])
      try {
        expect(await readdir(repository), mode).toEqual([])
        expect(await (await fetch(`${server.url}/health/ready`)).json()).toEqual({ status: 'ready', models: [] })
        const plain = await fetch(`${server.url}/classify`, {
          method: 'POST',
          headers: { 'content-type': 'image/jpeg' },
          body: await readPhoto('chelsea')
        })
        expect(plain.status).toBe(404)
        expect(((await plain.json()) as { message: string }).message).toMatch(
          mode === 'poll'
            ? /no default model: copy a model folder into the model repository \(--model-repository; npm run model:add writes one\)/
            : /no default model: load one with POST \/v2\/repository\/models\/\{name\}\/load/
        )
        expect(server.logs.some((l) => l.msg === 'built the synthetic default model')).toBe(false)
      } finally {
        server.child.kill('SIGTERM')
        expect(await server.exited).toBe(0)
      }
    }
    // The default mode still gets its placeholder, so `npm start` on a fresh checkout serves.
    const repository = await tempDir('rs-empty-none-')
    const server = await startServerProcess(['--model-repository', repository, '--provider', 'cpu'])
    try {
      expect(await readdir(repository)).toEqual(['resnet50'])
      expect(server.logs.some((l) => l.msg === 'built the synthetic default model')).toBe(true)
    } finally {
      server.child.kill('SIGTERM')
      expect(await server.exited).toBe(0)
    }
  })
})
