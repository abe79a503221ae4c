#!/usr/bin/env bash
# Builds the real Dockerfile on a machine that cannot pull base images, runs the container and
# checks it with swaks. Not part of `npm test` (needs root, dockerd, debootstrap and minutes).
#
# Stand-in base images, both from one debootstrap'd Debian bookworm rootfs with this machine's
# Node 20 copied into /usr/local (where the official images keep it):
#   node:20-bookworm-slim  minbase + ca-certificates + Node (like the official slim image: no compiler)
#   node:20-bookworm       the slim stand-in + python3, make, g++ (what better-sqlite3 needs to compile)
# Builds run with --network host (npm and Debian's mirror). With no route to GitHub or nodejs.org,
# better-sqlite3's prebuilt download fails and it compiles against the copied Node headers
# (npm_config_nodedir, set in the stand-in only; the official images need none of this).
#
# Checks (any failure exits 1): the image builds; the relay runs as uid 10001; swaks gets 250 for a
# clean message and the file lands in delivered/ in the state volume; EICAR gets 550 5.7.1 and is
# not delivered; the HEALTHCHECK reports healthy; `scan --help` and `scan -` work in a throwaway
# container; a bind-mounted state directory works when owned by 10001 and is refused (exit 2) when
# owned by root; `docker stop` ends the relay gracefully with exit code 0; the same image run with
# the command `milter` answers Debian's miltertest (test/milter/*.lua: option negotiation, a clean
# message accepted with our header, EICAR refused 550 5.7.1) and stops with exit code 0.
#
# usage: sudo bash scripts/docker-standin.sh
#   DOCKER_HOST=...   use that daemon (else a private dockerd is started with the flags that work
#                     without systemd, and stopped at the end)
#   RELAY_PORT=N ADMIN_PORT=N   loopback ports for the container (default 10025 / 10030; a busy
#                     default is replaced by a free port, passed as SANDGATE_RELAY__LISTEN /
#                     SANDGATE_ADMIN__LISTEN)
#   MILTER_PORT=N MILTER_ADMIN_PORT=N   the same for the milter container (default 10027 / 10031)
#   KEEP=1            keep the work dir (rootfs, dockerd data root: the next run skips debootstrap
#                     with WORK=that dir)
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-}
OWN_WORK=0
if [ -z "$WORK" ]; then
  WORK=$(mktemp -d /tmp/sandgate-standin.XXXXXX)
  OWN_WORK=1
fi
KEEP=${KEEP:-0}
SLIM=local/node20:standin-slim
FULL=local/node20:standin-full
TAG=sandgate:standin
NAME=sandgate-standin
VOL=sandgate-standin-state
MNAME=sandgate-standin-milter
MVOL=sandgate-standin-milter-state
DOCKERD=

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
need debootstrap debootstrap
need swaks swaks
need miltertest miltertest
need node nodejs
[ "$(id -u)" = 0 ] || {
  echo "run as root (dockerd, debootstrap)"
  exit 2
}

cleanup() {
  set +e
  if [ -n "${DOCKER_HOST:-}" ] && docker info >/dev/null 2>&1; then
    docker rm -f "$NAME" "$MNAME" >/dev/null 2>&1
    docker volume rm "$VOL" "$MVOL" >/dev/null 2>&1
  fi
  if [ -n "$DOCKERD" ]; then
    kill "$DOCKERD" 2>/dev/null
    wait "$DOCKERD" 2>/dev/null
    echo "dockerd ($DOCKERD) stopped"
  fi
  if [ "$OWN_WORK" = 1 ] && [ "$KEEP" != 1 ]; then
    # dockerd unmounts its layers on a clean stop; unmount anything left below WORK, deepest first.
    findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$WORK"
    echo "removed $WORK"
  else
    echo "kept $WORK"
  fi
}
trap cleanup EXIT

# A loopback port for the container: the wanted one if free, else one the kernel picks.
port_free() { ! ss -ltnH "sport = :$1" | grep -q .; }
free_port() { node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }
pick_port() { # name wanted
  if port_free "$2"; then echo "$2"; else
    local p
    p=$(free_port)
    echo "$1 port $2 is taken on this machine, using $p" >&2
    echo "$p"
  fi
}
RELAY_PORT=$(pick_port relay "${RELAY_PORT:-10025}")
ADMIN_PORT=$(pick_port admin "${ADMIN_PORT:-10030}")
MILTER_PORT=$(pick_port milter "${MILTER_PORT:-10027}")
MILTER_ADMIN_PORT=$(pick_port "milter admin" "${MILTER_ADMIN_PORT:-10031}")
RUN_ENV=()
[ "$RELAY_PORT" = 10025 ] || RUN_ENV+=(-e "SANDGATE_RELAY__LISTEN=127.0.0.1:$RELAY_PORT")
[ "$ADMIN_PORT" = 10030 ] || RUN_ENV+=(-e "SANDGATE_ADMIN__LISTEN=127.0.0.1:$ADMIN_PORT")

echo "work dir: $WORK"
docker --version

if [ -z "${DOCKER_HOST:-}" ]; then
  need dockerd docker.io
  step "dockerd (private: no iptables, no bridge, data root in $WORK/d)"
  mkdir -p "$WORK/d"
  dockerd --iptables=false --ip6tables=false --bridge=none --ip-forward=false --ip-masq=false \
    --data-root "$WORK/d/root" --exec-root "$WORK/d/exec" --pidfile "$WORK/d/docker.pid" \
    -H "unix://$WORK/d/docker.sock" >"$WORK/dockerd.log" 2>&1 &
  DOCKERD=$!
  export DOCKER_HOST="unix://$WORK/d/docker.sock"
  for _ in $(seq 300); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$DOCKERD" 2>/dev/null || fail "dockerd exited: $(tail -5 "$WORK/dockerd.log")"
    sleep 0.1
  done
  docker info --format 'dockerd {{.ServerVersion}}, storage {{.Driver}}, cgroup {{.CgroupDriver}} v{{.CgroupVersion}}' ||
    fail "dockerd did not come up: $(tail -5 "$WORK/dockerd.log")"
fi

if ! docker image inspect "$SLIM" >/dev/null 2>&1; then
  if [ ! -x "$WORK/rootfs/bin/sh" ]; then
    step "debootstrap bookworm (minbase + ca-certificates)"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$WORK/rootfs" \
      http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 ||
      fail "debootstrap: $(tail -5 "$WORK/debootstrap.log")"
  fi
  # The Node prefix: /usr for Debian/NodeSource packages, /usr/local for tarball installs.
  NODE_BIN=$(readlink -f "$(command -v node)")
  PREFIX=$(dirname "$(dirname "$NODE_BIN")")
  step "copying Node $(node --version) (npm $(npm --version)) from $PREFIX into /usr/local"
  R=$WORK/rootfs/usr/local
  mkdir -p "$R/bin" "$R/lib/node_modules" "$R/include"
  cp -a "$NODE_BIN" "$R/bin/node"
  for m in npm corepack; do
    [ -d "$PREFIX/lib/node_modules/$m" ] && cp -a "$PREFIX/lib/node_modules/$m" "$R/lib/node_modules/"
  done
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$R/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$R/bin/npx"
  [ -d "$PREFIX/include/node" ] || fail "no Node headers in $PREFIX/include/node (better-sqlite3 cannot compile)"
  cp -a "$PREFIX/include/node" "$R/include/"
  # Trust what this machine trusts: local CAs (a TLS-inspecting egress proxy, for one) go into the
  # stand-in's store, and Node reads that store through NODE_EXTRA_CA_CERTS (stand-in only).
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    echo "adding this machine's local CAs: $(cd /usr/local/share/ca-certificates && echo *.crt)"
    cp /usr/local/share/ca-certificates/*.crt "$WORK/rootfs/usr/local/share/ca-certificates/"
    chroot "$WORK/rootfs" update-ca-certificates >/dev/null
  fi
  rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
  step "docker import $SLIM"
  tar -C "$WORK/rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV npm_config_nodedir=/usr/local' \
    --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["node"]' - "$SLIM"
fi
if ! docker image inspect "$FULL" >/dev/null 2>&1; then
  step "docker build $FULL (slim + python3 make g++)"
  docker build --network host -t "$FULL" - <<EOF
FROM $SLIM
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 make g++ >/dev/null \\
    && rm -rf /var/lib/apt/lists/*
EOF
fi
docker tag "$SLIM" node:20-bookworm-slim
docker tag "$FULL" node:20-bookworm
docker run --rm node:20-bookworm-slim node -e 'console.log("stand-in node:20-bookworm-slim: Node " + process.version)'

step "docker build --network host -t $TAG .   (the real Dockerfile)"
start=$(date +%s)
docker build --network host -t "$TAG" . || fail "docker build"
echo "built in $(($(date +%s) - start)) s"
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^($TAG|node:20-bookworm)" | sort
docker image inspect "$TAG" --format 'User={{.Config.User}} Entrypoint={{json .Config.Entrypoint}} Cmd={{json .Config.Cmd}} Volumes={{json .Config.Volumes}}'
docker image inspect "$TAG" --format 'Healthcheck={{json .Config.Healthcheck}}'

step "docker run (relay on 127.0.0.1:$RELAY_PORT, admin on 127.0.0.1:$ADMIN_PORT, state volume $VOL)"
docker rm -f "$NAME" >/dev/null 2>&1 || true
docker volume rm "$VOL" >/dev/null 2>&1 || true
docker volume create "$VOL" >/dev/null
echo "+ docker run -d --name $NAME --network host -v $VOL:/var/lib/sandgate ${RUN_ENV[*]} $TAG"
docker run -d --name "$NAME" --network host -v "$VOL:/var/lib/sandgate" "${RUN_ENV[@]}" "$TAG" >/dev/null
# Ready when both listeners logged (the relay logs JSON lines to stdout).
timeout 60 grep -m1 -q '"event":"admin.listening"' < <(docker logs -f "$NAME" 2>&1) ||
  fail "not listening: $(docker logs "$NAME" 2>&1 | tail -5)"
docker logs "$NAME" 2>&1 | grep -E '"event":"(relay|admin)\.listening"'

step "non-root"
PID=$(docker inspect -f '{{.State.Pid}}' "$NAME")
ps -o uid=,gid=,user:12=,args= -p "$PID"
[ "$(ps -o uid= -p "$PID" | tr -d ' ')" = 10001 ] || fail "the relay does not run as uid 10001"
docker exec "$NAME" id
docker exec "$NAME" stat -c '%U:%G %a %n' /var/lib/sandgate /etc/sandgate/sandgate.yaml

step "swaks: clean message (expect 250)"
out=$(swaks --server 127.0.0.1 --port "$RELAY_PORT" -f a@example.test -t b@example.test \
  --header 'Subject: sandgate stand-in clean' 2>&1) || true
echo "$out" | grep -E '^(<-|<\*\*) ' | tail -3
echo "$out" | grep -A1 -E '^ -> \.$' | grep -qE '^<-  250 ' || fail "clean message not answered 250"
files=$(docker exec "$NAME" ls /var/lib/sandgate/delivered)
echo "delivered/: $files"
[ "$(echo "$files" | grep -c .)" = 1 ] || fail "expected one file in delivered/"
docker exec "$NAME" sh -c "ls -ln /var/lib/sandgate/delivered; head -4 /var/lib/sandgate/delivered/$files"

step "swaks: EICAR (expect 550 5.7.1)"
out=$(swaks --server 127.0.0.1 --port "$RELAY_PORT" -f a@example.test -t b@example.test \
  --body 'X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*' 2>&1) || true
echo "$out" | grep -E '^(<-|<\*\*) ' | tail -3
echo "$out" | grep -qE '^<\*\* 550 5\.7\.1 ' || fail "EICAR not refused 550 5.7.1"
[ "$(docker exec "$NAME" ls /var/lib/sandgate/delivered | grep -c .)" = 1 ] || fail "EICAR was delivered"
echo "delivered/ still holds one file"
docker exec "$NAME" ls /var/lib/sandgate

step "HEALTHCHECK (interval 30s: the first probe runs about 30 s after start)"
status=
for _ in $(seq 120); do
  status=$(docker inspect -f '{{.State.Health.Status}}' "$NAME")
  [ "$status" = starting ] || break
  sleep 1
done
docker inspect -f '{{json .State.Health}}' "$NAME"
echo
[ "$status" = healthy ] || fail "health status: $status"
echo "health: $status"

step "docker run --rm $TAG scan --help / scan -"
docker run --rm --network none "$TAG" scan --help
printf 'From: a@example.test\r\nTo: b@example.test\r\nSubject: hi\r\n\r\nhello\r\n' |
  docker run --rm -i --network none "$TAG" scan - && rc=0 || rc=$?
echo "scan - (clean): exit $rc"
[ "$rc" = 0 ] || fail "scan of a clean message: exit $rc"
printf 'From: a@example.test\r\n\r\n%s\r\n' 'X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*' |
  docker run --rm -i --network none "$TAG" scan - && rc=0 || rc=$?
echo "scan - (EICAR): exit $rc"
[ "$rc" = 1 ] || fail "scan of EICAR: exit $rc (expected 1)"

step "bind-mounted state directory: owned by 10001 works, owned by root is refused"
mkdir -p "$WORK/bind-ok" "$WORK/bind-root"
chown 10001:10001 "$WORK/bind-ok" && chmod 0750 "$WORK/bind-ok"
printf 'From: a@example.test\r\n\r\nhello\r\n' |
  docker run --rm -i --network none -v "$WORK/bind-ok:/var/lib/sandgate" "$TAG" scan - >/dev/null && rc=0 || rc=$?
echo "state dir owned by 10001: scan exit $rc; $(stat -c '%u:%g %n' "$WORK/bind-ok/sandgate.db" 2>&1)"
[ "$rc" = 0 ] || fail "scan with a 10001-owned bind mount: exit $rc"
printf 'From: a@example.test\r\n\r\nhello\r\n' |
  docker run --rm -i --network none -v "$WORK/bind-root:/var/lib/sandgate" "$TAG" scan - 2>&1 && rc=0 || rc=$?
echo "state dir owned by root: scan exit $rc"
[ "$rc" = 2 ] || fail "scan with a root-owned bind mount: exit $rc (expected 2)"

step "a mounted config file wins over the bundled one (its SMTP next hop is kept)"
printf 'stateDir: /var/lib/sandgate\nrelay:\n  nextHop: smtp://127.0.0.1:10026\n' >"$WORK/prod.yaml"
chmod 0644 "$WORK/prod.yaml"
hop=$(docker run --rm --network none -v "$WORK/prod.yaml:/etc/sandgate/sandgate.yaml:ro" "$TAG" check-config |
  grep -A3 '^  nextHop:$' | tr -s ' \n' ' ')
echo "check-config: $hop"
echo "$hop" | grep -q 'kind: smtp host: 127.0.0.1 port: 10026' || fail "the mounted config's next hop was not used"

step "docker stop (SIGTERM to node as PID 1)"
docker stop -t 45 "$NAME" >/dev/null
docker inspect -f 'exit code {{.State.ExitCode}}' "$NAME"
docker logs "$NAME" 2>&1 | grep -E '"event":"relay\.(stopping|stopped)"' | cut -c1-160
[ "$(docker inspect -f '{{.State.ExitCode}}' "$NAME")" = 0 ] || fail "relay did not exit 0 on SIGTERM"

step "docker run $TAG milter (milter on 127.0.0.1:$MILTER_PORT, admin on 127.0.0.1:$MILTER_ADMIN_PORT)"
# Its own state volume: two containers on the host network share the host name and pid 1, so they
# must not share a spool (docs/docker.md). rejectText without the message id: miltertest compares
# a reply's text as a whole (test/milter/eicar.lua).
docker volume rm "$MVOL" >/dev/null 2>&1 || true
docker volume create "$MVOL" >/dev/null
MILTER_ENV=(-e "SANDGATE_MILTER__LISTEN=inet:127.0.0.1:$MILTER_PORT" -e "SANDGATE_ADMIN__LISTEN=127.0.0.1:$MILTER_ADMIN_PORT"
  -e "SANDGATE_MILTER__REJECTTEXT=Message refused: {threats}")
echo "+ docker run -d --name $MNAME --network host -v $MVOL:/var/lib/sandgate ${MILTER_ENV[*]} $TAG milter"
docker run -d --name "$MNAME" --network host -v "$MVOL:/var/lib/sandgate" "${MILTER_ENV[@]}" "$TAG" milter >/dev/null
timeout 60 grep -m1 -q '"event":"admin.listening"' < <(docker logs -f "$MNAME" 2>&1) ||
  fail "milter not listening: $(docker logs "$MNAME" 2>&1 | tail -5)"
docker logs "$MNAME" 2>&1 | grep -E '"event":"(milter|admin)\.listening"' | cut -c1-200
[ "$(ps -o uid= -p "$(docker inspect -f '{{.State.Pid}}' "$MNAME")" | tr -d ' ')" = 10001 ] ||
  fail "the milter does not run as uid 10001"

step "miltertest against the container (test/milter/*.lua)"
for script in negotiate clean eicar; do
  out=$(miltertest -D "port=$MILTER_PORT" -D "dir=$PWD/test/milter" -s "test/milter/$script.lua" 2>&1) && rc=0 || rc=$?
  echo "$script.lua: exit $rc: $(echo "$out" | tr '\n' ' ')"
  [ "$rc" = 0 ] && echo "$out" | grep -qx "ok $script" && ! echo "$out" | grep -q FAILED ||
    fail "miltertest $script.lua"
done
docker logs "$MNAME" 2>&1 | grep '"event":"milter.message"' | grep -oE '"action":"[a-z]+"|"verdict":"[a-z]+"|"threats":\[[^]]*\]' | paste -sd' '
[ "$(docker logs "$MNAME" 2>&1 | grep '"event":"milter.message"' | grep -c '"action":"reject"')" = 1 ] ||
  fail "expected exactly one rejected message (EICAR) in the milter's log"
docker stop -t 45 "$MNAME" >/dev/null
docker inspect -f 'milter exit code {{.State.ExitCode}}' "$MNAME"
[ "$(docker inspect -f '{{.State.ExitCode}}' "$MNAME")" = 0 ] || fail "milter did not exit 0 on SIGTERM"

step "all checks passed"
