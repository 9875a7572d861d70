import type { ClassifyService } from '../core/classify-service.js'
import type { ModelState } from '../core/model-table.js'
import { ServiceError } from '../errors.js'

/**
 * The model repository extension (Triton's): the index of the repository's models with their
 * states, and load / unload by name. Shared by the REST and gRPC doors, which only map the wire.
 */

/** One entry of the index; `version` absent for an entry about the whole model. */
export interface RepositoryIndexEntry {
  readonly name: string
  readonly version?: string
  readonly state: ModelState
  readonly reason: string
}

export async function repositoryIndex(service: ClassifyService, readyOnly: boolean): Promise<RepositoryIndexEntry[]> {
  const entries = await service.repositoryIndex(readyOnly)
  return entries.map((e) =>
    e.version === undefined
      ? { name: e.name, state: e.state, reason: e.reason }
      : { name: e.name, version: e.version, state: e.state, reason: e.reason }
  )
}

/**
 * Load and unload parameters. `unload_dependents` (unload) is accepted and has nothing to do: no
 * model here depends on another. Triton's `config` and `file:<path>` overrides (load) are refused:
 * models load only from their folder, so a client never believes an override took effect.
 */
export function checkRepositoryParameters(names: readonly string[]): void {
  for (const name of names) {
    if (name === 'unload_dependents') continue
    if (name === 'config' || name.startsWith('file:')) {
      throw new ServiceError('BAD_REQUEST', `The "${name}" parameter is not supported: models load from their folder in the repository.`)
    }
    throw new ServiceError('BAD_REQUEST', `Unknown parameter "${name}".`)
  }
}

export async function loadModel(service: ClassifyService, name: string, parameters: readonly string[]): Promise<void> {
  checkRepositoryParameters(parameters)
  await service.loadModel(name)
}

export async function unloadModel(service: ClassifyService, name: string, parameters: readonly string[]): Promise<void> {
  checkRepositoryParameters(parameters)
  await service.unloadModel(name)
}
