import { readFile } from 'node:fs/promises'
import { parseAllDocuments } from 'yaml'
import { describe, expect, it } from 'vitest'
import { loadSettings } from '../../src/config.js'

/**
 * The drain fits every manifest that runs the server: on SIGTERM the pod stays in service for
 * --drain-grace-ms, long enough for its readiness probe to fail (period x failureThreshold), and
 * grace + --drain-timeout-ms + the 5 s the process allows itself on top fit within
 * terminationGracePeriodSeconds with seconds to spare (the process's timers fire late on a busy
 * node; exiting takes time), so the kubelet never kills a drain it started. Regression: two
 * manifests fitted to the second, with no slack at all.
 */

interface Probe {
  periodSeconds?: number
  failureThreshold?: number
}
interface Container {
  name: string
  image?: string
  args?: string[]
  env?: Array<{ name: string; value?: string }>
  readinessProbe?: Probe
}
interface PodSpec {
  terminationGracePeriodSeconds?: number
  containers: Container[]
}

/** The pod spec of a Deployment, or a KServe ServingRuntime (whose spec holds the containers). */
async function podSpecs(file: string): Promise<PodSpec[]> {
  const docs = parseAllDocuments(await readFile(file, 'utf8')).map((d) => d.toJS() as { kind: string; spec: Record<string, unknown> })
  return docs.flatMap((doc) => {
    if (doc.kind === 'Deployment') return [(doc.spec.template as { spec: PodSpec }).spec]
    if (doc.kind === 'ServingRuntime') return [doc.spec as unknown as PodSpec]
    return []
  })
}

const SLACK_MS = 3_000
const MANIFESTS = ['deploy/kubernetes/deployment.yaml', 'deploy/kubernetes/deployment-gpu.yaml', 'deploy/kserve/servingruntime.yaml']

describe('the drain fits the manifests', () => {
  for (const file of MANIFESTS) {
    it(file, async () => {
      const specs = await podSpecs(file)
      expect(specs.length).toBeGreaterThan(0)
      for (const spec of specs) {
        const server = spec.containers.find((c) => c.image?.startsWith('resnet-serve'))!
        const env = Object.fromEntries((server.env ?? []).map((e) => [e.name, e.value ?? '']))
        const settings = loadSettings(server.args ?? [], env)
        // Kubernetes' defaults where the manifest sets none.
        const terminationGraceMs = (spec.terminationGracePeriodSeconds ?? 30) * 1000
        const probe = server.readinessProbe ?? {}
        const notReadyWithinMs = (probe.periodSeconds ?? 10) * (probe.failureThreshold ?? 3) * 1000
        expect(settings.drainGraceMs, 'the grace lets the readiness probe fail first').toBeGreaterThanOrEqual(notReadyWithinMs)
        expect(
          settings.drainGraceMs + settings.drainTimeoutMs + 5_000 + SLACK_MS,
          'grace + drain + 5 s + slack fit the termination grace'
        ).toBeLessThanOrEqual(terminationGraceMs)
      }
    })
  }
})
