#!/usr/bin/env bash
# Makes the base image the compose images build on, without a registry: a minimal Debian root
# file system from debootstrap, imported into Docker as shardci-base:bookworm. Idempotent.
set -euo pipefail
image=${BASE:-shardci-base:bookworm}
if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
command -v debootstrap >/dev/null 2>&1 || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "build-base: debootstrap bookworm into $root (a few minutes)" >&2
debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
tar -C "$root" -c . | docker import - "$image" >/dev/null
echo "build-base: imported $image" >&2
