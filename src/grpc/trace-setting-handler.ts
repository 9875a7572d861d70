import type { ClassifyService } from '../core/classify-service.js'
import type { TraceSettingsView } from '../trace/trace-settings.js'
import { traceSettingsFromMessage, type TraceSettingValues } from '../trace/trace-setting-request.js'

/**
 * TraceSetting (Triton's trace extension) over gRPC: the settings the request's map names are
 * changed, globally or for `model_name`, and the answer holds all of them, each as a list of
 * strings (tritonclient's update_trace_settings / get_trace_settings). A request that names no
 * setting only reads them: it is what get_trace_settings(model_name) sends.
 */

/** TraceSettingRequest as proto-loader decodes it. */
export interface TraceSettingRequestMessage {
  readonly settings: TraceSettingValues
  readonly model_name: string
}

export interface TraceSettingResponseMessage {
  settings: Record<string, { value: string[] }>
}

function message(view: TraceSettingsView): TraceSettingResponseMessage {
  const settings: Record<string, { value: string[] }> = {}
  for (const [name, value] of Object.entries(view)) settings[name] = { value: Array.isArray(value) ? value : [value as string] }
  return { settings }
}

export async function traceSettingReply(
  service: ClassifyService,
  request: TraceSettingRequestMessage
): Promise<TraceSettingResponseMessage> {
  const model = request.model_name === '' ? undefined : request.model_name
  if (model !== undefined) await service.checkModelName(model)
  return message(service.tracer.settings.update(traceSettingsFromMessage(request.settings), model))
}
