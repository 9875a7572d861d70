import { describe, expect, it } from 'vitest'
import { ModelStatistics } from '../../src/core/model-statistics.js'
import { ServiceError } from '../../src/errors.js'
import { ServiceMetrics } from '../../src/metrics.js'

describe('model statistics accumulators (the statistics extension)', () => {
  it('counts executions, images per execution and their run time per batch size, and the last inference time', () => {
    const stats = new ModelStatistics().track('resnet50', '1')
    stats.recordExecution(4, 10, 1_000)
    stats.recordExecution(1, 2.5, 2_000)
    stats.recordExecution(4, 20, 3_000)
    expect(stats.executionCount).toBe(3)
    expect(stats.inferenceCount).toBe(9)
    expect(stats.lastInference).toBe(3_000)
    // Each image of a batch is charged the batch's whole run, as Triton charges each request.
    expect({ ...stats.computeInfer }).toEqual({ count: 9, ns: 4 * 10e6 + 2.5e6 + 4 * 20e6 })
    expect(stats.batches().map((b) => [b.batchSize, b.computeInfer.count, b.computeInfer.ns])).toEqual([
      [1, 1, 2.5e6],
      [4, 2, 30e6]
    ])
    expect(stats.batches().every((b) => b.computeInput.count === 0 && b.computeOutput.count === 0)).toBe(true)
  })

  it('maps the per-image stages: queue, preprocess → compute_input, postprocess → compute_output', () => {
    const stats = new ModelStatistics().track('resnet50', '1')
    stats.recordStage('queue', 1)
    stats.recordStage('queue', 2)
    stats.recordStage('preprocess', 3)
    stats.recordStage('postprocess', 0.25)
    expect({ ...stats.queue }).toEqual({ count: 2, ns: 3e6 })
    expect({ ...stats.computeInput }).toEqual({ count: 1, ns: 3e6 })
    expect({ ...stats.computeOutput }).toEqual({ count: 1, ns: 250_000 })
    stats.recordOutcome(true, 7)
    stats.recordOutcome(false, 1)
    stats.recordOutcome(true, 0)
    expect({ ...stats.success }).toEqual({ count: 2, ns: 7e6 })
    expect({ ...stats.fail }).toEqual({ count: 1, ns: 1e6 })
  })

  it("keeps versions apart: the model's name feeds the version tracked last; forgetting drops figures", () => {
    const all = new ModelStatistics()
    const v1 = all.track('resnet50', '1')
    all.current('resnet50')!.recordExecution(1, 1, 1)
    const v2 = all.track('resnet50', '2')
    all.current('resnet50')!.recordExecution(2, 1, 2)
    expect([v1.inferenceCount, v2.inferenceCount]).toEqual([1, 2])
    expect(all.track('resnet50', '1')).toBe(v1)
    expect(all.version('resnet50', '2')).toBe(v2)
    all.forget('resnet50', '1')
    expect(all.current('resnet50')).toBeUndefined()
    expect(all.version('resnet50', '2')).toBe(v2)
    all.forget('resnet50')
    expect(all.version('resnet50', '2')).toBeUndefined()
    expect(all.current('unknown')).toBeUndefined()
  })

  it('is fed by the metrics hooks and outcome counting, for tracked models only', () => {
    const metrics = new ServiceMetrics({ defaultMetrics: false })
    const stats = metrics.statistics.track('resnet50', '1')
    metrics.events.onBatch('resnet50', 3, 12)
    metrics.events.onStage('resnet50', 'queue', 4)
    metrics.events.onBatch('made-up', 3, 12)
    metrics.recordRequest('resnet50', 'success', 20)
    metrics.recordRequest('resnet50', new ServiceError('BAD_REQUEST'), 1)
    metrics.recordRequest('made-up', 'success', 20)
    expect([stats.executionCount, stats.inferenceCount, stats.queue.count, stats.success.count, stats.fail.count]).toEqual([1, 3, 1, 1, 1])
    expect(metrics.statistics.current('made-up')).toBeUndefined()
  })

  it('counts versions served side by side apart when the hooks and the doors name the version', () => {
    const metrics = new ServiceMetrics({ defaultMetrics: false })
    const v1 = metrics.statistics.track('resnet50', '1')
    const v2 = metrics.statistics.track('resnet50', '2')
    metrics.events.onBatch('resnet50', 2, 5, '1')
    metrics.events.onStage('resnet50', 'queue', 1, '1')
    metrics.events.onBatch('resnet50', 1, 5)
    metrics.recordRequest('resnet50', 'success', 3, '1')
    metrics.recordRequest('resnet50', 'success', 3)
    // A version a client made up (the request failed) finds no statistics, and makes none.
    metrics.recordRequest('resnet50', new ServiceError('MODEL_NOT_FOUND'), 1, '7')
    expect([v1.inferenceCount, v1.queue.count, v1.success.count, v1.fail.count]).toEqual([2, 1, 1, 0])
    expect([v2.inferenceCount, v2.success.count, v2.fail.count]).toEqual([1, 1, 0])
    expect(metrics.statistics.version('resnet50', '7')).toBeUndefined()
    // A version the core runs that was never tracked counts on its own, without taking the name over.
    metrics.events.onBatch('resnet50', 4, 5, '3')
    expect(metrics.statistics.version('resnet50', '3')?.inferenceCount).toBe(4)
    expect(metrics.statistics.current('resnet50')).toBe(v2)
  })
})
