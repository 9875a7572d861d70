import { ServiceError } from '../errors.js'

/**
 * A trace settings change as each door receives it, made into what TraceSettings.update takes: a
 * map without a prototype (a setting named `__proto__` or `constructor` is a name like any other,
 * refused as unknown), each value as sent, null to clear.
 */

export function traceSettingsChange(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ServiceError('INVALID_TRACE_SETTING', '(the body must be a JSON object of settings, as GET /v2/trace/setting answers them)')
  }
  const changes = Object.create(null) as Record<string, unknown>
  for (const [name, value] of Object.entries(body)) changes[name] = value
  return changes
}

/** TraceSettingRequest.settings as proto-loader decodes it: each setting's values, none to clear. */
export type TraceSettingValues = Readonly<Record<string, { readonly value?: readonly string[] }>>

/**
 * gRPC's settings: a setting with no value is cleared (the global value again, for a model), as in
 * Triton; trace_level keeps its list, every other setting takes its one string.
 */
export function traceSettingsFromMessage(settings: TraceSettingValues): Record<string, unknown> {
  const changes = Object.create(null) as Record<string, unknown>
  for (const [name, { value = [] }] of Object.entries(settings)) {
    changes[name] = value.length === 0 ? null : name === 'trace_level' ? [...value] : value.length === 1 ? value[0] : [...value]
  }
  return changes
}
