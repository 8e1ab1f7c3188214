"""Deploy stage, `kubernetes` target, against the FAKE API server in tests/fake_k8s.py."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import mlflow
import pytest

from steps import deploy
from steps.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_TRANSIENT, StepError, TransientError
from steps.deploy_targets.common import DeployRequest
from steps.deploy_targets.kubernetes import ANNOTATION_KEYS, deploy_kubernetes
from steps.model import LinearCoefficients
from tests.conftest import MlflowServer, assert_one_line_error, free_port
from tests.fake_k8s import FakeKubernetes
from tests.model_helpers import register_served

NAME = "dewpoint-lr"


def request(version: str) -> DeployRequest:
    """A request for version `version` with recognisable provenance."""
    return DeployRequest(
        NAME, version, "http://unused", run_id=f"run{version}", workflow_uid="wf-1"
    )


def uri(version: str) -> str:
    """MODEL_URI of a version."""
    return f"models:/{NAME}/{version}"


def deploy_to(fake: FakeKubernetes, version: str, **overrides: Any):
    """Call the kubernetes target against the fake, with a short timeout; `overrides` replace
    any of its keyword arguments (e.g. `kube_api=None` to read the kubeconfig)."""
    arguments: dict[str, Any] = {
        "namespace": fake.namespace,
        "deployment": fake.name,
        "service_url": fake.service_url,
        "timeout": 30,
        "kube_api": fake.api_url,
    }
    return deploy_kubernetes(request(version), **(arguments | overrides))


@pytest.fixture
def cluster() -> Iterator[FakeKubernetes]:
    """A fake cluster serving version 1."""
    with FakeKubernetes(uri("1")) as fake:
        yield fake


def test_rollout_success_patches_env_and_annotations(cluster: FakeKubernetes) -> None:
    result = deploy_to(cluster, "2")

    assert (result.served_version, result.changed) == ("2", True)
    assert cluster.patched_model_uris() == [uri("2")]
    assert cluster.serving_uri == uri("2")
    template = cluster.deployment["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        ANNOTATION_KEYS["version"]: "2",
        ANNOTATION_KEYS["run_id"]: "run2",
        ANNOTATION_KEYS["workflow_uid"]: "wf-1",
    }
    # Merged by name: the other env var and the image are untouched.
    container = template["spec"]["containers"][0]
    assert [e["name"] for e in container["env"]] == ["MLFLOW_TRACKING_URI", "MODEL_URI"]
    assert container["image"] == "dewpoint-pipeline/serve:0.1.0"


def test_already_served_version_is_a_no_op(cluster: FakeKubernetes) -> None:
    result = deploy_to(cluster, "1")

    assert (result.served_version, result.changed) == ("1", False)
    assert cluster.patches == []


def test_progress_deadline_exceeded_rolls_back(cluster: FakeKubernetes) -> None:
    cluster.never_ready.add(uri("2"))

    with pytest.raises(StepError, match="exceeded its progress deadline") as failure:
        deploy_to(cluster, "2")

    assert f"rolled back to {uri('1')}" in str(failure.value)
    assert cluster.patched_model_uris() == [uri("2"), uri("1")]
    assert cluster.serving_uri == uri("1")
    # Annotations we added are removed again, not left pointing at the failed version.
    assert cluster.deployment["spec"]["template"]["metadata"]["annotations"] == {}


def test_smoke_test_failure_rolls_back(cluster: FakeKubernetes) -> None:
    cluster.bad_predictions.add(uri("2"))

    with pytest.raises(StepError, match=r"smoke test: .* answered 500") as failure:
        deploy_to(cluster, "2")

    assert f"rolled back to {uri('1')}" in str(failure.value)
    assert cluster.patched_model_uris() == [uri("2"), uri("1")]
    assert cluster.serving_uri == uri("1")


def test_smoke_test_retries_dropped_connections_only(cluster: FakeKubernetes) -> None:
    cluster.drop_connections = 2  # kube-proxy still routing to a pod that just went away

    assert deploy_to(cluster, "2").changed is True
    assert cluster.patched_model_uris() == [uri("2")]


def test_unreachable_service_rolls_back(cluster: FakeKubernetes) -> None:
    cluster.drop_connections = 100

    with pytest.raises(StepError, match=r"smoke test: .* failed: RemoteProtocolError"):
        deploy_to(cluster, "2")

    assert cluster.patched_model_uris() == [uri("2"), uri("1")]


def test_scaled_to_zero_is_scaled_to_one() -> None:
    with FakeKubernetes(uri("1"), replicas=0) as fake:
        result = deploy_to(fake, "1")  # same URI, but nothing serves it: not a no-op

        assert result.changed is True
        assert fake.deployment["spec"]["replicas"] == 1
        assert fake.serving_uri == uri("1")


def test_failed_rollout_from_zero_replicas_restores_zero() -> None:
    with FakeKubernetes(None, replicas=0) as fake:
        fake.bad_predictions.add(uri("2"))

        with pytest.raises(StepError, match="rolled back to None"):
            deploy_to(fake, "2")

        assert fake.deployment["spec"]["replicas"] == 0
        assert fake.model_uri() is None


@pytest.mark.parametrize("verb", ["get", "patch"])
def test_forbidden_names_the_missing_permission(cluster: FakeKubernetes, verb: str) -> None:
    cluster.forbidden.add(verb)

    with pytest.raises(StepError, match=f"missing RBAC permission '{verb}'"):
        deploy_to(cluster, "2")

    assert cluster.model_uri() == uri("1")


def test_unreachable_api_is_a_one_line_error(cluster: FakeKubernetes) -> None:
    with pytest.raises(TransientError, match="Kubernetes API unreachable"):  # exit 75: retried
        deploy_to(cluster, "2", timeout=5, kube_api="http://127.0.0.1:9")  # discard port: unused


def test_no_kubeconfig_is_a_one_line_error(
    cluster: FakeKubernetes, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))

    with pytest.raises(StepError, match="no Kubernetes configuration"):
        deploy_to(cluster, "2", timeout=5, kube_api=None)


@pytest.fixture(scope="module")
def registered(mlflow_server: MlflowServer) -> tuple[str, str]:
    """A registered model with versions 1 and 2 of our served model (deploy checks that they are
    ours before it patches anything; the fake cluster does not load them)."""
    name = f"deploy-k8s-{uuid.uuid4().hex[:8]}"
    for slope in (0.8, 0.9):
        register_served(mlflow_server.url, "0", name, LinearCoefficients(slope, -9.0))
    return mlflow_server.url, name


def run_cli(fake: FakeKubernetes, registered: tuple[str, str], *args: str) -> list:
    """`python -m steps deploy --target kubernetes ...` in-process, against the fake."""
    tracking_uri, name = registered
    return deploy.main(
        [
            *("--tracking-uri", tracking_uri, "--model-name", name, "--kube-api", fake.api_url),
            *("--service-url", fake.service_url, "--namespace", fake.namespace, *args),
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize("which", [["--version", "2"], ["--alias", "champion"]])
def test_cli_deploys_and_writes_outputs(
    registered: tuple[str, str], tmp_path, capsys: pytest.CaptureFixture, which: list[str]
) -> None:
    """By number, or by the alias the pipeline deploys (which names version 2 here)."""
    tracking_uri, name = registered
    mlflow.MlflowClient(tracking_uri).set_registered_model_alias(name, "champion", "2")
    with FakeKubernetes(f"models:/{name}/1") as fake:
        code = run_cli(
            fake, registered, "--target", "kubernetes", *which, "--outputs-dir", str(tmp_path)
        )

        assert code == 0
        assert json.loads(capsys.readouterr().out) == {"changed": "true", "served-version": "2"}
        assert (tmp_path / "served-version").read_text() == "2"
        assert (tmp_path / "changed").read_text() == "true"
        assert fake.model_uri() == f"models:/{name}/2"
        # No --run-id (the pipeline passes none: it deploys the champion, which another run may
        # have trained): the provenance annotation is the version's own run, from the registry.
        version = mlflow.MlflowClient(registered[0]).get_model_version(name, "2")
        annotations = fake.deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations[ANNOTATION_KEYS["run_id"]] == version.run_id != ""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message", "exit_code"),
    [
        (["--target", "kubernetes", "--version", "7"], "does not exist at", EXIT_BAD_INPUT),
        (["--target", "kubernetes", "--version", "two"], "--version 'two': must be an integer",
         EXIT_BAD_INPUT),
        (["--target", "moon"], "--target 'moon': must be one of local, kubernetes",
         EXIT_BAD_INPUT),
        (["--target", "kubernetes", "--version", "2"], "missing RBAC permission 'patch'",
         EXIT_FAILED),
    ],
)  # fmt: skip
def test_cli_bad_input_is_one_line_and_changes_nothing(
    registered: tuple[str, str],
    capsys: pytest.CaptureFixture,
    args: list[str],
    message: str,
    exit_code: int,
) -> None:
    _, name = registered
    with FakeKubernetes(f"models:/{name}/1") as fake:
        fake.forbidden.add("patch")

        assert run_cli(fake, registered, *args) == exit_code

        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err
        assert fake.patches == [] and fake.model_uri() == f"models:/{name}/1"


@pytest.mark.slow
def test_cli_against_a_dead_tracking_server_fails_transient_and_changes_nothing(
    tmp_path, capsys: pytest.CaptureFixture
) -> None:
    """No tracking server on the port: deploy cannot check the version, so it patches nothing
    and fails in one line with exit 75 (Argo retries it), after the bounded retries of
    steps/tracking.py. The hanging server is in tests/test_faults.py
    (`test_every_step_against_a_tracking_server_that_never_answers_fails_within_the_stated_bound`)."""
    dead = f"http://127.0.0.1:{free_port()}"
    with FakeKubernetes(uri("1")) as fake:
        before = copy.deepcopy(fake.deployment)
        code = deploy.main(
            [
                *("--tracking-uri", dead, "--model-name", NAME, "--kube-api", fake.api_url),
                *("--service-url", fake.service_url, "--namespace", fake.namespace),
                *("--target", "kubernetes", "--version", "2", "--outputs-dir", str(tmp_path / "o")),
            ]
        )

        assert_one_line_error(
            code, capsys.readouterr().err, f"cannot look up {uri('2')}", dead,
            exit_code=EXIT_TRANSIENT,
        )  # fmt: skip
        assert fake.patches == [] and fake.deployment == before
        assert fake.model_uri() == uri("1") and fake.serving_uri == uri("1")
    assert not (tmp_path / "o").exists()
