import { execFile, spawnSync } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { startTestGrpc } from '../helpers/grpc.js'
import { syntheticModelRepository } from '../helpers/models.js'
import { photoPaths } from '../helpers/photos.js'
import { classifyIndices, modelInputTensor, startTestServer } from '../helpers/server.js'
import { tensorBytes } from '../helpers/v2-bytes.js'

/**
 * The gRPC door against a client it shares no code with: Python's grpcio, with stubs compiled from
 * the project's .proto by grpc_tools (test/python/grpc_client.py). Its answers must be /classify's.
 */

const MODEL = 'resnet50'
const PYTHON = '/usr/bin/python3'

describe('V2 gRPC: an independent Python client compiled from the project .proto', () => {
  const python = spawnSync(PYTHON, ['-c', 'import grpc, grpc_tools.protoc'], { encoding: 'utf8' })
  const missing =
    python.status !== 0
      ? `python grpc is missing (${PYTHON}: ${(python.stderr || python.error?.message || '').trim().split('\n').pop()}); install python3-grpcio and python3-grpc-tools`
      : undefined
  if (missing !== undefined) console.warn(`skipping the Python gRPC client test: ${missing}`)

  it.skipIf(missing !== undefined)('ServerReady, ModelMetadata and ModelInfer (BYTES and raw FP32) agree with /classify', async () => {
    const server = await startTestServer(await syntheticModelRepository())
    const grpc = await startTestGrpc(server)
    const dir = await mkdtemp(join(tmpdir(), 'v2-grpc-python-'))
    try {
      const photoPath = photoPaths()[0]!
      const photo = await readFile(photoPath)
      const classifyTop5 = await classifyIndices(server, MODEL, photo)
      const tensorFile = join(dir, 'tensor.f32')
      await writeFile(tensorFile, tensorBytes(await modelInputTensor(server, MODEL, photo)))
      // Asynchronously: the server answering the client runs on this very event loop.
      const run = await promisify(execFile)(
        PYTHON,
        ['test/python/grpc_client.py', '--port', String(grpc.port), '--model', MODEL, '--photo', photoPath, '--fp32', tensorFile],
        {
          encoding: 'utf8',
          timeout: 90_000
        }
      )
      const result = JSON.parse(run.stdout) as {
        server_ready: boolean
        metadata: { name: string; platform: string; inputs: Array<{ name: string; datatype: string; shape: number[] }> }
        bytes: { id: string; model_version: string; top5: number[] }
        fp32: { id: string; top5: number[] }
        wrong_input_status: string
      }
      expect(result.server_ready).toBe(true)
      expect(result.metadata).toMatchObject({
        name: MODEL,
        platform: 'onnxruntime_onnx',
        inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, 3, 224, 224] }]
      })
      expect(result.bytes).toEqual({ id: 'python-bytes', model_version: '1', top5: classifyTop5 })
      expect(result.fp32).toEqual({ id: 'python-fp32', top5: classifyTop5 })
      expect(result.wrong_input_status).toBe('INVALID_ARGUMENT')
    } finally {
      await rm(dir, { recursive: true, force: true })
      await grpc.close()
      await server.close()
    }
  })
})
