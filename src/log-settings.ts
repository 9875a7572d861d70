import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino'
import type { LogLevel } from './config.js'
import { ServiceError } from './errors.js'

/**
 * The log settings of Triton's logging extension, read and changed while the server runs (GET and
 * POST /v2/logging, gRPC LogSettings; tritonclient's get_log_settings / update_log_settings). They
 * start from --log-level and act on the one pino logger every part of the server writes through:
 * pino's own level stays at `trace` and its `logMethod` hook drops what the settings turn off, so
 * child loggers made before a change (the gRPC door's, a request's) follow it too, where a pino
 * level copied at their creation would not.
 *
 * Triton's categories on pino's levels: error and warning lines are pino's `error` and `warn`,
 * info lines `info`; verbose level 1 adds `debug` (a line for each HTTP request and gRPC call),
 * 2 and above `trace` (a line for each model execution). `fatal` lines (the server cannot start,
 * or must stop) are written unless --log-level is silent. The log goes to stdout as JSON lines;
 * `log_format` "ISO8601" writes their `time` as an ISO 8601 string instead of epoch milliseconds.
 */

export type LogFormat = 'default' | 'ISO8601'

/** Triton's names and types, as GET /v2/logging answers them. */
export interface LogSettingsView {
  readonly log_file: string
  readonly log_info: boolean
  readonly log_warning: boolean
  readonly log_error: boolean
  readonly log_verbose_level: number
  readonly log_format: LogFormat
}

type SettingName = keyof LogSettingsView

const SETTING_TYPES: Readonly<Record<SettingName, 'string' | 'boolean' | 'count'>> = {
  log_file: 'string',
  log_info: 'boolean',
  log_warning: 'boolean',
  log_error: 'boolean',
  log_verbose_level: 'count',
  log_format: 'string'
}

const FORMATS: readonly LogFormat[] = ['default', 'ISO8601']

/** The largest verbose level a request may set: gRPC carries it as a uint32. */
const MAX_VERBOSE_LEVEL = 2 ** 32 - 1

/** pino's numeric levels. */
const DEBUG = 20
const INFO = 30
const WARN = 40
const ERROR = 50
const FATAL = 60

function refuse(detail: string): ServiceError {
  return new ServiceError('INVALID_LOG_SETTING', detail)
}

function describe(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value
}

export class LogSettings {
  private info: boolean
  private warning: boolean
  private error: boolean
  private verbose: number
  private format: LogFormat = 'default'
  private readonly fatal: boolean

  constructor(level: LogLevel) {
    // What --log-level lets through: every pino level from it up.
    const lowest = level === 'silent' ? Infinity : pino.levels.values[level]!
    this.verbose = lowest < DEBUG ? 2 : lowest < INFO ? 1 : 0
    this.info = lowest <= INFO
    this.warning = lowest <= WARN
    this.error = lowest <= ERROR
    this.fatal = lowest <= FATAL
  }

  get view(): LogSettingsView {
    return {
      log_file: '',
      log_info: this.info,
      log_warning: this.warning,
      log_error: this.error,
      log_verbose_level: this.verbose,
      log_format: this.format
    }
  }

  /** log_verbose_level now: a door skips building verbose lines at 0. */
  get verboseLevel(): number {
    return this.verbose
  }

  /** Whether a line at pino's numeric `level` is written now. */
  writes(level: number): boolean {
    if (level < DEBUG) return this.verbose >= 2
    if (level < INFO) return this.verbose >= 1
    if (level < WARN) return this.info
    if (level < ERROR) return this.warning
    if (level === ERROR) return this.error
    return this.fatal
  }

  /**
   * Applies the settings a request names and answers all of them. Every value is checked before
   * any is applied, so a refused request changes nothing (INVALID_LOG_SETTING naming the setting).
   * A null value leaves its setting as it is, as in Triton; so does a log_file equal to the current
   * one (a client may send back what it read). Unknown names are refused with the known ones.
   */
  update(changes: Readonly<Record<string, unknown>>): LogSettingsView {
    const current = this.view
    const next: { -readonly [K in SettingName]: LogSettingsView[K] } = { ...current }
    for (const [name, value] of Object.entries(changes)) {
      if (!Object.hasOwn(SETTING_TYPES, name)) {
        throw refuse(`(unknown setting "${name.slice(0, 64)}"; the settings are ${Object.keys(SETTING_TYPES).join(', ')})`)
      }
      if (value === null || value === undefined) continue
      const setting = name as SettingName
      const type = SETTING_TYPES[setting]
      if (type === 'count') {
        if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_VERBOSE_LEVEL) {
          throw refuse(`(log_verbose_level must be an integer ≥ 0, got ${typeof value === 'number' ? value : describe(value)})`)
        }
      } else if (typeof value !== type) {
        throw refuse(`(${setting} must be a ${type}, got ${describe(value)})`)
      }
      ;(next as Record<SettingName, unknown>)[setting] = value
    }
    if (next.log_file !== current.log_file) {
      throw refuse(
        '(log_file cannot be changed over the network: the server writes its log to stdout, where the container runtime collects it)'
      )
    }
    if (!FORMATS.includes(next.log_format)) {
      throw refuse(`(log_format must be one of ${FORMATS.join(', ')}, got "${String(next.log_format).slice(0, 64)}")`)
    }
    this.info = next.log_info
    this.warning = next.log_warning
    this.error = next.log_error
    this.verbose = next.log_verbose_level
    this.format = next.log_format
    return this.view
  }

  /**
   * pino's options for the logger these settings govern: every level reaches the hook, which drops
   * what is turned off before pino formats it; the time is written in the current format.
   */
  loggerOptions(): Pick<LoggerOptions, 'level' | 'hooks' | 'timestamp'> {
    const writes = (level: number): boolean => this.writes(level)
    return {
      level: 'trace',
      hooks: {
        logMethod(args, method, level) {
          if (writes(level)) method.apply(this, args)
        }
      },
      timestamp: () => (this.format === 'ISO8601' ? `,"time":"${new Date().toISOString()}"` : `,"time":${Date.now()}`)
    }
  }
}

/** The settings that govern each logger createLogger made. */
const governed = new WeakMap<Logger, LogSettings>()

/**
 * The server's logger: JSON lines to `destination` (stdout when absent), governed by log settings
 * that start from `level` and are read and changed through logSettingsOf.
 */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  const settings = new LogSettings(level)
  const logger = pino({ ...settings.loggerOptions(), base: { service: 'resnet-serve' } }, destination)
  governed.set(logger, settings)
  return logger
}

/** The settings governing a logger createLogger made; undefined for any other logger (its doors then answer the logging extension 501). */
export function logSettingsOf(logger: Logger): LogSettings | undefined {
  return governed.get(logger)
}
