import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { lintDockerfile, lintDockerfiles } from '../../scripts/lint-dockerfiles.js'
import { validateManifests, validateTexts } from '../../scripts/validate-manifests.js'
import { imageEnv, memoryQuantityBytes, podContainer } from '../../load/kit/pod.js'

/**
 * The deployment files are checked offline (no Docker engine, no cluster here): the real files pass,
 * and each kind of mistake the validators claim to catch is caught on a broken copy, so a validator
 * that silently checks nothing would fail here.
 */

describe('Dockerfiles', () => {
  it('Dockerfile and Dockerfile.cuda have no lint problems', async () => {
    const results = await lintDockerfiles('.')
    expect([...results.keys()]).toEqual(['Dockerfile', 'Dockerfile.cuda'])
    for (const [name, problems] of results) expect(problems, name).toEqual([])
  })

  it('catches a root user, a missing port, an unguarded npm ci, a shell-form entrypoint and dockerfile-utils warnings', async () => {
    const good = await readFile('Dockerfile', 'utf8')
    const broken = good
      .replace(/^USER node$/m, 'USER root')
      .replace('EXPOSE 8080 9000', 'EXPOSE 8080')
      .replace(/ \\\n && node -e "require\.resolve\('fastify'\); require\.resolve\('typescript\/package\.json'\)"/, '')
      .replace(/^ENTRYPOINT .*$/m, 'ENTRYPOINT node dist/src/main.js')
      .concat('CMD ["a"]\nCMD ["b"]\n')
    const problems = lintDockerfile(broken).join('\n')
    expect(problems).toMatch(/no non-root USER/)
    expect(problems).toMatch(/port 9000 is not exposed/)
    expect(problems).toMatch(/npm ci without a guard/)
    expect(problems).toMatch(/ENTRYPOINT must be the exec form/)
    expect(problems).toMatch(/only be one CMD/)
  })
})

describe('Kubernetes and KServe manifests', () => {
  it('every document under deploy/ is valid', async () => {
    const report = await validateManifests('deploy')
    expect(report.problems).toEqual([])
    const kinds = report.manifests.map((m) => m.kind).sort()
    expect(kinds).toEqual([
      'Deployment',
      'Deployment',
      'HorizontalPodAutoscaler',
      'InferenceService',
      'PersistentVolumeClaim',
      'Service',
      'Service',
      'Service',
      'ServingRuntime'
    ])
  })

  async function deployTexts(): Promise<Map<string, string>> {
    const files = [
      'kubernetes/deployment.yaml',
      'kubernetes/service.yaml',
      'kubernetes/hpa.yaml',
      'kserve/servingruntime.yaml',
      'kserve/inferenceservice.yaml'
    ]
    return new Map(await Promise.all(files.map(async (f) => [f, await readFile(`deploy/${f}`, 'utf8')] as [string, string])))
  }

  function broken(texts: Map<string, string>, file: string, from: string | RegExp, to: string): Map<string, string> {
    const text = texts.get(file)!
    const changed = text.replace(from, to)
    expect(changed, `${file}: the replacement must apply`).not.toBe(text)
    return new Map(texts).set(file, changed)
  }

  it.each([
    [
      'Kubernetes schema: a quantity that is not one',
      'kubernetes/deployment.yaml',
      'requests: { cpu: "2", memory: 1536Mi }',
      'requests: { cpu: "two", memory: 1536Mi }',
      /resources\/requests\/cpu/
    ],
    [
      'a flag resnet-serve does not know',
      'kubernetes/deployment.yaml',
      'args: ["--provider", "cpu"]',
      'args: ["--provider", "cpu", "--treads", "2"]',
      /refuse to start: .*treads/
    ],
    [
      'a setting with a bad value',
      'kubernetes/deployment.yaml',
      '{ name: BUILD_DEFAULT_MODEL, value: "false" }',
      '{ name: BUILD_DEFAULT_MODEL, value: "nope" }',
      /BUILD_DEFAULT_MODEL=nope/
    ],
    [
      'a liveness probe on the readiness path',
      'kubernetes/deployment.yaml',
      /livenessProbe:\n(\s+)httpGet: \{ path: \/health\/live/,
      'livenessProbe:\n$1httpGet: { path: /health/ready',
      /livenessProbe should GET \/health\/live/
    ],
    [
      'a Service port the pods do not have',
      'kubernetes/service.yaml',
      '{ name: http, port: 8080, targetPort: http',
      '{ name: http, port: 8080, targetPort: web',
      /targetPort web is not a port/
    ],
    [
      'an HPA aimed at a missing Deployment',
      'kubernetes/hpa.yaml',
      'kind: Deployment, name: resnet-serve }',
      'kind: Deployment, name: resnet }',
      /scaleTargetRef Deployment\/resnet is not defined/
    ],
    [
      'a protocol KServe does not know',
      'kserve/servingruntime.yaml',
      'protocolVersions: [v2, grpc-v2]',
      'protocolVersions: [v2, grpc]',
      /protocol "grpc" is not one of/
    ],
    [
      'a misspelt ServingRuntime field',
      'kserve/servingruntime.yaml',
      'multiModel: false',
      'multimodel: false',
      /unknown field "multimodel"/
    ],
    [
      'KServe model path not passed to the server',
      'kserve/servingruntime.yaml',
      '--model-repository=/mnt/models',
      '--model-repository=/models',
      /must be \/mnt\/models/
    ],
    [
      'an InferenceService naming a missing runtime',
      'kserve/inferenceservice.yaml',
      'runtime: resnet-serve',
      'runtime: triton',
      /runtime triton is not a ServingRuntime/
    ],
    [
      'a storageUri without a scheme',
      'kserve/inferenceservice.yaml',
      'storageUri: pvc://resnet-serve-models/',
      'storageUri: resnet-serve-models',
      /has no scheme/
    ],
    ['duplicate YAML keys', 'kubernetes/hpa.yaml', '  minReplicas: 2\n', '  minReplicas: 2\n  minReplicas: 3\n', /YAML: .*[Uu]nique/]
  ])('catches %s', async (_what, file, from, to, expected) => {
    const report = validateTexts(broken(await deployTexts(), file, from, to))
    expect(report.problems.join('\n')).toMatch(expected)
  })
})

describe('the pod the robustness runs imitate (--pod, load/kit/pod.ts)', () => {
  it("reads the CPU container's memory limit and env from the Deployment, and follows a change to it", async () => {
    const manifest = await readFile('deploy/kubernetes/deployment.yaml', 'utf8')
    const pod = podContainer(manifest)
    expect(pod.limitBytes).toBe(1536 * 1024 * 1024)
    expect(pod.env).toMatchObject({ THREADS_PER_SESSION: '2', BUILD_DEFAULT_MODEL: 'false' })
    // The initContainer's 1Gi limit is not the server's.
    expect(podContainer(manifest.replace('limits: { cpu: "2", memory: 1536Mi }', 'limits: { cpu: "2", memory: 2Gi }')).limitBytes).toBe(
      2 * 1024 ** 3
    )
    expect(() => podContainer(manifest.replace('- name: resnet-serve\n', '- name: other\n'))).toThrow(
      /no Deployment with a container "resnet-serve"/
    )
  })

  it("takes the final stage's ENV of the Dockerfile: the allocator and flags the image runs with", async () => {
    expect(imageEnv(await readFile('Dockerfile', 'utf8'))).toMatchObject({
      LD_PRELOAD: expect.stringMatching(/libjemalloc\.so\.2$/) as unknown,
      NODE_OPTIONS: '--expose-gc'
    })
    const twoStages = 'FROM a AS build\nENV ONLY_BUILD=1\nFROM b\nENV A=1 \\\n    B=two\n'
    expect(imageEnv(twoStages)).toEqual({ A: '1', B: 'two' })
    expect(() => imageEnv('FROM b\nENV A="x y"\n')).toThrow(/is not KEY=value/)
  })

  it.each([
    ['1536Mi', 1536 * 1024 ** 2],
    ['2Gi', 2 * 1024 ** 3],
    ['512Ki', 512 * 1024],
    ['1G', 1e9],
    ['500M', 5e8],
    ['500000000', 5e8],
    ['1.5Gi', 1.5 * 1024 ** 3]
  ])('memory quantity %s is %d bytes', (quantity, bytes) => {
    expect(memoryQuantityBytes(quantity)).toBe(bytes)
  })

  it.each(['1.5 GiB', '2gi', '-1Mi', ''])('refuses %j', (quantity) => {
    expect(() => memoryQuantityBytes(quantity)).toThrow(/not a memory quantity/)
  })
})
