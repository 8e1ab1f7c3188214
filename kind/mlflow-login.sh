#!/usr/bin/env bash
# Print the read-only MLflow UI login (user `viewer`, Secret mlops/mlflow-viewer) for
# http://localhost/mlflow/. No cluster or context: one `error:` line, at once.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need kubectl
kubectl config get-contexts "$KUBE_CONTEXT" >/dev/null 2>&1 ||
  die "no kubectl context $KUBE_CONTEXT: run 'make kind-up' first"
for key in username password; do
  if ! value="$(kc --request-timeout=10s -n mlops get secret mlflow-viewer -o jsonpath="{.data.$key}" 2>&1)"; then
    die "cannot read Secret mlops/mlflow-viewer on context $KUBE_CONTEXT (${value//$'\n'/ }): run 'make kind-up' first"
  fi
  printf '%s: %s\n' "$key" "$(printf '%s' "$value" | base64 -d)"
done
