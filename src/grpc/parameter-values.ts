/**
 * Parameter messages (InferParameter, ModelRepositoryParameter) hold their value in a oneof;
 * proto-loader (`oneofs: true`) names the field that is set in `parameter_choice`.
 */
export interface OneofParameter {
  readonly parameter_choice?: string
}

/** The value of whichever of the oneof's fields is set; undefined when none is. */
export function parameterValue(parameter: OneofParameter | undefined): unknown {
  return parameter?.parameter_choice === undefined ? undefined : (parameter as Record<string, unknown>)[parameter.parameter_choice]
}

/** A parameters map's values as plain numbers, strings, booleans or bytes; undefined when empty. */
export function parameterValues(parameters: Readonly<Record<string, OneofParameter>>): Record<string, unknown> | undefined {
  let values: Record<string, unknown> | undefined
  for (const name in parameters) {
    values ??= {}
    values[name] = parameterValue(parameters[name])
  }
  return values
}
