#!/usr/bin/env bash
# The Kubernetes manifests run for real: `podman kube play` of deploy/kubernetes/deployment.yaml
# (with its initContainer and emptyDir volumes) and the ports of service.yaml, on the image CI built.
# Run by scripts/container-check.sh after the image check, with the same podman configuration.
#
# What podman 4.3 (Debian bookworm) does not do, and what this script does in its place:
#   - Services are not played: their ports are published as hostPorts on 127.0.0.1
#     (scripts/kube-play-manifest.ts writes the play file; it lists every change it makes).
#   - startupProbe and readinessProbe are ignored, and livenessProbe becomes a podman health check
#     that runs curl (not in the image) on port 0 (a named port is not resolved) from a systemd timer
#     (none here). So this script is the kubelet: it polls the manifest's own probe paths through the
#     published port, within the startupProbe's budget (periodSeconds x failureThreshold).
#   - `podman kube down` stops the containers without a grace period (SIGKILL at once: exit code 137,
#     no drain) and terminationGracePeriodSeconds is ignored. So the script stops the server container
#     as the kubelet does, SIGTERM and up to terminationGracePeriodSeconds, checks the drain through
#     the published port while it runs, and then `podman kube down` removes the pod.
#
# Usage: IMAGE=localhost/app:ci bash scripts/kube-play-check.sh   (root; podman configured as by
#        ../shared/container/build-and-run.sh: CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, TMPDIR)
# Env: CT_WORKDIR (/tmp/ct), KUBE_HTTP_PORT (18191; gRPC on the next port).
set -euo pipefail
cd "$(dirname "$0")/.."
W=${CT_WORKDIR:-/tmp/ct}
IMAGE=${IMAGE:-localhost/app:ci}
HTTP_PORT=${KUBE_HTTP_PORT:-18191}
GRPC_PORT=$((HTTP_PORT + 1))
PLAY=$W/kube-play.yaml
PHOTO=test/fixtures/photos/chelsea.jpg
t0=$(date +%s)
step() { echo "[kube-play-check $(($(date +%s) - t0))s] $*"; }
ctr=
fail() {
  echo "kube-play-check FAILED: $*" >&2
  [ -n "$ctr" ] && podman logs "$ctr" 2>&1 | tail -30 >&2
  exit 1
}
down() { podman kube down "$PLAY" >/dev/null 2>&1 || true; }
http_code() { curl -s --noproxy '*' -o /dev/null -w '%{http_code}' "$@" || true; }

step "play file from deploy/kubernetes/deployment.yaml + service.yaml, image $IMAGE"
eval "$(node_modules/.bin/tsx scripts/kube-play-manifest.ts --image "$IMAGE" --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" --out "$PLAY")"
down
trap down EXIT

step "podman kube play (the initContainer builds the model into the emptyDir, then the server starts)"
podman kube play "$PLAY" >"$W/kube-play.log" 2>&1 || { cat "$W/kube-play.log" >&2; fail "podman kube play failed"; }
pod=$(awk '/^Pod:/ { getline; print; exit }' "$W/kube-play.log")
[ -n "$pod" ] || { cat "$W/kube-play.log" >&2; fail "podman kube play reported no pod"; }
ctr=$(podman ps -a --filter "pod=$pod" --format '{{.Names}}' | grep -- "-$KP_CONTAINER\$" || true)
[ -n "$ctr" ] || fail "no container named *-$KP_CONTAINER in pod $pod"

# The startupProbe, then the readinessProbe and livenessProbe, as the kubelet would run them.
s=$(date +%s)
deadline=$((s + KP_STARTUP_SECONDS))
until [ "$(http_code "$KP_STARTUP_URL")" = 200 ]; do
  [ "$(podman inspect -f '{{.State.Status}}' "$ctr")" != exited ] || fail "the server container exited before it was ready"
  [ "$(date +%s)" -lt "$deadline" ] || fail "startupProbe: not ready after $KP_STARTUP_SECONDS s"
  sleep 1
done
step "ready through the manifest's startupProbe after $(($(date +%s) - s)) s"
[ "$(http_code "$KP_READY_URL")" = 200 ] || fail "readinessProbe $KP_READY_URL is not 200"
[ "$(http_code "$KP_LIVE_URL")" = 200 ] || fail "livenessProbe $KP_LIVE_URL is not 200"
[ "$(podman exec "$ctr" id -u)" != 0 ] || fail "the server runs as root"
podman exec "$ctr" test -s /models/resnet50/model.onnx || fail "the initContainer did not fill /models"

status=$(curl -sS --noproxy '*' -o "$W/kube-classify.json" -w '%{http_code}' -H 'content-type: image/jpeg' \
  --data-binary "@$PHOTO" "http://127.0.0.1:$HTTP_PORT/classify")
[ "$status" = 200 ] || fail "POST /classify through the Service's port answered $status: $(cat "$W/kube-classify.json")"
node -e '
  const a = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))
  if (!Array.isArray(a.predictions) || a.predictions.length !== 5) { console.error("unexpected answer:", JSON.stringify(a)); process.exit(1) }
  console.log(`classify through the Service port: 200, top-1 "${a.predictions[0].label}", synthetic ${a.synthetic}`)
' "$W/kube-classify.json" || fail "bad /classify answer"
timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$GRPC_PORT" || fail "the Service's gRPC port does not accept connections"

step "SIGTERM with terminationGracePeriodSeconds ($KP_GRACE_SECONDS s), as the kubelet stops a pod"
s=$(date +%s%N)
podman stop -t "$KP_GRACE_SECONDS" "$ctr" >/dev/null &
stopper=$!
ready=
for _ in $(seq 50); do
  ready=$(http_code "$KP_READY_URL")
  [ "$ready" = 503 ] && break
  sleep 0.1
done
[ "$ready" = 503 ] || fail "readiness answered $ready during the drain, want 503"
live=$(http_code "$KP_LIVE_URL")
during=$(http_code -H 'content-type: image/jpeg' --data-binary "@$PHOTO" "http://127.0.0.1:$HTTP_PORT/classify")
echo "during the drain's grace period: readiness $ready, liveness $live, POST /classify $during"
[ "$live" = 200 ] && [ "$during" = 200 ] || fail "the server stopped serving during the grace period"
wait "$stopper"
rc=$(podman inspect -f '{{.State.ExitCode}}' "$ctr")
echo "stopped in $((($(date +%s%N) - s) / 1000000)) ms, exit code $rc"
logs=$(podman logs "$ctr" 2>&1)
grep -q '"msg":"draining: readiness answers 503' <<<"$logs" || fail "no drain in the logs"
grep -q '"msg":"stopped"' <<<"$logs" || fail "no 'stopped' log line"
[ "$rc" = 0 ] || fail "exit code $rc after SIGTERM, want 0"
grep -o '"msg":"[^"]*"' <<<"$logs" | tail -4

step "podman kube down"
podman kube down "$PLAY" >/dev/null || fail "podman kube down failed"
ctr=
trap - EXIT
step "done"
