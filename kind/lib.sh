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

# need TOOL...: stop at the first one missing, saying where it comes from: `make tools` installs
# kind, kubectl and helm; Docker, curl and Python are prerequisites (README, "Cluster").
need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 && continue
    case "$tool" in
      kind | kubectl | helm) die "$tool not found: run 'make tools' (or install it yourself)" ;;
      docker) die "$tool not found: install Docker (a prerequisite, README \"Cluster\"; DOCKER=... names another client)" ;;
      *) die "$tool not found: install it (a prerequisite, README \"Cluster\")" ;;
    esac
  done
}

sha256_of() { # macOS ships shasum, Linux sha256sum
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

# download URL DEST WHAT [INSTEAD]: one `error:` line naming WHAT and curl's reason when it fails (no
# network, proxy, 404), instead of curl's own progress and error output; INSTEAD says what else to do
# (default: install WHAT yourself).
download() {
  local instead="${4:-install $3 yourself}"
  command -v curl >/dev/null 2>&1 || die "curl not found: install curl to download $3, or $instead"
  local err
  if ! err="$(curl -fsSL --retry 2 --connect-timeout 15 -o "$2" "$1" 2>&1)"; then
    die "cannot download $3 from $1 (${err//$'\n'/ }): check your network or proxy, or $instead"
  fi
}

# Warn when the kubectl on PATH is older than the pinned one: its built-in kustomize renders
# kind/ differently (`kubectl kustomize` is kustomize vendored into kubectl at build time).
warn_if_old_kubectl() {
  local json found pattern='"gitVersion": *"([^"]+)"'
  json="$(kubectl version --client -o json 2>/dev/null)" || return 0
  [[ "$json" =~ $pattern ]] || return 0
  found="${BASH_REMATCH[1]}"
  if version_older "$found" "$KUBECTL_VERSION"; then
    printf 'warning: kubectl %s on PATH (%s) is older than the pinned %s, and its built-in kustomize differs: install %s (make tools puts it in ./bin; put ./bin first on PATH)\n' \
      "$found" "$(command -v kubectl)" "$KUBECTL_VERSION" "$KUBECTL_VERSION" >&2
  fi
}

# version_older A B: whether vX.Y.Z A is older than B (suffixes such as -dispatcher ignored).
version_older() {
  local a b
  IFS=. read -r -a a <<<"${1#v}"
  IFS=. read -r -a b <<<"${2#v}"
  local i
  for i in 0 1 2; do
    local x="${a[i]%%[!0-9]*}" y="${b[i]%%[!0-9]*}"
    ((${x:-0} < ${y:-0})) && return 0
    ((${x:-0} > ${y:-0})) && return 1
  done
  return 1
}

# kubectl bound to our cluster's context, so a user's other clusters are never touched.
kc() { kubectl --context "$KUBE_CONTEXT" "$@"; }

cluster_exists() {
  kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER_NAME"
}
