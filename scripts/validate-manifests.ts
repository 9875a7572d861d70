import { readdir, readFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Deployment } from 'kubernetes-models/apps/v1'
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2'
import { PersistentVolumeClaim, Pod, Service } from 'kubernetes-models/v1'
import { parseAllDocuments } from 'yaml'
import { ConfigError, loadSettings } from '../src/config.js'

/**
 * Offline validation of every YAML document under deploy/ (`npm run lint:k8s`, and a test).
 * There is no cluster and no kubeconform here, so it checks in four layers:
 *
 * 1. YAML: parses without errors or warnings (duplicate keys are errors), every document has
 *    apiVersion, kind and a DNS-1123 metadata.name.
 * 2. Core kinds (Deployment, Service, PersistentVolumeClaim, HorizontalPodAutoscaler) against the
 *    Kubernetes OpenAPI schemas packaged by kubernetes-models: types, required fields, enums,
 *    quantities, int-or-string. Those schemas allow unknown fields, so a misspelt optional field is
 *    not caught here; layer 4 asserts the fields this service relies on.
 * 3. KServe CRDs (ServingRuntime v1alpha1, InferenceService v1beta1) have no schema package: their
 *    own fields are checked against KServe's Go types by hand (names, types, enums, unknown keys
 *    in the specs), and what KServe embeds from core (containers, resources) against the real
 *    core/v1 schemas by wrapping it in a Pod.
 * 4. What the API server does not check: selectors match pod labels, Service target ports and
 *    probe ports exist, the HPA and the PVC references resolve, the InferenceService's runtime
 *    exists and supports its format and protocol; and the service's own contract: every
 *    resnet-serve container's args and env parse with the real settings loader (src/config.ts),
 *    it has startup/readiness/liveness probes on /health/ready and /health/live, CPU and memory
 *    requests and limits, runs as non-root, and a GPU container asks for nvidia.com/gpu and
 *    --provider cuda.
 */

type Obj = Record<string, unknown>

export interface Manifest {
  readonly where: string
  readonly apiVersion: string
  readonly kind: string
  readonly name: string
  readonly body: Obj
}

export interface ValidationReport {
  readonly manifests: readonly Manifest[]
  readonly problems: readonly string[]
  /** What each document was checked against, for the summary line. */
  readonly coverage: readonly string[]
}

const obj = (v: unknown): Obj => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {})
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : [])
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined)
const DNS_1123 = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/

/** kubernetes-models' constructors take typed data; documents from YAML are checked at run time instead. */
type Validator = (body: Obj) => { validate(): void }
const CORE_SCHEMAS: Record<string, Validator> = {
  'apps/v1 Deployment': (b) => new Deployment(b as never),
  'v1 Service': (b) => new Service(b as never),
  'v1 PersistentVolumeClaim': (b) => new PersistentVolumeClaim(b as never),
  'autoscaling/v2 HorizontalPodAutoscaler': (b) => new HorizontalPodAutoscaler(b as never)
}

const schemaMessage = (err: unknown, from: string, to: string): string =>
  (err instanceof Error ? err.message : String(err)).replaceAll(from, to)

/** Validates containers against core/v1 Container by wrapping them in a Pod; paths are rewritten to `where`. */
function checkContainersSchema(containers: unknown[], where: string, problems: string[]): void {
  try {
    new Pod({ metadata: { name: 'check' }, spec: { containers } } as never).validate()
  } catch (err) {
    problems.push(`${where}: ${schemaMessage(err, 'data/spec/containers', 'containers')}`)
  }
}

function checkKeys(value: Obj, known: readonly string[], where: string, problems: string[]): void {
  for (const key of Object.keys(value))
    if (!known.includes(key)) problems.push(`${where}: unknown field "${key}" (known: ${known.join(', ')})`)
}

// KServe's Go types (pkg/apis/serving): ServingRuntimeSpec with its inlined ServingRuntimePodSpec,
// SupportedModelFormat, ComponentExtensionSpec, and the protocol and scale-metric enums.
const SERVING_RUNTIME_SPEC = [
  'supportedModelFormats',
  'multiModel',
  'disabled',
  'protocolVersions',
  'workerSpec',
  'containers',
  'volumes',
  'nodeSelector',
  'affinity',
  'tolerations',
  'labels',
  'annotations',
  'imagePullSecrets',
  'hostIPC',
  'grpcEndpoint',
  'grpcDataEndpoint',
  'httpDataEndpoint',
  'replicas',
  'storageHelper',
  'builtInAdapter'
]
const MODEL_FORMAT = ['name', 'version', 'autoSelect', 'priority']
const PROTOCOLS = ['v1', 'v2', 'grpc-v1', 'grpc-v2']
const COMPONENT_EXTENSION = [
  'minReplicas',
  'maxReplicas',
  'scaleTarget',
  'scaleMetric',
  'containerConcurrency',
  'timeout',
  'canaryTrafficPercent',
  'logger',
  'batcher',
  'labels',
  'annotations',
  'deploymentStrategy'
]
const SCALE_METRICS = ['cpu', 'memory', 'concurrency', 'rps']
/** ModelSpec: these, plus every core/v1 Container field (it inlines a Container). */
const MODEL_SPEC_OWN = ['modelFormat', 'runtime', 'protocolVersion', 'storageUri', 'storage']
const STORAGE_URI = /^(pvc|s3|gs|hdfs|webhdfs|hf|oci|https?):\/\/\S+$/

function checkServingRuntime(m: Manifest, problems: string[]): void {
  const spec = obj(m.body.spec)
  checkKeys(spec, SERVING_RUNTIME_SPEC, `${m.where} spec`, problems)
  const formats = arr(spec.supportedModelFormats)
  if (formats.length === 0) problems.push(`${m.where}: spec.supportedModelFormats is empty`)
  formats.forEach((f, i) => {
    const where = `${m.where} spec.supportedModelFormats[${i}]`
    checkKeys(obj(f), MODEL_FORMAT, where, problems)
    const { name, version, autoSelect, priority } = obj(f)
    if (!str(name)) problems.push(`${where}.name must be a non-empty string`)
    if (version !== undefined && !/^\d+(\.\d+){0,2}$/.test(String(str(version))))
      problems.push(`${where}.version must be a string "major[.minor[.patch]]"`)
    if (autoSelect !== undefined && typeof autoSelect !== 'boolean') problems.push(`${where}.autoSelect must be a boolean`)
    if (priority !== undefined && !(Number.isInteger(priority) && (priority as number) >= 1))
      problems.push(`${where}.priority must be an integer >= 1`)
  })
  for (const p of arr(spec.protocolVersions))
    if (!PROTOCOLS.includes(String(p))) problems.push(`${m.where}: protocol "${String(p)}" is not one of ${PROTOCOLS.join(', ')}`)
  if (spec.multiModel !== undefined && typeof spec.multiModel !== 'boolean') problems.push(`${m.where}: spec.multiModel must be a boolean`)
  const containers = arr(spec.containers)
  if (containers.length === 0) problems.push(`${m.where}: spec.containers is empty`)
  checkContainersSchema(containers, `${m.where} spec`, problems)
}

function checkInferenceService(m: Manifest, problems: string[]): void {
  const spec = obj(m.body.spec)
  checkKeys(spec, ['predictor', 'transformer', 'explainer'], `${m.where} spec`, problems)
  const predictor = obj(spec.predictor)
  const model = obj(predictor.model)
  if (Object.keys(model).length === 0) {
    problems.push(`${m.where}: spec.predictor.model is missing (this project's runtime is selected through it)`)
    return
  }
  const { minReplicas, maxReplicas, scaleMetric, scaleTarget } = predictor
  for (const [key, value] of Object.entries({ minReplicas, maxReplicas, scaleTarget })) {
    if (value !== undefined && !(Number.isInteger(value) && (value as number) >= 0))
      problems.push(`${m.where}: spec.predictor.${key} must be a non-negative integer`)
  }
  if (typeof minReplicas === 'number' && typeof maxReplicas === 'number' && maxReplicas !== 0 && minReplicas > maxReplicas)
    problems.push(`${m.where}: minReplicas > maxReplicas`)
  if (scaleMetric !== undefined && !SCALE_METRICS.includes(String(scaleMetric)))
    problems.push(`${m.where}: scaleMetric "${String(scaleMetric)}" is not one of ${SCALE_METRICS.join(', ')}`)
  // Everything else on the predictor is ComponentExtensionSpec or an inlined PodSpec field: the
  // latter is checked against core/v1 PodSpec through a Pod.
  const podFields = Object.fromEntries(Object.entries(predictor).filter(([k]) => k !== 'model' && !COMPONENT_EXTENSION.includes(k)))
  try {
    new Pod({ metadata: { name: 'check' }, spec: { containers: [], ...podFields } } as never).validate()
  } catch (err) {
    problems.push(`${m.where} spec.predictor: ${schemaMessage(err, 'data/spec', 'predictor')}`)
  }
  const format = obj(model.modelFormat)
  if (!str(format.name)) problems.push(`${m.where}: spec.predictor.model.modelFormat.name must be a non-empty string`)
  if (model.protocolVersion !== undefined && !PROTOCOLS.includes(String(model.protocolVersion)))
    problems.push(`${m.where}: protocolVersion "${String(model.protocolVersion)}" is not one of ${PROTOCOLS.join(', ')}`)
  if (model.storageUri !== undefined && !STORAGE_URI.test(String(str(model.storageUri))))
    problems.push(`${m.where}: storageUri "${String(model.storageUri)}" has no scheme KServe knows`)
  const container = Object.fromEntries(Object.entries(model).filter(([k]) => !MODEL_SPEC_OWN.includes(k)))
  checkContainersSchema([{ name: 'kserve-container', ...container }], `${m.where} spec.predictor.model`, problems)
}

/** The resnet-serve containers: those running the image's entrypoint (no command of their own). */
function serviceContainers(podSpec: Obj): Obj[] {
  return arr(podSpec.containers)
    .map(obj)
    .filter((c) => String(c.image).startsWith('resnet-serve') && c.command === undefined)
}

/** Args and env go through the real settings loader: an unknown flag or a bad value fails here, not in the pod. */
function checkSettings(container: Obj, where: string, problems: string[]): { provider: string } | undefined {
  const env: NodeJS.ProcessEnv = {}
  for (const e of arr(container.env).map(obj)) if (str(e.name) && str(e.value) !== undefined) env[String(e.name)] = String(e.value)
  try {
    return loadSettings(arr(container.args).map(String), env, 2)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    problems.push(`${where}: resnet-serve would refuse to start: ${err.message}`)
    return undefined
  }
}

function probePath(probe: unknown): string | undefined {
  return str(obj(obj(probe).httpGet).path)
}

function checkServiceContainer(c: Obj, podSpec: Obj, where: string, problems: string[]): void {
  const settings = checkSettings(c, where, problems)
  const resources = obj(c.resources)
  for (const part of ['requests', 'limits']) {
    for (const r of ['cpu', 'memory']) if (obj(resources[part])[r] === undefined) problems.push(`${where}: no ${part}.${r}`)
  }
  const gpus = obj(resources.limits)['nvidia.com/gpu']
  if (settings?.provider === 'cuda' && gpus === undefined) problems.push(`${where}: --provider cuda without a nvidia.com/gpu limit`)
  if (gpus !== undefined && settings?.provider !== 'cuda') problems.push(`${where}: asks for a GPU but does not run with --provider cuda`)
  if (probePath(c.startupProbe) !== '/health/ready')
    problems.push(`${where}: startupProbe should GET /health/ready (model load takes seconds)`)
  if (probePath(c.readinessProbe) !== '/health/ready') problems.push(`${where}: readinessProbe should GET /health/ready`)
  if (probePath(c.livenessProbe) !== '/health/live') problems.push(`${where}: livenessProbe should GET /health/live`)
  const ports = arr(c.ports).map(obj)
  for (const probe of [c.startupProbe, c.readinessProbe, c.livenessProbe]) {
    const port = obj(obj(probe).httpGet).port
    if (port !== undefined && !ports.some((p) => p.name === port || p.containerPort === port))
      problems.push(`${where}: probe port ${String(port)} is not a container port`)
  }
  for (const want of [8080, 9000])
    if (!ports.some((p) => p.containerPort === want)) problems.push(`${where}: container port ${want} is not declared`)
  const runAsNonRoot = obj(c.securityContext).runAsNonRoot ?? obj(podSpec.securityContext).runAsNonRoot
  if (runAsNonRoot !== true) problems.push(`${where}: runAsNonRoot is not set (the image runs as uid 1000)`)
}

function labelsMatch(selector: Obj, labels: Obj): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v)
}

function checkReferences(manifests: readonly Manifest[], problems: string[]): void {
  const of = (kind: string) => manifests.filter((m) => m.kind === kind)
  const deployments = of('Deployment')
  for (const d of deployments) {
    const spec = obj(d.body.spec)
    const template = obj(spec.template)
    const podLabels = obj(obj(template.metadata).labels)
    if (!labelsMatch(obj(obj(spec.selector).matchLabels), podLabels))
      problems.push(`${d.where}: spec.selector does not match the pod template's labels`)
    const podSpec = obj(template.spec)
    const mine = serviceContainers(podSpec)
    if (mine.length === 0) problems.push(`${d.where}: no resnet-serve container`)
    for (const c of mine) checkServiceContainer(c, podSpec, `${d.where} container ${String(c.name)}`, problems)
    for (const v of arr(podSpec.volumes).map(obj)) {
      const claim = str(obj(v.persistentVolumeClaim).claimName)
      if (claim !== undefined && !of('PersistentVolumeClaim').some((p) => p.name === claim))
        problems.push(`${d.where}: PVC ${claim} is not defined under deploy/`)
    }
  }
  for (const s of of('Service')) {
    const selector = obj(obj(s.body.spec).selector)
    const targets = deployments.filter((d) => labelsMatch(selector, obj(obj(obj(obj(d.body.spec).template).metadata).labels)))
    if (targets.length === 0) {
      problems.push(`${s.where}: selector matches no Deployment's pods`)
      continue
    }
    for (const port of arr(obj(s.body.spec).ports).map(obj)) {
      const target = port.targetPort ?? port.port
      for (const d of targets) {
        const containerPorts = arr(obj(obj(obj(d.body.spec).template).spec).containers).flatMap((c) => arr(obj(c).ports).map(obj))
        if (!containerPorts.some((p) => p.name === target || p.containerPort === target))
          problems.push(`${s.where}: targetPort ${String(target)} is not a port of ${d.name}'s containers`)
      }
    }
  }
  for (const h of of('HorizontalPodAutoscaler')) {
    const spec = obj(h.body.spec)
    const ref = obj(spec.scaleTargetRef)
    if (!(ref.kind === 'Deployment' && deployments.some((d) => d.name === ref.name)))
      problems.push(`${h.where}: scaleTargetRef ${String(ref.kind)}/${String(ref.name)} is not defined under deploy/`)
    if (typeof spec.minReplicas === 'number' && typeof spec.maxReplicas === 'number' && spec.minReplicas > spec.maxReplicas)
      problems.push(`${h.where}: minReplicas > maxReplicas`)
  }
  const runtimes = of('ServingRuntime')
  for (const r of runtimes) {
    const spec = obj(r.body.spec)
    for (const c of serviceContainers(spec)) {
      const where = `${r.where} container ${String(c.name)}`
      checkServiceContainer(c, spec, where, problems)
      // KServe puts the storageUri's content at /mnt/models.
      const settings = checkSettings(c, where, [])
      if (settings !== undefined && obj(settings).modelRepository !== '/mnt/models')
        problems.push(`${where}: --model-repository must be /mnt/models, where KServe puts the model`)
    }
  }
  for (const i of of('InferenceService')) {
    const model = obj(obj(obj(i.body.spec).predictor).model)
    const runtime = runtimes.find((r) => r.name === model.runtime)
    if (runtime === undefined) {
      problems.push(`${i.where}: runtime ${String(model.runtime)} is not a ServingRuntime under deploy/`)
      continue
    }
    const runtimeSpec = obj(runtime.body.spec)
    const format = str(obj(model.modelFormat).name)
    if (!arr(runtimeSpec.supportedModelFormats).some((f) => obj(f).name === format))
      problems.push(`${i.where}: runtime ${runtime.name} does not support model format ${String(format)}`)
    if (model.protocolVersion !== undefined && !arr(runtimeSpec.protocolVersions).includes(model.protocolVersion))
      problems.push(`${i.where}: runtime ${runtime.name} does not speak ${String(model.protocolVersion)}`)
  }
}

async function yamlFiles(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...(await yamlFiles(path)))
    else if (/\.ya?ml$/.test(entry.name)) out.push(path)
  }
  return out.sort()
}

/** Parses and validates documents given as text (file name → YAML); the test feeds broken ones. */
export function validateTexts(texts: ReadonlyMap<string, string>): ValidationReport {
  const problems: string[] = []
  const coverage: string[] = []
  const manifests: Manifest[] = []
  for (const [file, text] of texts) {
    parseAllDocuments(text).forEach((doc, index) => {
      const where = `${file}#${index + 1}`
      for (const e of [...doc.errors, ...doc.warnings]) problems.push(`${where}: YAML: ${e.message}`)
      const body = obj(doc.toJS())
      if (Object.keys(body).length === 0) return
      const apiVersion = String(body.apiVersion)
      const kind = String(body.kind)
      const name = String(obj(body.metadata).name)
      if (!DNS_1123.test(name) || name.length > 63) problems.push(`${where}: metadata.name "${name}" is not a DNS-1123 label`)
      const m: Manifest = { where: `${where} ${kind}/${name}`, apiVersion, kind, name, body }
      manifests.push(m)
      const schema = CORE_SCHEMAS[`${apiVersion} ${kind}`]
      if (schema !== undefined) {
        try {
          schema(body).validate()
        } catch (err) {
          problems.push(`${m.where}: ${schemaMessage(err, 'data/', '')}`)
        }
        coverage.push(`${m.where}: Kubernetes schema`)
      } else if (apiVersion === 'serving.kserve.io/v1alpha1' && kind === 'ServingRuntime') {
        checkServingRuntime(m, problems)
        coverage.push(`${m.where}: KServe fields + core/v1 Container schema`)
      } else if (apiVersion === 'serving.kserve.io/v1beta1' && kind === 'InferenceService') {
        checkInferenceService(m, problems)
        coverage.push(`${m.where}: KServe fields + core/v1 Container/PodSpec schema`)
      } else {
        problems.push(`${m.where}: no schema for ${apiVersion} ${kind}; add one to scripts/validate-manifests.ts`)
      }
    })
  }
  checkReferences(manifests, problems)
  return { manifests, problems, coverage }
}

export async function validateManifests(root = 'deploy'): Promise<ValidationReport> {
  const texts = new Map<string, string>()
  for (const file of await yamlFiles(root)) texts.set(relative(process.cwd(), file), await readFile(file, 'utf8'))
  return validateTexts(texts)
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const report = await validateManifests(process.argv[2] ?? 'deploy')
  for (const line of report.coverage) console.log(`  ${line}`)
  if (report.problems.length > 0) {
    for (const p of report.problems) console.error(`✗ ${p}`)
    console.error(`lint:k8s: ${report.problems.length} problem(s) in ${report.manifests.length} documents`)
    process.exit(1)
  }
  console.log(`lint:k8s: ${report.manifests.length} documents valid (schemas, KServe fields, references, resnet-serve settings)`)
}
