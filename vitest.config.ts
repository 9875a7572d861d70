import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Real ONNX Runtime sessions on 2 cores: files run one at a time so timings and memory stay sane.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 300_000,
  }
})
