#!/usr/bin/env bash
# Here, before a GPU run: the service build plus the load suite compiled to dist/load/ (the GPU
# host has Node but no tsx), then the two archives of /work/shared/gpu/make-bundle.sh.
#   npm run load:gpu-bundle        then send .gpu/a and .gpu/b, and run load/gpu/run.sh there
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
npm run -s build
# Only what this checkout compiles: a file left from an older layout must not travel to the GPU host.
rm -rf dist/load
npx tsc -p load/gpu/tsconfig.json
bash "${GPU_TOOLS:-/work/shared/gpu}/make-bundle.sh"
