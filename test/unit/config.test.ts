import { tmpdir } from 'node:os'
import { resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ConfigError, SETTINGS, describeSettings, loadSettings } from '../../src/config.js'
import { sessionsOf } from '../../src/core/classify-service.js'

/** Settings: flag, else environment variable, else default; validated once, with the fix in the message; frozen. */

describe('where a setting comes from', () => {
  it('a flag wins over the environment, which wins over the default', () => {
    expect(loadSettings(['--port', '1234'], { PORT: '5678' }).port).toBe(1234)
    expect(loadSettings([], { PORT: '5678' }).port).toBe(5678)
    expect(loadSettings([], {}).port).toBe(8080)
  })

  it('an empty environment variable counts as unset', () => {
    expect(loadSettings([], { PORT: '' }).port).toBe(8080)
    expect(loadSettings([], { API_KEY: '' }).apiKey).toBeUndefined()
  })

  it('every setting has a default or is derived, so no flag and no environment is a valid start', () => {
    const settings = loadSettings([], {}, 4)
    for (const s of SETTINGS) {
      if (['defaultModel', 'apiKey', 'corsOrigins', 'traceFile'].includes(s.key)) expect(settings[s.key], s.key).toBeUndefined()
      else expect(settings[s.key], s.key).toBeDefined()
    }
  })

  it('the trace file is made absolute, in a folder that exists (found at the first trace, it was an error line long after the start)', () => {
    expect(loadSettings(['--trace-file', 'trace.json', '--trace-level', 'timestamps'], {})).toMatchObject({
      traceFile: resolve('trace.json'),
      traceLevel: 'TIMESTAMPS'
    })
    expect(() => loadSettings(['--trace-file', '/no/such/folder/trace.json'], {})).toThrow(/its folder \/no\/such\/folder does not exist/)
    expect(() => loadSettings([], { TRACE_FILE: tmpdir() })).toThrow(/--trace-file .* is not a plain file/)
    expect(() => loadSettings(['--trace-file', '/dev/null'], {})).toThrow(/is not a plain file \(a folder, FIFO or device\)/)
  })

  it('booleans: a bare flag is true; the environment takes true/false, 1/0, yes/no, on/off', () => {
    expect(loadSettings(['--allow-partial-start'], {}).allowPartialStart).toBe(true)
    for (const [raw, value] of [
      ['1', true],
      ['yes', true],
      ['ON', true],
      ['0', false],
      ['no', false],
      ['off', false]
    ] as const) {
      expect(loadSettings([], { ALLOW_PARTIAL_START: raw }).allowPartialStart, raw).toBe(value)
    }
  })

  it('booleans: --flag=false, --flag false and --no-flag turn a setting off, over its variable; the last form given wins (the empty-repository hint said --build-default-model true, which was refused)', () => {
    for (const argv of [
      ['--build-default-model=false'],
      ['--build-default-model', 'false'],
      ['--no-build-default-model'],
      ['--build-default-model', 'off']
    ]) {
      expect(loadSettings(argv, { BUILD_DEFAULT_MODEL: 'true' }).buildDefaultModel, argv.join(' ')).toBe(false)
    }
    expect(loadSettings(['--build-default-model', 'true'], { BUILD_DEFAULT_MODEL: 'false' }).buildDefaultModel).toBe(true)
    expect(loadSettings(['--no-allow-partial-start', '--allow-partial-start'], {}).allowPartialStart).toBe(true)
    expect(loadSettings(['--allow-partial-start', '--no-allow-partial-start'], {}).allowPartialStart).toBe(false)
    // The word after a boolean flag is its value only when it is a boolean word; other flags follow as usual.
    expect(loadSettings(['--allow-partial-start', '--port', '9'], {})).toMatchObject({ allowPartialStart: true, port: 9 })
    expect(() => loadSettings(['--build-default-model=maybe'], {})).toThrow(/Got "maybe"; use true or false/)
    expect(() => loadSettings(['--no-port'], {})).toThrow(ConfigError)
  })

  it('--auth-health and --auth-metrics need an API key to put routes behind (alone they were accepted and did nothing)', () => {
    expect(() => loadSettings(['--auth-health'], {})).toThrow(/--auth-health puts routes behind the API key, but no key is set/)
    expect(() => loadSettings([], { AUTH_METRICS: 'true' })).toThrow(/--auth-metrics .*add --api-key \(API_KEY\)/)
    expect(loadSettings(['--auth-health', '--auth-metrics'], { API_KEY: 'k' })).toMatchObject({ authHealth: true, authMetrics: true })
  })

  it('the model repository is made absolute', () => {
    expect(loadSettings(['--model-repository', 'some/where'], {}).modelRepository).toBe(resolve('some/where'))
  })

  it('CORS origins: a comma-separated list, trimmed; unset means none', () => {
    expect(loadSettings(['--cors-origins', 'https://a.example, https://b.example:8443'], {}).corsOrigins).toEqual([
      'https://a.example',
      'https://b.example:8443'
    ])
    expect(loadSettings(['--cors-origins', '*'], {}).corsOrigins).toEqual(['*'])
    expect(loadSettings([], {}).corsOrigins).toBeUndefined()
  })
})

describe('derived defaults', () => {
  it('sessions per model: 2 with --provider cuda, else 1; threads: the cores shared among them', () => {
    expect(loadSettings(['--provider', 'cuda'], {}, 16)).toMatchObject({ sessionsPerModel: 2, threadsPerSession: 8 })
    expect(loadSettings(['--provider', 'cpu'], {}, 16)).toMatchObject({ sessionsPerModel: 1, threadsPerSession: 16 })
    expect(loadSettings(['--provider', 'auto'], {}, 16)).toMatchObject({ sessionsPerModel: 1, threadsPerSession: 16 })
    expect(loadSettings(['--sessions-per-model', '3'], {}, 2).threadsPerSession).toBe(1)
  })

  it("a model's own instances (config.json) share the cores among themselves, unless --threads-per-session is given", () => {
    const cpu = loadSettings([], {}, 8)
    expect(sessionsOf({}, cpu)).toEqual({ sessions: 1, threads: 8 })
    expect(sessionsOf({ instances: 2 }, cpu)).toEqual({ sessions: 2, threads: 4 })
    expect(sessionsOf({ instances: 16 }, cpu)).toEqual({ sessions: 16, threads: 1 })
    const cuda = loadSettings(['--provider', 'cuda'], {}, 16)
    expect(sessionsOf({}, cuda)).toEqual({ sessions: 2, threads: 8 })
    expect(sessionsOf({ instances: 4 }, cuda)).toEqual({ sessions: 4, threads: 4 })
    const given = loadSettings(['--threads-per-session', '3'], {}, 8)
    expect(sessionsOf({ instances: 2 }, given)).toEqual({ sessions: 2, threads: 3 })
    expect(sessionsOf({}, given)).toEqual({ sessions: 1, threads: 3 })
  })

  it('decode concurrency: the cores, at least 2, at most the libuv pool minus one', () => {
    expect(loadSettings([], {}, 16).decodeConcurrency).toBe(3)
    expect(loadSettings([], { UV_THREADPOOL_SIZE: '16' }, 8).decodeConcurrency).toBe(8)
    expect(loadSettings([], { UV_THREADPOOL_SIZE: '16' }, 1).decodeConcurrency).toBe(2)
  })

  it('a value given wins over the derived one', () => {
    expect(loadSettings(['--threads-per-session', '5', '--decode-concurrency', '7'], {}, 16)).toMatchObject({
      threadsPerSession: 5,
      decodeConcurrency: 7
    })
  })
})

describe('refusals name the flag, the variable and the fix', () => {
  it.each([
    [['--port', '70000'], {}, /--port=70000 \(flag --port, env PORT\).*use an integer from 0 to 65535/],
    [[], { PORT: 'eighty' }, /PORT=eighty \(flag --port, env PORT\).*Got "eighty"/],
    [['--provider', 'tpu'], {}, /use one of: auto, cuda, cpu/],
    [[], { ALLOW_PARTIAL_START: 'maybe' }, /Got "maybe"; use true or false/],
    [['--cors-origins', 'https://a.example/path'], {}, /scheme, host and port only, no path/],
    [['--host', ''], {}, /must be a non-empty string/],
    [['--no-such-flag'], {}, /Unknown option '--no-such-flag'.*Known flags: --host, --port/]
  ])('%j %j', (argv, env, message) => {
    expect(() => loadSettings(argv, env)).toThrow(ConfigError)
    expect(() => loadSettings(argv, env)).toThrow(message)
  })

  it('regression: npm start --allow-partial-start (no "--") started without the flag; npm start --port 9090 said only "Unexpected argument \'9090\'"', () => {
    // What npm 11 hands the script for `npm start --allow-partial-start --no-build-default-model --port 9090 --model-repository=/m`:
    // the flags it kept as its own configs, and the stray value.
    const npmEnv = {
      npm_lifecycle_event: 'start',
      npm_config_allow_partial_start: 'true',
      npm_config_build_default_model: '',
      npm_config_port: 'true',
      npm_config_model_repository: '/m'
    }
    expect(() => loadSettings([], npmEnv)).toThrow(ConfigError)
    expect(() => loadSettings(['9090'], npmEnv)).toThrow(
      'npm took --port, --model-repository, --build-default-model, --allow-partial-start as its own options'
    )
    expect(() => loadSettings(['9090'], npmEnv)).toThrow(
      /Run: npm start -- --port 9090 --model-repository \/m --no-build-default-model --allow-partial-start$/
    )
    // The flags that did reach the server (after "--") are in the command, and the stray value
    // goes to the one flag that wants one (regression: the command dropped them).
    expect(() =>
      loadSettings(['9090', '--log-level', 'debug', '--api-key=s'], { npm_lifecycle_event: 'start', npm_config_port: 'true' })
    ).toThrow(/Run: npm start -- --port 9090 --log-level debug --api-key=s$/)
    expect(() =>
      loadSettings(['9090', '9091'], { npm_lifecycle_event: 'start', npm_config_port: 'true', npm_config_grpc_port: 'true' })
    ).toThrow(/Run: npm start -- --port <value> --grpc-port <value>$/)
    // npm's own configs, and these variables outside an npm script, are not the server's business.
    expect(loadSettings([], { npm_lifecycle_event: 'start', npm_config_cache: '/root/.npm' }).port).toBe(8080)
    expect(loadSettings([], { npm_config_port: 'true' }).port).toBe(8080)
  })

  it('a flag without its value, a misspelt flag and a stray word each get their own fix (each ended in the list of every flag)', () => {
    expect(() => loadSettings(['--api-key', '--port', '1'], {})).toThrow(
      /^--api-key needs a value: --api-key VALUE, or --api-key=VALUE when the value starts with "-"\.$/
    )
    expect(() => loadSettings(['--drain-grace-ms', '-1'], {})).toThrow(/^--drain-grace-ms needs a value/)
    expect(() => loadSettings(['--port'], {})).toThrow(/^--port needs a value/)
    expect(() => loadSettings(['--prot', '1'], {})).toThrow(/Unknown option '--prot'\. Did you mean --port\? Known flags/)
    expect(() => loadSettings(['--model-repo', 'm'], {})).toThrow(/Did you mean --model-repository\?/)
    expect(() => loadSettings(['--http-port', '1'], {})).toThrow(/Did you mean --port\?/)
    expect(() => loadSettings(['--model-store', 'm'], {})).toThrow(/Did you mean --model-repository\?/)
    expect(() => loadSettings(['--trace-config', 'rate=100'], {})).toThrow(
      /level= is --trace-level, rate= --trace-rate, count= --trace-count/
    )
    expect(() => loadSettings(['--xyzzy'], {})).not.toThrow(/Did you mean/)
    expect(() => loadSettings(['9090'], {})).toThrow(/^Unexpected argument '9090': every setting is a flag with its value/)
  })

  it('refuses the same non-zero port for HTTP and gRPC (it failed only after every model had loaded)', () => {
    expect(() => loadSettings(['--port', '9000'], {})).toThrow(/--port and --grpc-port are both 9000/)
    expect(() => loadSettings([], { PORT: '7000', GRPC_PORT: '7000' })).toThrow(ConfigError)
    expect(loadSettings(['--port', '0', '--grpc-port', '0'], {})).toMatchObject({ port: 0, grpcPort: 0 })
  })

  it('enum settings take any case (LOG_LEVEL=DEBUG was refused) and are kept in lower case', () => {
    expect(loadSettings([], { LOG_LEVEL: 'DEBUG' }).logLevel).toBe('debug')
    expect(loadSettings(['--provider', 'CPU', '--model-control-mode', 'Poll'], {})).toMatchObject({
      provider: 'cpu',
      modelControlMode: 'poll'
    })
  })

  it('refuses --headers-timeout-ms over --request-timeout-ms: the headers are part of the request', () => {
    expect(() => loadSettings(['--headers-timeout-ms', '5000', '--request-timeout-ms', '1000'], {})).toThrow(ConfigError)
    expect(() => loadSettings(['--headers-timeout-ms', '5000', '--request-timeout-ms', '1000'], {})).toThrow(
      /--request-timeout-ms \(1000\).*lower the first or raise the second/
    )
  })
})

describe('the result', () => {
  it('is frozen', () => {
    const settings = loadSettings([], {})
    expect(Object.isFrozen(settings)).toBe(true)
    expect(() => {
      ;(settings as { port: number }).port = 1
    }).toThrow(TypeError)
  })

  it('is logged without the API key', () => {
    const described = describeSettings(loadSettings(['--api-key', 'secret'], {}))
    expect(described.apiKey).toBe('<set>')
    expect(JSON.stringify(described)).not.toMatch(/secret/)
  })
})
