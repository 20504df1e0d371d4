# syntax=docker/dockerfile:1
#
# agentwrit-sidecar container image.
#   docker build -t agentwrit-sidecar:0.1.0 .
# The runtime stage holds only the compiled JavaScript, production dependencies and package.json
# (read by --version); it runs as a fixed non-root UID and never writes outside mounted volumes, so
# it works with readOnlyRootFilesystem: true.

# Current Node.js LTS line. Override with --build-arg NODE_IMAGE=... to pin a digest.
ARG NODE_IMAGE=node:26-slim

# --- build: compile TypeScript with the full dev toolchain --------------------------------------
# TypeScript output does not depend on the CPU, so cross-platform builds compile natively.
FROM --platform=$BUILDPLATFORM ${NODE_IMAGE} AS build
WORKDIR /build
COPY package.json package-lock.json ./
# Scripts off: "prepare" would compile before the sources are copied.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# --- deps: production dependencies only, on the target platform ---------------------------------
# Scripts off: no dependency needs an install script, and "prepare" needs the dev toolchain. The
# npm cache stays behind in this stage; only node_modules moves on.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# --- runtime ---------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="agentwrit-sidecar" \
      org.opencontainers.image.description="Sidecar proxy giving AI agents task-scoped access to real services with AgentWrit tokens" \
      org.opencontainers.image.licenses="Apache-2.0"
# HOME and TMPDIR point at /tmp, which the Helm chart mounts as an emptyDir: the root filesystem
# can stay read-only. The application files stay owned by root, so the process cannot modify them.
ENV NODE_ENV=production \
    HOME=/tmp \
    TMPDIR=/tmp
WORKDIR /app
COPY package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /build/dist ./dist
USER 10001:10001
# Admin listener (/metrics, /healthz, /readyz). The proxy port 15101 binds to 127.0.0.1 inside the
# pod and is not published.
EXPOSE 15100
ENTRYPOINT ["node", "/app/dist/cli/main.js"]
CMD ["serve", "--config", "/etc/agentwrit-sidecar/config.yaml"]
