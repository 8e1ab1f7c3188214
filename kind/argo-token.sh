#!/usr/bin/env bash
# Print a bearer token for argo-server (client auth mode): the pipeline-operator account's
# long-lived token, in the "Bearer ..." form the Argo UI login box and ARGO_TOKEN take.
# No cluster, no context or no Secret: one `error:` line and a non-zero exit, at once.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need kubectl
kubectl config get-contexts "$KUBE_CONTEXT" >/dev/null 2>&1 ||
  die "no kubectl context $KUBE_CONTEXT: run 'make kind-up' first"
token=""
for _ in $(seq 1 30); do
  # Kubernetes fills the token in shortly after the Secret is created: only that case is waited for.
  if ! token="$(kc --request-timeout=10s -n mlops get secret pipeline-operator-token \
    -o jsonpath='{.data.token}' 2>&1)"; then
    die "cannot read Secret mlops/pipeline-operator-token on context $KUBE_CONTEXT (${token//$'\n'/ }): run 'make kind-up' first"
  fi
  [[ -n "$token" ]] && break
  sleep 1
done
[[ -n "$token" ]] || die "Secret mlops/pipeline-operator-token on context $KUBE_CONTEXT has no token after 30s: is kube-controller-manager running?"
printf 'Bearer %s\n' "$(printf '%s' "$token" | base64 -d)"
