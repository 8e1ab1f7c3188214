#!/usr/bin/env bash
# Load images from the local Docker engine into the kind cluster: `kind/load-images.sh IMAGE...`.
# `docker save` of one platform, then `kind load image-archive`: `kind load docker-image` fails
# with Docker's containerd image store ("ctr: content digest ... not found", because the saved
# index names blobs of other platforms and attestations that are not in the archive;
# kubernetes-sigs/kind#3795, workaround documented in kubernetes-sigs/kind#4247). Docker's
# classic store (and Docker < 28, whose `save` has no --platform) saves one platform anyway.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DOCKER="${DOCKER:-docker}"
need "$DOCKER" kind
(($# > 0)) || die "usage: kind/load-images.sh IMAGE..."
"$DOCKER" info >/dev/null 2>&1 || die "Docker is not running ($DOCKER info failed): start the Docker engine"
cluster_exists || die "no kind cluster '$KIND_CLUSTER_NAME': run 'make kind-up' first"

save=("$DOCKER" image save)
if "$DOCKER" image save --help 2>/dev/null | grep -q -- '--platform'; then
  save+=(--platform "$("$DOCKER" version --format '{{.Server.Os}}/{{.Server.Arch}}')")
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for image in "$@"; do
  err="$("${save[@]}" -o "$tmp/image.tar" "$image" 2>&1)" ||
    die "cannot save image $image (${err//$'\n'/ }): build it first with 'make images'"
  kind load image-archive "$tmp/image.tar" --name "$KIND_CLUSTER_NAME"
  rm -f "$tmp/image.tar"
done
