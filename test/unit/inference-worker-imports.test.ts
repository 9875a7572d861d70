import { readFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { describe, expect, it } from 'vitest'

/**
 * Regression: the inference worker loaded sharp (through preprocess.ts, for the normaliser), and
 * loading sharp runs preprocess.ts's block/unblock of libvips loaders, which libvips keeps for the
 * whole process. Each worker that started while requests were decoding (a reload under load, a
 * crashed worker's replacement) briefly blocked every loader, and decodes on the main thread
 * failed NOT_AN_IMAGE. The worker's module graph must not reach sharp.
 */

/** The modules a source file loads at run time: relative ones as paths, packages by name (type-only imports left out). */
function runtimeImports(file: string): { modules: string[]; packages: string[] } {
  const text = readFileSync(file, 'utf8')
  const modules: string[] = []
  const packages: string[] = []
  for (const match of text.matchAll(/^(?:import|export)\s+(?!type\s)(?:[^'"]*?\sfrom\s+)?['"]([^'"]+)['"]/gm)) {
    const specifier = match[1]!
    if (specifier.startsWith('.')) modules.push(join(dirname(file), specifier.replace(/\.js$/, '.ts')))
    else packages.push(specifier)
  }
  return { modules, packages }
}

function packagesReachedFrom(entry: string): Map<string, string> {
  const reached = new Map<string, string>()
  const seen = new Set<string>()
  const queue = [entry]
  while (queue.length > 0) {
    const file = queue.shift()!
    if (seen.has(file)) continue
    seen.add(file)
    const { modules, packages } = runtimeImports(file)
    for (const p of packages) if (!reached.has(p)) reached.set(p, relative(process.cwd(), file))
    queue.push(...modules)
  }
  return reached
}

describe('the inference worker', () => {
  it('never loads sharp (its libvips loader blocking is process-wide)', () => {
    const reached = packagesReachedFrom('src/core/inference-worker.ts')
    expect(reached.get('sharp'), `sharp is imported by ${reached.get('sharp')}`).toBeUndefined()
    // The check follows imports: it does see the packages the worker really needs.
    expect(reached.has('onnxruntime-node')).toBe(true)
  })

  it('the check sees sharp where it is loaded', () => {
    expect(packagesReachedFrom('src/core/preprocess.ts').has('sharp')).toBe(true)
  })
})

describe('the JSON header parse worker', () => {
  it('loads no native package: neither sharp nor ONNX Runtime', () => {
    const reached = packagesReachedFrom('src/http/header-parse-worker.ts')
    expect([...reached.keys()].filter((p) => !p.startsWith('node:'))).toEqual([])
    expect(reached.has('node:worker_threads')).toBe(true)
  })
})
