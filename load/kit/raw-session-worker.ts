import { parentPort, workerData } from 'node:worker_threads'
import { openSession } from '../../src/core/onnx-session.js'
import type { RawWorkerInit, RawWorkerMessage, RawWorkerRequest } from './raw-session.js'

/**
 * One raw ONNX Runtime session in its own thread. onnxruntime-node's `run` holds its calling thread
 * for the whole batch, so "N batches in flight" needs N threads, as in the service.
 */
const init = workerData as RawWorkerInit
const port = parentPort!
const post = (msg: RawWorkerMessage): void => port.postMessage(msg)

const opened = await openSession(init.modelPath, init.session)
let feeds: Record<string, InstanceType<typeof opened.Tensor>> = {}
let preparedBatch = 0

function prepare(batch: number): void {
  const size = batch * 3 * init.crop * init.crop
  const dims = init.layout === 'NCHW' ? [batch, 3, init.crop, init.crop] : [batch, init.crop, init.crop, 3]
  const tensor =
    init.datatype === 'uint8'
      ? new opened.Tensor('uint8', new Uint8Array(size).fill(128), dims)
      : new opened.Tensor('float32', new Float32Array(size).fill(0.1), dims)
  feeds = { [init.inputName]: tensor }
  preparedBatch = batch
}

port.on('message', (req: RawWorkerRequest) => {
  void (async () => {
    if (req.type === 'prepare') {
      prepare(req.batch)
      await opened.session.run(feeds) // warm-up: the first runs of a shape allocate
      await opened.session.run(feeds)
      post({ type: 'prepared' })
    } else if (req.type === 'measure') {
      const times: number[] = []
      const t0 = performance.now()
      while (performance.now() - t0 < req.seconds * 1000 || times.length < 3) {
        const t = performance.now()
        await opened.session.run(feeds)
        times.push(performance.now() - t)
      }
      post({ type: 'measured', times, elapsedMs: performance.now() - t0 })
    } else if (req.type === 'run') {
      if (preparedBatch !== req.batch) prepare(req.batch)
      const t = performance.now()
      await opened.session.run(feeds)
      post({ type: 'ran', ms: performance.now() - t })
    } else {
      await opened.session.release()
      post({ type: 'closed' })
      port.close() // nothing else keeps the thread alive: it ends
    }
  })().catch((err: unknown) => post({ type: 'failed', message: (err as Error).message }))
})
post({ type: 'ready', provider: opened.provider })
