#!/usr/bin/env bash
# Create (or reuse) the local kind cluster and install everything the pipeline needs: images,
# Traefik, Argo Workflows, MLflow + PostgreSQL, SeaweedFS and the model server. Idempotent.
#   SKIP_IMAGES=1 kind/up.sh   reuse images already loaded into the cluster
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need docker kind kubectl helm
docker info >/dev/null 2>&1 || die "Docker is not running (docker info failed): start the Docker engine, then make kind-up"
[[ -f "$KIND_DIR/argo/upstream/install.yaml" ]] ||
  die "no Argo release manifest in kind/argo/upstream: run 'make argo-manifest' (make kind-up does)"
warn_if_old_kubectl
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

# MLflow's basic-auth users: the admin (and the app's CSRF key), the pipeline (steps), the model
# server and the UI viewer (read-only; `make mlflow-login` prints it). Created once, kept.
mlflow_user() { # secret username [extra --from-literal ...]
  local secret="$1" username="$2"
  shift 2
  if ! kc -n mlops get secret "$secret" >/dev/null 2>&1; then
    kc -n mlops create secret generic "$secret" --from-literal=username="$username" \
      --from-literal=password="$(random_hex 24)" "$@"
  fi
}
mlflow_user mlflow-admin admin --from-literal=flask-secret-key="$(random_hex 32)"
mlflow_user mlflow-pipeline pipeline
mlflow_user mlflow-model-server model-server
mlflow_user mlflow-viewer viewer

step "Pipeline platform in mlops (kind/overlays/kind)"
# A finished Job is never run again and its pod template cannot change: one that failed once
# (SeaweedFS not up in time) would make every later run wait for it until its TTL. It is
# idempotent (an existing bucket is success), so start it afresh on every run.
kc -n mlops delete job seaweedfs-create-bucket mlflow-users --ignore-not-found --wait=true
kc apply --server-side --force-conflicts -k kind/overlays/kind -l 'dewpoint-pipeline/apply!=create-only'
# Workflow pods may reach the Kubernetes API and nothing else on its ports: put this cluster's
# addresses (the `kubernetes` Service, the API server's endpoints) into the policy in place of the
# overlay's placeholder, which matches nothing.
api_ip="$(kc -n default get service kubernetes -o jsonpath='{.spec.clusterIP}')"
endpoints="$(kc -n default get endpointslices -l kubernetes.io/service-name=kubernetes \
  -o jsonpath='{range .items[*]}{range .endpoints[*]}{.addresses[0]}{" "}{end}{end}')"
endpoint_port="$(kc -n default get endpointslices -l kubernetes.io/service-name=kubernetes \
  -o jsonpath='{.items[0].ports[0].port}')"
[[ -n "$api_ip" && -n "${endpoints// /}" && -n "$endpoint_port" ]] ||
  die "cannot read the Kubernetes API's addresses on context $KUBE_CONTEXT"
peers=""
for ip in $endpoints; do peers+="${peers:+,}{\"ipBlock\":{\"cidr\":\"$ip/32\"}}"; done
kc -n mlops patch networkpolicy workflow-pods-kubernetes-api --type=json -p "$(printf \
  '[{"op":"replace","path":"/spec/egress","value":[{"to":[{"ipBlock":{"cidr":"%s/32"}}],"ports":[{"protocol":"TCP","port":443}]},{"to":[%s],"ports":[{"protocol":"TCP","port":%s}]}]}]' \
  "$api_ip" "$peers" "$endpoint_port")"
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
kc -n mlops wait --for=condition=complete job/mlflow-users --timeout=5m

step "Pipeline: WorkflowTemplate and CronWorkflow (make publish)"
"$KIND_DIR/publish.sh"

step "Ready"
cat <<MSG
  Argo UI        http://localhost/argo/      (log in with: make argo-token)
  MLflow UI      http://localhost/mlflow/    (read-only login: make mlflow-login)
  Model server   http://localhost/model/     (0 replicas until the pipeline's first deploy)

Next:
  ARGO_TOKEN="\$(make -s argo-token)" && export ARGO_TOKEN ARGO_SERVER_URL=http://localhost/argo/
  .venv/bin/python workflows/submit.py --run-now --wait   # runs the installed template
  make publish   # after changing the pipeline: install the new template (needs your kubeconfig)
  make smoke     # predict through the ingress
  make e2e       # the on-cluster end-to-end test
  make kind-down # delete the cluster
MSG
