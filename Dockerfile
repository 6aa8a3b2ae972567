# syntax=docker/dockerfile:1
# The gateway image: the compiled JavaScript of `npm run build` and the production dependencies,
# nothing else. No TypeScript, tsx, test runner or embedded PostgreSQL (development dependencies).

# Compiles src/ to dist/ with the locked compiler.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY src ./src
RUN npm run build

# Dependencies exactly as locked, without the development ones.
FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# The AES-GCM addon (README, "The AES-GCM addon"), built strictly against this Node's own headers by
# the full image, which has a compiler; the final image has none. The stages above skip the
# package's install script, which would only try to build it without native/ and say so.
FROM node:24-bookworm AS native
WORKDIR /app
ENV npm_config_nodedir=/usr/local
COPY package.json ./
COPY native ./native
RUN npm run build:native

# What runs: compiled code, policies, migrations and those dependencies, owned by root and
# read-only to the unprivileged `node` user the process runs as. node is PID 1's child of the
# container's init (compose sets init: true), with no npm in between, so SIGTERM reaches the
# gateway and its graceful shutdown.
FROM node:24-bookworm-slim
ENV NODE_ENV=production
# At most 2 glibc malloc arenas instead of one per thread: Node 24's V8 threads otherwise keep 25-37 MB
# in them at the page's peak (src/heap.ts, MALLOC_ARENA_MAX). glibc reads it only at start.
ENV MALLOC_ARENA_MAX=2
# Every malloc of 32 KB or more its own mapping, unmapped when freed: glibc otherwise raises that
# threshold as large blocks are freed and keeps them in heaps it cannot shrink (src/heap.ts).
ENV MALLOC_MMAP_THRESHOLD_=32768
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=native /app/native/build/Release/aead.node ./native/build/Release/aead.node
COPY package.json ./
COPY bin ./bin
COPY schema ./schema
COPY policies ./policies
COPY console ./console
USER node
EXPOSE 4000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PHIGATE_PORT ?? 4000) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Node 24's V8 lets the young generation grow to 128 MB (Node 20's: 32 MB on this heap limit); it
# must be capped on the command line, not at run time; and it stops scavenging while a full GC
# marks, growing new space past that cap instead, unless told as Node 20's did (src/heap.ts).
CMD ["node", "--max-semi-space-size=16", "--no-separate-gc-phases", "dist/main.js"]
