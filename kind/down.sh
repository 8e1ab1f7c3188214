#!/usr/bin/env bash
# Delete the local kind cluster and everything in it (models, runs, artifacts, credentials).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need kind
if cluster_exists; then
  kind delete cluster --name "$KIND_CLUSTER_NAME"
else
  echo "no kind cluster '$KIND_CLUSTER_NAME': nothing to delete"
fi
