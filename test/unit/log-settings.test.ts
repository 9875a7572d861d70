import { describe, expect, it } from 'vitest'
import type { LogLevel } from '../../src/config.js'
import { ServiceError } from '../../src/errors.js'
import { createLogger, LogSettings, logSettingsOf } from '../../src/log-settings.js'

/** A real logger of the server's kind whose JSON lines land in `lines`. */
function capturedLogger(level: LogLevel): { log: ReturnType<typeof createLogger>; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const log = createLogger(level, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) })
  return { log, lines }
}

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const

/** Which of pino's levels a logger started at `level` writes, by writing one line at each. */
function written(level: LogLevel): string[] {
  const { log, lines } = capturedLogger(level)
  for (const at of LEVELS) log[at](at)
  return lines.map((line) => line.msg as string)
}

describe('log settings', () => {
  it('start from --log-level: each level writes what pino would, and reads as Triton names it', () => {
    expect(written('trace')).toEqual([...LEVELS])
    expect(written('debug')).toEqual(['debug', 'info', 'warn', 'error', 'fatal'])
    expect(written('info')).toEqual(['info', 'warn', 'error', 'fatal'])
    expect(written('warn')).toEqual(['warn', 'error', 'fatal'])
    expect(written('error')).toEqual(['error', 'fatal'])
    expect(written('fatal')).toEqual(['fatal'])
    expect(written('silent')).toEqual([])
    expect(new LogSettings('info').view).toEqual({
      log_file: '',
      log_info: true,
      log_warning: true,
      log_error: true,
      log_verbose_level: 0,
      log_format: 'default'
    })
    expect(new LogSettings('trace').view.log_verbose_level).toBe(2)
    expect(new LogSettings('warn').view).toMatchObject({ log_info: false, log_warning: true, log_error: true, log_verbose_level: 0 })
  })

  it('a change reaches child loggers made before it (a door takes its child at start)', () => {
    const { log, lines } = capturedLogger('info')
    const door = log.child({ door: 'grpc' })
    door.debug('hidden')
    logSettingsOf(log)!.update({ log_verbose_level: 1, log_warning: false })
    door.debug('shown')
    door.warn('dropped')
    door.error('kept')
    logSettingsOf(log)!.update({ log_verbose_level: 0, log_warning: true })
    door.debug('hidden again')
    door.warn('warned')
    expect(lines.map((l) => [l.msg, l.door])).toEqual([
      ['shown', 'grpc'],
      ['kept', 'grpc'],
      ['warned', 'grpc']
    ])
  })

  it('the categories are independent, as Triton has them: info without warnings writes info and errors', () => {
    const { log, lines } = capturedLogger('info')
    logSettingsOf(log)!.update({ log_warning: false })
    for (const at of LEVELS) log[at](at)
    expect(lines.map((l) => l.msg)).toEqual(['info', 'error', 'fatal'])
  })

  it('log_format ISO8601 writes the time as an ISO 8601 string, default as epoch milliseconds', () => {
    const { log, lines } = capturedLogger('info')
    log.info('epoch')
    logSettingsOf(log)!.update({ log_format: 'ISO8601' })
    log.info('iso')
    expect(typeof lines[0]!.time).toBe('number')
    expect(lines[1]!.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    expect(Math.abs(Date.parse(lines[1]!.time as string) - Date.now())).toBeLessThan(60_000)
  })

  it('an update is checked whole before any of it applies, and names what it refuses', () => {
    const settings = new LogSettings('info')
    const before = settings.view
    const refusals: Array<[Record<string, unknown>, RegExp]> = [
      [{ log_verbose_level: 1, log_info: 'false' }, /log_info must be a boolean, got string/],
      [{ log_info: false, log_verbose_level: -1 }, /log_verbose_level must be an integer ≥ 0, got -1/],
      [{ log_verbose_level: 1.5 }, /got 1\.5/],
      [{ log_verbose_level: '1' }, /got string/],
      [{ log_verbose_level: 2 ** 32 }, /got 4294967296/],
      [{ log_format: 'json' }, /log_format must be one of default, ISO8601, got "json"/],
      [{ log_file: '/tmp/resnet-serve.log' }, /log_file cannot be changed over the network/],
      [{ log_errors: false }, /unknown setting "log_errors"; the settings are log_file, log_info, log_warning, log_error/],
      [{ log_warning: [true] }, /log_warning must be a boolean, got an array/]
    ]
    for (const [changes, message] of refusals) {
      let refusal: unknown
      try {
        settings.update(changes)
      } catch (err) {
        refusal = err
      }
      expect(refusal, JSON.stringify(changes)).toBeInstanceOf(ServiceError)
      expect((refusal as ServiceError).code).toBe('INVALID_LOG_SETTING')
      expect((refusal as ServiceError).message).toMatch(message)
      expect(settings.view).toEqual(before)
    }
  })

  it('null leaves a setting as it is, and what was read may be sent back unchanged (log_file included)', () => {
    const settings = new LogSettings('info')
    expect(settings.update({ log_info: null, log_verbose_level: 3 })).toMatchObject({ log_info: true, log_verbose_level: 3 })
    const read = settings.view
    expect(settings.update({ ...read, log_error: false })).toEqual({ ...read, log_error: false })
  })
})
