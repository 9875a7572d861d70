#!/usr/bin/env bash
# One request per door against the service on this host, with its whole log kept ($OUT/smoke-server.log):
# the check before the suite, and what to read when the suite says a door failed.
set -uo pipefail
out=${OUT:-load/results/gpu}
repo=${GPU_REPOSITORY:-/tmp/gpu-models}
port=${SMOKE_PORT:-18080}
mkdir -p "$out"
node dist/src/main.js --model-repository "$repo" --provider "${GPU_PROVIDER:-cuda}" --sessions-per-model "${GPU_SESSIONS:-2}" \
  --host 127.0.0.1 --port "$port" --grpc-port 0 --log-level info >"$out/smoke-server.log" 2>&1 &
pid=$!
for _ in $(seq 1 240); do
  curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.5
done
for model in resnet50 resnet50-u8-fp16; do
  echo "== /classify ?model=$model"
  curl -s -m 60 -w ' -> %{http_code}\n' -H 'content-type: image/jpeg' --data-binary @test/fixtures/photos/chelsea.jpg \
    "http://127.0.0.1:$port/classify?model=$model" | cut -c1-400
done
echo "== 16 at once"
for _ in $(seq 1 16); do curl -s -m 60 -o /dev/null -w '%{http_code} ' -H 'content-type: image/jpeg' \
  --data-binary @test/fixtures/photos/chelsea.jpg "http://127.0.0.1:$port/classify" & done; wait -n 2>/dev/null; sleep 3; echo
kill -0 "$pid" 2>/dev/null && echo "server alive" || { wait "$pid"; echo "server exited with $?"; }
kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
echo "== server log (last 40 lines)"; tail -n 40 "$out/smoke-server.log" | cut -c1-600
