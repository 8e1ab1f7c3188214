"""End-to-end on the local kind cluster (`make e2e`): submit the pipeline through argo-server at
http://localhost/argo/, predict through the ingress, run it again and check the gate's decision
against what is served. Skipped when no kind cluster is reachable; never part of `make test`.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
BASE_URL = "http://localhost"
NAMESPACE = "mlops"
VERSION_ANNOTATION = "dewpoint-pipeline/model-version"
# Synthetic data: the run does not depend on NOAA being reachable from the cluster.
RUN_PARAMETERS = {"source": "synthetic", "synthetic-rows": "2000"}
PAYLOAD = {"dataframe_split": {"columns": ["temp"], "data": [[12.8], [68.0]]}}

pytestmark = pytest.mark.on_cluster


def cluster_name() -> str:
    for line in (REPO / "kind" / "versions.env").read_text().splitlines():
        if line.startswith("CLUSTER_NAME="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("kind/versions.env has no CLUSTER_NAME")


CONTEXT = f"kind-{cluster_name()}"


def kubectl_path() -> str | None:
    local = REPO / "bin" / "kubectl"
    return str(local) if local.exists() else shutil.which("kubectl")


def kubectl(*args: str) -> str:
    """Run kubectl against the kind cluster's context only; return stdout."""
    proc = subprocess.run(
        [kubectl_path() or "kubectl", "--context", CONTEXT, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr.strip()}"
    return proc.stdout


@pytest.fixture(scope="module")
def cluster() -> None:
    """Skip (with the reason) unless the kind cluster answers on its own kubeconfig context."""
    if kubectl_path() is None:
        pytest.skip("kubectl not found: run `make tools`")
    contexts = subprocess.run(
        [kubectl_path(), "config", "get-contexts", "-o", "name"], capture_output=True, text=True
    ).stdout.split()
    if CONTEXT not in contexts:
        pytest.skip(f"no kubeconfig context {CONTEXT}: run `make kind-up` (or `make e2e`)")
    info = subprocess.run(
        [kubectl_path(), "--context", CONTEXT, "cluster-info", "--request-timeout=10s"],
        capture_output=True,
        text=True,
    )
    if info.returncode != 0:
        pytest.skip(f"kind cluster {CONTEXT} is not reachable: {info.stderr.strip()[:200]}")


@pytest.fixture(scope="module")
def token(cluster: None) -> str:
    proc = subprocess.run(
        [str(REPO / "kind" / "argo-token.sh")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def client(token: str) -> Any:
    from workflows.settings import ArgoSettings
    from workflows.submit import ArgoClient

    return ArgoClient(
        ArgoSettings(server_url=f"{BASE_URL}/argo/", token=token, namespace=NAMESPACE),
        timeout=60,
    )


def test_ingress_serves_argo_with_client_auth_and_mlflow(cluster: None, token: str) -> None:
    ui = httpx.get(f"{BASE_URL}/argo/", timeout=30)
    assert ui.status_code == 200 and 'href="/argo/"' in ui.text, "--base-href=/argo/"
    api = f"{BASE_URL}/argo/api/v1/workflows/{NAMESPACE}"
    assert httpx.get(api, timeout=30).status_code == 401, "anonymous access must be refused"
    assert httpx.get(api, headers={"Authorization": token}, timeout=30).status_code == 200
    # The operator's token is scoped to mlops: the argo namespace is off limits.
    other = httpx.get(
        f"{BASE_URL}/argo/api/v1/workflows/argo", headers={"Authorization": token}, timeout=30
    )
    assert other.status_code == 403
    assert httpx.get(f"{BASE_URL}/mlflow/health", timeout=30).status_code == 200
    assert httpx.get(f"{BASE_URL}/mlflow/", timeout=30).status_code == 200


def run_pipeline(client: Any, parameters: dict[str, str]) -> dict[str, str]:
    """Apply the template, submit a run, wait for success; return the promote step's outputs."""
    from hera.workflows import models as m

    from workflows.pipeline import build_run_workflow, render
    from workflows.settings import PipelineSettings
    from workflows.submit import wait_for

    settings = PipelineSettings()
    resources = render(settings)
    client.apply_workflow_template(resources["workflow-template"])
    client.apply_cron_workflow(resources["cron-workflow"])
    workflow = m.Workflow.model_validate(build_run_workflow(settings, parameters).to_dict())
    name = client.submit(workflow)
    assert wait_for(client, name, poll_seconds=5, timeout_seconds=45 * 60) == 0
    nodes = client.get_workflow(name).status.nodes.values()
    # With a retry strategy the task is a Retry node ("promote") over attempts ("promote(0)");
    # Argo copies the successful attempt's outputs to it. Take any node of the task with outputs.
    promote = [
        n
        for n in nodes
        if (n.display_name or "").split("(")[0] == "promote" and n.outputs and n.outputs.parameters
    ]
    assert promote, f"workflow {name} has no promote outputs"
    return {p.name: str(p.value) for p in promote[0].outputs.parameters}


def served_version() -> str | None:
    dep = json.loads(kubectl("-n", NAMESPACE, "get", "deployment", "model-server", "-o", "json"))
    annotations = dep["spec"]["template"]["metadata"].get("annotations") or {}
    return annotations.get(VERSION_ANNOTATION)


def predict() -> list[float]:
    response = httpx.post(f"{BASE_URL}/model/invocations", json=PAYLOAD, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    values = body["predictions"] if isinstance(body, dict) else body
    values = [v if isinstance(v, int | float) else next(iter(v.values())) for v in values]
    assert len(values) == 2 and all(math.isfinite(v) for v in values), body
    return values


def test_pipeline_deploys_then_the_gate_decides_what_is_served(client: Any) -> None:
    first = run_pipeline(client, RUN_PARAMETERS)
    # submit installed the weekly schedule next to the template.
    cron = json.loads(
        kubectl("-n", NAMESPACE, "get", "cronworkflow", "dewpoint-pipeline-weekly", "-o", "json")
    )
    assert cron["spec"]["workflowSpec"]["workflowTemplateRef"]["name"] == "dewpoint-pipeline"
    if served_version() is None:
        assert first["promoted"] == "true", "no champion yet: the first model must be promoted"
    assert served_version() == first["champion-version"]
    cold, warm = predict()
    assert warm > cold, "dew point rises with temperature"

    second = run_pipeline(client, RUN_PARAMETERS)
    new_rmse = float(second["new-rmse"])
    champion_rmse = float(second["champion-rmse"])
    tolerance = 0.0  # the template's default gate-tolerance
    assert (second["promoted"] == "true") == (new_rmse <= champion_rmse + tolerance), second
    assert served_version() == second["champion-version"], "the champion is what is served"
    if second["promoted"] == "false":
        assert second["champion-version"] == first["champion-version"]
        assert predict() == [cold, warm], "a rejected model leaves the served one untouched"
    else:
        assert int(second["champion-version"]) > int(first["champion-version"])
        again = predict()
        assert again[1] > again[0]
