import { parseArgs } from 'node:util'
import * as grpc from '@grpc/grpc-js'
import Fastify from 'fastify'
import { loadInferenceProto } from '../../src/grpc/server.js'

/**
 * The least the doors can be: fastify and grpc-js answering V2 inference requests of one UINT8 tensor
 * with a fixed FP32 output of 1000 scores, no model, batcher, worker thread, admission, hooks, metrics
 * or logging. The HTTP route reads the binary extension (a JSON header of
 * `Inference-Header-Content-Length` bytes, then the tensor's bytes), or a JSON body as fastify
 * parses it on the event loop, and answers with binary scores; the gRPC
 * door decodes ModelInfer with the service's own proto and answers raw_output_contents. Each answer
 * waits one turn of the event loop, as an answer from a worker thread would. What `load:doors` sets
 * the service's doors beside: the part of a request's CPU that fastify, grpc-js and Node take
 * whatever the service does. Started like the service by startBenchServer (it logs "gRPC listening"
 * and "HTTP listening").
 *
 *   node --import tsx load/kit/door-floor.ts [--host H --port P --grpc-port P]
 */

const { values } = parseArgs({
  strict: false,
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    'grpc-port': { type: 'string', default: '0' }
  }
})
const host = String(values.host)
const CLASSES = 1000
const scores = Buffer.alloc(CLASSES * 4)
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

interface V2Header {
  model_name?: string
  id?: string
  inputs?: Array<{ name: string; datatype: string; shape: number[]; parameters?: { binary_data_size?: number } }>
}

const app = Fastify({ bodyLimit: 64 * 1024 * 1024 })
app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_request, body, done) => done(null, body))
app.post('/v2/models/:model/infer', async (request, reply) => {
  // A JSON body (load:doors' json door) arrives parsed by fastify's own parser, on this thread.
  const header = Buffer.isBuffer(request.body)
    ? (JSON.parse(request.body.subarray(0, Number(request.headers['inference-header-content-length'])).toString('utf8')) as V2Header)
    : (request.body as V2Header)
  const rows = header.inputs?.[0]?.shape[0] ?? 1
  await turn()
  const answer = Buffer.from(
    JSON.stringify({
      model_name: (request.params as { model: string }).model,
      model_version: '1',
      ...(header.id === undefined ? {} : { id: header.id }),
      outputs: [{ name: 'logits', datatype: 'FP32', shape: [rows, CLASSES], parameters: { binary_data_size: scores.length } }]
    })
  )
  void reply.header('inference-header-content-length', answer.length).type('application/octet-stream')
  return Buffer.concat([answer, scores])
})

// The service's own proto, read with the service's own options: the same decoding work per message.
const definition = loadInferenceProto()
const service = (
  grpc.loadPackageDefinition(definition) as unknown as { inference: { GRPCInferenceService: { service: grpc.ServiceDefinition } } }
).inference.GRPCInferenceService.service
const server = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 1024 * 1024 })
server.addService(service, {
  ModelInfer: (call: grpc.ServerUnaryCall<{ model_name: string; id?: string }, unknown>, callback: grpc.sendUnaryData<unknown>) => {
    const request = call.request
    void turn().then(() =>
      callback(null, {
        model_name: request.model_name,
        model_version: '1',
        id: request.id,
        outputs: [{ name: 'logits', datatype: 'FP32', shape: [1, CLASSES] }],
        raw_output_contents: [scores]
      })
    )
  }
})
const grpcPort = await new Promise<number>((resolve, reject) =>
  server.bindAsync(`${host}:${String(values['grpc-port'])}`, grpc.ServerCredentials.createInsecure(), (err, port) =>
    err === null ? resolve(port) : reject(err)
  )
)
console.log(JSON.stringify({ msg: 'gRPC listening', address: `${host}:${grpcPort}` }))
const address = await app.listen({ host, port: Number(values.port) })
console.log(JSON.stringify({ msg: 'HTTP listening', address }))
