# Shared helpers for kind/*.sh: pinned versions, ./bin on PATH, logging. Sourced, never run.
# shellcheck shell=bash
KIND_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$KIND_DIR")"
# shellcheck source=versions.env
source "$KIND_DIR/versions.env"
# Tools from `make tools` are used only when the user has none of their own on PATH.
export PATH="$PATH:$REPO_DIR/bin"
# kind reads the cluster name from this variable, so `make kind-load` and plain `kind` commands
# target the same cluster as these scripts.
export KIND_CLUSTER_NAME="${KIND_CLUSTER_NAME:-$CLUSTER_NAME}"
KUBE_CONTEXT="kind-$KIND_CLUSTER_NAME"

step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found: run 'make tools' (or install it yourself)"
  done
}

# kubectl bound to our cluster's context, so a user's other clusters are never touched.
kc() { kubectl --context "$KUBE_CONTEXT" "$@"; }

cluster_exists() {
  kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER_NAME"
}
