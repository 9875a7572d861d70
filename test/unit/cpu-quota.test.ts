import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, rmdirSync } from 'node:fs'
import { mkdir, rmdir, writeFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { loadSettings } from '../../src/config.js'
import { availableCores, cgroupCpuQuota } from '../../src/cpu-quota.js'
import { removeTempDirs, tempDir } from '../helpers/tiny-model.js'

/**
 * Regression: in a container with a CPU limit the default threads per session counted the host's
 * cores (Node 20's availableParallelism ignores the quota): `docker run --cpus 2` on a 64-core host
 * ran ONNX Runtime on 64 threads. Cgroup trees are written as real files, laid out as Linux lays them.
 */

afterAll(removeTempDirs)

/** A cgroup file system under a temporary root: each path's files, and /proc/self/cgroup's text. */
async function cgroupTree(files: Record<string, string>, procCgroup: string): Promise<{ root: string; proc: string }> {
  const root = await tempDir('rs-cgroup-')
  for (const [path, text] of Object.entries(files)) {
    await mkdir(join(root, path, '..'), { recursive: true })
    await writeFile(join(root, path), text)
  }
  const proc = join(root, 'proc-self-cgroup')
  await writeFile(proc, procCgroup)
  return { root, proc }
}

describe('cgroupCpuQuota', () => {
  it('cgroup v2: cpu.max of the cgroup and those above it, the smallest; "max" is no limit', async () => {
    const pod = await cgroupTree(
      { 'kubepods/pod1/cpu.max': '250000 100000\n', 'kubepods/pod1/ctr/cpu.max': '150000 100000\n', 'kubepods/cpu.max': 'max 100000\n' },
      '0::/kubepods/pod1/ctr\n'
    )
    expect(cgroupCpuQuota(pod.root, pod.proc)).toBe(1.5)
    const unlimited = await cgroupTree({ 'cpu.max': 'max 100000\n' }, '0::/\n')
    expect(cgroupCpuQuota(unlimited.root, unlimited.proc)).toBeUndefined()
  })

  it("in a container with its own cgroup namespace (path /) or its own subtree mounted (the host's path missing), the mount is the container's cgroup", async () => {
    const namespaced = await cgroupTree({ 'cpu.max': '200000 100000\n' }, '0::/\n')
    expect(cgroupCpuQuota(namespaced.root, namespaced.proc)).toBe(2)
    const v1 = await cgroupTree(
      { 'cpu,cpuacct/cpu.cfs_quota_us': '300000\n', 'cpu,cpuacct/cpu.cfs_period_us': '100000\n' },
      '12:cpu,cpuacct:/docker/0123abcd\n11:memory:/docker/0123abcd\n'
    )
    expect(cgroupCpuQuota(v1.root, v1.proc)).toBe(3)
  })

  it('cgroup v1: cfs_quota_us ÷ cfs_period_us up the hierarchy, -1 is no limit; no cgroup or no file: undefined', async () => {
    const nested = await cgroupTree(
      {
        'cpu/cpu.cfs_quota_us': '-1\n',
        'cpu/cpu.cfs_period_us': '100000\n',
        'cpu/job/cpu.cfs_quota_us': '50000\n',
        'cpu/job/cpu.cfs_period_us': '100000\n',
        'cpu/job/task/cpu.cfs_quota_us': '-1\n',
        'cpu/job/task/cpu.cfs_period_us': '100000\n'
      },
      '4:memory:/\n1:cpu:/job/task\n0::/\n'
    )
    expect(cgroupCpuQuota(nested.root, nested.proc)).toBe(0.5)
    const none = await cgroupTree({ 'cpu/cpu.cfs_quota_us': '-1\n', 'cpu/cpu.cfs_period_us': '100000\n' }, '1:cpu:/\n')
    expect(cgroupCpuQuota(none.root, none.proc)).toBeUndefined()
    expect(cgroupCpuQuota(none.root, join(none.root, 'no-such-file'))).toBeUndefined()
  })
})

describe('availableCores', () => {
  it('is the quota rounded up, never more than the CPUs the process may run on, at least 1', async () => {
    const half = await cgroupTree({ 'cpu.max': '50000 100000\n' }, '0::/\n')
    expect(availableCores(half.root, half.proc)).toBe(1)
    const many = await cgroupTree({ 'cpu.max': `${(availableParallelism() + 8) * 100000} 100000\n` }, '0::/\n')
    expect(availableCores(many.root, many.proc)).toBe(availableParallelism())
    expect(loadSettings([], {}, availableCores(half.root, half.proc)).threadsPerSession).toBe(1)
  })

  // A real quota, where this machine lets the test make one (root, cgroup v1's cpu controller, a
  // cgroup file system it may write: a container's is often read-only).
  const cpuMount = '/sys/fs/cgroup/cpu'
  const canMakeCgroup = ((): boolean => {
    if (process.getuid?.() !== 0 || !existsSync(join(cpuMount, 'cpu.cfs_quota_us'))) return false
    const probe = join(cpuMount, `rs-cpu-quota-probe-${process.pid}`)
    try {
      mkdirSync(probe)
      rmdirSync(probe)
      return true
    } catch {
      return false
    }
  })()
  it.runIf(canMakeCgroup && availableParallelism() >= 2)(
    'a process in a cgroup of half a CPU gets 1 thread per session by default, where Node counts every core',
    async () => {
      const group = join(cpuMount, `rs-cpu-quota-${process.pid}`)
      await mkdir(group, { recursive: true })
      try {
        await writeFile(join(group, 'cpu.cfs_period_us'), '100000')
        await writeFile(join(group, 'cpu.cfs_quota_us'), '50000')
        const script =
          "import('./src/config.ts').then(({ loadSettings }) => console.log(JSON.stringify([require('node:os').availableParallelism(), loadSettings([], {}).threadsPerSession])))"
        const { stdout } = await promisify(execFile)('sh', [
          '-c',
          `echo $$ > ${join(group, 'cgroup.procs')} && exec "${process.execPath}" --import tsx -e "${script}"`
        ])
        expect(JSON.parse(stdout.trim().split('\n').at(-1)!)).toEqual([availableParallelism(), 1])
      } finally {
        await rmdir(group)
      }
    }
  )
})
