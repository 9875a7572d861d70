import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import ort from 'onnxruntime-node'
import type { Provider } from '../config.js'
import type { ModelSignature, TensorSignature } from '../repository/repository.js'

/**
 * Opening an ONNX Runtime session with the execution provider the settings ask for. onnxruntime-node
 * takes CUDA only as `{ name: 'cuda', deviceId }`; when the CUDA provider library is missing,
 * session creation throws, so `auto` catches that and opens a CPU session instead, reporting why.
 */

export interface SessionSettings {
  readonly provider: Provider
  readonly cudaDeviceId: number
  readonly threads: number
}

export interface OpenedSession {
  readonly session: ort.InferenceSession
  readonly provider: 'cuda' | 'cpu'
  readonly fallbackReason: string | undefined
  /** The Tensor class of the same module instance as the session (tensors must match it). */
  readonly Tensor: typeof ort.Tensor
}

function options(settings: SessionSettings, useCuda: boolean): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: useCuda ? [{ name: 'cuda', deviceId: settings.cudaDeviceId }, 'cpu'] : ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: settings.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    // ORT's intra-op threads spin between batches by default; here they would take CPU from sharp's
    // decoding and the event loop on the same cores. They sleep instead.
    extra: { session: { intra_op: { allow_spinning: '0' } } }
  }
}

/**
 * Where onnxruntime-node looks for its CUDA provider, and whether it is there. The package lists
 * 'cuda' among its backends either way, and trying a missing library makes ONNX Runtime print an
 * error line of its own on every CPU host; looking first keeps `auto` quiet there.
 */
export function cudaProviderLibrary(): { readonly path: string; readonly installed: boolean } {
  const packageDir = dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'))
  const path = join(packageDir, 'bin', 'napi-v6', process.platform, process.arch, 'libonnxruntime_providers_cuda.so')
  return { path, installed: existsSync(path) }
}

function cudaUnusable(reason: string, cause?: unknown): Error {
  return new Error(
    `the CUDA execution provider could not be used (${reason}). Install onnxruntime-node with ONNXRUNTIME_NODE_INSTALL=cuda12 on a host with CUDA 12 and cuDNN 9, or start with --provider auto|cpu.`,
    { cause }
  )
}

export async function openSession(modelPath: string, settings: SessionSettings): Promise<OpenedSession> {
  const library = settings.provider === 'cpu' ? undefined : cudaProviderLibrary()
  if (library !== undefined && !library.installed) {
    if (settings.provider === 'cuda') throw cudaUnusable(`its library is not installed: ${library.path} is missing`)
  } else if (settings.provider !== 'cpu') {
    try {
      const session = await ort.InferenceSession.create(modelPath, options(settings, true))
      return { session, provider: 'cuda', fallbackReason: undefined, Tensor: ort.Tensor }
    } catch (err) {
      const reason = (err as Error).message
      if (settings.provider === 'cuda') throw cudaUnusable(reason, err)
      const session = await ort.InferenceSession.create(modelPath, options(settings, false))
      return { session, provider: 'cpu', fallbackReason: reason, Tensor: ort.Tensor }
    }
  }
  const session = await ort.InferenceSession.create(modelPath, options(settings, false))
  return { session, provider: 'cpu', fallbackReason: undefined, Tensor: ort.Tensor }
}

function describe(meta: ort.InferenceSession.ValueMetadata): TensorSignature {
  return meta.isTensor ? { name: meta.name, type: meta.type, shape: [...meta.shape] } : { name: meta.name, type: 'non-tensor', shape: [] }
}

export function readSignature(session: ort.InferenceSession): ModelSignature {
  return { inputs: session.inputMetadata.map(describe), outputs: session.outputMetadata.map(describe) }
}
