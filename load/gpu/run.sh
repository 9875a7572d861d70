#!/usr/bin/env bash
# The load suite on the GPU host; writes everything under $OUT. In the project root, after
# `bash .gpu/a/device.sh a`, `bash .gpu/b/device.sh b`, `source .gpu/b/device.sh env`:
#
#   bash load/gpu/run.sh [models|raw|suite|fp16|firstrun|queuedelay|ladder|doors|all ...]   (default all; parts run in the order below)
#
# Parts, so that each device command stays under its 10-minute limit if one run of all does not:
#   models  the synthetic ResNet-50 and its variants -u8, -fp16, -u8-fp16 (UINT8 prologue, FP16)
#   raw     the raw sessions alone: the four models at batch 256, 1 and 2 batches in flight
#           (the GPU target: -u8-fp16 with two or more in flight >= 8,500 images/s)
#   suite   every door against --provider cuda with the FP32 models, report with charts
#   fp16    /classify, /v2 and gRPC with the UINT8+FP16 model (the fastest path), its own report; the
#           service's defaults on CUDA: each session one fixed batch size (16 and GPU_MAX_BATCH)
#   firstrun  the first runs of each batch size on one session (what warm-up must cover), then every size
#           shuffled on one session and on two side by side (what slows runs in the service), first-run.md
#   queuedelay  /classify with the batcher's maxQueueDelayMs 0 against 5 ms in paired rounds (-u8-fp16
#           model, GPU_CONCURRENCY, 2 rounds of GPU_DURATION), queue-delay.md; not part of all (~3 min)
#   ladder  /v2 UINT8 as in fp16 but with batching.fixedShapes false (every session pads to the ladder
#           1, 2, 3, 4, 6, 8, …, as in the 2026-11-30 run): what fixed shapes changed; not part of all (~1 min)
#   doors   the most the doors answer on this host, one UINT8 image per request to a model that runs in
#           microseconds (npm run load:doors), beside fastify and grpc-js with nothing behind them: the
#           ceiling of /v2 and gRPC with one image per request whatever the GPU does, and of /v2 with the
#           image as JSON numbers (parsed in up to four worker threads); not part of all (~1.5 min)
# Send dist/ in the checkout (run's carry: [".gpu/b", "dist"]): linked from the archive in /tmp it
# misses the checkout's data/ and the service could not be reached (first GPU run, docs/gpu-report.md).
# Run `firstrun fp16` first on a new host: firstrun shows whether a change of batch size costs time
# per run (the reason for fixed shapes, src/core/run-sizes.ts), fp16 measures the targets with them.
# Estimated on the CPU dry run: all is ~7-8 minutes. With 15 device minutes, run
# `bash load/gpu/run.sh firstrun fp16 raw` (~5 min) in one command, then `doors ladder suite` in a second.
# Knobs (environment): GPU_PROVIDER (cuda; cpu for a dry run), GPU_SESSIONS (2), GPU_MAX_BATCH (128),
# GPU_CONCURRENCY (16,64,256,512), GPU_DURATION (s per level, 4), GPU_RAW_SECONDS (3),
# GPU_RAW_BATCHES (256), GPU_RAW_IN_FLIGHT (1,2), GPU_PHOTOS (500x375,4000x3000),
# GPU_REPOSITORY (/tmp/gpu-models), GPU_BODY_BUDGET (bytes of HTTP request bodies and gRPC messages
# held at once, 4 GiB: at concurrency 512 the FP32 scenarios' messages (602 kB an image) would pass the
# default 192 MiB, and the host has 128 GiB).
set -euo pipefail
parts=" ${*:-all} "
want() { [[ $parts == *" $1 "* || $parts == *' all '* ]]; }
out=${OUT:-load/results/gpu}
provider=${GPU_PROVIDER:-cuda}
sessions=${GPU_SESSIONS:-2}
max_batch=${GPU_MAX_BATCH:-128}
concurrency=${GPU_CONCURRENCY:-16,64,256,512}
duration=${GPU_DURATION:-4}
photos=${GPU_PHOTOS:-500x375,4000x3000}
repo=${GPU_REPOSITORY:-/tmp/gpu-models}
# sharp (so "sharp alone" and the service's decoding) gets its parallelism from the libuv pool.
export UV_THREADPOOL_SIZE=${UV_THREADPOOL_SIZE:-$(nproc)}
for p in $parts; do case "$p" in models|raw|suite|fp16|firstrun|queuedelay|ladder|doors|all) ;; *) echo "usage: bash load/gpu/run.sh [models|raw|suite|fp16|firstrun|queuedelay|ladder|doors|all ...]"; exit 2 ;; esac; done
mkdir -p "$out"
exec > >(tee -a "$out/run.log") 2>&1

echo "== $(date -u +%FT%TZ) parts:$parts; host: $(nproc) cores, node $(node -v), provider $provider, UV_THREADPOOL_SIZE=$UV_THREADPOOL_SIZE"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "(no nvidia-smi)"
[ -f dist/load/suite.js ] || { echo "dist/load/suite.js is missing: run npm run load:gpu-bundle before sending the archives"; exit 2; }

# Models (seconds): the variants are written by the same tool users run (npm run model:variant).
[ -f "$repo/resnet50/config.json" ] || node dist/src/cli/model-build.js --repository "$repo" --depth 50 --name resnet50
variant() { [ -f "$repo/$1/config.json" ] || node dist/src/cli/model-variant.js --repository "$repo" --name resnet50 --out-name "$1" "${@:2}"; }
variant resnet50-u8 --uint8-input
variant resnet50-fp16 --fp16
variant resnet50-u8-fp16 --uint8-input --fp16
ls "$repo"

if want raw; then
  node dist/load/raw.js --provider "$provider" --repository "$repo" --models resnet50,resnet50-u8,resnet50-fp16,resnet50-u8-fp16 \
    --batches "${GPU_RAW_BATCHES:-256}" --in-flight "${GPU_RAW_IN_FLIGHT:-1,2}" --seconds "${GPU_RAW_SECONDS:-3}" \
    --out "$out/raw.json" | tee "$out/raw.md"
fi

common=(--entry dist --provider "$provider" --sessions-per-model "$sessions" --max-batch "$max_batch"
        --concurrency "$concurrency" --duration "$duration" "--server-arg=--body-budget-bytes=${GPU_BODY_BUDGET:-4294967296}")
# The service loads every model of its repository and warms up each batch size it runs, so each part
# serves a repository of its own with only the models it measures.
serving() { local dir="$repo-$1"; shift; mkdir -p "$dir"; for m in "$@"; do [ -d "$dir/$m" ] || cp -r "$repo/$m" "$dir/"; done; echo "$dir"; }
raw_arg=(); [ -f "$out/raw.json" ] && raw_arg=(--raw "$out/raw.json")

if want suite; then
  # Each scenario: raw session with $sessions batches in flight, sharp alone on these cores (for
  # /classify), then the service under load. FP32 models; report and charts into $OUT.
  node dist/load/report/report.js "${common[@]}" --repository "$(serving fp32 resnet50 resnet50-u8)" --photos "$photos" --out "$out" --scenarios all --report-dir "$out" "${raw_arg[@]}"
fi

if want fp16; then
  mkdir -p "$out/fp16"
  node dist/load/report/report.js "${common[@]}" --repository "$(serving fp16 resnet50-fp16 resnet50-u8-fp16)" --photos 500x375 --out "$out/fp16" --float-model resnet50-fp16 --uint8-model resnet50-u8-fp16 \
    --scenarios classify,classify-uint8,v2-uint8,grpc-uint8 --report-dir "$out/fp16" "${raw_arg[@]}"
fi
if want firstrun; then
  node load/gpu/first-run.mjs "$repo" resnet50,resnet50-u8-fp16 "$provider" "${GPU_FIRST_RUN_BATCHES:-1,2,3,4,8,16,32,64,128}" | tee "$out/first-run.md"
fi
if [[ $parts == *" queuedelay "* ]]; then
  node dist/load/queue-delay.js --entry dist --provider "$provider" --sessions-per-model "$sessions" --max-batch "$max_batch" \
    --repository "$repo" --model resnet50-u8-fp16 --concurrency "$concurrency" --rounds "${GPU_QUEUE_DELAY_ROUNDS:-2}" \
    --duration "$duration" --out "$out" | tee "$out/queue-delay.md"
fi
if [[ $parts == *" ladder "* ]]; then
  dir=$(serving ladder resnet50-fp16 resnet50-u8-fp16)
  for m in resnet50-fp16 resnet50-u8-fp16; do
    node -e 'const fs = require("fs"); const f = process.argv[1]; const c = JSON.parse(fs.readFileSync(f, "utf8")); c.batching.fixedShapes = false; fs.writeFileSync(f, JSON.stringify(c, null, 2))' "$dir/$m/config.json"
  done
  mkdir -p "$out/ladder"
  node dist/load/report/report.js "${common[@]}" --repository "$dir" --photos 500x375 --out "$out/ladder" --float-model resnet50-fp16 --uint8-model resnet50-u8-fp16 \
    --scenarios v2-uint8 --report-dir "$out/ladder" "${raw_arg[@]}"
fi
if [[ $parts == *" doors "* ]]; then
  node dist/load/doors.js --entry dist --doors http,grpc,json --concurrency "${GPU_DOORS_CONCURRENCY:-16,64}" --rounds 2 --duration "$duration" --out "$out" | tee "$out/doors.md"
fi
echo "== done $(date -u +%FT%TZ); reports: $out/load-report.md $out/fp16/load-report.md"
