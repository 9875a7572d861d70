import { join } from 'node:path'
import type { Logger } from 'pino'
import type { Settings } from '../config.js'
import { ServiceError, echoed } from '../errors.js'
import { chooseDefaultModel } from '../repository/default-model.js'
import { folderFingerprint, planModelVersions, versionFingerprint } from '../repository/model-versions.js'
import { listModelFolders, loadModelVersion, type ConfigAmendment, type ModelEntry } from '../repository/repository.js'
import type { ServedModel } from './classify-service.js'

/**
 * The models being served, by name and version, and how that changes while requests run.
 *
 * Contract of a switch (load, reload, a new version): the new versions are opened and warmed up
 * first; then the model's list of served versions is replaced in one assignment, so a lookup sees
 * either the old list or the new one. A version that left the list is retired: it keeps serving
 * the requests that looked it up before the switch (they hold a lease, see ServedModel.leases),
 * and its batcher and sessions close only once the last of them has finished. A load that fails
 * leaves the old list in place and is reported in the index.
 *
 * Loads and unloads of one model run one at a time, in call order; different models change
 * independently.
 */

/** Triton's model states, as the repository index reports them. */
export type ModelState = 'READY' | 'UNAVAILABLE' | 'LOADING' | 'UNLOADING'

export interface ModelIndexEntry {
  readonly name: string
  /** Absent when the entry is about the model rather than one version (not loaded, failed before any version). */
  readonly version: string | undefined
  readonly state: ModelState
  readonly reason: string
}

/** Opens one version's sessions, checks and warms them: a ServedModel ready for requests. */
export type OpenModel = (entry: ModelEntry) => Promise<ServedModel>

interface ServedVersion {
  readonly model: ServedModel
  /** What its files looked like when it was opened (versionFingerprint). */
  readonly fingerprint: string
}

interface ModelRecord {
  readonly name: string
  /** Newest first. Replaced whole at a switch, never changed in place. */
  served: readonly ServedVersion[]
  /** Should be served: counted by readiness. Set at start and by poll whatever the outcome, by a load request when it succeeds. */
  wanted: boolean
  /** Why the last load failed (and which version, when one did); cleared by a load that succeeds. */
  failure: { readonly version: string | undefined; readonly reason: string } | undefined
  /** The folder's fingerprint when the last load began: poll loads again when it changes. */
  fingerprint: string | undefined
  busy: 'loading' | 'unloading' | undefined
  /** The tail of this model's operations. */
  queue: Promise<unknown>
}

export interface LoadOptions {
  /** Count the model as wanted (readiness) even when the load fails: at start and for poll. */
  readonly wantedOnFailure: boolean
  /** A configuration given with the load request instead of the folder's, for this load only. */
  readonly override?: ModelOverride
}

/** What a load request's configuration changes, and what it says the model is. */
export interface ModelOverride {
  /** Applied to config.json's object before it is checked. */
  readonly amend: ConfigAmendment
  /** Compares what the request said with each version as it opened: undefined when they agree, else how not. */
  readonly check: (model: ServedModel) => string | undefined
}

export class ModelTable {
  private readonly records = new Map<string, ModelRecord>()
  private readonly retiring = new Set<Promise<void>>()
  private closing = false
  private pollTimer: NodeJS.Timeout | undefined
  private polling: Promise<void> | undefined
  /**
   * The model a request that names none goes to. Decided once: --default-model, or the rule applied
   * to the models served when start-up ends (or, when none was, to the first model that loads).
   * It stays the default while unloaded, and requests for it are refused: re-chosen, a plain
   * request was answered by another model, with other labels, and the client never knew.
   */
  defaultModel: string | undefined
  /** Why it is the default, for the log line. */
  private defaultReason = '--default-model'
  private defaultDecided: boolean
  /** Loading the models of the start: the default is decided once they are in. */
  private startingUp = false

  constructor(
    private readonly settings: Settings,
    private readonly log: Logger,
    private readonly open: OpenModel,
    /** Called after every change of what is served (metrics re-read the models). */
    private readonly onChange: () => void
  ) {
    this.defaultModel = settings.defaultModel
    this.defaultDecided = settings.defaultModel !== undefined
  }

  /**
   * The newest served version of `name`, or the named one: MODEL_NOT_FOUND / MODEL_NOT_READY
   * otherwise. `asDefault`: the request named no model, so the refusal says which one it meant.
   */
  find(name: string, version?: string, asDefault = false): ServedModel {
    const record = this.records.get(name)
    const served = record?.served
    if (served === undefined || served.length === 0) {
      const which = asDefault ? `The default model "${name}"` : `Model "${name}"`
      if (record?.wanted === true && record.failure !== undefined) throw new ServiceError('MODEL_NOT_READY', `${which} failed to load.`)
      if (record?.wanted === true && record.busy === 'loading') throw new ServiceError('MODEL_NOT_READY', `${which} is loading.`)
      const loaded = `Loaded models: ${this.names().join(', ') || 'none'}.`
      throw new ServiceError(
        'MODEL_NOT_FOUND',
        asDefault
          ? `${which} (requests that name no model go to it) is not loaded; name another with ?model=. ${loaded}`
          : `No model of that name is loaded. ${loaded}`
      )
    }
    if (version === undefined || version === '') return served[0]!.model
    for (const v of served) if (v.model.info.version === version) return v.model
    throw new ServiceError(
      'MODEL_NOT_FOUND',
      `Version "${echoed(version)}" of "${name}" is not served; served versions are ${served.map((v) => v.model.info.version).join(', ')}.`
    )
  }

  /** Models that serve, or should and failed to load: the names /models and readiness report. */
  names(): string[] {
    const names: string[] = []
    for (const r of this.records.values()) if (r.served.length > 0 || (r.wanted && r.failure !== undefined)) names.push(r.name)
    return names.sort()
  }

  /** Every served version of a model, newest first (empty when none). */
  versions(name: string): ServedModel[] {
    return (this.records.get(name)?.served ?? []).map((v) => v.model)
  }

  /** Every served version of every model. */
  served(): ServedModel[] {
    const all: ServedModel[] = []
    for (const r of this.records.values()) for (const v of r.served) all.push(v.model)
    return all
  }

  isReady(name: string, version?: string): boolean {
    if (this.closing) return false
    const served = this.records.get(name)?.served ?? []
    return version === undefined || version === '' ? served.length > 0 : served.some((v) => v.model.info.version === version)
  }

  /** Every model that should serve does; in mode none, at least one does. */
  get ready(): boolean {
    if (this.closing) return false
    let any = false
    for (const r of this.records.values()) {
      if (r.wanted && r.served.length === 0) return false
      if (r.served.length > 0) any = true
    }
    return any || this.settings.modelControlMode !== 'none'
  }

  /**
   * Loads a model, or reloads it: versions whose files are unchanged keep their sessions, new or
   * changed ones are opened and warmed before the switch. Rejects with what went wrong (a
   * RepositoryError with its fix, or ONNX Runtime's refusal); the versions served before stay.
   */
  load(name: string, options: LoadOptions): Promise<void> {
    const record = this.record(name)
    return this.serialise(record, () => this.loadNow(record, options))
  }

  /** Stops serving a model: new requests get MODEL_NOT_FOUND at once; resolves when its versions have drained and closed. */
  unload(name: string): Promise<void> {
    const record = this.record(name)
    return this.serialise(record, () => this.unloadNow(record))
  }

  /** Every model folder in the repository and every model served, by name then version (Triton's repository index). */
  async index(readyOnly: boolean): Promise<ModelIndexEntry[]> {
    const names = new Set(await listModelFolders(this.settings.modelRepository))
    // A model whose folder is gone is still listed while it serves, changes or failed.
    for (const r of this.records.values()) if (r.served.length > 0 || r.busy !== undefined || r.failure !== undefined) names.add(r.name)
    const entries: ModelIndexEntry[] = []
    for (const name of [...names].sort()) {
      const r = this.records.get(name)
      const own: ModelIndexEntry[] = []
      const served = r?.served ?? []
      // One entry per version. A version whose reload failed still serves its old files: READY,
      // with the failure as its reason; a failure before any version (config.json) is every
      // served version's, and a model-level entry only when none serves.
      const failure = r?.failure
      const failedServed = (version: string): boolean => failure !== undefined && (failure.version ?? version) === version
      for (const v of [...served].reverse()) {
        const failed = failedServed(v.model.info.version)
        own.push({ name, version: v.model.info.version, state: 'READY', reason: failed ? `reload failed: ${failure!.reason}` : '' })
      }
      if (r?.busy === 'unloading') own.push({ name, version: undefined, state: 'UNLOADING', reason: '' })
      else if (r?.busy === 'loading' && served.length === 0) own.push({ name, version: undefined, state: 'LOADING', reason: '' })
      else if (failure !== undefined && !served.some((v) => failedServed(v.model.info.version))) {
        own.push({ name, version: failure.version, state: 'UNAVAILABLE', reason: failure.reason })
      }
      if (own.length === 0) own.push({ name, version: undefined, state: 'UNAVAILABLE', reason: 'unloaded' })
      entries.push(...(readyOnly ? own.filter((e) => e.state === 'READY') : own))
    }
    return entries
  }

  /**
   * The models loaded at start, one after the other. A failure stops the start (everything opened
   * is closed) unless --allow-partial-start; then the model is reported as failed and not ready.
   */
  async loadAtStart(names: readonly string[]): Promise<void> {
    // The default is told once, when every model is in: told after each, it named one that the
    // next model to load (a real one after the synthetic) then replaced.
    this.startingUp = true
    try {
      await this.loadEach(names)
    } finally {
      this.startingUp = false
    }
    this.defaultDecided = this.defaultModel !== undefined
    this.announceDefault()
  }

  private async loadEach(names: readonly string[]): Promise<void> {
    for (const name of names) {
      try {
        await this.load(name, { wantedOnFailure: true })
      } catch (err) {
        if (!this.settings.allowPartialStart) {
          await this.close(0)
          throw err
        }
        this.log.error({ model: name, err: (err as Error).message }, 'model failed to load; serving the others (--allow-partial-start)')
      }
    }
  }

  /** Poll mode: looks at the repository folder every --repository-poll-secs until close. */
  startPolling(): void {
    const schedule = (): void => {
      this.pollTimer = setTimeout(() => {
        this.polling = this.poll()
          .catch((err: unknown) => this.log.error({ err }, 'model repository poll failed'))
          .finally(() => {
            this.polling = undefined
            if (!this.closing) schedule()
          })
      }, this.settings.repositoryPollSecs * 1000)
      // The doors keep the process alive; a pending look at the folder should not.
      this.pollTimer.unref()
    }
    schedule()
  }

  /**
   * One look at the repository: folders not served yet are loaded, folders whose files changed
   * since their last load are loaded again, models whose folder is gone are unloaded. A folder
   * that failed to load is tried again only once its files change.
   */
  async poll(): Promise<void> {
    const folders = await listModelFolders(this.settings.modelRepository)
    const changes: Promise<void>[] = []
    for (const name of folders) {
      const record = this.records.get(name)
      if (record?.busy !== undefined) continue
      const fingerprint = await folderFingerprint(join(this.settings.modelRepository, name))
      if (record !== undefined && (record.wanted || record.failure !== undefined) && record.fingerprint === fingerprint) continue
      this.log.info({ model: name, change: record?.wanted === true ? 'changed' : 'new' }, 'model repository changed: loading')
      changes.push(this.load(name, { wantedOnFailure: true }).catch((err: unknown) => this.logLoadFailure(name, err)))
    }
    const present = new Set(folders)
    for (const record of this.records.values()) {
      if (present.has(record.name) || record.busy !== undefined || (!record.wanted && record.served.length === 0)) continue
      this.log.info({ model: record.name }, 'model folder removed: unloading')
      changes.push(this.unload(record.name))
    }
    await Promise.all(changes)
  }

  /** Stops taking work, lets what was accepted finish (up to the drain timeout), closes every session. */
  async close(drainTimeoutMs: number): Promise<void> {
    this.closing = true
    clearTimeout(this.pollTimer)
    await this.polling
    // Loads in progress see `closing` before their switch and close what they opened.
    await Promise.allSettled([...this.records.values()].map((r) => r.queue))
    const served = this.served()
    for (const m of served) m.batcher.close()
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), drainTimeoutMs)
    })
    const outcome = await Promise.race([Promise.all(served.map((m) => m.batcher.drained())), timedOut])
    clearTimeout(timer)
    if (outcome === 'timeout') this.log.warn({ drainTimeoutMs }, 'drain timeout passed; closing sessions with work still queued')
    for (const m of served) m.closed = true
    await Promise.all([...served.map((m) => m.sessions.close()), ...this.retiring])
  }

  private record(name: string): ModelRecord {
    let record = this.records.get(name)
    if (record === undefined) {
      record = { name, served: [], wanted: false, failure: undefined, fingerprint: undefined, busy: undefined, queue: Promise.resolve() }
      this.records.set(name, record)
    }
    return record
  }

  private serialise(record: ModelRecord, operation: () => Promise<void>): Promise<void> {
    const run = record.queue.then(operation, operation)
    record.queue = run.catch(() => undefined)
    return run
  }

  private async loadNow(record: ModelRecord, options: LoadOptions): Promise<void> {
    if (this.closing) throw new ServiceError('SHUTTING_DOWN')
    const root = this.settings.modelRepository
    const { name } = record
    record.busy = 'loading'
    const opened: ServedVersion[] = []
    let failedVersion: string | undefined
    try {
      record.fingerprint = await folderFingerprint(join(root, name))
      const plan = await planModelVersions(root, name, options.override?.amend)
      const next: ServedVersion[] = []
      for (const version of plan.versions) {
        const fingerprint = await versionFingerprint(plan, version)
        const kept = record.served.find((v) => v.model.info.version === version.version && v.fingerprint === fingerprint)
        if (kept !== undefined) {
          next.push(kept)
          continue
        }
        failedVersion = version.version
        const model = await this.open(await loadModelVersion(plan.folder, version.version, version.dir))
        failedVersion = undefined
        const served: ServedVersion = { model, fingerprint }
        opened.push(served)
        next.push(served)
      }
      for (const v of next) {
        const disagreement = options.override?.check(v.model)
        if (disagreement !== undefined) {
          failedVersion = v.model.info.version
          throw new ServiceError('MODEL_LOAD_FAILED', `"${name}": ${disagreement}`)
        }
      }
      if (this.closing) throw new ServiceError('SHUTTING_DOWN')
      const previous = record.served
      record.served = next
      record.failure = undefined
      record.wanted = true
      this.changed()
      const retired = previous.filter((v) => !next.includes(v))
      this.log.info(
        {
          model: name,
          versions: next.map((v) => v.model.info.version),
          opened: opened.map((v) => v.model.info.version),
          retiring: retired.map((v) => v.model.info.version)
        },
        previous.length === 0 ? 'model loaded' : 'model reloaded'
      )
      for (const v of retired) this.retire(v.model)
    } catch (err) {
      await Promise.all(opened.map((v) => closeNow(v.model)))
      if (!(err instanceof ServiceError && err.code === 'SHUTTING_DOWN')) {
        record.failure = { version: failedVersion, reason: (err as Error).message }
        if (options.wantedOnFailure) record.wanted = true
        this.changed()
      }
      throw err
    } finally {
      record.busy = undefined
    }
  }

  private async unloadNow(record: ModelRecord): Promise<void> {
    const previous = record.served
    record.busy = 'unloading'
    record.served = []
    record.wanted = false
    record.failure = undefined
    record.fingerprint = undefined
    this.changed()
    try {
      await Promise.all(previous.map((v) => this.retire(v.model)))
    } finally {
      record.busy = undefined
    }
    if (previous.length > 0) this.log.info({ model: record.name, versions: previous.map((v) => v.model.info.version) }, 'model unloaded')
    if (previous.length > 0 && record.name === this.defaultModel)
      this.log.warn({ model: record.name }, 'the default model is unloaded: requests that name no model are refused until it loads again')
  }

  /**
   * Closes a version no lookup returns any more, once the requests that hold it are done (up to
   * the drain timeout). `closed` is set in the same turn that sees no lease, so a late holder
   * that acquires it afterwards is sent to its successor instead (ClassifyService.lease).
   */
  private retire(model: ServedModel): Promise<void> {
    const done = (async () => {
      const deadline = performance.now() + this.settings.drainTimeoutMs
      while (model.leases > 0) {
        const left = deadline - performance.now()
        if (left <= 0) {
          this.log.warn(
            { model: model.info.name, version: model.info.version, leases: model.leases },
            'drain timeout passed while retiring'
          )
          break
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left)
          model.onIdle = () => {
            clearTimeout(timer)
            resolve()
          }
        })
        model.onIdle = undefined
      }
      model.closed = true
      await closeNow(model)
    })()
    this.retiring.add(done)
    void done.finally(() => this.retiring.delete(done))
    return done
  }

  private changed(): void {
    if (!this.defaultDecided) {
      const latest = [...this.records.values()]
        .filter((r) => r.served.length > 0)
        .map((r) => ({ name: r.name, synthetic: r.served[0]!.model.info.synthetic }))
      const choice = chooseDefaultModel(latest, this.settings.defaultModel)
      this.defaultModel = choice.name
      this.defaultReason = choice.reason
      // After start-up, the first model that loads into a server that served none.
      if (!this.startingUp && choice.name !== undefined) {
        this.defaultDecided = true
        this.announceDefault()
      }
    }
    this.onChange()
  }

  private announceDefault(): void {
    if (this.defaultModel !== undefined)
      this.log.info({ model: this.defaultModel, why: this.defaultReason }, 'default model (requests that name none)')
  }

  private logLoadFailure(name: string, err: unknown): void {
    const reason = err instanceof Error ? err.message : String(err)
    const kept = this.versions(name).map((m) => m.info.version)
    this.log.error({ model: name, err: reason, stillServing: kept }, 'model failed to load')
  }
}

/** A version's batcher (what is queued still runs) and then its sessions. */
async function closeNow(model: ServedModel): Promise<void> {
  model.closed = true
  model.batcher.close()
  await model.batcher.drained()
  await model.sessions.close()
}
