import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import autocannon from 'autocannon'

/**
 * The two ways the suite puts a door under load, both reporting the same outcome: autocannon for
 * HTTP, and a loop of unary ModelInfer calls for gRPC. Latencies are kept whole (a few thousand
 * numbers per level) so every door's percentiles come from the same function.
 */

export interface LoadOutcome {
  readonly seconds: number
  /** Requests answered with success. */
  readonly requests: number
  /** Images in those requests. */
  readonly images: number
  readonly errors: number
  /** Of successful requests. */
  readonly latenciesMs: number[]
  /** The first failure, for the log: a status and the start of its body, or a gRPC error. */
  readonly firstError: string | undefined
}

export interface HttpLoad {
  readonly url: string
  readonly headers: Record<string, string>
  readonly body: Buffer
  readonly imagesPerRequest: number
}

export async function runHttpLoad(load: HttpLoad, connections: number, seconds: number): Promise<LoadOutcome> {
  const latenciesMs: number[] = []
  let requests = 0
  let errors = 0
  let firstError: string | undefined
  const t0 = performance.now()
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      // A batch of 16 at concurrency 16 on two cores waits longer than autocannon's default 10 s.
      { url: load.url, method: 'POST', headers: load.headers, body: load.body, connections, duration: seconds, timeout: 120 },
      (err, res) => (err ? reject(err) : resolve(res))
    )
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (statusCode >= 200 && statusCode < 300) {
        requests++
        latenciesMs.push(responseTime)
      } else {
        errors++
        firstError ??= `HTTP ${statusCode}`
      }
    })
  })
  return {
    seconds: (performance.now() - t0) / 1000,
    requests,
    images: requests * load.imagesPerRequest,
    errors: errors + result.errors + result.timeouts,
    latenciesMs,
    firstError
  }
}

export interface GrpcTensorInput {
  readonly name: string
  readonly datatype: 'FP32' | 'UINT8'
  readonly shape: readonly number[]
  readonly bytes: Buffer
}

interface InferenceClient extends grpc.Client {
  ModelInfer(request: unknown, callback: (err: grpc.ServiceError | null, response: unknown) => void): grpc.ClientUnaryCall
}

/** A client of inference.GRPCInferenceService built from the service's own .proto. */
export function inferenceClient(address: string, protoPath = 'src/grpc/inference.proto'): InferenceClient {
  const definition = protoLoader.loadSync(protoPath, { keepCase: true, longs: Number, enums: String, defaults: false, oneofs: true })
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    inference: {
      GRPCInferenceService: new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => InferenceClient
    }
  }
  return new loaded.inference.GRPCInferenceService(address, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    'grpc.max_send_message_length': 64 * 1024 * 1024
  })
}

/**
 * `streams` loops, each with one unary ModelInfer in flight at a time on one shared channel (HTTP/2
 * streams), for `seconds`.
 */
export async function runGrpcLoad(
  client: InferenceClient,
  model: string,
  input: GrpcTensorInput,
  streams: number,
  seconds: number
): Promise<LoadOutcome> {
  const request = {
    model_name: model,
    inputs: [{ name: input.name, datatype: input.datatype, shape: input.shape }],
    raw_input_contents: [input.bytes]
  }
  const imagesPerRequest = input.shape[0] ?? 1
  const latenciesMs: number[] = []
  let requests = 0
  let errors = 0
  let firstError: string | undefined
  const t0 = performance.now()
  const deadline = t0 + seconds * 1000
  const call = (): Promise<void> =>
    new Promise((resolve) => {
      const t = performance.now()
      client.ModelInfer(request, (err) => {
        if (err === null) {
          requests++
          latenciesMs.push(performance.now() - t)
        } else {
          errors++
          firstError ??= `gRPC ${err.code} ${err.details}`
        }
        resolve()
      })
    })
  await Promise.all(
    Array.from({ length: streams }, async () => {
      while (performance.now() < deadline) await call()
    })
  )
  return { seconds: (performance.now() - t0) / 1000, requests, images: requests * imagesPerRequest, errors, latenciesMs, firstError }
}
