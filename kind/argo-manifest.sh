#!/usr/bin/env bash
# Put Argo Workflows' release install.yaml (version and SHA-256 pinned in kind/versions.env) at
# kind/argo/upstream/install.yaml, which kind/argo renders from. Downloads the release asset, or
# copies ARGO_INSTALL_YAML=/path/to/install.yaml when set; refuses any file whose SHA-256 differs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

dest="$KIND_DIR/argo/upstream/install.yaml"
url="https://github.com/argoproj/argo-workflows/releases/download/$ARGO_WORKFLOWS_VERSION/install.yaml"
what="Argo Workflows $ARGO_WORKFLOWS_VERSION install.yaml"
if [[ -f "$dest" && "$(sha256_of "$dest")" == "$ARGO_WORKFLOWS_INSTALL_SHA256" ]]; then
  echo "$what: already in kind/argo/upstream (sha256 verified)"
  exit 0
fi
mkdir -p "$(dirname "$dest")"
tmp="$(mktemp "$dest.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
if [[ -n "${ARGO_INSTALL_YAML:-}" ]]; then
  [[ -f "$ARGO_INSTALL_YAML" ]] || die "ARGO_INSTALL_YAML=$ARGO_INSTALL_YAML is not a file"
  cp "$ARGO_INSTALL_YAML" "$tmp"
  from="$ARGO_INSTALL_YAML"
else
  download "$url" "$tmp" "$what" \
    "fetch that file another way and run ARGO_INSTALL_YAML=/path/to/install.yaml make argo-manifest"
  from="$url"
fi
sum="$(sha256_of "$tmp")"
[[ "$sum" == "$ARGO_WORKFLOWS_INSTALL_SHA256" ]] ||
  die "$what from $from has sha256 $sum, not the pinned $ARGO_WORKFLOWS_INSTALL_SHA256 (kind/versions.env): not installed; see docs/cluster.md, 'The Argo release manifest'"
mv "$tmp" "$dest"
trap - EXIT
echo "$what: installed into kind/argo/upstream from $from (sha256 verified)"
