import type { ClassifyService } from '../core/classify-service.js'
import type { ModelIndexEntry } from '../core/model-table.js'
import { ServiceError } from '../errors.js'

/**
 * The model repository extension (Triton's): the index of the repository's models with their
 * states, and load / unload by name. Shared by the REST and gRPC doors, which only map the wire.
 */

/**
 * The index as the model table keeps it; an entry whose `version` is undefined is about the whole
 * model, and both doors' serializers leave the field out.
 */
export function repositoryIndex(service: ClassifyService, readyOnly: boolean): Promise<ModelIndexEntry[]> {
  return service.repositoryIndex(readyOnly)
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
