import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readModelFolder } from '../../src/repository/repository.js'

/**
 * A config.json is checked as a whole: every problem in one message, each with its fix.
 * Regression: only the first was reported, so a config with four mistakes took four restarts.
 */

const VALID = {
  synthetic: false,
  input: { name: 'input', layout: 'NCHW' },
  output: { name: 'logits' },
  preprocess: { resize: 256, crop: 224, colorOrder: 'RGB', scale: 1 / 255, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
  batching: {}
}

let root: string
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'config-problems-'))
})
afterAll(async () => {
  await rm(root, { recursive: true, force: true })
})

async function problemsOf(name: string, config: unknown): Promise<string> {
  await mkdir(join(root, name), { recursive: true })
  await writeFile(join(root, name, 'config.json'), JSON.stringify(config))
  return readModelFolder(root, name).then(
    () => 'no problem',
    (err: Error) => err.message
  )
}

describe('config.json problems', () => {
  it('a valid config passes', async () => {
    expect(await problemsOf('valid', VALID)).toBe('no problem')
  })

  it('several problems are reported together, each with its fix', async () => {
    const message = await problemsOf('several', {
      ...VALID,
      input: { name: 'input', layout: 'NCHW', datatype: 'uint8' },
      preprocess: { ...VALID.preprocess, crop: 300, mean: [0.5, 0.5] },
      batching: { maxBatchSize: '16' }
    })
    expect(message).toMatch(/several[/\\]config\.json: has 4 problems:/)
    expect(message).toContain('1. preprocess.mean must be three numbers (got [0.5,0.5]). Fix: Give exactly three numbers')
    expect(message).toMatch(/2\. \/batching\/maxBatchSize: .* \(got "16"\)\. Fix: batching takes maxBatchSize/)
    expect(message).toContain('3. preprocess.crop (300) is larger than preprocess.resize (256). Fix: Use a crop no larger')
    expect(message).toContain('4. input.datatype uint8 needs input.layout NHWC (raw pixels as decoded). Fix: Set input.layout to "NHWC"')
  })

  it('a word outside its choices is told the choices (regression: "Expected union value")', async () => {
    const message = await problemsOf('choices', {
      ...VALID,
      output: { name: 'logits', kind: 'softmax' },
      preprocess: { ...VALID.preprocess, colorOrder: 'rgb' }
    })
    expect(message).toContain('/output/kind: must be one of "logits", "probabilities" (got "softmax")')
    expect(message).toContain('/preprocess/colorOrder: must be one of "RGB", "BGR" (got "rgb")')
    expect(message).not.toContain('union')
  })

  it('one problem keeps the one-line form', async () => {
    const message = await problemsOf('one', { ...VALID, preprocess: { ...VALID.preprocess, std: [1, 0, 1] } })
    expect(message).toMatch(
      /one[/\\]config\.json: preprocess\.std must be three positive numbers \(got \[1,0,1\]\)\. Fix: .*1 for channels/
    )
  })

  it('regression: a negative std and version "0" were accepted; both are refused with the config path', async () => {
    const negative = await problemsOf('negative-std', { ...VALID, preprocess: { ...VALID.preprocess, std: [-1, 1, 1] } })
    expect(negative).toMatch(/negative-std[/\\]config\.json: preprocess\.std must be three positive numbers \(got \[-1,1,1\]\)/)
    for (const version of ['0', '01', 'v2']) {
      const message = await problemsOf(`version-${version}`, { ...VALID, version })
      expect(message).toMatch(
        new RegExp(`version-${version}[/\\\\]config\\.json: version must be a positive whole number without leading zeros`)
      )
      expect(message).toContain(`(got "${version}")`)
    }
    expect(await problemsOf('version-12', { ...VALID, version: '12' })).toBe('no problem')
  })

  it('regression: constants a normalised pixel overflows float32 with were accepted, and every image then answered 500', async () => {
    const cases: Array<[string, Record<string, unknown>, RegExp]> = [
      ['huge-scale', { scale: 1e39 }, /preprocess scale 1e\+39 is beyond float32/],
      ['huge-mean', { mean: [1e300, 0, 0] }, /preprocess mean 1e\+300 is beyond float32/],
      [
        'tiny-std',
        { std: [1e-45, 1e-45, 1e-45] },
        /preprocess scale 0\.00392\d*, mean 0\.485 and std 1e-45: a pixel normalised with it is not a finite float32/
      ],
      ['overflowing-pixel', { scale: 1e37, std: [0.01, 1, 1] }, /preprocess scale 1e\+37, mean 0\.485 and std 0\.01/]
    ]
    for (const [name, preprocess, message] of cases) {
      expect(await problemsOf(name, { ...VALID, preprocess: { ...VALID.preprocess, ...preprocess } }), name).toMatch(message)
    }
    // Large but finite everywhere (the caffe preset's 0–255 range, a std of 1e-3) stays accepted.
    const wide = { ...VALID, preprocess: { ...VALID.preprocess, scale: 1, mean: [103.9, 116.8, 123.7], std: [1e-3, 1, 1] } }
    expect(await problemsOf('wide', wide)).toBe('no problem')
  })
})
