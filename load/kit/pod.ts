import { existsSync, rmdirSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { parseAllDocuments } from 'yaml'
import { instructions } from '../../scripts/lint-dockerfiles.js'
import type { BenchServerOptions } from './bench-server.js'

/**
 * The service as the CPU pod runs it, for the robustness runs' `--pod`: what the image starts
 * (the compiled dist/, the final stage's ENV of the Dockerfile: jemalloc preloaded, --expose-gc),
 * with the container's env from deploy/kubernetes/deployment.yaml, inside a memory cgroup whose
 * limit is that container's memory limit. An attack that would get the pod OOM-killed kills this
 * server too, and V8 sizes its heap from the same limit as in the pod.
 *
 * Needs root and a cgroup v1 memory hierarchy (these machines; CI's too), libjemalloc2 on the host,
 * and `npm run build` first. The cgroup is made under the caller's own memory cgroup.
 */

const DOCKERFILE = 'Dockerfile'
const MANIFEST = 'deploy/kubernetes/deployment.yaml'
const CONTAINER = 'resnet-serve'
const MEMORY_ROOT = '/sys/fs/cgroup/memory'
const LIBRARY_DIRS = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib']
const MiB = 1024 * 1024

export interface PodUsage {
  /** The cgroup's highest memory use (RSS and page cache) since it was made. */
  readonly peakMiB: number
  /** Processes the kernel killed for passing the limit. */
  readonly oomKills: number
}

export interface Pod {
  readonly limitMiB: number
  /** What the pod has, for the run's header. */
  readonly describe: string
  readonly server: BenchServerOptions
  usage(): Promise<PodUsage>
}

/** The run's last line: the limit, the cgroup's peak and its OOM kills. */
export function podLine(limitMiB: number, usage: PodUsage): string {
  return `pod (${limitMiB} MiB): cgroup peak ${usage.peakMiB.toFixed(0)} MiB, OOM kills ${usage.oomKills}`
}

const QUANTITY_SUFFIXES: Readonly<Record<string, number>> = {
  '': 1,
  Ki: 1024,
  Mi: MiB,
  Gi: 1024 * MiB,
  k: 1e3,
  M: 1e6,
  G: 1e9
}

/** A Kubernetes memory quantity ("1536Mi", "2Gi", "1G", "500000000") in bytes. */
export function memoryQuantityBytes(quantity: string | number): number {
  const match = /^(\d+(?:\.\d+)?)([KMG]i|[kMG])?$/.exec(String(quantity))
  if (match === null) throw new Error(`not a memory quantity this runner reads: ${String(quantity)}`)
  return Math.round(Number(match[1]) * QUANTITY_SUFFIXES[match[2] ?? '']!)
}

interface ManifestContainer {
  readonly name: string
  readonly env?: ReadonlyArray<{ readonly name: string; readonly value?: string }>
  readonly resources?: { readonly limits?: { readonly memory?: string | number } }
}

/** The CPU container's memory limit and env, from the Deployment that runs it. */
export function podContainer(manifest: string): { limitBytes: number; env: Record<string, string> } {
  for (const doc of parseAllDocuments(manifest)) {
    const spec = doc.toJS() as { kind?: string; spec?: { template?: { spec?: { containers?: ManifestContainer[] } } } }
    const container = spec.kind === 'Deployment' ? spec.spec?.template?.spec?.containers?.find((c) => c.name === CONTAINER) : undefined
    const memory = container?.resources?.limits?.memory
    if (container === undefined || memory === undefined) continue
    const env = Object.fromEntries((container.env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!]))
    return { limitBytes: memoryQuantityBytes(memory), env }
  }
  throw new Error(`${MANIFEST}: no Deployment with a container "${CONTAINER}" that has a memory limit`)
}

/** The final stage's ENV of a Dockerfile (KEY=value pairs without spaces or quotes, as this one writes them). */
export function imageEnv(dockerfile: string): Record<string, string> {
  const all = instructions(dockerfile)
  const finalStage = all.slice(all.findLastIndex((i) => i.keyword === 'FROM'))
  const env: Record<string, string> = {}
  for (const { keyword, args, line } of finalStage) {
    if (keyword !== 'ENV') continue
    for (const pair of args.split(/\s+/)) {
      const at = pair.indexOf('=')
      if (at <= 0 || /["']/.test(pair)) throw new Error(`${DOCKERFILE}:${line}: ENV ${pair} is not KEY=value`)
      env[pair.slice(0, at)] = pair.slice(at + 1)
    }
  }
  return env
}

/** The host's copy of a library the image preloads (the image links it at its own path). */
function hostLibrary(imagePath: string): string {
  if (existsSync(imagePath)) return imagePath
  const found = LIBRARY_DIRS.map((dir) => join(dir, basename(imagePath))).find((path) => existsSync(path))
  if (found === undefined)
    throw new Error(`--pod: the image preloads ${basename(imagePath)}, not found on this host (Debian: apt install libjemalloc2)`)
  return found
}

async function ownMemoryCgroup(): Promise<string> {
  const line = (await readFile('/proc/self/cgroup', 'utf8')).split('\n').find((l) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(l))
  if (line === undefined || !existsSync(join(MEMORY_ROOT, 'memory.limit_in_bytes')))
    throw new Error('--pod needs a cgroup v1 memory hierarchy at /sys/fs/cgroup/memory (and root)')
  return join(MEMORY_ROOT, line.slice(line.lastIndexOf(':') + 1))
}

const readNumber = async (path: string): Promise<number> => Number((await readFile(path, 'utf8')).trim())

export async function preparePod(): Promise<Pod> {
  if (!existsSync('dist/src/main.js')) throw new Error('--pod runs the compiled service: npm run build first')
  const { limitBytes, env: containerEnv } = podContainer(await readFile(MANIFEST, 'utf8'))
  const env = { ...imageEnv(await readFile(DOCKERFILE, 'utf8')), ...containerEnv }
  if (env.LD_PRELOAD !== undefined) env.LD_PRELOAD = hostLibrary(env.LD_PRELOAD)
  const dir = join(await ownMemoryCgroup(), `resnet-serve-pod-${process.pid}`)
  await mkdir(dir)
  // Removed as the run exits, however it ends; a server still inside (the run crashed) keeps it.
  process.once('exit', () => {
    try {
      rmdirSync(dir)
    } catch {
      // not empty: left for the next look
    }
  })
  await writeFile(join(dir, 'memory.limit_in_bytes'), String(limitBytes))
  // A pod does not swap: where the host has swap, the cgroup must be killed, not paged out.
  await writeFile(join(dir, 'memory.swappiness'), '0').catch(() => undefined)
  const limitMiB = limitBytes / MiB
  return {
    limitMiB,
    describe: `memory cgroup of ${limitMiB} MiB (${MANIFEST}), dist/, ${Object.entries(env)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ')}`,
    server: { entry: 'dist', env, cgroupProcs: join(dir, 'cgroup.procs') },
    async usage() {
      const oom = /^oom_kill (\d+)$/m.exec(await readFile(join(dir, 'memory.oom_control'), 'utf8'))
      return { peakMiB: (await readNumber(join(dir, 'memory.max_usage_in_bytes'))) / MiB, oomKills: Number(oom?.[1] ?? 0) }
    }
  }
}
