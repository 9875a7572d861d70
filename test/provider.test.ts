import { Writable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { pino } from 'pino'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { loadSettings } from '../src/config.js'
import { ClassifyService } from '../src/core/classify-service.js'
import { syntheticModelRepository } from './helpers/models.js'

/**
 * The execution-provider setting on a machine without the CUDA provider library (this one and CI):
 * `auto` falls back to the CPU and says so loudly; `cuda` refuses to start.
 */

// onnxruntime-node lists 'cuda' among its backends whether or not the provider library was installed.
const ortBin = join(dirname(createRequire(import.meta.url).resolve('onnxruntime-node')), '..', 'bin', 'napi-v6', process.platform, process.arch)
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
  it('auto falls back to the CPU with a warning naming the reason', async () => {
    const { log, lines } = capturingLogger()
    const settings = loadSettings(['--model-repository', await syntheticModelRepository(), '--provider', 'auto'], {})
    const service = await ClassifyService.start(settings, log)
    try {
      expect(service.model('resnet50').sessions.provider).toBe('cpu')
      const warning = lines.find((l) => typeof l.msg === 'string' && l.msg.includes('CUDA execution provider unavailable'))
      expect(warning?.level).toBe(40)
      expect(String(warning?.reason)).not.toBe('')
    } finally {
      await service.close()
    }
  })

  it('cuda refuses to start, with the fix in the message', async () => {
    const { log } = capturingLogger()
    const settings = loadSettings(['--model-repository', await syntheticModelRepository(), '--provider', 'cuda'], {})
    await expect(ClassifyService.start(settings, log)).rejects.toThrow(/CUDA execution provider could not be used .*ONNXRUNTIME_NODE_INSTALL=cuda12/)
  })
})
