#!/usr/bin/env bash
# Brings up the compose installation (etcd x3, coordinator x2, worker x2, moto) from images
# built here, runs the example monorepo's full plan on it through both coordinator addresses,
# prints where the report is in the S3 bucket, and takes everything down (KEEP=1 keeps it up).
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
project=${COMPOSE_PROJECT_NAME:-shardci}

./build-base.sh
(cd "$root" && cargo build --quiet --release --bins)
mkdir -p bin
cp "$root"/target/release/{shardci,shardci-coordinator,shardci-worker} bin/
cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" bin/host-ca.crt
for target in shardci etcd moto; do
  docker build --quiet --target "$target" -t "shardci-compose/$target" . >/dev/null \
    || { echo "run-example: building the $target image failed" >&2; exit 1; }
done

export SHARDCI_COMPOSE_DIR=${SHARDCI_COMPOSE_DIR:-/tmp/shardci-compose}
mkdir -p "$SHARDCI_COMPOSE_DIR"/{worker1,worker2,instances}
token() { head -c "${1:-24}" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
# The coordinators seal runs' secrets in etcd with this key (32 bytes, hex).
[ -s "$SHARDCI_COMPOSE_DIR/secrets.key" ] || token 32 > "$SHARDCI_COMPOSE_DIR/secrets.key"
export SHARDCI_CLIENT_TOKEN=${SHARDCI_CLIENT_TOKEN:-$(token)}
export SHARDCI_WORKER_TOKEN=${SHARDCI_WORKER_TOKEN:-$(token)}
s3_port=${SHARDCI_COMPOSE_S3_PORT:-5000}

docker-compose -p "$project" up -d --quiet-pull 2>/dev/null || docker-compose -p "$project" up -d
if [ "${KEEP:-0}" != 1 ]; then
  trap 'docker-compose -p "$project" down -v --remove-orphans >/dev/null 2>&1' EXIT
fi

# moto starts empty: the bucket the coordinators publish to.
for _ in $(seq 60); do
  curl -sf -X PUT "http://127.0.0.1:$s3_port/shardci" >/dev/null && break
  sleep 1
done

export SHARDCI_TOKEN=$SHARDCI_CLIENT_TOKEN
coordinators="http://127.0.0.1:${SHARDCI_COMPOSE_PORT_1:-7070},http://127.0.0.1:${SHARDCI_COMPOSE_PORT_2:-7071}"
for _ in $(seq 60); do
  [ "$("$root"/target/release/shardci workers list --json --coordinator "$coordinators" 2>/dev/null | grep -c '"id"')" -ge 2 ] && break
  sleep 1
done
"$root"/target/release/shardci submit --repo "$root/examples/monorepo" --all --watch \
  --coordinator "$coordinators"
