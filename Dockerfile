# sandgate: multi-stage build. The build stage compiles better-sqlite3 and the TypeScript;
# the runtime stage is Node 20 slim, non-root (uid/gid 10001), with config and state as volumes.
# The command is `relay` by default; `milter` runs the Postfix milter (docs/milter.md).
# Build: docker build -t sandgate .   Run and compose: docs/docker.md.
# Base images cannot be pulled on some build machines: scripts/docker-standin.sh builds a local
# stand-in, tags it with these two names, builds this file unchanged and checks the container.

FROM node:20-bookworm AS build
WORKDIR /src
COPY package.json package-lock.json ./
# better-sqlite3 uses its prebuilt binary, or compiles with the image's python3, make and g++.
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim AS runtime
# The state directory is the volume. Everything else comes from /etc/sandgate/sandgate.yaml
# (bundled: the first-run config with absolute paths: rules scanner, clean and released mail
# written to /var/lib/sandgate/delivered, the quarantine page's token created in
# /var/lib/sandgate/admin.token) and SANDGATE_A__B environment overrides. Production mounts its
# own config file with an SMTP or LMTP next hop.
ENV NODE_ENV=production \
    SANDGATE_CONFIG=/etc/sandgate/sandgate.yaml \
    SANDGATE_STATEDIR=/var/lib/sandgate
WORKDIR /app
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
COPY config ./config
RUN groupadd --gid 10001 sandgate \
    && useradd --uid 10001 --gid sandgate --no-log-init --no-create-home --home-dir /var/lib/sandgate \
       --shell /usr/sbin/nologin sandgate \
    && mkdir -p /var/lib/sandgate /etc/sandgate \
    && sed -e 's#\.\./\.sandgate#/var/lib/sandgate#g' config/first-run.yaml > /etc/sandgate/sandgate.yaml \
    && grep -q '^stateDir: /var/lib/sandgate$' /etc/sandgate/sandgate.yaml \
    && grep -q '^  nextHop: directory:/var/lib/sandgate/delivered$' /etc/sandgate/sandgate.yaml \
    && grep -q '^    target: directory:/var/lib/sandgate/delivered$' /etc/sandgate/sandgate.yaml \
    && chown sandgate:sandgate /var/lib/sandgate && chmod 0750 /var/lib/sandgate
USER sandgate
VOLUME ["/etc/sandgate", "/var/lib/sandgate"]
# 10025 relay, 10027 milter (`docker run … sandgate milter`), 10030 admin.
EXPOSE 10025 10027 10030
# GET /healthz on the admin port: SANDGATE_ADMIN__LISTEN when set (a wildcard address is asked on
# loopback), else the bundled 127.0.0.1:10030. A config file that moves the admin port needs the
# same SANDGATE_ADMIN__LISTEN in the environment (docs/docker.md).
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["node", "-e", "const a=(process.env.SANDGATE_ADMIN__LISTEN||'127.0.0.1:10030').trim().replace(/^0\\.0\\.0\\.0:/,'127.0.0.1:').replace(/^\\[::\\]:/,'[::1]:');fetch('http://'+a+'/healthz',{signal:AbortSignal.timeout(4000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "--max-semi-space-size=4", "/app/dist/cli/main.js"]
CMD ["relay"]
