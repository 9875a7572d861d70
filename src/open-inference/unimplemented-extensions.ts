import { ServiceError } from '../errors.js'

/**
 * Triton's extensions this server does not implement, with the REST routes and gRPC RPCs a Triton
 * client calls for each (tritonclient's register_system_shared_memory, ...; update_log_settings
 * where the logger has no settings). Both doors answer them NOT_IMPLEMENTED (501 / UNIMPLEMENTED)
 * saying what to do instead, as Triton answers an extension it has turned off (client shared memory
 * disabled: UNSUPPORTED, 501 / UNIMPLEMENTED). Without them a client read a 404 that looks like a
 * wrong URL ("No route answers this method and path") or grpc-js's bare "does not implement the
 * method", the one gRPC status without a registry code.
 */
export type UnimplementedExtension = 'system_shared_memory' | 'cuda_shared_memory' | 'logging'

const SEND_INLINE =
  'send tensors in the request instead (tritonclient: set_data_from_numpy, binary_data=True on HTTP; raw_input_contents on gRPC) and read outputs from the answer.'

const INSTEAD: Readonly<Record<UnimplementedExtension, string>> = {
  system_shared_memory: `System shared memory: ${SEND_INLINE}`,
  cuda_shared_memory: `CUDA shared memory: ${SEND_INLINE}`,
  logging: 'Log settings: the log level is set at start (--log-level or LOG_LEVEL) and cannot be changed while the server runs.'
}

export function extensionNotImplemented(extension: UnimplementedExtension): ServiceError {
  return new ServiceError('NOT_IMPLEMENTED', INSTEAD[extension])
}

export interface UnimplementedRoute {
  readonly method: 'GET' | 'POST'
  /** Under /v2, in fastify's syntax. */
  readonly url: string
  readonly extension: UnimplementedExtension
}

function sharedMemoryRoutes(kind: 'system' | 'cuda'): UnimplementedRoute[] {
  const extension = kind === 'system' ? 'system_shared_memory' : 'cuda_shared_memory'
  const base = `/${kind}sharedmemory`
  return [
    { method: 'GET', url: `${base}/status`, extension },
    { method: 'GET', url: `${base}/region/:region/status`, extension },
    { method: 'POST', url: `${base}/region/:region/register`, extension },
    { method: 'POST', url: `${base}/unregister`, extension },
    { method: 'POST', url: `${base}/region/:region/unregister`, extension }
  ]
}

/** Triton's REST routes of these extensions (docs/protocol/extension_*.md), under /v2. */
export const UNIMPLEMENTED_ROUTES: readonly UnimplementedRoute[] = [
  ...sharedMemoryRoutes('system'),
  ...sharedMemoryRoutes('cuda'),
  { method: 'GET', url: '/logging', extension: 'logging' },
  { method: 'POST', url: '/logging', extension: 'logging' }
]

/** Triton's RPCs of these extensions in inference.GRPCInferenceService (src/grpc/inference.proto). */
export const UNIMPLEMENTED_RPCS: Readonly<Record<string, UnimplementedExtension>> = {
  SystemSharedMemoryStatus: 'system_shared_memory',
  SystemSharedMemoryRegister: 'system_shared_memory',
  SystemSharedMemoryUnregister: 'system_shared_memory',
  CudaSharedMemoryStatus: 'cuda_shared_memory',
  CudaSharedMemoryRegister: 'cuda_shared_memory',
  CudaSharedMemoryUnregister: 'cuda_shared_memory',
  LogSettings: 'logging'
}
