import { existsSync, readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { dirname, join } from 'node:path'

/**
 * The cores this process may keep busy: the CPUs it may run on, and, in a container, its CPU quota
 * (`docker run --cpus 2`, a Kubernetes CPU limit), rounded up. Node 20's availableParallelism()
 * counts only the first (2 in a cgroup of half a CPU on a 2-core machine), so a 2-CPU container on a
 * 64-core node would size its ONNX Runtime session at 64 threads, for the quota to throttle.
 */
export function availableCores(cgroupRoot = '/sys/fs/cgroup', procCgroup = '/proc/self/cgroup'): number {
  const cpus = availableParallelism()
  const quota = cgroupCpuQuota(cgroupRoot, procCgroup)
  return quota === undefined ? cpus : Math.max(1, Math.min(cpus, Math.ceil(quota)))
}

/**
 * The smallest CPU quota, in CPUs, on this process's cgroup and the cgroups above it (a pod's and its
 * container's both have one): cgroup v2's `cpu.max` ("200000 100000"; "max" is none) or v1's
 * `cpu.cfs_quota_us` ÷ `cpu.cfs_period_us` (-1 is none). Undefined when there is none, or nothing
 * can be read (not Linux, no cgroup file system). `procCgroup` names the cgroup by its path from the
 * hierarchy's root; inside a container that has its own cgroup namespace, or whose cgroup file system
 * is its own subtree, that path does not exist under the mount, which is then the container's cgroup.
 */
export function cgroupCpuQuota(cgroupRoot: string, procCgroup: string): number | undefined {
  let lines: string[]
  try {
    lines = readFileSync(procCgroup, 'utf8').split('\n')
  } catch {
    return undefined
  }
  const quotas: number[] = []
  for (const line of lines) {
    const match = /^\d+:([^:]*):(\/.*)$/.exec(line.trim())
    if (match === null) continue
    const [, controllers, path] = match as unknown as [string, string, string]
    if (controllers === '') {
      for (const dir of cgroupDirs(cgroupRoot, path)) {
        const [max, period] = readText(join(dir, 'cpu.max'))?.split(/\s+/) ?? []
        if (max !== undefined && max !== 'max') pushQuota(quotas, Number(max), Number(period))
      }
    } else if (controllers.split(',').includes('cpu')) {
      const mount = [join(cgroupRoot, controllers), join(cgroupRoot, 'cpu')].find((dir) => existsSync(dir))
      if (mount === undefined) continue
      for (const dir of cgroupDirs(mount, path)) {
        pushQuota(quotas, Number(readText(join(dir, 'cpu.cfs_quota_us'))), Number(readText(join(dir, 'cpu.cfs_period_us'))))
      }
    }
  }
  return quotas.length === 0 ? undefined : Math.min(...quotas)
}

/** The cgroup's directory under `mount` and those above it, up to `mount`; just `mount` when the path is not under it. */
function cgroupDirs(mount: string, path: string): string[] {
  let dir = join(mount, path)
  if (!existsSync(dir)) return [mount]
  const dirs = [dir]
  while (dir !== mount && dir.startsWith(mount)) {
    dir = dirname(dir)
    dirs.push(dir)
  }
  return dirs
}

function pushQuota(quotas: number[], quota: number, period: number): void {
  if (quota > 0 && period > 0) quotas.push(quota / period)
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim()
  } catch {
    return undefined
  }
}
