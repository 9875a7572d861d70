// The CPU Deployment and its Service (deploy/kubernetes/) as `podman kube play` can run them on one
// host, for scripts/kube-play-check.sh. Only what a single podman host cannot have is changed:
//   - the image is the one CI built (--image) instead of the registry name;
//   - one replica (the host is one node; podman would bind the host ports twice);
//   - the Service is not emulated by podman (it plays Pods, Deployments and PVCs): each of its
//     ports is published instead as a hostPort on 127.0.0.1 of the container port it targets;
//   - restartPolicy OnFailure: podman 4.3 applies the pod's policy (Always, for a Deployment) to
//     init containers too, so the initContainer that fills /models is restarted forever and the
//     server never starts.
// The probes, volumes, resources, security context and arguments stay as written. The play file
// goes to --out; stdout gets shell assignments (KP_*) of what the check needs from the manifests:
// the container's name, the probes' paths and budgets, terminationGracePeriodSeconds.
//   eval "$(tsx scripts/kube-play-manifest.ts --image localhost/app:ci --http-port 18191 --grpc-port 18192 --out play.yaml)"
import { readFileSync, writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { parseAllDocuments, stringify } from 'yaml'

interface ContainerPort {
  name?: string
  containerPort: number
  hostPort?: number
  hostIP?: string
}
interface Probe {
  httpGet?: { path: string; port: string | number }
  periodSeconds?: number
  failureThreshold?: number
}
interface Container {
  name: string
  image: string
  ports?: ContainerPort[]
  startupProbe?: Probe
  readinessProbe?: Probe
  livenessProbe?: Probe
}
interface DeploymentDoc {
  kind: 'Deployment'
  metadata: { name: string }
  spec: {
    replicas?: number
    template: {
      spec: { containers: Container[]; initContainers?: Container[]; restartPolicy?: string; terminationGracePeriodSeconds?: number }
    }
  }
}
interface ServiceDoc {
  kind: 'Service'
  metadata: { name: string }
  spec: { clusterIP?: string; ports: Array<{ name: string; port: number; targetPort: string | number }> }
}

function documents(path: string): unknown[] {
  return parseAllDocuments(readFileSync(path, 'utf8')).map((d) => d.toJS() as unknown)
}

const { values } = parseArgs({
  options: {
    image: { type: 'string' },
    'http-port': { type: 'string' },
    'grpc-port': { type: 'string' },
    out: { type: 'string' },
    deployment: { type: 'string', default: 'deploy/kubernetes/deployment.yaml' },
    service: { type: 'string', default: 'deploy/kubernetes/service.yaml' }
  }
})
if (values.image === undefined || values['http-port'] === undefined || values['grpc-port'] === undefined || values.out === undefined) {
  console.error('usage: kube-play-manifest.ts --image IMAGE --http-port N --grpc-port N --out FILE [--deployment FILE] [--service FILE]')
  process.exit(2)
}
const hostPorts: Record<string, number> = { http: Number(values['http-port']), grpc: Number(values['grpc-port']) }

const deployment = documents(values.deployment!).find((d): d is DeploymentDoc => (d as DeploymentDoc).kind === 'Deployment')
// The ClusterIP Service (the headless one has no cluster address to stand in for).
const service = documents(values.service!).find(
  (d): d is ServiceDoc => (d as ServiceDoc).kind === 'Service' && d !== null && (d as ServiceDoc).spec.clusterIP !== 'None'
)
if (deployment === undefined || service === undefined) throw new Error('no Deployment or no ClusterIP Service in the manifests')

deployment.spec.replicas = 1
const pod = deployment.spec.template.spec
pod.restartPolicy = 'OnFailure'
for (const c of [...(pod.initContainers ?? []), ...pod.containers]) c.image = values.image
for (const port of service.spec.ports) {
  const target = pod.containers.flatMap((c) => c.ports ?? []).find((p) => p.name === port.targetPort || p.containerPort === port.targetPort)
  const hostPort = hostPorts[port.name]
  if (target === undefined || hostPort === undefined)
    throw new Error(`Service port ${port.name}: no container port ${String(port.targetPort)}`)
  target.hostPort = hostPort
  target.hostIP = '127.0.0.1'
}
writeFileSync(values.out!, stringify(deployment))

/** The host port a probe reaches: its container port (by name or number) as published above. */
function probeTarget(container: Container, probe: Probe | undefined, kind: string): { path: string; hostPort: number; budget: number } {
  const get = probe?.httpGet
  if (get === undefined) throw new Error(`${container.name} has no ${kind} with httpGet`)
  const port = (container.ports ?? []).find((p) => p.name === get.port || p.containerPort === get.port)
  if (port?.hostPort === undefined) throw new Error(`${kind} port ${String(get.port)} is not one the Service publishes`)
  return { path: get.path, hostPort: port.hostPort, budget: (probe?.periodSeconds ?? 10) * (probe?.failureThreshold ?? 3) }
}

const server = pod.containers[0]!
const startup = probeTarget(server, server.startupProbe, 'startupProbe')
const ready = probeTarget(server, server.readinessProbe, 'readinessProbe')
const live = probeTarget(server, server.livenessProbe, 'livenessProbe')
const assignments = {
  KP_CONTAINER: server.name,
  KP_STARTUP_URL: `http://127.0.0.1:${startup.hostPort}${startup.path}`,
  KP_STARTUP_SECONDS: startup.budget,
  KP_READY_URL: `http://127.0.0.1:${ready.hostPort}${ready.path}`,
  KP_LIVE_URL: `http://127.0.0.1:${live.hostPort}${live.path}`,
  KP_GRACE_SECONDS: pod.terminationGracePeriodSeconds ?? 30
}
for (const [name, value] of Object.entries(assignments)) console.log(`${name}='${String(value)}'`)
