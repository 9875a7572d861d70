import { execFile } from 'node:child_process'
import { readdir } from 'node:fs/promises'
import { promisify } from 'node:util'
import { afterAll, expect, it } from 'vitest'
import { removeTempDirs, tempDir } from '../helpers/tiny-model.js'

/** `npm run model:build` as an initContainer or CI runs it: its output goes to a pipe, not a terminal. */

const run = promisify(execFile)

afterAll(removeTempDirs)

it('writes its progress a line at a time when stderr is not a terminal (regression: carriage returns joined every step into one log line)', async () => {
  const repository = await tempDir('rs-model-build-')
  const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', 'src/cli/model-build.ts', '--repository', repository])
  expect(stderr).not.toContain('\r')
  const lines = stderr.trim().split('\n')
  // A line a quarter or so (the weights come in layers), rising, ending at 100%.
  expect(lines.length).toBeGreaterThanOrEqual(2)
  expect(lines.length).toBeLessThanOrEqual(5)
  const percents = lines.map((line) => Number(/^resnet50: (\d+)%$/.exec(line)?.[1]))
  expect(percents).toEqual([...percents].sort((a, b) => a - b))
  expect(percents.at(-1)).toBe(100)
  expect(stdout).toMatch(/^resnet50: ResNet-50 v1\.5?, seed \d+, 25,557,032 parameters/m)
  expect(await readdir(repository)).toEqual(['resnet50'])
}, 60_000)
