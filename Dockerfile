# resnet-serve, CPU image. Build: docker build -t resnet-serve .   Run: see docs/deployment.md.
# The CUDA image is Dockerfile.cuda; both are linted offline by `npm run lint:docker`.

# ---- build: full dependencies + tsc ---------------------------------------------------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
# .npmrc travels with the lockfile: it turns off onnxruntime-node's postinstall, which would try to
# download CUDA libraries this CPU image never loads.
COPY package.json package-lock.json .npmrc ./
# npm 10 has exited 0 with no node_modules ("Exit handler never called!"): the guard turns that into
# a failed build here instead of a confusing one at tsc or at run time.
RUN npm ci --no-audit --no-fund \
 && node -e "require.resolve('fastify'); require.resolve('typescript/package.json')"
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/build.mjs ./scripts/
COPY src ./src
# Files under src/ that are not TypeScript (the gRPC door's .proto, the demo page) are read at run
# time from a path relative to the module, and tsc copies none of them: keep each beside the compiled
# modules (dist/src/...) and at its source path (src/...), so whichever way the code resolves it the
# file is there. The image gets no TypeScript sources.
RUN npm run -s build \
 && mkdir -p /out/assets \
 && find src -type f ! -name '*.ts' -exec cp --parents {} dist/ \; \
 && find src -type f ! -name '*.ts' -exec cp --parents {} /out/assets/ \;

# ---- runtime: production dependencies only, non-root ---------------------------------------------
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    MODEL_REPOSITORY=/models \
    PORT=8080 \
    GRPC_PORT=9000
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# onnxruntime-node ships its native runtime for every platform (~240 MB for darwin, win32 and
# linux/arm64); only this image's platform is kept. The guard loads the native modules for real,
# so a missing or mismatched binary fails the build, not the first request.
RUN npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force \
 && ort=node_modules/onnxruntime-node/bin/napi-v6 \
 && keep="$(node -p 'process.platform + "/" + process.arch')" \
 && find "$ort" -mindepth 2 -maxdepth 2 -type d ! -path "$ort/$keep" -exec rm -rf {} + \
 && node -e "require.resolve('fastify')" \
 && node --input-type=module -e "await import('sharp'); await import('onnxruntime-node')"
COPY --from=build /app/dist ./dist
COPY --from=build /out/assets/ ./
# The class names the synthetic default model is built with (resolved relative to dist/src/model-tools).
COPY data ./data
# The application stays root-owned and read-only to the service; only the model repository is
# writable, because an empty /models gets the synthetic ResNet-50 built into it at start.
RUN mkdir -p /models && chown node:node /models
# Memory around bursts of large images, chosen by measurement (npm run load:decode-memory; numbers in
# docs/configuration.md "Decoding"): jemalloc instead of glibc malloc gave the lowest RSS at rest
# (~380 vs ~590 MiB with ResNet-50) and at the peak of a burst, back to rest within 30 s, and
# sharp then lets libvips use every core, which was the fastest at the same memory. --expose-gc
# lets the decoder free its full-size RGB copies at once (src/core/preprocess.ts) rather than
# whenever V8 next collects. The link gives LD_PRELOAD one path on every architecture.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libjemalloc2 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && ln -s "$(find /usr/lib -name libjemalloc.so.2 | head -n 1)" /usr/local/lib/libjemalloc.so.2 \
 && LD_PRELOAD=/usr/local/lib/libjemalloc.so.2 node -e "process.exit(require('fs').readFileSync('/proc/self/maps', 'utf8').includes('jemalloc') ? 0 : 1)"
# `docker stop` waits 10 s before SIGKILL, and nothing routes to a plain container by readiness:
# it drains at once. The Kubernetes and KServe manifests set the 10 s grace their probes need.
ENV LD_PRELOAD=/usr/local/lib/libjemalloc.so.2 \
    NODE_OPTIONS=--expose-gc \
    DRAIN_GRACE_MS=0
VOLUME ["/models"]
USER node
EXPOSE 8080 9000
# No curl in the slim image; Node 20 has fetch. Readiness (models loaded and warmed up) rather than
# liveness, so `docker ps` says healthy only once the service can answer. The first start builds the
# default model (~100 MB, seconds on 2 cores), hence the start period.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/health/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Node runs as PID 1 in exec form: SIGTERM reaches the service, which drains and exits 0 by itself
# (a PID 1 without a handler would ignore it). The service starts no child processes, so nothing
# needs reaping and no init (tini) is needed. Flags go after the image name: `... resnet-serve --provider cpu`.
ENTRYPOINT ["node", "dist/src/main.js"]
