import type { ClassifyService } from '../core/classify-service.js'
import type { ModelIndexEntry, ModelOverride } from '../core/model-table.js'
import { ServiceError, echoed } from '../errors.js'
import { configOverride } from './config-override.js'

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

/** A load's or unload's parameters as the door received them: REST's JSON values, gRPC's oneof value. */
export type RepositoryParameters = Readonly<Record<string, unknown>>

/**
 * Load and unload parameters. `unload_dependents` is accepted and has nothing to do: no model here
 * depends on another. `config` (load) is Triton's configuration for this load (config-override.ts).
 * Triton's `file:<path>` overrides, model files sent in the request, are refused: a model's files
 * are its folder's, so a client never believes a file it sent is the one that serves.
 */
function refuseParameter(name: string): never {
  if (name.startsWith('file:')) {
    throw new ServiceError(
      'BAD_REQUEST',
      `The "${echoed(name)}" parameter is not supported: a model's files are those of its folder in the repository.`
    )
  }
  if (name === 'config') throw new ServiceError('BAD_REQUEST', 'The "config" parameter belongs to a load, not to an unload.')
  throw new ServiceError('BAD_REQUEST', `Unknown parameter "${echoed(name)}".`)
}

export async function loadModel(service: ClassifyService, name: string, parameters: RepositoryParameters): Promise<void> {
  let override: ModelOverride | undefined
  for (const [key, value] of Object.entries(parameters)) {
    if (key === 'config') override = configOverride(value, name, service.settings)
    else if (key !== 'unload_dependents') refuseParameter(key)
  }
  await service.loadModel(name, override)
}

export async function unloadModel(service: ClassifyService, name: string, parameters: RepositoryParameters): Promise<void> {
  for (const key of Object.keys(parameters)) if (key !== 'unload_dependents') refuseParameter(key)
  await service.unloadModel(name)
}
