import { defineConfig } from 'vitest/config'

/**
 * Tests in tiers, one folder each (`npm run test:<tier>`; `npm test` runs them all):
 *   test/unit         no model, no server: the inner loop, seconds
 *   test/integration  the real synthetic ResNet-50 and real servers on port 0
 *   test/system       processes, Python, a browser: the service as users and other tools meet it
 *   test/stress       timing and memory under load, each file stating its tolerance
 */
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Real ONNX Runtime sessions on 2 cores: files run one at a time so timings and memory stay sane.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 300_000
  }
})
