#!/usr/bin/env bash
# Runs the `cluster` profile of docker-compose.example.yml (two sandgate relay nodes on one
# PostgreSQL with a shared clamd) and sends mail through each node. Not part of `npm test` (needs
# root, a Docker daemon with the sandgate image, docker compose or docker-compose, swaks, minutes).
#
# Images: sandgate:latest is tagged from $SANDGATE_IMAGE (default sandgate:standin, which
# scripts/docker-standin.sh leaves in the daemon named by DOCKER_HOST). postgres:15 and
# clamav/clamav:stable are used when present or pullable; otherwise local stand-ins are built from
# the Debian stand-in base (local/node20:standin-slim, also left by docker-standin.sh): Debian's
# postgresql-15 behind a small entrypoint that honours POSTGRES_USER / POSTGRES_DB /
# POSTGRES_PASSWORD_FILE like the official image's, and Debian's clamd on port 3310 with a
# one-line EICAR database (no signature download here) and a HEALTHCHECK. The script says which.
#
# The compose file runs unchanged; an override file only points the nodes at a PT Sandbox fake
# (test/fakes/fake-pt-sandbox.ts, started here on loopback) and delivers into each node's
# state volume instead of a Postfix on 127.0.0.1:10026.
#
# Checks (any failure exits 1): PostgreSQL and clamd are healthy before either node starts; both
# nodes start (one database, one mark key read from a read-only secret, one token) and turn
# healthy; a clean message through node A is delivered by A after rules, clamd and PT Sandbox;
# the same message through node B is delivered with PT Sandbox's verdict from the shared cache; a
# message PT Sandbox calls unwanted is quarantined through node A and listed through node B's
# admin API; EICAR through node B is refused 550 5.7.1; `sandgate state status` on node B shows
# the PostgreSQL backend; `docker compose down` stops every container with exit code 0.
#
# usage: DOCKER_HOST=unix:///path/docker.sock sudo -E bash scripts/docker-cluster-standin.sh
#   SANDGATE_IMAGE=...   the sandgate image to run (default sandgate:standin)
#   KEEP=1               leave the project (containers, volumes) up and its directory in place
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

SANDGATE_IMAGE=${SANDGATE_IMAGE:-sandgate:standin}
SLIM=local/node20:standin-slim
KEEP=${KEEP:-0}
WORK=$(mktemp -d /tmp/sandgate-cluster.XXXXXX)
PROJECT=sgcluster
FAKE=

step() { printf '\n== %s ==\n' "$*"; }
fail() {
  echo "FAIL: $*"
  exit 1
}
need() { command -v "$1" >/dev/null || {
  echo "missing: $1 (apt-get install $2)"
  exit 2
}; }
need docker docker.io
need swaks swaks
need curl curl
need node nodejs
[ -n "${DOCKER_HOST:-}" ] || docker info >/dev/null 2>&1 || {
  echo "no Docker daemon: set DOCKER_HOST (scripts/docker-standin.sh prints how it starts one)"
  exit 2
}
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose)
else
  echo "missing: docker compose (the plugin) or docker-compose (apt-get install docker-compose)"
  exit 2
fi
dc() { "${COMPOSE[@]}" --project-name "$PROJECT" --project-directory "$WORK" \
  -f "$WORK/docker-compose.yml" -f "$WORK/docker-compose.override.yml" --profile cluster "$@"; }

cleanup() {
  set +e
  if [ "$KEEP" != 1 ]; then
    dc down --volumes --timeout 45 >/dev/null 2>&1
    rm -rf "$WORK"
  else
    echo "kept $WORK (project $PROJECT)"
  fi
  if [ -n "$FAKE" ]; then kill "$FAKE" 2>/dev/null; fi
}
trap cleanup EXIT

echo "work dir: $WORK; compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version 2>/dev/null | head -1))"
for p in 5432 3310 10125 10130 10225 10230; do
  ! ss -ltnH "sport = :$p" | grep -q . || fail "port $p is taken on this machine (the example's ports are fixed)"
done

step "images"
docker image inspect "$SANDGATE_IMAGE" >/dev/null 2>&1 || fail "no image $SANDGATE_IMAGE (run scripts/docker-standin.sh first)"
docker tag "$SANDGATE_IMAGE" sandgate:latest
echo "sandgate:latest <- $SANDGATE_IMAGE"
standin() { # image: present, pulled, or built from the Dockerfile on stdin
  if docker image inspect "$1" >/dev/null 2>&1; then
    if [ -n "$(docker image inspect -f '{{index .Config.Labels "org.sandgate.standin"}}' "$1")" ]; then
      echo "$1: present, a STAND-IN this script built earlier (docker rmi $1 to build it again)"
    else
      echo "$1: present"
    fi
  elif docker pull -q "$1" >/dev/null 2>&1; then
    echo "$1: pulled"
  else
    docker image inspect "$SLIM" >/dev/null 2>&1 || fail "$1 cannot be pulled and there is no $SLIM to build a stand-in from"
    mkdir -p "$WORK/build-$2"
    cat >"$WORK/build-$2/Dockerfile" # other files of the build: written there by the caller
    [ -z "${3:-}" ] || printf '%s' "$3" >"$WORK/build-$2/entrypoint.sh"
    docker build -q --network host -t "$1" "$WORK/build-$2" >/dev/null || fail "building the stand-in $1"
    echo "$1: cannot be pulled here, built a STAND-IN from $SLIM (Debian packages)"
  fi
}
standin postgres:15 postgres "$(
  cat <<'SH'
#!/bin/bash
# Stand-in for the official postgres image's entrypoint: the same variables, the same data path.
set -euo pipefail
PGDATA=${PGDATA:-/var/lib/postgresql/data}
if [ "$(id -u)" = 0 ]; then
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
    export POSTGRES_PASSWORD
    unset POSTGRES_PASSWORD_FILE
  fi
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pw=$(mktemp)
  printf '%s' "$POSTGRES_PASSWORD" >"$pw"
  initdb -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pw"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  echo 'host all all all scram-sha-256' >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  if [ "${POSTGRES_DB:-postgres}" != postgres ]; then
    psql -v ON_ERROR_STOP=1 -U "${POSTGRES_USER:-postgres}" -d postgres -c "CREATE DATABASE \"$POSTGRES_DB\""
  fi
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec postgres -D "$PGDATA" "$@"
SH
)" <<EOF
FROM $SLIM
LABEL org.sandgate.standin=debian
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null \\
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:\$PATH
COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 0755 /usr/local/bin/docker-entrypoint.sh
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
EOF
# clamd cannot download signatures here: one .hdb line (MD5 and size of the EICAR file) gives it a
# database to start with (the rules scanner refuses EICAR before clamd sees it in any case).
mkdir -p "$WORK/build-clamd"
echo '44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature' >"$WORK/build-clamd/standin.hdb"
printf 'Foreground yes\nTCPSocket 3310\nDatabaseDirectory /var/lib/clamav\nUser clamav\n' >"$WORK/build-clamd/clamd.conf"
# clamdscan (the HEALTHCHECK) reads clamd.conf too, and without TCPAddr it tries ::1 first.
printf 'TCPSocket 3310\nTCPAddr 127.0.0.1\n' >"$WORK/build-clamd/ping.conf"
standin clamav/clamav:stable clamd <<EOF
FROM $SLIM
LABEL org.sandgate.standin=debian
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends clamav-daemon clamdscan >/dev/null \\
    && rm -rf /var/lib/apt/lists/* && mkdir -p /run/clamav && chown clamav:clamav /run/clamav
COPY clamd.conf /etc/clamav/clamd.conf
COPY standin.hdb /var/lib/clamav/standin.hdb
COPY ping.conf /etc/clamav/ping.conf
HEALTHCHECK --interval=5s --timeout=5s --retries=30 CMD ["clamdscan", "--config-file=/etc/clamav/ping.conf", "--ping", "1"]
CMD ["clamd"]
EOF

step "the project: docker-compose.example.yml unchanged, secrets, an override for this machine"
cp "$REPO/docker-compose.example.yml" "$WORK/docker-compose.yml"
install -d -m 0750 "$WORK/secrets"
openssl rand -base64 24 | install -m 0640 -g 10001 /dev/stdin "$WORK/secrets/db_password"
openssl rand -hex 32 | install -m 0640 -g 10001 /dev/stdin "$WORK/secrets/mark.key"
# The PT Sandbox fake: a real HTTP server on loopback, reached by the nodes on the host network.
(cd "$REPO" && exec node --import tsx -e "
  import('./test/fakes/fake-pt-sandbox.ts').then(async (m) => {
    const sb = await m.startFakePtSandbox({ taskDurationMs: 300 });
    console.log(JSON.stringify({ url: sb.url, token: m.FAKE_PT_TOKEN }));
    setInterval(() => {}, 1 << 30);
  });") >"$WORK/fake.json" 2>"$WORK/fake.log" &
FAKE=$!
for _ in $(seq 100); do
  grep -q url "$WORK/fake.json" 2>/dev/null && break
  sleep 0.1
done
PT_URL=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")).url)' "$WORK/fake.json") ||
  fail "the PT Sandbox fake did not start: $(cat "$WORK/fake.log")"
node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")).token)' "$WORK/fake.json" |
  install -m 0640 -g 10001 /dev/stdin "$WORK/secrets/pt_sandbox_token"
cat >"$WORK/docker-compose.override.yml" <<EOF
x-here: &here
  SANDGATE_SCANNERS__PTSANDBOX__URL: $PT_URL
  SANDGATE_RELAY__NEXTHOP: directory:/var/lib/sandgate/delivered
  SANDGATE_QUARANTINE__RELEASE__TARGET: directory:/var/lib/sandgate/delivered
services:
  sandgate-a:
    environment: *here
  sandgate-b:
    environment: *here
EOF
echo "PT Sandbox fake: $PT_URL"
cat "$WORK/docker-compose.override.yml"
dc config -q || fail "compose config"

step "compose up sandgate-a sandgate-b (PostgreSQL and clamd first, then the nodes)"
start=$(date +%s)
dc up -d sandgate-a sandgate-b || fail "compose up: $(dc logs --tail 20 2>&1)"
# The health log keeps only the last 5 checks (25 s here): read both at once, while the first
# passing check before the nodes started is still in it. Container ids come from compose's
# labels (docker-compose v1 itself takes a second or two per call on a busy machine).
cid() { docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=$1"; }
health_db=$(docker inspect -f '{{range .State.Health.Log}}{{if eq .ExitCode 0}}{{.End.UTC.Format "2006-01-02T15:04:05.000000000Z"}} {{end}}{{end}}' "$(cid sandgate-db)")
health_clamd=$(docker inspect -f '{{range .State.Health.Log}}{{if eq .ExitCode 0}}{{.End.UTC.Format "2006-01-02T15:04:05.000000000Z"}} {{end}}{{end}}' "$(cid sandgate-clamd)")
for s in sandgate-db sandgate-clamd sandgate-a sandgate-b; do
  echo "$s: $(docker inspect -f '{{.Config.Image}} started {{.State.StartedAt}}' "$(cid "$s")")"
done
ns() { date -d "$1" +%s%N; }
for n in sandgate-a sandgate-b; do
  node_start=$(docker inspect -f '{{.State.StartedAt}}' "$(cid "$n")")
  for s in sandgate-db sandgate-clamd; do
    if [ "$s" = sandgate-db ]; then healthy_at=${health_db%% *}; else healthy_at=${health_clamd%% *}; fi
    [ -n "$healthy_at" ] || fail "$s has no passing health check"
    [ "$(ns "$healthy_at")" -lt "$(ns "$node_start")" ] || fail "$n started ($node_start) before $s was healthy ($healthy_at)"
    echo "$s healthy at $healthy_at, before $n started at $node_start"
  done
done
for n in a b; do
  admin=$([ $n = a ] && echo 10130 || echo 10230)
  for _ in $(seq 120); do
    curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break
    sleep 0.5
  done
  curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null || fail "sandgate-$n not ready: $(dc logs --tail 20 "sandgate-$n")"
  echo "sandgate-$n ready (/readyz 200 on 127.0.0.1:$admin)"
done
echo "up in $(($(date +%s) - start)) s"
dc ps

logline() { # service event filter: the last matching JSON line
  docker logs "$(cid "$1")" 2>&1 | grep "\"event\":\"$2\"" | grep -- "$3" | tail -1
}
field() { node -e 'const r=JSON.parse(require("fs").readFileSync(0,"utf8"));console.log(JSON.stringify(r[process.argv[1]]))' "$1"; }

step "a clean message through node A, then the same message through node B"
printf 'From: a@example.test\r\nTo: b@example.test\r\nSubject: cluster clean\r\nMessage-ID: <cluster-clean@example.test>\r\n\r\nThe same content on both nodes.\r\n' >"$WORK/clean.eml"
for n in a b; do
  port=$([ $n = a ] && echo 10125 || echo 10225)
  out=$(swaks --server 127.0.0.1 --port "$port" -f a@example.test -t b@example.test --data "$WORK/clean.eml" 2>&1) || true
  echo "$out" | grep -A1 -E '^ -> \.$' | tail -1
  echo "$out" | grep -A1 -E '^ -> \.$' | grep -qE '^<-  250 ' || fail "clean message through sandgate-$n not answered 250"
  line=$(logline "sandgate-$n" relay.message '"action":"deliver"')
  echo "sandgate-$n outcomes: $(echo "$line" | field outcomes)"
  echo "sandgate-$n delivered/: $(docker exec "$(cid "sandgate-$n")" ls /var/lib/sandgate/delivered | paste -sd' ')"
done
logline sandgate-a relay.message '"action":"deliver"' | grep -q '"pt-sandbox:clean@' || fail "node A did not get a fresh PT Sandbox verdict"
logline sandgate-a relay.message '"action":"deliver"' | grep -q '"clamd:clean@' || fail "node A did not scan with clamd"
logline sandgate-b relay.message '"action":"deliver"' | grep -q '"pt-sandbox:clean:cached' ||
  fail "node B did not answer PT Sandbox from the shared cache"

step "a message PT Sandbox calls unwanted: quarantined through node A, listed through node B"
out=$(swaks --server 127.0.0.1 --port 10125 -f a@example.test -t b@example.test \
  --header 'Subject: cluster unwanted' --body 'PT-FAKE-UNWANTED' 2>&1) || true
echo "$out" | grep -A1 -E '^ -> \.$' | tail -1
qid=$(logline sandgate-a relay.message '"action":"quarantine"' | field quarantineId | tr -d '"')
[ -n "$qid" ] && [ "$qid" != null ] || fail "node A did not quarantine the unwanted message"
echo "quarantined through node A: $qid"
token_b=$(docker exec "$(cid sandgate-b)" cat /var/lib/sandgate/admin.token)
listed=$(curl -fsS -H "Authorization: Bearer $token_b" "http://127.0.0.1:10230/api/quarantine")
echo "$listed" | grep -q "\"$qid\"" || fail "node B's admin API does not list $qid: $listed"
echo "node B's GET /api/quarantine lists $qid"

step "EICAR through node B (expect 550 5.7.1)"
out=$(swaks --server 127.0.0.1 --port 10225 -f a@example.test -t b@example.test \
  --body 'X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*' 2>&1) || true
echo "$out" | grep -E '^<\*\* ' | tail -1
echo "$out" | grep -qE '^<\*\* 550 5\.7\.1 ' || fail "EICAR not refused 550 5.7.1"

step "sandgate state status on node B"
docker exec "$(cid sandgate-b)" node /app/dist/cli/main.js state status | tee "$WORK/status.txt"
grep -qi postgres "$WORK/status.txt" || fail "state status does not show the PostgreSQL backend"

step "compose down (SIGTERM; every container exits 0)"
ids=$(for s in sandgate-a sandgate-b sandgate-db sandgate-clamd; do cid "$s"; done)
dc stop --timeout 45 >/dev/null 2>&1
for id in $ids; do
  echo "$(docker inspect -f '{{.Name}} exit code {{.State.ExitCode}}' "$id")"
  [ "$(docker inspect -f '{{.State.ExitCode}}' "$id")" = 0 ] || fail "$(docker inspect -f '{{.Name}}' "$id") exited non-zero"
done

step "all checks passed"
