#!/usr/bin/env bash
# Create (or reuse) the local kind cluster and install everything the pipeline needs: images,
# Traefik, Argo Workflows, MLflow + PostgreSQL, SeaweedFS and the model server. Idempotent.
#   SKIP_IMAGES=1 kind/up.sh   reuse images already loaded into the cluster
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need docker kind kubectl helm
cd "$REPO_DIR"

step "Cluster $KIND_CLUSTER_NAME"
if cluster_exists; then
  echo "reusing the existing kind cluster '$KIND_CLUSTER_NAME'"
else
  kind create cluster --name "$KIND_CLUSTER_NAME" --config kind/cluster.yaml --wait 180s
fi
kc cluster-info >/dev/null

if [[ "${SKIP_IMAGES:-}" != 1 ]]; then
  step "Images: build dewpoint-pipeline/{step,mlflow,serve} and load them into kind"
  make --no-print-directory images kind-load KIND_CLUSTER="$KIND_CLUSTER_NAME"
fi

step "Traefik $TRAEFIK_CHART_VERSION (ingress on http://localhost)"
kc apply --server-side -f kind/traefik-namespace.yaml
helm upgrade --install traefik traefik --repo "$TRAEFIK_CHART_REPO" --version "$TRAEFIK_CHART_VERSION" \
  --kube-context "$KUBE_CONTEXT" --namespace traefik --values kind/traefik-values.yaml \
  --wait --timeout 5m

step "Argo Workflows $ARGO_WORKFLOWS_VERSION (server-side apply of the release manifest + kind/base/argo)"
# --force-conflicts: on a re-run our patches take back the fields they set from an earlier apply.
kc kustomize kind/argo | kc apply --server-side --force-conflicts -f -

step "mlops namespace and credentials (generated once, kept across runs)"
kc apply --server-side -k kind/base/namespace
random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
if ! kc -n mlops get secret mlflow-postgres >/dev/null 2>&1; then
  # Hex only: the password goes into MLflow's postgresql+psycopg:// URL unescaped.
  kc -n mlops create secret generic mlflow-postgres \
    --from-literal=username=mlflow --from-literal=password="$(random_hex 24)"
fi
if ! kc -n mlops get secret seaweedfs-s3 >/dev/null 2>&1; then
  access_key="$(random_hex 10)"
  secret_key="$(random_hex 20)"
  s3_json="$(printf '{"identities":[{"name":"argo","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","List","Tagging","Write"]}]}' "$access_key" "$secret_key")"
  kc -n mlops create secret generic seaweedfs-s3 --from-literal=accessKey="$access_key" \
    --from-literal=secretKey="$secret_key" --from-literal=s3.json="$s3_json"
fi

step "Pipeline platform in mlops (kind/overlays/kind)"
kc apply --server-side --force-conflicts -k kind/overlays/kind -l 'dewpoint-pipeline/apply!=create-only'
# The model server belongs to the pipeline once its deploy step has run (model, replicas,
# provenance): re-applying it would roll the served model back. Create it only when missing.
if ! kc -n mlops get deployment model-server >/dev/null 2>&1; then
  kc create -k kind/overlays/kind -l 'dewpoint-pipeline/apply=create-only'
else
  echo "deployment/model-server exists: left as the pipeline deployed it"
fi

step "Waiting for everything to be ready"
kc -n argo rollout status deployment/workflow-controller --timeout=5m
kc -n argo rollout status deployment/argo-server --timeout=5m
kc -n mlops rollout status statefulset/postgres --timeout=5m
kc -n mlops rollout status deployment/seaweedfs --timeout=5m
kc -n mlops rollout status deployment/mlflow --timeout=10m
kc -n mlops wait --for=condition=complete job/seaweedfs-create-bucket --timeout=5m

step "Ready"
cat <<MSG
  Argo UI        http://localhost/argo/      (log in with: make argo-token)
  MLflow UI      http://localhost/mlflow/
  Model server   http://localhost/model/     (0 replicas until the pipeline's first deploy)

Next:
  export ARGO_SERVER_URL=http://localhost/argo/ ARGO_TOKEN="\$(make -s argo-token)"
  .venv/bin/python workflows/submit.py --run-now --wait
  make smoke     # predict through the ingress
  make e2e       # the on-cluster end-to-end test
  make kind-down # delete the cluster
MSG
