import { ServiceError } from '../errors.js'

/**
 * The settings of Triton's trace extension (GET and POST /v2/trace/setting and
 * /v2/models/{model}/trace/setting, gRPC TraceSetting; tritonclient's get_trace_settings /
 * update_trace_settings): which inference requests are traced, read and changed while the server
 * runs. They start from --trace-level, --trace-rate, --trace-count and --trace-log-frequency.
 *
 * As in Triton, a model may have settings of its own: those it names override the global ones, the
 * others follow the global ones as they change, and a null (REST) or an empty value (gRPC) makes a
 * setting follow the global one again. A model with its own rate samples its own requests; one with
 * its own count counts its own traces. Every value travels as a string (trace_level as a list of
 * strings), as Triton answers them; REST requests may also give the numbers as JSON integers.
 *
 * What this server does not do, refused with the reason: TENSORS (a traced image would be 150,528
 * values), changing trace_file (Triton stopped that too: a client must not choose where the server
 * writes) and any trace_mode but `triton`.
 */

export type TraceLevel = 'OFF' | 'TIMESTAMPS'

export interface TraceConfig {
  readonly level: TraceLevel
  /** One request traced in every `rate`. */
  readonly rate: number
  /** Traces still to be taken; -1: no limit. */
  readonly count: number
  /** Traces per trace file (then the next file); 0: one file, written until the server stops. */
  readonly logFrequency: number
}

/** Triton's names and types, as GET /v2/trace/setting answers them. */
export interface TraceSettingsView {
  readonly trace_file: string
  readonly trace_level: string[]
  readonly trace_rate: string
  readonly trace_count: string
  readonly log_frequency: string
  readonly trace_mode: string
}

const SETTING_NAMES = ['trace_file', 'trace_level', 'trace_rate', 'trace_count', 'log_frequency', 'trace_mode'] as const
type SettingName = (typeof SETTING_NAMES)[number]

/** gRPC and Triton carry rates and counts as 32-bit integers. */
const MAX_SETTING = 2 ** 31 - 1

function refuse(detail: string): ServiceError {
  return new ServiceError('INVALID_TRACE_SETTING', detail)
}

function describe(value: unknown): string {
  if (typeof value === 'string') return `"${value.slice(0, 64)}"`
  if (typeof value === 'number') return String(value)
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value
}

/** A setting's one value: a string, or (REST) a JSON number; gRPC's list of one string is unwrapped before. */
function oneValue(name: string, value: unknown): string {
  if (typeof value === 'string') return value
  if (typeof value === 'number' && Number.isFinite(value)) return String(value)
  if (Array.isArray(value) && value.length === 1 && typeof value[0] === 'string') return value[0]
  throw refuse(`(${name} takes one string, got ${describe(value)})`)
}

function integerSetting(name: string, value: unknown, min: number): number {
  const text = oneValue(name, value)
  const n = /^-?[0-9]{1,10}$/.test(text) ? Number(text) : NaN
  if (!Number.isSafeInteger(n) || n < min || n > MAX_SETTING) {
    throw refuse(`(${name} must be an integer from ${min} to ${MAX_SETTING}, got ${describe(value)})`)
  }
  return n
}

function levelSetting(value: unknown): TraceLevel {
  const levels = typeof value === 'string' ? [value] : value
  if (!Array.isArray(levels) || levels.length === 0 || levels.some((l) => typeof l !== 'string')) {
    throw refuse(`(trace_level takes a list of levels, ["TIMESTAMPS"] or ["OFF"], got ${describe(value)})`)
  }
  // Any ASCII case (Triton's own spelling is upper case); not Unicode's folding, where "ſ" is an S.
  const named = new Set((levels as string[]).map((l) => (/^[A-Za-z]+$/.test(l) ? l.toUpperCase() : l)))
  if (named.has('TENSORS')) {
    throw refuse('(TENSORS is not traced by this server: a traced image would be 150,528 values; use ["TIMESTAMPS"])')
  }
  const unknown = [...named].find((l) => l !== 'OFF' && l !== 'TIMESTAMPS')
  if (unknown !== undefined) throw refuse(`(trace_level "${unknown.slice(0, 64)}" is none of OFF, TIMESTAMPS)`)
  if (named.size > 1) throw refuse('(trace_level OFF cannot be given with TIMESTAMPS)')
  return named.has('TIMESTAMPS') ? 'TIMESTAMPS' : 'OFF'
}

/**
 * The settings of one scope, the global one (every field set) or a model's own (the fields it
 * overrides), and where its sampling stands: `seen` counts where its rate is set, `remaining`
 * (traces still to be taken, -1: no limit) is its count.
 */
interface Scope {
  level?: TraceLevel
  rate?: number
  remaining?: number
  /** Requests seen since the last traced one, or since the rate changed. */
  seen: number
}

type Parsed = ReadonlyMap<SettingName, number | TraceLevel | null>

/** The settings a model may set for itself, and where its scope keeps each. */
const MODEL_FIELDS: Readonly<Partial<Record<SettingName, 'level' | 'rate' | 'remaining'>>> = {
  trace_level: 'level',
  trace_rate: 'rate',
  trace_count: 'remaining'
}

export interface TraceSettingsOptions {
  /** Where traces are written (--trace-file); '' when they go to the log. */
  readonly file: string
  readonly start: TraceConfig
}

export class TraceSettings {
  private readonly global: Required<Scope>
  private logFrequency: number
  private readonly models = new Map<string, Scope>()
  /** Called after a change of the global log_frequency (the writer starts its next file with it). */
  onLogFrequency: ((logFrequency: number) => void) | undefined = undefined

  constructor(private readonly options: TraceSettingsOptions) {
    const { level, rate, count, logFrequency } = options.start
    this.global = { level, rate, remaining: count, seen: 0 }
    this.logFrequency = logFrequency
  }

  /** What a model's requests follow for each setting: its own where it sets one, else the global one. */
  private scopes(model: string | undefined): { level: TraceLevel; rate: number; rating: Scope; counting: Scope } {
    const own = model === undefined ? undefined : this.models.get(model)
    const rating = own?.rate !== undefined ? own : this.global
    return {
      level: own?.level ?? this.global.level,
      rate: rating.rate ?? this.global.rate,
      rating,
      counting: own?.remaining !== undefined ? own : this.global
    }
  }

  /** The settings a model's requests follow (the global ones when `model` is undefined). */
  view(model?: string): TraceSettingsView {
    const { level, rate, counting } = this.scopes(model)
    return {
      trace_file: this.options.file,
      trace_level: [level],
      trace_rate: String(rate),
      trace_count: String(counting.remaining),
      log_frequency: String(this.logFrequency),
      trace_mode: 'triton'
    }
  }

  /**
   * Whether this request of `model` is traced: its level is TIMESTAMPS, it is the rate-th request
   * since the last traced one, and the count is not spent (which it then decrements).
   */
  sample(model: string): boolean {
    const { level, rate, rating, counting } = this.scopes(model)
    if (level === 'OFF' || counting.remaining === 0) return false
    if (++rating.seen < rate) return false
    rating.seen = 0
    if (counting.remaining! > 0) counting.remaining!--
    return true
  }

  /**
   * Applies the settings a request names, globally or for `model`, and answers the settings that
   * then apply. Every value is checked before any is applied: a refused request changes nothing
   * (INVALID_TRACE_SETTING naming the setting). A request that names no setting only reads them:
   * tritonclient's gRPC get_trace_settings(model_name) is exactly that request (Triton's gRPC
   * server reads too); a model's own settings are removed by setting each to null.
   */
  update(changes: Readonly<Record<string, unknown>>, model?: string): TraceSettingsView {
    const names = Object.keys(changes)
    for (const name of names) {
      if (!(SETTING_NAMES as readonly string[]).includes(name)) {
        throw refuse(`(unknown setting "${name.slice(0, 64)}"; the settings are ${SETTING_NAMES.join(', ')})`)
      }
    }
    const parsed = new Map<SettingName, number | TraceLevel | null>()
    for (const name of names as SettingName[]) {
      const value = changes[name]
      if (value === null || value === undefined) {
        parsed.set(name, null)
        continue
      }
      switch (name) {
        case 'trace_file':
          if (oneValue(name, value) !== this.options.file) {
            throw refuse(
              `(trace_file cannot be changed over the network: the server writes traces where --trace-file says, ${this.options.file === '' ? 'to its log now' : `"${this.options.file}"`})`
            )
          }
          break
        case 'trace_mode':
          if (oneValue(name, value) !== 'triton') throw refuse(`(trace_mode must be "triton", got ${describe(value)})`)
          break
        case 'trace_level':
          parsed.set(name, levelSetting(value))
          break
        case 'trace_rate':
          parsed.set(name, integerSetting(name, value, 1))
          break
        case 'trace_count':
          parsed.set(name, integerSetting(name, value, -1))
          break
        case 'log_frequency':
          if (model !== undefined) {
            throw refuse('(log_frequency belongs to the trace file, which every model shares: set it globally, POST /v2/trace/setting)')
          }
          parsed.set(name, integerSetting(name, value, 0))
          break
      }
    }
    if (model === undefined) this.applyGlobal(parsed)
    else this.applyModel(model, parsed)
    return this.view(model)
  }

  private applyGlobal(parsed: Parsed): void {
    const start = this.options.start
    const value = <T>(name: SettingName, initial: T): T => (parsed.get(name) ?? initial) as T
    if (parsed.has('trace_level')) this.global.level = value('trace_level', start.level)
    if (parsed.has('trace_count')) this.global.remaining = value('trace_count', start.count)
    if (parsed.has('trace_rate') && value('trace_rate', start.rate) !== this.global.rate) {
      this.global.rate = value('trace_rate', start.rate)
      this.global.seen = 0
    }
    if (parsed.has('log_frequency') && value('log_frequency', start.logFrequency) !== this.logFrequency) {
      this.logFrequency = value('log_frequency', start.logFrequency)
      this.onLogFrequency?.(this.logFrequency)
    }
  }

  /** A model's own settings: null removes one (the global one applies again); none left, none kept. */
  private applyModel(model: string, parsed: Parsed): void {
    const own: Scope = this.models.get(model) ?? { seen: 0 }
    for (const [name, value] of parsed) {
      const field = MODEL_FIELDS[name]
      if (field === undefined) continue
      if (field === 'rate' && value !== own.rate) own.seen = 0
      if (value === null) delete own[field]
      else (own as Record<typeof field, unknown>)[field] = value
    }
    if (own.level === undefined && own.rate === undefined && own.remaining === undefined) this.models.delete(model)
    else this.models.set(model, own)
  }
}
