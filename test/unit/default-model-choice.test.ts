import { describe, expect, it } from 'vitest'
import { chooseDefaultModel } from '../../src/repository/default-model.js'

/**
 * The model a request that names none goes to. The synthetic model is a placeholder. Regression:
 * after importing a real model, a request that named no model still went to the synthetic resnet50.
 */

describe('choosing the default model', () => {
  const synthetic = (name: string) => ({ name, synthetic: true })
  const real = (name: string) => ({ name, synthetic: false })

  it('the only real model wins over the synthetic resnet50', () => {
    expect(chooseDefaultModel([synthetic('resnet50'), real('resnet50-tv')], undefined).name).toBe('resnet50-tv')
  })

  it('--default-model always wins', () => {
    expect(chooseDefaultModel([synthetic('resnet50'), real('resnet50-tv')], 'resnet50').name).toBe('resnet50')
  })

  it('several real models: resnet50 if it is one of them, else the first in name order, and the reason says how to choose', () => {
    const many = chooseDefaultModel([real('zoo-101'), real('tv-152'), synthetic('resnet50')], undefined)
    expect(many.name).toBe('tv-152')
    expect(many.reason).toMatch(/--default-model/)
    expect(chooseDefaultModel([real('a'), real('resnet50')], undefined).name).toBe('resnet50')
  })

  it('only synthetic models: resnet50 if loaded, else the first in name order; none: undefined', () => {
    expect(chooseDefaultModel([synthetic('b'), synthetic('resnet50')], undefined).name).toBe('resnet50')
    expect(chooseDefaultModel([synthetic('b'), synthetic('a')], undefined).name).toBe('a')
    expect(chooseDefaultModel([], undefined).name).toBeUndefined()
  })
})
