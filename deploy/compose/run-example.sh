#!/usr/bin/env bash
# Brings up the compose installation (etcd x3, coordinator x2, worker x2, moto) from images
# built here, runs the example monorepo's full matrix on it, prints the run's table and where
# its report is in the S3 bucket, and takes everything down (KEEP=1 keeps it up).
#
#   run-example.sh [submit]   the CLI submits the example through both coordinator addresses
#   run-example.sh webhook    a signed GitHub push to the default branch, posted to the web
#                             port, starts the run: the coordinators fetch and plan it
#
# SHARDCI_COMPOSE_PROFILE=debug puts the debug binaries in the image (the tests' build);
# COMPOSE_PROJECT_NAME, SHARDCI_COMPOSE_DIR and the SHARDCI_COMPOSE_*PORT* variables keep
# several installations apart.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
project=${COMPOSE_PROJECT_NAME:-shardci}
trigger=${1:-submit}
case "$trigger" in
  submit | webhook) ;;
  *) echo "usage: run-example.sh [submit|webhook]" >&2; exit 2 ;;
esac
profile=${SHARDCI_COMPOSE_PROFILE:-release}

./build-base.sh
if [ "$profile" = release ]; then
  (cd "$root" && cargo build --quiet --release --bins)
else
  (cd "$root" && cargo build --quiet --bins)
fi
bin=$root/target/$profile
mkdir -p bin
for program in shardci shardci-coordinator shardci-worker; do
  # Without debug information a debug build is a seventh of its size in the image.
  strip --strip-debug -o "bin/$program" "$bin/$program"
done
cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" bin/host-ca.crt
for target in shardci etcd moto; do
  docker build --quiet --target "$target" -t "shardci-compose/$target" . >/dev/null \
    || { echo "run-example: building the $target image failed" >&2; exit 1; }
done

export SHARDCI_COMPOSE_DIR=${SHARDCI_COMPOSE_DIR:-/tmp/shardci-compose}
forge=$SHARDCI_COMPOSE_DIR/forge
mkdir -p "$SHARDCI_COMPOSE_DIR"/{worker1,worker2,instances} "$forge"
token() { head -c "${1:-24}" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
# The coordinators seal runs' secrets in etcd with this key (32 bytes, hex).
[ -s "$SHARDCI_COMPOSE_DIR/secrets.key" ] || token 32 > "$SHARDCI_COMPOSE_DIR/secrets.key"
export SHARDCI_CLIENT_TOKEN=${SHARDCI_CLIENT_TOKEN:-$(token)}
export SHARDCI_WORKER_TOKEN=${SHARDCI_WORKER_TOKEN:-$(token)}
s3_port=${SHARDCI_COMPOSE_S3_PORT:-5000}

# The "forge": the example monorepo as a repository of its own (default branch master),
# which the coordinators plan for themselves and the workers fetch, both by path; and the
# secret its webhooks are signed with.
rm -rf "$forge/monorepo.git" "$forge/work"
cp -r "$root/examples/monorepo" "$forge/work"
git -C "$forge/work" init -q -b master
git -C "$forge/work" add -A
git -C "$forge/work" -c user.name=shardci -c user.email=shardci@localhost commit -q -m example
git clone -q --bare "$forge/work" "$forge/monorepo.git"
head=$(git -C "$forge/work" rev-parse HEAD)
rm -rf "$forge/work"
[ -s "$forge/webhook.secret" ] || token > "$forge/webhook.secret"
cat > "$forge/repositories.toml" <<EOF
[[repositories]]
name = "example/monorepo"
url = "$forge/monorepo.git"
webhook_secret_file = "webhook.secret"
EOF

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
shardci=$bin/shardci
coordinators="http://127.0.0.1:${SHARDCI_COMPOSE_PORT_1:-7070},http://127.0.0.1:${SHARDCI_COMPOSE_PORT_2:-7071}"
for _ in $(seq 60); do
  [ "$("$shardci" workers list --json --coordinator "$coordinators" 2>/dev/null | grep -c '"id"')" -ge 2 ] && break
  sleep 1
done

if [ "$trigger" = submit ]; then
  "$shardci" submit --repo "$root/examples/monorepo" --all --watch --coordinator "$coordinators"
  exit
fi

# A push event as GitHub sends it, signed with the repository's webhook secret; only the
# leader takes webhooks (a standby answers 503), so each web port is tried in turn.
delivery=run-example-$(token 8)
payload=$(printf '{"ref":"refs/heads/master","before":"%s","after":"%s","deleted":false,"repository":{"full_name":"example/monorepo","default_branch":"master"},"pusher":{"name":"%s"}}' \
  0000000000000000000000000000000000000000 "$head" "$delivery")
signature=sha256=$(printf '%s' "$payload" | openssl dgst -sha256 -hmac "$(cat "$forge/webhook.secret")" | sed 's/^.*= //')
accepted=""
for _ in $(seq 60); do
  for port in "${SHARDCI_COMPOSE_WEB_PORT_1:-8080}" "${SHARDCI_COMPOSE_WEB_PORT_2:-8081}"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/webhooks/github" \
      -H 'content-type: application/json' -H 'x-github-event: push' \
      -H "x-github-delivery: $delivery" -H "x-hub-signature-256: $signature" \
      --data-binary "$payload" 2>/dev/null || true)
    # 409: an earlier try of this very delivery was taken after all.
    case "$code" in 202 | 409) accepted=$port; break 2 ;; esac
  done
  sleep 1
done
[ -n "$accepted" ] || { echo "run-example: no coordinator accepted the push webhook" >&2; exit 1; }
echo "run-example: the push of $head to master was accepted on port $accepted" >&2

# The coordinator fetches, plans and submits on its own; the run names the pusher.
run=""
for _ in $(seq 120); do
  run=$("$shardci" runs list --json --coordinator "$coordinators" 2>/dev/null | python3 -c '
import json, sys
by = sys.argv[1] + " (push webhook)"
print(next((r["id"] for r in json.load(sys.stdin) if r["submitted_by"] == by), ""))
' "$delivery" || true)
  [ -n "$run" ] && break
  sleep 1
done
[ -n "$run" ] || { echo "run-example: the push webhook started no run" >&2; exit 1; }
echo "run-example: the webhook started run $run" >&2
"$shardci" runs watch "$run" --coordinator "$coordinators"
