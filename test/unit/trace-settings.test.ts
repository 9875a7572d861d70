import { mkdir, readFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { pino } from 'pino'
import { afterAll, describe, expect, it } from 'vitest'
import { ServiceError } from '../../src/errors.js'
import { TraceSettings, type TraceConfig } from '../../src/trace/trace-settings.js'
import { traceSettingsFromMessage } from '../../src/trace/trace-setting-request.js'
import { Tracer } from '../../src/trace/tracer.js'
import { removeTempDirs, tempDir } from '../helpers/tiny-model.js'

/**
 * Triton's trace settings: sampling by rate and count, a model's own settings over the global ones
 * (and back), refusals that change nothing, and the trace file as Triton's JSON array, or files of
 * log_frequency traces each, whole when closed.
 */

const START: TraceConfig = { level: 'TIMESTAMPS', rate: 1, count: -1, logFrequency: 0 }
const silent = pino({ level: 'silent' })

afterAll(removeTempDirs)

function sampled(settings: TraceSettings, model: string, requests: number): number[] {
  const picked: number[] = []
  for (let i = 1; i <= requests; i++) if (settings.sample(model)) picked.push(i)
  return picked
}

function refusal(run: () => unknown): string {
  try {
    run()
  } catch (err) {
    expect(err).toBeInstanceOf(ServiceError)
    expect((err as ServiceError).code).toBe('INVALID_TRACE_SETTING')
    return (err as ServiceError).message
  }
  throw new Error('not refused')
}

describe('trace settings', () => {
  it("answers Triton's names, every value a string and the level a list", () => {
    const settings = new TraceSettings({ file: '/var/trace.json', start: { ...START, rate: 1000 } })
    expect(settings.view()).toEqual({
      trace_file: '/var/trace.json',
      trace_level: ['TIMESTAMPS'],
      trace_rate: '1000',
      trace_count: '-1',
      log_frequency: '0',
      trace_mode: 'triton'
    })
  })

  it('samples one request in every rate, and stops when the count is spent (answered as what remains)', () => {
    const settings = new TraceSettings({ file: '', start: { ...START, rate: 3, count: 2 } })
    expect(sampled(settings, 'm', 10)).toEqual([3, 6])
    expect(settings.view().trace_count).toBe('0')
    settings.update({ trace_count: '1', trace_rate: 2 })
    expect(sampled(settings, 'm', 10)).toEqual([2])
  })

  it('OFF samples nothing', () => {
    const settings = new TraceSettings({ file: '', start: { ...START, level: 'OFF' } })
    expect(sampled(settings, 'm', 5)).toEqual([])
  })

  it("a model's own settings override the global ones, the rest follow the global ones; null brings them back, an empty change only reads", () => {
    const settings = new TraceSettings({ file: '', start: { ...START, level: 'OFF', rate: 2 } })
    expect(settings.update({ trace_level: ['TIMESTAMPS'] }, 'a')).toMatchObject({ trace_level: ['TIMESTAMPS'], trace_rate: '2' })
    expect(sampled(settings, 'a', 4)).toEqual([2, 4])
    expect(sampled(settings, 'b', 4)).toEqual([])
    settings.update({ trace_rate: '5' })
    expect(settings.view('a')).toMatchObject({ trace_level: ['TIMESTAMPS'], trace_rate: '5' })
    expect(settings.view()).toMatchObject({ trace_level: ['OFF'] })

    // Its own count is its own; the global count is untouched by its traces.
    settings.update({ trace_count: '1', trace_rate: '1' }, 'a')
    expect(sampled(settings, 'a', 3)).toEqual([1])
    expect(settings.view('a').trace_count).toBe('0')
    expect(settings.view().trace_count).toBe('-1')

    settings.update({ trace_count: null }, 'a')
    expect(settings.view('a').trace_count).toBe('-1')
    // A change that names nothing only reads (tritonclient's gRPC get_trace_settings(model_name) sends it).
    expect(settings.update({}, 'a')).toMatchObject({ trace_level: ['TIMESTAMPS'] })
    settings.update({ trace_level: null, trace_rate: null }, 'a')
    expect(settings.view('a')).toEqual(settings.view())
    expect(sampled(settings, 'a', 3)).toEqual([])
  })

  it('a global null brings back the value the server started with', () => {
    const settings = new TraceSettings({ file: '', start: { ...START, rate: 7 } })
    settings.update({ trace_rate: '2', trace_level: 'OFF' })
    expect(settings.update({ trace_rate: null, trace_level: null })).toMatchObject({ trace_rate: '7', trace_level: ['TIMESTAMPS'] })
  })

  it('refuses what it cannot apply, naming it, and changes nothing', () => {
    const settings = new TraceSettings({ file: '/var/trace.json', start: START })
    const before = settings.view()
    const cases: Array<[Record<string, unknown>, RegExp, string?]> = [
      [{ trace_rate: '2', trace_level: ['TENSORS'] }, /TENSORS is not traced/],
      [{ trace_level: ['OFF', 'TIMESTAMPS'] }, /OFF cannot be given with TIMESTAMPS/],
      [{ trace_level: ['LOUD'] }, /"LOUD" is none of OFF, TIMESTAMPS/],
      [{ trace_level: [] }, /trace_level takes a list/],
      [{ trace_rate: '0' }, /trace_rate must be an integer from 1/],
      [{ trace_rate: '1.5' }, /trace_rate must be an integer/],
      [{ trace_rate: '99999999999' }, /trace_rate must be an integer/],
      [{ trace_rate: '\u00a05' }, /trace_rate must be an integer/],
      [{ trace_rate: '5\n' }, /trace_rate must be an integer/],
      [{ trace_level: ['TIMESTAMP\u017f'] }, /is none of OFF, TIMESTAMPS/],
      [{ trace_count: '-2' }, /trace_count must be an integer from -1/],
      [{ trace_rate: true }, /trace_rate takes one string, got boolean/],
      [{ trace_file: '/etc/cron.d/x' }, /trace_file cannot be changed over the network/],
      [{ trace_mode: 'opentelemetry' }, /trace_mode must be "triton"/],
      [{ trace_rate: '2', log_verbose: 1 }, /unknown setting "log_verbose"; the settings are trace_file/],
      [{ log_frequency: '3' }, /log_frequency belongs to the trace file/, 'a']
    ]
    for (const [change, message, model] of cases) {
      expect(
        refusal(() => settings.update(change, model)),
        JSON.stringify(change)
      ).toMatch(message)
      expect(settings.view()).toEqual(before)
      expect(settings.view('a')).toEqual(before)
    }
    // What was read may be sent back whole.
    expect(settings.update({ ...before })).toEqual(before)
  })

  it("gRPC's lists: no value clears a setting, one value is the setting's string, trace_level keeps its list", () => {
    expect(
      traceSettingsFromMessage({ trace_rate: { value: ['4'] }, trace_count: { value: [] }, trace_level: { value: ['TIMESTAMPS'] } })
    ).toEqual({
      trace_rate: '4',
      trace_count: null,
      trace_level: ['TIMESTAMPS']
    })
    const settings = new TraceSettings({ file: '', start: START })
    expect(refusal(() => settings.update(traceSettingsFromMessage({ trace_rate: { value: ['4', '5'] } })))).toMatch(
      /trace_rate takes one string, got an array/
    )
  })
})

describe('trace files', () => {
  async function traced(tracer: Tracer, n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      const trace = tracer.start('m', '1', `r${i}`)!
      trace.stamp('REQUEST_START', 1 + i)
      trace.ran(2 + i, { startedAt: 3 + i, inputEndAt: 4 + i, outputStartAt: 5 + i, endedAt: 6 + i })
      trace.stamp('REQUEST_END', 7 + i)
      trace.finish()
    }
  }

  it("log_frequency 0: one JSON array of Triton's objects, whole once closed", async () => {
    const file = join(await tempDir('rs-trace-'), 'trace.json')
    const tracer = new Tracer({ file, start: START }, silent)
    await traced(tracer, 2)
    await tracer.close()
    const written = JSON.parse(await readFile(file, 'utf8')) as unknown[]
    expect(written).toEqual([
      { id: 1, model_name: 'm', model_version: 1, request_id: 'r0' },
      {
        id: 1,
        timestamps: [
          { name: 'REQUEST_START', ns: 1e6 },
          { name: 'QUEUE_START', ns: 2e6 },
          { name: 'COMPUTE_START', ns: 3e6 },
          { name: 'COMPUTE_INPUT_END', ns: 4e6 },
          { name: 'COMPUTE_OUTPUT_START', ns: 5e6 },
          { name: 'COMPUTE_END', ns: 6e6 },
          { name: 'REQUEST_END', ns: 7e6 }
        ]
      },
      { id: 2, model_name: 'm', model_version: 1, request_id: 'r1' },
      expect.objectContaining({ id: 2 })
    ])
  })

  it('log_frequency N: files <file>.0, <file>.1, … of N traces each, the full ones whole before the server stops', async () => {
    const dir = await tempDir('rs-trace-')
    const file = join(dir, 'trace.json')
    const tracer = new Tracer({ file, start: { ...START, logFrequency: 2 } }, silent)
    await traced(tracer, 5)
    await new Promise((resolve) => setTimeout(resolve, 50))
    const heads = async (name: string): Promise<unknown[]> =>
      (JSON.parse(await readFile(join(dir, name), 'utf8')) as Array<{ request_id?: string }>).flatMap((o) => o.request_id ?? [])
    expect(await heads('trace.json.0')).toEqual(['r0', 'r1'])
    expect(await heads('trace.json.1')).toEqual(['r2', 'r3'])
    await tracer.close()
    expect(await heads('trace.json.2')).toEqual(['r4'])
    expect((await readdir(dir)).sort()).toEqual(['trace.json.0', 'trace.json.1', 'trace.json.2'])
  })

  it('a change of log_frequency closes the file being written; no file is opened twice (back at 0, the bare file was truncated)', async () => {
    const dir = await tempDir('rs-trace-')
    const file = join(dir, 'trace.json')
    const tracer = new Tracer({ file, start: START }, silent)
    await traced(tracer, 2)
    tracer.settings.update({ log_frequency: '1' })
    await traced(tracer, 1)
    tracer.settings.update({ log_frequency: '0' })
    await traced(tracer, 1)
    await tracer.close()
    expect((await readdir(dir)).sort()).toEqual(['trace.json', 'trace.json.0', 'trace.json.1'])
    const objects = async (path: string): Promise<number> => (JSON.parse(await readFile(path, 'utf8')) as unknown[]).length
    expect([await objects(file), await objects(`${file}.0`), await objects(`${file}.1`)]).toEqual([4, 2, 2])
  })

  it('a file that cannot be written drops traces with one error line, and a new file is tried a second later', async () => {
    const dir = join(await tempDir('rs-trace-'), 'gone')
    const file = join(dir, 'trace.json')
    const lines: Array<{ msg: string }> = []
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[number]) })
    const tracer = new Tracer({ file, start: START }, log)
    await traced(tracer, 1)
    await new Promise((resolve) => setTimeout(resolve, 50))
    await traced(tracer, 2)
    expect(lines.map((l) => l.msg)).toEqual(['trace file cannot be written: traces are dropped until a new one can'])
    await mkdir(dir)
    await new Promise((resolve) => setTimeout(resolve, 1_100))
    await traced(tracer, 1)
    await tracer.close()
    expect(await readdir(dir)).toEqual(['trace.json.0'])
    expect(JSON.parse(await readFile(`${file}.0`, 'utf8'))).toHaveLength(2)
    expect(lines.map((l) => l.msg).at(-1)).toBe('trace file writable again')
  })

  it('without a trace file each trace is a log line', async () => {
    const lines: Array<{ msg: string; trace: unknown[] }> = []
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[number]) })
    const tracer = new Tracer({ file: undefined, start: START }, log)
    await traced(tracer, 1)
    expect(lines).toEqual([
      expect.objectContaining({ msg: 'trace', trace: [expect.objectContaining({ id: 1 }), expect.objectContaining({ id: 1 })] })
    ])
  })
})
