import { describe, expect, it } from 'vitest'
import { ConfigError, loadSettings } from '../../src/config.js'
import { selectVersions } from '../../src/repository/model-versions.js'

/** Which version folders a version policy serves, and the model control settings. */

describe('selectVersions (Triton version policies)', () => {
  const available = [3, 1, 10, 2]

  it('serves the newest version when config.json names no policy, as Triton', () => {
    expect(selectVersions(available, undefined)).toEqual({ selected: [10], missing: [] })
  })

  it('latest N: the N highest numbers, newest first (numeric order, not text: 10 after 3)', () => {
    expect(selectVersions(available, { latest: { numVersions: 2 } })).toEqual({ selected: [10, 3], missing: [] })
    expect(selectVersions(available, { latest: { numVersions: 9 } }).selected).toEqual([10, 3, 2, 1])
  })

  it('all: every folder', () => {
    expect(selectVersions(available, { all: {} }).selected).toEqual([10, 3, 2, 1])
  })

  it('specific: the listed ones that exist, and the listed ones that do not', () => {
    expect(selectVersions(available, { specific: { versions: [2, 7, 10, 5] } })).toEqual({ selected: [10, 2], missing: [5, 7] })
  })

  it('no folders: nothing to serve', () => {
    expect(selectVersions([], { all: {} }).selected).toEqual([])
  })
})

describe('model control settings', () => {
  const load = (argv: string[], env: NodeJS.ProcessEnv = {}) => loadSettings(argv, env, 4)

  it('defaults: mode none, no --load-model, a 15 s poll', () => {
    const settings = load([])
    expect([settings.modelControlMode, settings.loadModels, settings.repositoryPollSecs]).toEqual(['none', [], 15])
  })

  it('--load-model repeats and takes comma lists; LOAD_MODEL is one comma list', () => {
    expect(load(['--model-control-mode', 'explicit', '--load-model', 'a', '--load-model', 'b, c', '--load-model', 'a']).loadModels).toEqual(
      ['a', 'b', 'c']
    )
    expect(load([], { MODEL_CONTROL_MODE: 'explicit', LOAD_MODEL: 'x,y' }).loadModels).toEqual(['x', 'y'])
  })

  it('refuses --load-model outside explicit mode, and empty names, with the fix', () => {
    expect(() => load(['--load-model', 'a'])).toThrow(ConfigError)
    expect(() => load(['--load-model', 'a'])).toThrow(/only applies with --model-control-mode explicit/)
    expect(() => load(['--model-control-mode', 'explicit', '--load-model', 'a,,b'])).toThrow(/give names, comma-separated/)
    expect(() => load(['--model-control-mode', 'sometimes'])).toThrow(/use one of: none, explicit, poll/)
    expect(() => load(['--repository-poll-secs', '0'])).toThrow(/--repository-poll-secs/)
  })
})
