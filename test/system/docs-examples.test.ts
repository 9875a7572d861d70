import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { copyFile, mkdtemp, readdir, readFile, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PHOTOS_DIR } from '../helpers/photos.js'
import { startSyntheticServerProcess, type ServerProcess } from '../helpers/process.js'

/**
 * Every example in the docs marked `<!-- docs-test: NAME; … -->` (the convention is described at
 * the top of docs/api.md) runs against a real server process: in document order, in one scratch
 * folder with photos and the repository's src/, with localhost:8080 and localhost:9000 pointing
 * at the test server. So a copy-pasted example cannot have rotted.
 */

export interface DocExample {
  readonly file: string
  readonly name: string
  readonly language: 'sh' | 'python'
  readonly code: string
  readonly expectJson: readonly string[]
  readonly expectText: RegExp | undefined
  readonly needs: readonly string[]
}

const MARKER = /^<!-- docs-test: (.+?) -->$/

/** The marked fenced blocks of one markdown text; a marker not followed by a fence is an error. */
export function docExamples(file: string, text: string): DocExample[] {
  const lines = text.split('\n')
  const examples: DocExample[] = []
  for (let i = 0; i < lines.length; i++) {
    const marker = MARKER.exec(lines[i]!.trim())
    if (marker === null) continue
    const [name, ...options] = marker[1]!.split(';').map((part) => part.trim())
    const fence = /^```(sh|bash|python)\s*$/.exec(lines[i + 1] ?? '')
    if (fence === null) throw new Error(`${file}:${i + 1}: docs-test marker "${name}" is not followed by a \`\`\`sh or \`\`\`python fence`)
    const end = lines.indexOf('```', i + 2)
    if (end === -1) throw new Error(`${file}:${i + 2}: unclosed fence`)
    const option = (key: string): string | undefined =>
      options
        .find((o) => o.startsWith(`${key}:`))
        ?.slice(key.length + 1)
        .trim()
    const list = (key: string): string[] =>
      (option(key) ?? '')
        .split(',')
        .map((p) => p.trim())
        .filter((p) => p.length > 0)
    const text = option('expect-text')
    examples.push({
      file,
      name: name!,
      language: fence[1] === 'python' ? 'python' : 'sh',
      code: lines.slice(i + 2, end).join('\n'),
      expectJson: list('expect-json'),
      expectText: text === undefined ? undefined : new RegExp(text),
      needs: list('needs')
    })
    i = end
  }
  return examples
}

/** The value at a dotted path (`predictions.0.label`); undefined when any step is missing. */
function at(value: unknown, path: string): unknown {
  let current = value
  for (const step of path.split('.')) {
    if (current === null || typeof current !== 'object') return undefined
    current = (current as Record<string, unknown>)[step]
  }
  return current
}

/** The JSON an example printed last: its whole output, else its last non-empty line. */
function printedJson(stdout: string): unknown {
  try {
    return JSON.parse(stdout)
  } catch {
    const last = stdout.trim().split('\n').pop() ?? ''
    return JSON.parse(last)
  }
}

async function markdownFiles(): Promise<string[]> {
  const docs = (await readdir('docs')).filter((f) => f.endsWith('.md')).map((f) => join('docs', f))
  return ['README.md', ...docs.sort()]
}

const examples: DocExample[] = []
for (const file of await markdownFiles()) examples.push(...docExamples(file, await readFile(file, 'utf8')))

// Debian's python3 (where apt installs python3-grpcio) ahead of any other on the PATH, as
// test/system/v2-grpc-python.test.ts uses it; examples call plain `python3`.
const PATH = existsSync('/usr/bin/python3') ? `/usr/bin:${process.env.PATH ?? ''}` : (process.env.PATH ?? '')
const ENV = { ...process.env, PATH }
const pythonGrpc = spawnSync('python3', ['-c', 'import grpc, grpc_tools'], { encoding: 'utf8', env: ENV })
const missing: Record<string, string | undefined> = {
  'python-grpc':
    pythonGrpc.status === 0 ? undefined : 'python3 with grpcio and grpc_tools (apt-get install python3-grpcio python3-grpc-tools)'
}

let server: ServerProcess
let workDir: string
let httpPort: string
let grpcPort: string

beforeAll(async () => {
  // Explicit model control, every model loaded at start: the repository examples unload and load.
  server = await startSyntheticServerProcess(['--model-control-mode', 'explicit', '--load-model', '*'])
  httpPort = new URL(server.url).port
  grpcPort = String(server.logs.find((l) => l.msg === 'gRPC listening')?.port)
  workDir = await mkdtemp(join(tmpdir(), 'docs-examples-'))
  await copyFile(join(PHOTOS_DIR, 'chelsea.jpg'), join(workDir, 'photo.jpg'))
  await copyFile(join(PHOTOS_DIR, 'chelsea.jpg'), join(workDir, 'a.jpg'))
  const second = (await readdir(PHOTOS_DIR)).filter((f) => f.endsWith('.jpg') && f !== 'chelsea.jpg')[0]!
  await copyFile(join(PHOTOS_DIR, second), join(workDir, 'b.jpg'))
  await symlink(resolve('src'), join(workDir, 'src'))
}, 120_000)

afterAll(async () => {
  server?.child.kill('SIGTERM')
  await server?.exited
  if (workDir !== undefined) await rm(workDir, { recursive: true, force: true })
})

describe('the docs mark their runnable examples', () => {
  it('docs/api.md has one for every door', () => {
    const names = examples.filter((e) => e.file === 'docs/api.md').map((e) => e.name)
    expect(names).toEqual(expect.arrayContaining(['classify-form', 'classify-raw', 'batch-form', 'v2-json', 'v2-binary', 'grpc-python']))
    expect(new Set(names).size, 'example names are unique').toBe(names.length)
  })

  it('a marker without a fence is refused', () => {
    expect(() => docExamples('x.md', '<!-- docs-test: lost -->\ntext')).toThrow(/not followed by/)
  })
})

describe.sequential('docs examples against a real server', () => {
  for (const example of examples) {
    const lacking = example.needs.map((n) => missing[n]).filter((m): m is string => m !== undefined)
    if (lacking.length > 0) console.warn(`skipping the docs example ${example.name}: needs ${lacking.join(', ')}`)
    it.skipIf(lacking.length > 0)(`${example.file}: ${example.name}`, () => {
      const code = example.code.replaceAll('localhost:8080', `127.0.0.1:${httpPort}`).replaceAll('localhost:9000', `127.0.0.1:${grpcPort}`)
      const run =
        example.language === 'python'
          ? spawnSync('python3', ['-'], { input: code, cwd: workDir, encoding: 'utf8', timeout: 60_000, env: ENV })
          : spawnSync('bash', ['-euo', 'pipefail', '-c', code], { cwd: workDir, encoding: 'utf8', timeout: 60_000, env: ENV })
      const context = `${example.name} printed:\n${run.stdout}\n${run.stderr}`
      expect(run.status, context).toBe(0)
      if (example.expectText !== undefined) expect(run.stdout, context).toMatch(example.expectText)
      if (example.expectJson.length > 0) {
        const printed = printedJson(run.stdout)
        for (const path of example.expectJson) expect(at(printed, path), `${path} in ${context}`).toBeDefined()
      }
    })
  }
})
