// Compiles src/ into dist/ (tsc, then the demo page's static files) and stamps the result.
//   node scripts/build.mjs              always builds (npm run build)
//   node scripts/build.mjs --if-stale   builds only when a source is newer than the last build's stamp
//                                       (npm start: a restart with nothing changed skips tsc's ~15 s)
// Plain JavaScript so it runs before anything is compiled; it spawns tsc directly, not through npm,
// so `npm start` stays one npm process with node as its only child.
import { spawnSync } from 'node:child_process'
import { cpSync, existsSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const stamp = join(root, 'dist', '.build-stamp')
const inputs = ['src', 'tsconfig.json', 'tsconfig.build.json', 'package-lock.json']

/** Newest modification time under the inputs; directories count too, so a deleted file is a change. */
function newestInput() {
  let newest = 0
  const visit = (path) => {
    const info = statSync(path)
    newest = Math.max(newest, info.mtimeMs)
    if (info.isDirectory()) for (const entry of readdirSync(path)) visit(join(path, entry))
  }
  for (const input of inputs) if (existsSync(join(root, input))) visit(join(root, input))
  return newest
}

const ifStale = process.argv.includes('--if-stale')
if (ifStale && existsSync(stamp) && statSync(stamp).mtimeMs >= newestInput()) process.exit(0)

const started = Date.now()
if (ifStale) console.error('resnet-serve: sources changed since the last build; compiling (tsc) …')
const tsc = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.build.json')], {
  stdio: 'inherit'
})
if (tsc.status !== 0) process.exit(tsc.status ?? 1)
rmSync(join(root, 'dist/src/http/ui'), { recursive: true, force: true })
cpSync(join(root, 'src/http/ui'), join(root, 'dist/src/http/ui'), { recursive: true })
writeFileSync(stamp, `${new Date().toISOString()}\n`)
if (ifStale) console.error(`resnet-serve: compiled in ${((Date.now() - started) / 1000).toFixed(1)} s`)
