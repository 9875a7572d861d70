import type { ClassifyService } from '../core/classify-service.js'
import { loadModel, repositoryIndex, unloadModel } from '../open-inference/repository.js'

/**
 * RepositoryIndex, RepositoryModelLoad and RepositoryModelUnload (Triton's model repository
 * extension) over the protocol layer; the messages are those of inference.proto.
 */

/** RepositoryIndexRequest, as proto-loader decodes it (defaults filled). */
export interface RepositoryIndexRequestMessage {
  readonly repository_name: string
  readonly ready: boolean
}

/** RepositoryModelLoadRequest and RepositoryModelUnloadRequest, as proto-loader decodes them. */
export interface RepositoryControlRequestMessage {
  readonly repository_name: string
  readonly model_name: string
  readonly parameters: Readonly<Record<string, unknown>>
}

interface RepositoryIndexResponseMessage {
  models: Array<{ name: string; version: string; state: string; reason: string }>
}

export async function repositoryIndexReply(
  service: ClassifyService,
  request: RepositoryIndexRequestMessage
): Promise<RepositoryIndexResponseMessage> {
  const entries = await repositoryIndex(service, request.ready)
  return { models: entries.map((e) => ({ name: e.name, version: e.version ?? '', state: e.state, reason: e.reason })) }
}

export async function repositoryModelLoadReply(service: ClassifyService, request: RepositoryControlRequestMessage): Promise<object> {
  await loadModel(service, request.model_name, Object.keys(request.parameters))
  return {}
}

export async function repositoryModelUnloadReply(service: ClassifyService, request: RepositoryControlRequestMessage): Promise<object> {
  await unloadModel(service, request.model_name, Object.keys(request.parameters))
  return {}
}
