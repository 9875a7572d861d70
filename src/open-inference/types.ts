import type { RequestTrace } from '../trace/tracer.js'

/**
 * The Open Inference Protocol (KServe V2) as the core sees it, whatever the door: each door turns
 * its wire format (REST JSON and binary extension, gRPC messages) into an InferRequest, and an
 * InferResponse back into its wire format.
 */

export interface TensorMetadata {
  readonly name: string
  readonly datatype: string
  /** -1 for a dimension of any size (the batch). */
  readonly shape: readonly number[]
}

export interface ServerMetadata {
  readonly name: string
  readonly version: string
  readonly extensions: readonly string[]
}

export interface ModelMetadata {
  readonly name: string
  readonly versions: readonly string[]
  readonly platform: string
  readonly inputs: readonly TensorMetadata[]
  readonly outputs: readonly TensorMetadata[]
}

/**
 * A tensor's elements as the door received them:
 * - raw: packed little-endian, row-major (binary extension, gRPC raw_input_contents); BYTES
 *   elements length-prefixed;
 * - numbers: one number per element, flattened row-major (JSON `data`, gRPC typed contents);
 * - elements: one byte string per BYTES element (JSON base64 strings decoded, gRPC bytes_contents).
 */
export type TensorData =
  | { readonly form: 'raw'; readonly bytes: Uint8Array }
  | { readonly form: 'numbers'; readonly values: ArrayLike<number> }
  | { readonly form: 'elements'; readonly values: readonly Uint8Array[] }

export interface InferInput {
  readonly name: string
  readonly datatype: string
  readonly shape: readonly number[]
  readonly data: TensorData
  /**
   * Triton's raw binary request (REST, Inference-Header-Content-Length: 0): the body is one image's
   * data for the model's one input, whose name, datatype and shape are deduced (prepareInput); the
   * fields above are placeholders.
   */
  readonly deduced?: true
}

export interface RequestedOutput {
  readonly name: string
  /** The classification extension's k; undefined for the raw output tensor. */
  readonly classification: number | undefined
}

export interface InferRequest {
  readonly modelName: string
  /** Undefined or empty: whichever version the model serves. */
  readonly modelVersion: string | undefined
  readonly id: string | undefined
  /** The request's own parameters (`timeout`, `priority`: see request-parameters.ts); undefined when none. */
  readonly parameters?: Readonly<Record<string, unknown>>
  readonly inputs: readonly InferInput[]
  /** Undefined or empty: every output, as raw tensors. */
  readonly outputs: readonly RequestedOutput[] | undefined
}

export type InferOutput =
  | { readonly name: string; readonly datatype: 'FP32'; readonly shape: readonly number[]; readonly data: Float32Array }
  | { readonly name: string; readonly datatype: 'BYTES'; readonly shape: readonly number[]; readonly data: readonly string[] }

export interface InferResponse {
  readonly modelName: string
  readonly modelVersion: string
  readonly id: string | undefined
  readonly outputs: readonly InferOutput[]
  /** The largest model execution any of the images ran in (for the log line). */
  readonly batchSize: number
  /** Set when the request is traced: the door adds its stamps and finishes it once the answer is sent. */
  readonly trace?: RequestTrace
}
