#!/usr/bin/env bash
# Print a bearer token for argo-server (client auth mode): the pipeline-operator account's
# long-lived token, in the "Bearer ..." form the Argo UI login box and ARGO_TOKEN take.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need kubectl
token=""
for _ in $(seq 1 30); do # Kubernetes fills the token in shortly after the Secret is created
  token="$(kc -n mlops get secret pipeline-operator-token -o jsonpath='{.data.token}' 2>/dev/null || true)"
  [[ -n "$token" ]] && break
  sleep 1
done
[[ -n "$token" ]] || die "no token in Secret mlops/pipeline-operator-token on context $KUBE_CONTEXT: run 'make kind-up' first"
printf 'Bearer %s\n' "$(printf '%s' "$token" | base64 -d)"
