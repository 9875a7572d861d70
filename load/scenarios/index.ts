import { modelUnderTest, type PlanScenario, type ScenarioPlan, type SuiteOptions } from '../kit/scenario-plan.js'
import { batchPlan } from './batch.js'
import { classifyPlan } from './classify.js'
import { grpcPlan } from './grpc.js'
import { v2Plan } from './v2.js'

/**
 * The load suite's scenarios by name: one door each, against the float32 model, (names ending in
 * uint8) its UINT8-prologue variant, or (classify-exact) the float32 model with `preprocess.decode:
 * "exact"`, the decode that is not the default. Ratios are taken against the raw session of the same model.
 */
const PLANS = {
  classify: classifyPlan,
  'classify-uint8': classifyPlan,
  'classify-exact': classifyPlan,
  batch: batchPlan,
  'v2-fp32': v2Plan,
  'v2-uint8': v2Plan,
  'grpc-fp32': grpcPlan,
  'grpc-uint8': grpcPlan
} as const satisfies Record<string, PlanScenario>

/** The float model's twin with `preprocess.decode: "exact"`, which the suite writes when it is missing. */
export function exactDecodeModel(floatModel: string): string {
  return `${floatModel}-exact`
}

export type ScenarioName = keyof typeof PLANS
export const SCENARIO_NAMES = Object.keys(PLANS) as ScenarioName[]

/** The scenario's plan, or why it cannot run (its model is not in the repository). */
export async function planScenario(name: ScenarioName, options: SuiteOptions): Promise<ScenarioPlan | string> {
  const uint8 = name.endsWith('uint8')
  const modelName = uint8 ? options.uint8Model : name === 'classify-exact' ? exactDecodeModel(options.floatModel) : options.floatModel
  const model = await modelUnderTest(options.repository, modelName)
  if (model === undefined)
    return `no model "${modelName}" in ${options.repository}${uint8 ? ' (build the UINT8 prologue variant first)' : ''}`
  return PLANS[name](name, model, options)
}
