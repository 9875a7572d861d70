import type { ClassifyService } from '../core/classify-service.js'
import { loadModel, repositoryIndex, unloadModel } from '../open-inference/repository.js'
import { parameterValues, type OneofParameter } from './parameter-values.js'

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
  /** ModelRepositoryParameter messages: a config comes as string_param or bytes_param. */
  readonly parameters: Readonly<Record<string, OneofParameter>>
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

/**
 * The model a load or unload names. Triton's message has it in model_name (field 2); KServe's
 * grpc_predict_v2.proto has only `model_name = 1`, which is Triton's repository_name: a KServe
 * client's load arrives with model_name empty and the name there (it was refused MODEL_NOT_FOUND
 * for folder "").
 */
function controlledModel(request: RepositoryControlRequestMessage): string {
  return request.model_name === '' ? request.repository_name : request.model_name
}

/** Triton reads the empty answer; KServe's clients read model_name and isLoaded (fields Triton's clients skip). */
export async function repositoryModelLoadReply(
  service: ClassifyService,
  request: RepositoryControlRequestMessage
): Promise<{ model_name: string; isLoaded: boolean }> {
  const name = controlledModel(request)
  await loadModel(service, name, parameterValues(request.parameters) ?? {})
  return { model_name: name, isLoaded: true }
}

export async function repositoryModelUnloadReply(
  service: ClassifyService,
  request: RepositoryControlRequestMessage
): Promise<{ model_name: string; isUnloaded: boolean }> {
  const name = controlledModel(request)
  await unloadModel(service, name, parameterValues(request.parameters) ?? {})
  return { model_name: name, isUnloaded: true }
}
