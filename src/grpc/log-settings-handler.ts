import { ServiceError } from '../errors.js'
import type { LogSettings, LogSettingsView } from '../log-settings.js'
import { parameterValue, type OneofParameter } from './parameter-values.js'

/**
 * LogSettings (Triton's logging extension) over gRPC: the settings the request's map names are
 * changed, and the answer holds all of them, each in the oneof field of its type (a boolean as
 * bool_param, the verbose level as uint32_param, the file and format as string_param), as
 * tritonclient's update_log_settings sends and get_log_settings reads them.
 */

/** LogSettingsRequest as proto-loader decodes it (`oneofs: true`). */
export interface LogSettingsRequestMessage {
  readonly settings: Readonly<Record<string, OneofParameter>>
}

type SettingValue = { bool_param: boolean } | { uint32_param: number } | { string_param: string }

export interface LogSettingsResponseMessage {
  settings: Record<string, SettingValue>
}

/** Which oneof field each setting travels in. */
const FIELD: Readonly<Record<keyof LogSettingsView, 'bool_param' | 'uint32_param' | 'string_param'>> = {
  log_file: 'string_param',
  log_info: 'bool_param',
  log_warning: 'bool_param',
  log_error: 'bool_param',
  log_verbose_level: 'uint32_param',
  log_format: 'string_param'
}

function message(view: LogSettingsView): LogSettingsResponseMessage {
  const settings: Record<string, SettingValue> = {}
  for (const [name, value] of Object.entries(view)) settings[name] = { [FIELD[name as keyof LogSettingsView]]: value } as SettingValue
  return { settings }
}

export function logSettingsReply(logSettings: LogSettings, request: LogSettingsRequestMessage): LogSettingsResponseMessage {
  // Without a prototype, a setting named __proto__ is a name like any other, refused as unknown as on REST.
  const changes: Record<string, unknown> = Object.create(null) as Record<string, unknown>
  for (const [name, parameter] of Object.entries(request.settings)) {
    // A value in another field than its setting's type (a verbose level sent as a string) is
    // refused as REST refuses the wrong JSON type; a value with no field set changes nothing.
    const field = Object.hasOwn(FIELD, name) ? FIELD[name as keyof LogSettingsView] : undefined
    const given = parameter.parameter_choice
    if (field !== undefined && given !== undefined && given !== field) {
      throw new ServiceError('INVALID_LOG_SETTING', `(${name} travels in ${field}, got ${given})`)
    }
    changes[name] = parameterValue(parameter) ?? null
  }
  return message(logSettings.update(changes))
}
