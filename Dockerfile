# sandgate: multi-stage build. The build stage compiles better-sqlite3 and the TypeScript;
# the runtime stage is Node 20 slim, non-root, with config and state as volumes.
# Base images cannot be pulled on some build machines: scripts/docker-standin.sh builds a local
# stand-in and tags it with these two names.

FROM node:20-bookworm AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim AS runtime
# The bundled config is the first-run one (rules scanner, delivered mail to a directory in the
# state volume); production mounts its own /etc/sandgate/sandgate.yaml with an SMTP next hop.
ENV NODE_ENV=production \
    SANDGATE_CONFIG=/etc/sandgate/sandgate.yaml \
    SANDGATE_STATEDIR=/var/lib/sandgate \
    SANDGATE_RELAY__NEXTHOP=directory:/var/lib/sandgate/delivered
WORKDIR /app
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
COPY config ./config
RUN groupadd --system sandgate && useradd --system --gid sandgate --home-dir /var/lib/sandgate sandgate \
    && mkdir -p /var/lib/sandgate /etc/sandgate \
    && cp config/first-run.yaml /etc/sandgate/sandgate.yaml \
    && chown -R sandgate:sandgate /var/lib/sandgate
USER sandgate
VOLUME ["/etc/sandgate", "/var/lib/sandgate"]
EXPOSE 10025 10030
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:10030/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "/app/dist/cli/main.js"]
CMD ["relay"]
