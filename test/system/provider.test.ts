import { Writable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { pino } from 'pino'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { loadSettings } from '../../src/config.js'
import { ClassifyService } from '../../src/core/classify-service.js'
import { syntheticModelRepository } from '../helpers/models.js'
import { startServerProcess } from '../helpers/process.js'

/**
 * The execution-provider setting on a machine without the CUDA provider library (this one and CI):
 * `auto` looks for the provider library and runs on the CPU, saying so once; `cuda` refuses to start.
 */

// onnxruntime-node lists 'cuda' among its backends whether or not the provider library was installed.
const ortBin = join(
  dirname(createRequire(import.meta.url).resolve('onnxruntime-node')),
  '..',
  'bin',
  'napi-v6',
  process.platform,
  process.arch
)
const hasCuda = existsSync(join(ortBin, 'libonnxruntime_providers_cuda.so'))

function capturingLogger(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l.trim() !== '') lines.push(JSON.parse(l) as Record<string, unknown>)
      done()
    }
  })
  return { log: pino({ level: 'info' }, sink), lines }
}

describe.skipIf(hasCuda)('execution provider without CUDA', () => {
  it('auto runs on the CPU after looking for the provider library: one info line, no attempt that fails', async () => {
    const { log, lines } = capturingLogger()
    const settings = loadSettings(['--model-repository', await syntheticModelRepository(), '--provider', 'auto'], {})
    const service = await ClassifyService.start(settings, log)
    try {
      expect(service.model('resnet50').sessions.provider).toBe('cpu')
      const said = lines.filter((l) => typeof l.msg === 'string' && /execution provider|CUDA/.test(l.msg))
      expect(said).toHaveLength(1)
      expect(said[0]).toMatchObject({
        level: 30,
        msg: 'execution provider: CPU (the CUDA provider library is not installed)',
        missing: join(ortBin, 'libonnxruntime_providers_cuda.so')
      })
    } finally {
      await service.close()
    }
  })

  it('auto writes no ONNX Runtime error line on a CPU host (regression: a red "Failed to load library" per model)', async () => {
    const server = await startServerProcess(['--model-repository', await syntheticModelRepository(), '--provider', 'auto'])
    server.child.kill('SIGTERM')
    expect(await server.exited).toBe(0)
    expect(server.stderr()).not.toMatch(/onnxruntime|Failed to load library/)
  })

  it('cuda refuses to start, with the fix in the message', async () => {
    const { log } = capturingLogger()
    const settings = loadSettings(['--model-repository', await syntheticModelRepository(), '--provider', 'cuda'], {})
    await expect(ClassifyService.start(settings, log)).rejects.toThrow(
      /CUDA execution provider could not be used \(its library is not installed: .*libonnxruntime_providers_cuda\.so is missing\).*ONNXRUNTIME_NODE_INSTALL=cuda12/
    )
  })
})
