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

/**
 * A parameters map's values as plain numbers, strings, booleans or bytes; undefined when empty.
 * Each name becomes an own property, as JSON.parse makes them on REST: one named `__proto__` is a
 * parameter like any other (refused where unknown), not the object's prototype.
 */
export function parameterValues(parameters: Readonly<Record<string, OneofParameter>>): Record<string, unknown> | undefined {
  const entries = Object.entries(parameters)
  if (entries.length === 0) return undefined
  return Object.fromEntries(entries.map(([name, parameter]) => [name, parameterValue(parameter)])) as Record<string, unknown>
}
