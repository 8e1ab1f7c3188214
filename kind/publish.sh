#!/usr/bin/env bash
# Install or update the pipeline's WorkflowTemplate and CronWorkflow on the kind cluster:
# `workflows/submit.py` through argo-server with a 10-minute token of the pipeline-publisher
# account (`kubectl create token`, so it needs your cluster credentials; the operator token of
# `make argo-token` may only run the installed template).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need kubectl
python="${PYTHON:-$REPO_DIR/.venv/bin/python}"
[[ -x "$python" ]] || die "no $python: run 'make setup' first"
kubectl config get-contexts "$KUBE_CONTEXT" >/dev/null 2>&1 ||
  die "no kubectl context $KUBE_CONTEXT: run 'make kind-up' first"
if ! token="$(kc --request-timeout=30s -n mlops create token pipeline-publisher --duration=10m 2>&1)"; then
  die "cannot get a pipeline-publisher token on context $KUBE_CONTEXT (${token//$'\n'/ }): run 'make kind-up' first"
fi
ARGO_TOKEN="$token" ARGO_SERVER_URL="${ARGO_SERVER_URL:-http://localhost/argo/}" \
  "$python" "$REPO_DIR/workflows/submit.py" "$@"
