import type { Settings } from '../config.js'
import type { ServedModel } from '../core/classify-service.js'
import type { ModelOverride } from '../core/model-table.js'
import { ServiceError, echoed } from '../errors.js'
import { PLATFORM } from './metadata.js'
import { BACKEND, renderModelConfig, servedModelConfigSource, type TritonModelConfig } from './model-config.js'

/**
 * Triton's `config` load parameter: a model configuration in the JSON form of model_config.proto's
 * ModelConfig, used for this load instead of the folder's. It is read as protobuf's JSON parser
 * reads it (proto or lowerCamelCase field names, 64-bit integers as numbers or strings, enums by
 * name or number), so a configuration written for Triton, or the one `.../config` answered, loads.
 *
 * - Fields that set how the model is served replace config.json's: max_batch_size,
 *   version_policy, instance_group's count (config.json's instances), dynamic_batching (queue
 *   delay, queue size, priority levels, preferred sizes as the sizes batches are padded to) and the
 *   `parameters` the config endpoint lists (preprocess.*, output.kind). A field left out keeps the
 *   folder's value (Triton completes it from the model).
 * - Fields that say what the model is (name, platform, backend, input, output, instance_group's
 *   kind and gpus, default_model_filename, and the parameters synthetic and preset) are compared
 *   with each version as it opens: a load whose configuration says otherwise fails, so that a
 *   client never believes a setting took effect that did not.
 * - Other ModelConfig fields are accepted at their defaults (as Triton writes them in its own
 *   answers) and refused otherwise, naming the field. model_warmup is accepted and not read: every
 *   batch size is warmed up before a model serves.
 */

/** Larger than any model's configuration (REST's load bodies have this limit too); gRPC's messages may be larger. */
export const MAX_CONFIG_BYTES = 64 * 1024

/** Deeper than any ModelConfig: a parameter nested further is refused before it is walked. */
const MAX_DEPTH = 12

type Fields = Map<string, unknown>

/** What the request's configuration says a version is, compared once it has opened. */
interface Claim {
  readonly path: string
  readonly said: unknown
  readonly is: (config: TritonModelConfig) => unknown
  /** Why the model is what it is, and what to change instead. */
  readonly because: string
}

/** The amendment of config.json's object: section → field → value (undefined: the field is removed). */
type Changes = Record<string, Record<string, unknown>>

const DATA_TYPES = [
  'TYPE_INVALID',
  'TYPE_BOOL',
  'TYPE_UINT8',
  'TYPE_UINT16',
  'TYPE_UINT32',
  'TYPE_UINT64',
  'TYPE_INT8',
  'TYPE_INT16',
  'TYPE_INT32',
  'TYPE_INT64',
  'TYPE_FP16',
  'TYPE_FP32',
  'TYPE_FP64',
  'TYPE_STRING',
  'TYPE_BF16'
]
const FORMATS = ['FORMAT_NONE', 'FORMAT_NHWC', 'FORMAT_NCHW']
const KINDS = ['KIND_AUTO', 'KIND_GPU', 'KIND_CPU', 'KIND_MODEL']

/** ModelConfig fields this server has no use for: accepted when they hold their defaults. */
const INERT_FIELDS = new Set([
  'runtime',
  'batch_input',
  'batch_output',
  'optimization',
  'sequence_batching',
  'ensemble_scheduling',
  'cc_model_filenames',
  'metric_tags',
  'model_operations',
  'model_transaction_policy',
  'model_repository_agents',
  'response_cache'
])

/** The parameters that set preprocessing and the output's kind: config.json section and field. */
const SETTING_PARAMETERS: Readonly<Record<string, readonly [string, string, (text: string, path: string) => unknown]>> = {
  'preprocess.resize': ['preprocess', 'resize', (t, p) => numberText(t, p)],
  'preprocess.crop': ['preprocess', 'crop', (t, p) => numberText(t, p)],
  'preprocess.scale': ['preprocess', 'scale', (t, p) => numberText(t, p)],
  'preprocess.mean': ['preprocess', 'mean', (t, p) => t.split(',').map((part) => numberText(part.trim(), p))],
  'preprocess.std': ['preprocess', 'std', (t, p) => t.split(',').map((part) => numberText(part.trim(), p))],
  'preprocess.colorOrder': ['preprocess', 'colorOrder', (t) => t],
  'preprocess.decode': ['preprocess', 'decode', (t) => t],
  'output.kind': ['output', 'kind', (t) => t]
}
/** The parameters that describe the model (compared, never changed). */
const DESCRIBING_PARAMETERS = new Set(['synthetic', 'preset'])

function refuse(path: string, problem: string): never {
  throw new ServiceError('BAD_REQUEST', `The "config" parameter's ${path} ${problem}`)
}

/** A client's value as a message repeats it, bounded. */
function shown(value: unknown): string {
  return echoed(JSON.stringify(value) ?? String(value))
}

function snakeCase(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)
}

/** A message's fields by their proto names; `path` names it in messages. */
function fields(value: unknown, path: string): Fields {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) refuse(path, `must be a JSON object (got ${kindOf(value)}).`)
  const out: Fields = new Map()
  for (const [key, v] of Object.entries(value)) {
    const name = snakeCase(key)
    if (out.has(name)) refuse(path, `sets ${name} twice.`)
    out.set(name, v)
  }
  return out
}

function kindOf(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value
}

function list(value: unknown, path: string): unknown[] {
  if (!Array.isArray(value)) refuse(path, `must be a JSON array (got ${kindOf(value)}).`)
  return value
}

/** An integer as protobuf's JSON has it: a number, or for 64-bit fields a string of digits. */
function integer(value: unknown, path: string, min: number, max: number): number {
  const n = typeof value === 'string' && /^-?[0-9]{1,16}$/.test(value) ? Number(value) : value
  if (typeof n !== 'number' || !Number.isInteger(n)) refuse(path, `must be an integer (got ${shown(value)}).`)
  if (n < min || n > max) refuse(path, `must be from ${min} to ${max} (got ${n}).`)
  return n
}

function enumName(value: unknown, path: string, names: readonly string[]): string {
  if (typeof value === 'number' && names[value] !== undefined) return names[value]
  if (typeof value === 'string' && names.includes(value)) return value
  return refuse(path, `must be one of ${names.join(', ')} (got ${shown(value)}).`)
}

function text(value: unknown, path: string): string {
  if (typeof value !== 'string') refuse(path, `must be a string (got ${kindOf(value)}).`)
  return value
}

function numberText(value: string, path: string): number {
  if (!/^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/.test(value)) refuse(path, `must hold a number (got ${shown(value)}).`)
  return Number(value)
}

/**
 * A value at its protobuf default (false, 0, "", an empty list, a message of defaults), or one of
 * the defaults Triton itself writes in the answers of its config endpoint (pinned-memory copies
 * on, priority PRIORITY_DEFAULT): a field that asks for nothing this server would have to do.
 */
function inert(value: unknown, key: string, depth: number): boolean {
  if (depth > MAX_DEPTH) return false
  if (value === null || value === false || value === 0 || value === '' || value === '0') return true
  if (typeof value === 'string') return /_DEFAULT$/.test(value)
  if (Array.isArray(value)) return value.every((v) => inert(v, key, depth + 1))
  if (typeof value !== 'object') return false
  if (/_pinned_memory$/.test(snakeCase(key))) return true
  return Object.entries(value).every(([k, v]) => inert(v, k, depth + 1))
}

class OverrideReader {
  readonly changes: Changes = { batching: {}, preprocess: {}, output: {} }
  /** config.json's top-level fields it sets (versionPolicy, instances). */
  readonly topLevel: Record<string, unknown> = {}
  readonly claims: Claim[] = []

  constructor(private readonly model: string) {}

  read(config: unknown): void {
    for (const [field, value] of fields(config, 'top level')) {
      switch (field) {
        case 'name':
          if (text(value, 'name') !== this.model) refuse('name', `(${shown(value)}) is not the model being loaded ("${this.model}").`)
          break
        case 'platform':
          if (![PLATFORM, ''].includes(text(value, 'platform')))
            refuse('platform', `must be "${PLATFORM}": this server runs ONNX models (got ${shown(value)}).`)
          break
        case 'backend':
          if (![BACKEND, ''].includes(text(value, 'backend'))) refuse('backend', `must be "${BACKEND}" (got ${shown(value)}).`)
          break
        case 'version_policy':
          this.topLevel.versionPolicy = this.readVersionPolicy(value)
          break
        case 'max_batch_size':
          this.readMaxBatchSize(value)
          break
        case 'input':
          this.readTensors(value, 'input')
          break
        case 'output':
          this.readTensors(value, 'output')
          break
        case 'dynamic_batching':
          this.readDynamicBatching(value)
          break
        case 'instance_group':
          this.readInstanceGroups(value)
          break
        case 'default_model_filename':
          this.claim(
            'default_model_filename',
            text(value, 'default_model_filename'),
            (c) => c.default_model_filename,
            'the file is config.json\'s "file"'
          )
          break
        case 'parameters':
          this.readParameters(value)
          break
        case 'model_warmup':
          list(value, 'model_warmup')
          break
        default:
          if (!INERT_FIELDS.has(field)) refuse(field, 'is not a ModelConfig field this server reads.')
          if (!inert(value, field, 0)) refuse(field, 'may only hold its defaults: this server does not do what it asks.')
      }
    }
  }

  /** A field at its protobuf default ("", 0, [], an enum's 0) is one the configuration leaves out, as protobuf reads it. */
  private claim(path: string, said: unknown, is: (config: TritonModelConfig) => unknown, because: string): void {
    if (said === '' || said === 0 || (Array.isArray(said) && said.length === 0)) return
    if (said === DATA_TYPES[0] || said === FORMATS[0] || said === KINDS[0]) return
    this.claims.push({ path, said, is, because })
  }

  private readVersionPolicy(value: unknown): unknown {
    const policy = fields(value, 'version_policy')
    if (policy.size !== 1) refuse('version_policy', 'must set one of latest, all and specific.')
    const [choice, body] = [...policy][0]!
    const inner = fields(body, `version_policy.${choice}`)
    switch (choice) {
      case 'latest':
        return { latest: { numVersions: integer(inner.get('num_versions') ?? 1, 'version_policy.latest.num_versions', 1, 1000) } }
      case 'all':
        return { all: {} }
      case 'specific': {
        const versions = list(inner.get('versions') ?? [], 'version_policy.specific.versions')
        if (versions.length === 0 || versions.length > 1000)
          refuse('version_policy.specific.versions', 'must list from 1 to 1000 versions.')
        return { specific: { versions: versions.map((v, i) => integer(v, `version_policy.specific.versions[${i}]`, 1, 999_999_999)) } }
      }
      default:
        return refuse(`version_policy.${choice}`, 'is not a version policy (latest, all or specific).')
    }
  }

  private readMaxBatchSize(value: unknown): void {
    const size = integer(value, 'max_batch_size', 0, 1024)
    if (size === 0) refuse('max_batch_size', 'is 0 (no batch dimension): every model served here takes a batch dimension.')
    this.changes.batching!.maxBatchSize = size
    this.claim('max_batch_size', size, (c) => c.max_batch_size, "the model's export allows no larger batch, or --max-batch-items does not")
  }

  private readTensors(value: unknown, which: 'input' | 'output'): void {
    const tensors = list(value, which)
    if (tensors.length !== 1) refuse(which, `lists ${tensors.length} tensors; the model has one ${which}.`)
    const path = `${which}[0]`
    for (const [field, v] of fields(tensors[0], path)) {
      const at = `${path}.${field}`
      const tensor = (c: TritonModelConfig): Record<string, unknown> =>
        (which === 'input' ? c.input[0]! : c.output[0]!) as unknown as Record<string, unknown>
      switch (field) {
        case 'name':
          this.claim(at, text(v, at), (c) => tensor(c).name, "the tensor's name is the ONNX file's, written in config.json")
          break
        case 'data_type':
          this.claim(
            at,
            enumName(v, at, DATA_TYPES),
            (c) => tensor(c).data_type,
            "the tensor's type is the model's (config.json's input.datatype)"
          )
          break
        case 'format':
          if (which === 'output') refuse(at, 'is not an output field.')
          this.claim(at, enumName(v, at, FORMATS), (c) => tensor(c).format, "the layout is the model's (config.json's input.layout)")
          break
        case 'dims':
          this.claim(
            at,
            list(v, at).map((d, i) => integer(d, `${at}[${i}]`, -1, 2 ** 31)),
            (c) => tensor(c).dims,
            which === 'input' ? 'the crop sets them: the parameter preprocess.crop changes it' : "the model's classes set them"
          )
          break
        case 'label_filename':
          if (which === 'input') refuse(at, 'is not an input field.')
          this.claim(at, text(v, at), (c) => tensor(c).label_filename, 'the labels are config.json\'s "labels"')
          break
        default:
          if (!inert(v, field, 0)) refuse(at, 'may only hold its default here.')
      }
    }
  }

  private readDynamicBatching(value: unknown): void {
    const batching = this.changes.batching!
    for (const [field, v] of fields(value, 'dynamic_batching')) {
      const at = `dynamic_batching.${field}`
      switch (field) {
        case 'max_queue_delay_microseconds':
          batching.maxQueueDelayMs = integer(v, at, 0, 10_000_000) / 1000
          break
        case 'preferred_batch_size': {
          const sizes = list(v, at).map((s, i) => integer(s, `${at}[${i}]`, 1, 1024))
          if (sizes.length > 64) refuse(at, 'lists more than 64 sizes.')
          batching.padTo = sizes
          this.claim(
            at,
            sizes,
            (c) => c.dynamic_batching.preferred_batch_size,
            'sizes above max_batch_size are left out, and on CUDA each session runs one size'
          )
          break
        }
        case 'priority_levels':
          batching.priorityLevels = integer(v, at, 0, 16)
          break
        case 'default_priority_level': {
          const level = integer(v, at, 0, 16)
          batching.defaultPriorityLevel = level === 0 ? undefined : level
          break
        }
        case 'default_queue_policy':
          this.readQueuePolicy(v)
          break
        case 'preserve_ordering':
          // Each request is answered on its own connection or call: there is no order between them to keep.
          if (typeof v !== 'boolean') refuse(at, `must be true or false (got ${kindOf(v)}).`)
          break
        default:
          if (!inert(v, field, 0)) refuse(at, 'may only hold its default here.')
      }
    }
  }

  private readQueuePolicy(value: unknown): void {
    for (const [field, v] of fields(value, 'dynamic_batching.default_queue_policy')) {
      const at = `dynamic_batching.default_queue_policy.${field}`
      if (field === 'max_queue_size') {
        // Triton's 0 is a queue without bound; here every queue has one, so 0 keeps the folder's.
        const size = integer(v, at, 0, 100_000)
        if (size > 0) this.changes.batching!.maxQueueSize = size
      } else if (field === 'timeout_action') {
        if (enumName(v, at, ['REJECT', 'DELAY']) !== 'REJECT') refuse(at, 'must be REJECT: a request past its deadline is refused.')
      } else if (!inert(v, field, 0)) {
        refuse(at, 'may only hold its default here (timeouts are the request\'s own: the "timeout" parameter or the gRPC deadline).')
      }
    }
  }

  private readInstanceGroups(value: unknown): void {
    const groups = list(value, 'instance_group')
    if (groups.length !== 1) refuse('instance_group', `lists ${groups.length} groups; a model here runs one group of sessions.`)
    for (const [field, v] of fields(groups[0], 'instance_group[0]')) {
      const at = `instance_group[0].${field}`
      switch (field) {
        case 'name':
          text(v, at)
          break
        case 'kind': {
          const kind = enumName(v, at, KINDS)
          if (kind === 'KIND_MODEL') refuse(at, 'KIND_MODEL is not a device this server places sessions on.')
          this.claim(at, kind, (c) => c.instance_group[0]!.kind, "the execution provider is the server's --provider")
          break
        }
        case 'count': {
          // 0, protobuf's default, leaves the folder's count.
          const count = integer(v, at, 0, 64)
          if (count > 0) this.topLevel.instances = count
          break
        }
        case 'gpus': {
          const gpus = list(v, at).map((g, i) => integer(g, `${at}[${i}]`, 0, 1024))
          this.claim(at, gpus, (c) => c.instance_group[0]!.gpus, "the GPU is the server's --cuda-device-id")
          break
        }
        default:
          if (!inert(v, field, 0)) refuse(at, 'may only hold its default here.')
      }
    }
  }

  private readParameters(value: unknown): void {
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      refuse('parameters', `must be a JSON object (got ${kindOf(value)}).`)
    for (const [key, v] of Object.entries(value)) {
      const at = `parameters[${shown(key)}]`
      const given = typeof v === 'string' ? v : text(fields(v, at).get('string_value') ?? '', `${at}.string_value`)
      // Own keys only: `constructor` or `toString` must not find Object's members.
      const setting = Object.hasOwn(SETTING_PARAMETERS, key) ? SETTING_PARAMETERS[key] : undefined
      if (setting !== undefined) {
        const [section, field, parse] = setting
        this.changes[section]![field] = parse(given, at)
      } else if (DESCRIBING_PARAMETERS.has(key)) {
        this.claim(at, given, (c) => c.parameters[key]?.string_value, 'it describes the model file, as config.json does')
      } else {
        refuse(
          at,
          `is not a parameter of this server's models (${[...Object.keys(SETTING_PARAMETERS), ...DESCRIBING_PARAMETERS].join(', ')}).`
        )
      }
    }
  }
}

/** config.json's object with the changes made: a section's field set to undefined is removed. */
function amended(parsed: Readonly<Record<string, unknown>>, changes: Changes, topLevel: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...(structuredClone(parsed) as Record<string, unknown>), ...topLevel }
  for (const [section, values] of Object.entries(changes)) {
    if (Object.keys(values).length === 0) continue
    const current = out[section]
    const merged: Record<string, unknown> = typeof current === 'object' && current !== null && !Array.isArray(current) ? { ...current } : {}
    for (const [key, v] of Object.entries(values)) {
      if (v === undefined) delete merged[key]
      else merged[key] = v
    }
    out[section] = merged
  }
  return out
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
}

/**
 * The load request's `config` (JSON text, its bytes, or over REST the object itself) as the
 * change it makes to the model's configuration; BAD_REQUEST, naming the field, when it cannot be
 * honoured.
 */
export function configOverride(value: unknown, model: string, settings: Pick<Settings, 'cudaDeviceId' | 'maxBatchItems'>): ModelOverride {
  let config = value
  if (Buffer.isBuffer(value)) config = value.toString('utf8')
  if (typeof config === 'string') {
    // Before parsing: a megabyte of brackets parses into a million nested arrays.
    if (config.length > MAX_CONFIG_BYTES) {
      throw new ServiceError(
        'BAD_REQUEST',
        `The "config" parameter holds ${config.length} characters; a model configuration is at most ${MAX_CONFIG_BYTES}.`
      )
    }
    try {
      config = JSON.parse(config) as unknown
    } catch {
      throw new ServiceError(
        'BAD_REQUEST',
        'The "config" parameter is not valid JSON (a model configuration, as the model\'s config endpoint answers it).'
      )
    }
  }
  const reader = new OverrideReader(model)
  reader.read(config)
  const { changes, topLevel, claims } = reader
  return {
    amend: (parsed) => amended(parsed, changes, topLevel),
    check: (served: ServedModel) => {
      const rendered = renderModelConfig(servedModelConfigSource(served, settings))
      for (const claim of claims) {
        const is = claim.is(rendered)
        if (!same(claim.said, is)) {
          return `the "config" parameter's ${claim.path} is ${shown(claim.said)}, but version ${served.info.version} loads with ${shown(is)} (${claim.because}).`
        }
      }
      return undefined
    }
  }
}
