#!/usr/bin/env bash
# Builds the real Dockerfile on a machine that cannot pull base images, then runs the container
# and checks it with swaks. Not part of `npm test` (needs root, dockerd, debootstrap, minutes).
#
# Stand-in base image: a Debian bookworm rootfs from debootstrap (Debian's mirror is reachable)
# with this machine's Node 20 copied in, imported as local/node20:standin and tagged with the two
# names the Dockerfile uses (node:20-bookworm, node:20-bookworm-slim). The build stage needs
# --network host for npm.
#
# usage: sudo scripts/docker-standin.sh            (uses $DOCKER_HOST if set, else starts a private dockerd)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-$(mktemp -d /tmp/sandgate-standin.XXXXXX)}
IMAGE=local/node20:standin
echo "work dir: $WORK"

need() { command -v "$1" >/dev/null || { echo "missing: $1 (apt-get install $2)"; exit 2; }; }
need docker docker.io; need debootstrap debootstrap; need swaks swaks

if [ -z "${DOCKER_HOST:-}" ]; then
  need dockerd docker.io
  mkdir -p "$WORK/d"
  dockerd --iptables=false --ip6tables=false --bridge=none --ip-forward=false --ip-masq=false \
    --data-root "$WORK/d/root" --exec-root "$WORK/d/exec" -H "unix://$WORK/d/docker.sock" >"$WORK/dockerd.log" 2>&1 &
  DOCKERD=$!
  trap 'kill $DOCKERD 2>/dev/null || true' EXIT
  export DOCKER_HOST="unix://$WORK/d/docker.sock"
  for _ in $(seq 100); do docker info >/dev/null 2>&1 && break; sleep 0.1; done
fi

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "== debootstrap bookworm (minbase) =="
  debootstrap --variant=minbase --include=ca-certificates,python3,make,g++ bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log"
  NODE_DIR=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
  echo "== copying Node $(node --version) from $NODE_DIR =="
  mkdir -p "$WORK/rootfs/usr/local"
  cp -a "$NODE_DIR/bin" "$NODE_DIR/lib" "$WORK/rootfs/usr/local/"
  [ -d "$NODE_DIR/include" ] && cp -a "$NODE_DIR/include" "$WORK/rootfs/usr/local/"
  tar -C "$WORK/rootfs" -c . | docker import - "$IMAGE"
fi

docker tag "$IMAGE" node:20-bookworm
docker tag "$IMAGE" node:20-bookworm-slim

echo "== docker build =="
docker build --network host -t sandgate:standin .

echo "== docker run =="
docker rm -f sandgate-standin >/dev/null 2>&1 || true
docker run -d --name sandgate-standin --network host sandgate:standin relay
for _ in $(seq 100); do docker logs sandgate-standin 2>&1 | grep -q relay.listening && break; sleep 0.1; done
docker logs sandgate-standin 2>&1 | head -5

echo "== swaks: clean =="
swaks -s 127.0.0.1:10025 -f a@example.test -t b@example.test --silent 2 | tail -3
echo "== swaks: EICAR (expect 550) =="
swaks -s 127.0.0.1:10025 -f a@example.test -t b@example.test --silent 2 \
  --body 'X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*' | tail -3 || true
echo "== healthcheck =="
sleep 1; docker inspect --format '{{json .State.Health}}' sandgate-standin || true
echo "== delivered =="
docker exec sandgate-standin ls /var/lib/sandgate/delivered
docker rm -f sandgate-standin >/dev/null
