#!/usr/bin/env bash
# Build a Debian trixie + Python 3.13 base image without a registry (debootstrap + docker import).
# Stand-in for python:3.13-slim-trixie where no registry can be pulled from (CI); cached by tag.
set -euo pipefail

TAG="${1:-${BASE_IMAGE_TAG:-local/python-base:trixie}}"
DOCKER="${DOCKER:-docker}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG exists; not rebuilding (docker rmi $TAG to force)"
    exit 0
fi
if ! command -v debootstrap >/dev/null; then
    echo "error: debootstrap not found; install it (apt-get install debootstrap)" >&2
    exit 1
fi

rootfs="$(mktemp -d /tmp/python-base.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
start=$SECONDS
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    trixie "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 || {
    tail -20 "$rootfs.log" >&2
    echo "error: debootstrap of trixie from $MIRROR failed (log: $rootfs.log)" >&2
    exit 1
}
rm -f "$rootfs.log"
# Package caches and lists are not needed at run time; the official slim image drops them too.
rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*
tar -C "$rootfs" -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$TAG" >/dev/null
echo "built base image $TAG in $((SECONDS - start))s"
