#!/usr/bin/env bash
# The load suite on the GPU host, in one go; writes the report under $OUT. In the project root,
# after `bash .gpu/a/device.sh a`, `bash .gpu/b/device.sh b`, `source .gpu/b/device.sh env`:
#
#   bash load/gpu/run.sh
#
# Knobs (environment): GPU_PROVIDER (cuda; cpu for a dry run), GPU_SESSIONS (2), GPU_MAX_BATCH (128),
# GPU_CONCURRENCY (1,16,64,256,512), GPU_DURATION (s per level, 5: the whole run must fit one
# 10-minute device command), GPU_PHOTOS, GPU_SCENARIOS (all), GPU_REPOSITORY (/tmp/gpu-models).
set -euo pipefail
out=${OUT:-load/results/gpu}
provider=${GPU_PROVIDER:-cuda}
sessions=${GPU_SESSIONS:-2}
max_batch=${GPU_MAX_BATCH:-128}
concurrency=${GPU_CONCURRENCY:-1,16,64,256,512}
duration=${GPU_DURATION:-5}
photos=${GPU_PHOTOS:-500x375,1024x768,4000x3000}
scenarios=${GPU_SCENARIOS:-all}
repo=${GPU_REPOSITORY:-/tmp/gpu-models}
# sharp (and so "sharp alone" and the service's decoding) gets its parallelism from the libuv pool.
export UV_THREADPOOL_SIZE=${UV_THREADPOOL_SIZE:-$(nproc)}
mkdir -p "$out"
log="$out/run.log"
exec > >(tee -a "$log") 2>&1

echo "== $(date -u +%FT%TZ) host: $(nproc) cores, node $(node -v), provider $provider, UV_THREADPOOL_SIZE=$UV_THREADPOOL_SIZE"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "(no nvidia-smi)"
[ -f dist/load/suite.js ] || { echo "dist/load/suite.js is missing: run npm run load:gpu-bundle before sending the archives"; exit 2; }

# 1. Models: the synthetic ResNet-50, plus its UINT8-prologue and FP16 variants when the model tools
#    have them (the variant flags are looked up in the CLI's help, or given as GPU_UINT8_ARGS / GPU_FP16_ARGS).
build() { node dist/src/models/build-cli.js --repository "$repo" "$@"; }
[ -f "$repo/resnet50/config.json" ] || build --depth 50 --name resnet50
help=$(build --help || true)
uint8_args=${GPU_UINT8_ARGS:-$(grep -oE -- '--(uint8|prologue)\b' <<<"$help" | head -1 || true)}
fp16_args=${GPU_FP16_ARGS:-$(grep -oE -- '--fp16\b' <<<"$help" | head -1 || true)}
if [ -n "$uint8_args" ]; then [ -f "$repo/resnet50-uint8/config.json" ] || build --depth 50 --name resnet50-uint8 $uint8_args; else echo "no UINT8 variant in the model tools: the uint8 scenarios will be skipped"; fi
if [ -n "$fp16_args" ]; then [ -f "$repo/resnet50-fp16/config.json" ] || build --depth 50 --name resnet50-fp16 $fp16_args; else echo "no FP16 variant in the model tools"; fi
ls "$repo"

common=(--entry dist --provider "$provider" --sessions-per-model "$sessions" --max-batch "$max_batch" --repository "$repo"
        --concurrency "$concurrency" --duration "$duration" --photos "$photos" --out "$out")

# 2. The suite (each scenario: raw session with $sessions batches in flight, sharp alone on these
#    cores for /classify, then the service under load) and its report with charts, into $OUT.
node dist/load/report.js "${common[@]}" --scenarios "$scenarios" --report-dir "$out"

# 3. FP16: the same /classify and /v2 scenarios with the FP16 graph as the float model (its raw
#    session, two batches in flight, is measured in that run too). Its own JSON and report.
if [ -f "$repo/resnet50-fp16/config.json" ]; then
  mkdir -p "$out/fp16"
  node dist/load/report.js "${common[@]}" --out "$out/fp16" --float-model resnet50-fp16 --scenarios classify,v2-fp32 --photos 500x375 --report-dir "$out/fp16"
fi
echo "== done $(date -u +%FT%TZ); report: $out/load-report.md"
