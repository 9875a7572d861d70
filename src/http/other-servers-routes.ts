/**
 * Paths TorchServe and KServe's V1 protocol answer, and where each is here. A client written for
 * them meets a 404 first; its message then says which route does the same (the route itself is not
 * taken: the answers' shapes differ, and a client that got 200 would misread them).
 */
const OTHER_SERVERS_ROUTES: ReadonlyArray<{ readonly path: RegExp; readonly here: (model: string) => string }> = [
  {
    // TorchServe's inference API: POST or PUT (curl -T) /predictions/{model}[/{version}].
    path: /^\/predictions\/([^/]+)(?:\/[^/]+)?\/?$/,
    here: (m) =>
      `TorchServe's /predictions/${m} is POST /classify?model=${m} here, the image as the raw body (content-type image/jpeg; curl --data-binary @kitten.jpg, as curl -T sends PUT), or POST /v2/models/${m}/infer.`
  },
  { path: /^\/ping\/?$/, here: () => "TorchServe's /ping is GET /health/ready here (/health/live for liveness)." },
  {
    // KServe's V1 protocol (and TensorFlow Serving's REST API): {"instances": [...]} in, {"predictions": [...]} out.
    path: /^\/v1\/models\/([^/:]+):predict$/,
    here: (m) =>
      `KServe V1's :predict is POST /v1/models/${m}:classify here, with the same {"instances": [{"b64": "…"}]} body, or the Open Inference Protocol's POST /v2/models/${m}/infer.`
  },
  {
    path: /^\/v1\/models\/([^/:]+)\/?$/,
    here: (m) => `KServe V1's model status is GET /v2/models/${m} (metadata) and GET /v2/models/${m}/ready here.`
  }
]

const KSERVE_V1_PATH = /^\/v1\/models\/[^/:?]+(?::predict|\/)?(?:\?|$)/

/**
 * Whether the path is one of KServe V1's (`/v1/models/{m}:predict`, `/v1/models/{m}`): its 404 is
 * answered in KServe's error shape, `{"error": …}` as exactly application/json, the one the KServe
 * SDK's V1 client reads its message from (it showed none of the door's shape).
 */
export function isKServeV1Path(url: string | undefined): boolean {
  return url !== undefined && KSERVE_V1_PATH.test(url)
}

/** Where a path of TorchServe or KServe V1 is here, for the 404's message; undefined for other paths. */
export function otherServersRoute(url: string): string | undefined {
  const path = url.split('?', 1)[0]!
  for (const route of OTHER_SERVERS_ROUTES) {
    const match = route.path.exec(path)
    if (match !== null) return route.here(safeName(match[1] ?? ''))
  }
  return undefined
}

/** A model name as echoed in a message: decoded, at most 64 characters, nothing but a name's characters. */
function safeName(raw: string): string {
  let name = raw
  try {
    name = decodeURIComponent(raw)
  } catch {
    // left as sent
  }
  return /^[A-Za-z0-9._-]{1,64}$/.test(name) ? name : '{model}'
}
