#!/usr/bin/env bash
# Install the pinned kind, kubectl and helm into ./bin, verifying each download against
# kind/tools.sha256. A tool already on PATH is left alone (and reported).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

case "$(uname -s)" in Linux) os=linux ;; Darwin) os=darwin ;; *) die "unsupported OS $(uname -s)" ;; esac
case "$(uname -m)" in x86_64 | amd64) arch=amd64 ;; aarch64 | arm64) arch=arm64 ;; *) die "unsupported CPU $(uname -m)" ;; esac
bin="$REPO_DIR/bin"
mkdir -p "$bin"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

pinned_sha256() { # tool version -> checksum from the table, or nothing
  awk -v t="$1" -v v="$2" -v p="$os/$arch" '$1 == t && $2 == v && $3 == p { print $4 }' "$KIND_DIR/tools.sha256"
}

fetch_verified() { # url tool version dest
  local sum
  sum="$(pinned_sha256 "$2" "$3")"
  [[ -n "$sum" ]] || die "no pinned checksum for $2 $3 on $os/$arch in kind/tools.sha256: install $2 $3 yourself and put it on PATH"
  download "$1" "$4" "$2 $3"
  [[ "$(sha256_of "$4")" == "$sum" ]] || die "checksum mismatch for $1 (expected $sum): not installed"
}

install_tool() { # tool version
  local tool="$1" version="$2"
  if command -v "$tool" >/dev/null 2>&1 && [[ "$(command -v "$tool")" != "$bin/$tool" ]]; then
    echo "$tool: using $(command -v "$tool") from PATH (pinned: $version)"
    return
  fi
  if [[ -x "$bin/$tool" && -f "$bin/.$tool-$version" ]]; then
    echo "$tool: $version already in ./bin"
    return
  fi
  case "$tool" in
    kind) fetch_verified "https://github.com/kubernetes-sigs/kind/releases/download/$version/kind-$os-$arch" kind "$version" "$tmp/kind" ;;
    kubectl) fetch_verified "https://dl.k8s.io/release/$version/bin/$os/$arch/kubectl" kubectl "$version" "$tmp/kubectl" ;;
    helm)
      fetch_verified "https://get.helm.sh/helm-$version-$os-$arch.tar.gz" helm "$version" "$tmp/helm.tgz"
      tar -xzf "$tmp/helm.tgz" -C "$tmp" "$os-$arch/helm"
      mv "$tmp/$os-$arch/helm" "$tmp/helm"
      ;;
  esac
  install -m 0755 "$tmp/$tool" "$bin/$tool"
  rm -f "$bin/.$tool-"*
  touch "$bin/.$tool-$version"
  echo "$tool: installed $version into ./bin (sha256 verified)"
}

install_tool kind "$KIND_VERSION"
install_tool kubectl "$KUBECTL_VERSION"
install_tool helm "$HELM_VERSION"
warn_if_old_kubectl
