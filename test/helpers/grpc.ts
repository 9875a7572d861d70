import { Client, Metadata, credentials, type ServiceDefinition, type ServiceError as GrpcCallError } from '@grpc/grpc-js'
import type { Settings } from '../../src/config.js'
import { SERVICE_NAME, loadInferenceProto, startGrpcServer } from '../../src/grpc/server.js'
import { testLogger, type TestServer } from './server.js'

export interface GrpcTestDoor {
  readonly port: number
  /** One unary call of inference.GRPCInferenceService; rejects with the call's status error. */
  call<Res>(rpc: string, request: object, options?: CallOptions): Promise<Res>
  close(): Promise<void>
}

export type { GrpcCallError }

export interface CallOptions {
  readonly deadlineMs?: number
  /** Sent as the call's metadata (e.g. authorization). */
  readonly metadata?: Readonly<Record<string, string>>
}

/**
 * The real gRPC door over a test server's service and metrics, on 127.0.0.1, port 0, with a client
 * for it. `settings` (default: the server's) lets a test open a second door configured otherwise.
 */
export async function startTestGrpc(server: TestServer, settings: Settings = server.settings): Promise<GrpcTestDoor> {
  const handle = await startGrpcServer(server.service, settings, testLogger(), server.metrics)
  const definition = loadInferenceProto()[SERVICE_NAME] as ServiceDefinition
  const client = new Client(`127.0.0.1:${handle.port}`, credentials.createInsecure(), { 'grpc.max_receive_message_length': 64 * 1024 * 1024 })
  return {
    port: handle.port,
    call<Res>(rpc: string, request: object, options: CallOptions = {}): Promise<Res> {
      const method = definition[rpc]
      if (method === undefined) throw new Error(`${SERVICE_NAME} has no method ${rpc}`)
      const callOptions = options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs }
      const metadata = new Metadata()
      for (const [key, value] of Object.entries(options.metadata ?? {})) metadata.set(key, value)
      return new Promise<Res>((resolve, reject) => {
        client.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, request, metadata, callOptions, (err, response) =>
          err === null ? resolve(response as Res) : reject(err)
        )
      })
    },
    async close() {
      client.close()
      await handle.close()
    }
  }
}
