#!/usr/bin/env bash
# Container check for CI: build the Dockerfile unmodified and serve a real photo from the container.
#
# 1. The shared registry-free recipe (../shared/container/build-and-run.sh) builds the base images
#    and the project's Dockerfile, starts it and waits for /health/ready, then stops it. It has no
#    hook between run and stop, and it reports the exit code after SIGTERM without judging it (137:
#    its `podman stop -t 10` ends at the drain's 10 s grace period, before the drain itself).
# 2. So this script then runs the image it built again, with the same podman configuration (the
#    files that script wrote under CT_WORKDIR: runc, ulimits it can grant, cgroupfs), and checks
#    what a deployment relies on: non-root user, HEALTHCHECK that passes, /models volume filled with
#    the synthetic default model, POST /classify with a real JPEG (200, 5 predictions, synthetic),
#    the gRPC port when the image has the gRPC door, and `podman stop` (SIGTERM) ending with exit 0.
# 3. scripts/kube-play-check.sh runs deploy/kubernetes/deployment.yaml with the Service's ports on
#    that image under `podman kube play`, through its probes and its drain.
# 4. Dockerfile.cuda cannot be built here (no CUDA base image, no NuGet). Unless
#    CONTAINER_CHECK_CUDA=0, it is built with stand-ins (the Debian base for the CUDA one,
#    ONNXRUNTIME_NODE_INSTALL=skip) and started with --provider cpu: everything in it but CUDA.
#
# Usage: bash scripts/container-check.sh          (root; needs podman buildah runc debootstrap curl)
# Env: SHARED_DIR (../shared), CT_WORKDIR (/tmp/ct, keeps base images between runs), CHECK_PORT (18091).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED_DIR=${SHARED_DIR:-../shared}
export CT_WORKDIR=${CT_WORKDIR:-/tmp/ct}
W=$CT_WORKDIR
HTTP_PORT=${CHECK_PORT:-18091}
GRPC_PORT=$((HTTP_PORT + 1))
PHOTO=test/fixtures/photos/chelsea.jpg
NAME=resnet-serve-check
t0=$(date +%s)
step() { echo "[container-check $(($(date +%s) - t0))s] $*"; }
fail() { echo "container-check FAILED: $*" >&2; podman logs "$NAME" 2>&1 | tail -30 >&2 || true; exit 1; }

# The recipe lives beside the project's CI checkout; a clone elsewhere (a contributor running
# .ci/run) has none, and the tests that follow must still run.
if [ ! -f "$SHARED_DIR/container/build-and-run.sh" ]; then
  echo "container-check SKIPPED: $SHARED_DIR/container/build-and-run.sh not found (set SHARED_DIR to the shared container recipe)" >&2
  exit 0
fi
step "shared build-and-run (base images, build, health, stop)"
APP_PORT=8080 HEALTH_PATH=/health/ready bash "$SHARED_DIR/container/build-and-run.sh" . Dockerfile

export CONTAINERS_STORAGE_CONF=$W/storage.conf CONTAINERS_CONF=$W/containers.conf TMPDIR=$W/tmp
IMAGE=localhost/app:ci
cleanup() { podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT

step "image metadata"
user=$(podman image inspect -f '{{.Config.User}}' "$IMAGE")
[ -n "$user" ] && [ "$user" != root ] && [ "$user" != 0 ] || fail "image runs as '${user:-root}', want a non-root user"
ports=$(podman image inspect -f '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}' "$IMAGE")
for p in 8080/tcp 9000/tcp; do [[ " $ports" == *" $p "* ]] || fail "port $p not exposed (exposed: $ports)"; done
podman image inspect -f '{{range $v, $_ := .Config.Volumes}}{{$v}} {{end}}' "$IMAGE" | grep -qw /models || fail "/models is not a volume"
health=$(podman image inspect -f '{{json .Config.Healthcheck}}' "$IMAGE")
[[ "$health" == *health/ready* ]] || fail "no HEALTHCHECK on /health/ready (got $health); was it built with --format docker?"
echo "user=$user ports=$ports healthcheck ok"

# Waits for /health/ready on $1 (host port), at most $2 seconds.
wait_ready() {
  local deadline=$(($(date +%s) + $2))
  until curl -fs --noproxy '*' -o /dev/null "http://127.0.0.1:$1/health/ready"; do
    [ "$(podman inspect -f '{{.State.Running}}' "$NAME")" = true ] || fail "container exited before it was ready"
    [ "$(date +%s)" -lt "$deadline" ] || fail "not ready after $2 s"
    sleep 0.5
  done
}

# Stops the container (SIGTERM, then SIGKILL after $1 s) and fails unless it exited 0 by itself.
stop_expect_zero() {
  local s=$(date +%s%N)
  podman stop -t "$1" "$NAME" >/dev/null
  local rc; rc=$(podman inspect -f '{{.State.ExitCode}}' "$NAME")
  echo "stopped in $((($(date +%s%N) - s) / 1000000)) ms, exit code $rc"
  # Captured first: grep -q closing the pipe early would make pipefail report a SIGPIPE'd podman.
  local logs; logs=$(podman logs "$NAME" 2>&1)
  grep -q '"msg":"stopped"' <<<"$logs" || fail "no 'stopped' log line: SIGTERM was not handled by the service"
  [ "$rc" = 0 ] || fail "exit code $rc after SIGTERM, want 0"
  podman rm "$NAME" >/dev/null
}

step "run (anonymous /models volume: the default model is built at start)"
cleanup
# --no-healthcheck: podman's timer for it needs systemd; the same command is run by hand below.
podman run -d --pull=never --no-healthcheck --name "$NAME" \
  -p "127.0.0.1:$HTTP_PORT:8080" -p "127.0.0.1:$GRPC_PORT:9000" "$IMAGE" >/dev/null
s=$(date +%s)
wait_ready "$HTTP_PORT" 180
step "ready after $(($(date +%s) - s)) s"

# The image's own HEALTHCHECK command, run inside the container as the runtime would.
mapfile -d '' hc_args < <(podman image inspect -f '{{json .Config.Healthcheck.Test}}' "$IMAGE" | node -e '
  const test = JSON.parse(require("fs").readFileSync(0, "utf8"))
  if (test[0] !== "CMD") { console.error("HEALTHCHECK is not in exec form:", test); process.exit(1) }
  process.stdout.write(test.slice(1).join("\0"))')
[ "${#hc_args[@]}" -gt 0 ] || fail "HEALTHCHECK is not in exec form (CMD [...])"
podman exec "$NAME" "${hc_args[@]}" || fail "the image's HEALTHCHECK command failed on a ready server"
[ "$(podman exec "$NAME" id -u)" != 0 ] || fail "process runs as root"
podman exec "$NAME" test -s /models/resnet50/model.onnx || fail "no default model in /models"

status=$(curl -sS --noproxy '*' -o "$W/classify.json" -w '%{http_code}' -H 'content-type: image/jpeg' \
  --data-binary "@$PHOTO" "http://127.0.0.1:$HTTP_PORT/classify")
[ "$status" = 200 ] || fail "POST /classify answered $status: $(cat "$W/classify.json")"
node -e '
  const a = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))
  const p = a.predictions ?? []
  const ok = a.synthetic === true && p.length === 5 && p.every((x, i) => typeof x.label === "string" &&
    x.probability > 0 && x.probability <= 1 && (i === 0 || p[i - 1].probability >= x.probability))
  if (!ok) { console.error("unexpected /classify answer:", JSON.stringify(a)); process.exit(1) }
  console.log(`classify: 200, ${p.length} predictions, synthetic, top-1 "${p[0].label}" ${p[0].probability.toFixed(3)}, ${a.timings.totalMs.toFixed(0)} ms`)
' "$W/classify.json" || fail "bad /classify answer"

# The gRPC door listens on 9000 once it exists in the image; before that there is nothing to check.
if podman exec "$NAME" test -e dist/src/grpc/server.js; then
  timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$GRPC_PORT" || fail "gRPC port 9000 does not accept connections"
  echo "gRPC port accepts connections"
else
  echo "no gRPC door in this image (dist/src/grpc/server.js): port 9000 not checked"
fi

step "podman stop (SIGTERM)"
stop_expect_zero 30

# The Kubernetes manifests on the same image: deploy/kubernetes/deployment.yaml and the Service's
# ports under `podman kube play`, ready through the manifest's own probes, a photo classified, and
# the drain on SIGTERM (scripts/kube-play-check.sh says what podman 4.3 does not emulate and what it
# does instead). CONTAINER_CHECK_KUBE=0 skips it.
if [ "${CONTAINER_CHECK_KUBE:-1}" != 0 ]; then
  step "podman kube play of deploy/kubernetes (Deployment with its initContainer and volumes, Service ports)"
  IMAGE=$IMAGE KUBE_HTTP_PORT=$((HTTP_PORT + 100)) bash scripts/kube-play-check.sh || fail "the manifests did not run under podman kube play"
fi

if [ "${CONTAINER_CHECK_CUDA:-1}" != 0 ]; then
  step "Dockerfile.cuda with stand-ins (Debian base, no CUDA provider), started with --provider cpu"
  podman build -q --pull=never --format docker -f Dockerfile.cuda \
    --build-arg CUDA_IMAGE=localhost/debian:bookworm --build-arg ONNXRUNTIME_NODE_INSTALL=skip \
    -t localhost/app:ci-cuda . >"$W/build-cuda.log" 2>&1 || { tail -40 "$W/build-cuda.log"; fail "Dockerfile.cuda did not build"; }
  cleanup
  podman run -d --pull=never --no-healthcheck --name "$NAME" -p "127.0.0.1:$HTTP_PORT:8080" \
    localhost/app:ci-cuda --provider cpu >/dev/null
  s=$(date +%s)
  wait_ready "$HTTP_PORT" 180
  [ "$(podman exec "$NAME" id -u)" != 0 ] || fail "CUDA image runs as root"
  step "CUDA image (stand-in) ready after $(($(date +%s) - s)) s"
  stop_expect_zero 30
fi
step "done; disk under $W: $(du -sh "$W" | cut -f1)"
