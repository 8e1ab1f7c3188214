"""Rendering: golden YAML, the step contract, pod security, settings flowing into resources."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from steps import __version__
from workflows import submit
from workflows.pipeline import CRON_NAME, TEMPLATE_NAME, render
from workflows.settings import PipelineSettings, SettingsError, default_image
from workflows.validate import validate_resources

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
STAGES = ("fetch", "validate", "train", "register", "promote", "deploy")
NETWORK_STAGES = {"fetch", "register", "promote", "deploy"}
VERSION_PLACEHOLDER = "<version>"


def normalise(value: Any) -> Any:
    """Replace the package version (image tag, version label, --code-version) by a placeholder,
    so the golden files survive a version bump."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, str):
        if value == __version__:
            return VERSION_PLACEHOLDER
        if value.endswith(f":{__version__}"):
            return value[: -len(__version__)] + VERSION_PLACEHOLDER
    return value


@pytest.fixture(scope="module")
def rendered_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files `submit.py --render DIR` writes, produced through the CLI entry point."""
    directory = tmp_path_factory.mktemp("render")
    assert submit.main(["--render", str(directory)]) == 0
    return directory


@pytest.fixture(scope="module")
def resources() -> dict[str, dict]:
    return render(PipelineSettings())


def _templates(resources: dict[str, dict]) -> dict[str, dict]:
    return {t["name"]: t for t in resources["workflow-template"]["spec"]["templates"]}


@pytest.mark.parametrize("name", ["workflow-template.yaml", "cron-workflow.yaml"])
def test_rendered_yaml_matches_golden(rendered_dir: Path, name: str):
    actual = yaml.safe_dump(
        normalise(yaml.safe_load((rendered_dir / name).read_text())), sort_keys=False
    )
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        if os.environ.get("CI"):
            pytest.fail(
                "UPDATE_GOLDEN is set in CI: regenerate golden files locally and commit them"
            )
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual)
    assert golden.exists(), f"{golden} missing: run UPDATE_GOLDEN=1 pytest {__file__}"
    assert actual == golden.read_text(), (
        f"rendered {name} differs from {golden}; if the change is intended, run "
        f"UPDATE_GOLDEN=1 pytest tests/test_pipeline_render.py and review the diff"
    )


def test_rendered_files_are_clean_yaml(rendered_dir: Path):
    for name in ("workflow-template.yaml", "cron-workflow.yaml"):
        text = (rendered_dir / name).read_text()
        assert "creationTimestamp" not in text
        assert "status:" not in text
        assert text.startswith("apiVersion: argoproj.io/v1alpha1\nkind: ")


def test_render_is_reproducible(rendered_dir: Path, tmp_path: Path):
    assert submit.main(["--render", str(tmp_path)]) == 0
    for name in ("workflow-template.yaml", "cron-workflow.yaml"):
        assert (tmp_path / name).read_bytes() == (rendered_dir / name).read_bytes()


def test_submit_runs_as_a_script(rendered_dir: Path, tmp_path: Path):
    """`python workflows/submit.py` (not only `-m`) works from any directory."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "workflows" / "submit.py"), "--render", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "workflow-template.yaml").read_text()
    assert text == (rendered_dir / "workflow-template.yaml").read_text()


def test_names_and_namespace_match_the_contract(resources):
    template, cron = resources["workflow-template"], resources["cron-workflow"]
    assert template["metadata"]["name"] == TEMPLATE_NAME == "dewpoint-pipeline"
    assert cron["metadata"]["name"] == CRON_NAME == "dewpoint-pipeline-weekly"
    assert template["metadata"]["namespace"] == cron["metadata"]["namespace"] == "mlops"
    assert template["spec"]["serviceAccountName"] == "dewpoint-pipeline"
    assert cron["spec"]["workflowSpec"]["workflowTemplateRef"] == {"name": TEMPLATE_NAME}


def test_dag_runs_the_stages_in_order_and_deploys_only_when_promoted(resources):
    dag = _templates(resources)["pipeline"]["dag"]["tasks"]
    assert [t["name"] for t in dag] == list(STAGES)
    for previous, task in itertools.pairwise(dag):
        assert task["depends"] == previous["name"]
    assert dag[-1]["when"] == "{{tasks.promote.outputs.parameters.promoted}} == true"
    assert all("when" not in t for t in dag[:-1])


def _contract_flags() -> dict[str, set[str]]:
    """Flags docs/steps.md documents for each stage (section `### <stage>`)."""
    text = (ROOT / "docs" / "steps.md").read_text()
    sections = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    flags = {}
    for section in sections:
        stage = section.split("\n", 1)[0].strip()
        flags[stage] = set(re.findall(r"--[a-z][a-z0-9-]*", section))
    return flags


def test_every_step_flag_is_in_the_contract(resources):
    contract = _contract_flags()
    templates = _templates(resources)
    for stage in STAGES:
        container = templates[stage]["container"]
        assert container["command"] == ["python", "-m", "steps", stage]
        used = {a for a in container["args"] if a.startswith("--")}
        assert used - contract[stage] == {"--outputs-dir"}, stage
        args = container["args"]
        assert args[args.index("--outputs-dir") + 1] == "/work/outputs"


def test_all_io_lives_under_work(resources):
    for stage, template in _templates(resources).items():
        if stage not in STAGES:
            continue
        for group in ("inputs", "outputs"):
            for artifact in template.get(group, {}).get("artifacts", []):
                prefix = "/work/in/" if group == "inputs" else "/work/out/"
                assert artifact["path"].startswith(prefix), (stage, artifact)
                if group == "outputs":
                    assert artifact["archive"] == {"none": {}}
        for param in template.get("outputs", {}).get("parameters", []):
            assert param["valueFrom"] == {"path": f"/work/outputs/{param['name']}"}
        mounts = {v["mountPath"] for v in template["container"]["volumeMounts"]}
        assert {"/work", "/tmp"} <= mounts
        volumes = {v["name"]: v for v in template["volumes"]}
        assert volumes["work"] == {"name": "work", "emptyDir": {}}


def test_artifacts_and_parameters_flow_between_steps(resources):
    tasks = {t["name"]: t for t in _templates(resources)["pipeline"]["dag"]["tasks"]}

    def artifact_from(task: str, name: str) -> str:
        (found,) = [a for a in tasks[task]["arguments"]["artifacts"] if a["name"] == name]
        return found["from"]

    def param(task: str, name: str) -> str:
        (found,) = [p for p in tasks[task]["arguments"]["parameters"] if p["name"] == name]
        return found["value"]

    assert artifact_from("validate", "dataset") == "{{tasks.fetch.outputs.artifacts.dataset}}"
    assert artifact_from("train", "validated") == "{{tasks.validate.outputs.artifacts.validated}}"
    assert artifact_from("promote", "holdout") == "{{tasks.train.outputs.artifacts.holdout}}"
    assert param("train", "data-hash") == "{{tasks.fetch.outputs.parameters.data-hash}}"
    assert param("register", "run-id") == "{{tasks.train.outputs.parameters.run-id}}"
    assert param("register", "model-uri") == "{{tasks.train.outputs.parameters.model-uri}}"
    assert param("promote", "version") == "{{tasks.register.outputs.parameters.version}}"
    assert param("deploy", "version") == "{{tasks.register.outputs.parameters.version}}"


def test_every_pod_meets_pod_security_restricted(resources):
    spec = resources["workflow-template"]["spec"]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for stage, template in _templates(resources).items():
        if stage not in STAGES:
            continue
        container = template["container"]
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, stage
        assert security["capabilities"] == {"drop": ["ALL"]}, stage
        assert security["readOnlyRootFilesystem"] is True, stage
        assert container["imagePullPolicy"] == "IfNotPresent"
        resources_ = container["resources"]
        assert set(resources_) == {"requests", "limits"}
        assert set(resources_["limits"]) == {"cpu", "memory"}
        assert isinstance(template["activeDeadlineSeconds"], int)


def test_network_steps_retry_with_backoff_and_int_limit(resources):
    for stage, template in _templates(resources).items():
        if stage not in STAGES:
            continue
        retry = template.get("retryStrategy")
        if stage in NETWORK_STAGES:
            assert isinstance(retry["limit"], int) and retry["limit"] >= 1, stage
            assert retry["backoff"]["duration"], stage
        else:
            assert retry is None, stage


def test_workflow_level_guards(resources):
    spec = resources["workflow-template"]["spec"]
    assert spec["synchronization"] == {"mutexes": [{"name": "dewpoint-pipeline-release"}]}
    assert spec["podGC"]["strategy"] in ("OnPodSuccess", "OnWorkflowSuccess")
    assert spec["ttlStrategy"]["secondsAfterSuccess"] > 0
    assert spec["artifactRepositoryRef"] == {"configMap": "artifact-repositories", "key": "default"}
    params = {p["name"]: p["value"] for p in spec["arguments"]["parameters"]}
    assert params["source"] == "gsod"
    assert params["model-name"] == "dewpoint-lr"
    assert params["deploy-target"] == "kubernetes"
    assert params["serving-deployment"] == "model-server"
    assert params["mlflow-tracking-uri"] == "http://mlflow.mlops.svc:5000"


def test_fetch_mounts_the_optional_google_secret(resources):
    fetch = _templates(resources)["fetch"]
    (secret,) = [v for v in fetch["volumes"] if "secret" in v]
    assert secret["secret"] == {"secretName": "google-credentials", "optional": True}
    for stage in STAGES[1:]:
        assert all("secret" not in v for v in _templates(resources)[stage]["volumes"])


def test_version_labels_and_image_come_from_the_package_version(resources):
    labels = resources["workflow-template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/version"] == __version__
    assert default_image() == f"dewpoint-pipeline/step:{__version__}"
    for stage in STAGES:
        assert _templates(resources)[stage]["container"]["image"] == default_image()
    register_args = _templates(resources)["register"]["container"]["args"]
    assert register_args[register_args.index("--code-version") + 1] == __version__


def test_cron_schedule_and_policies(resources):
    spec = resources["cron-workflow"]["spec"]
    assert spec["schedules"] == ["0 0 * * 0"]
    assert spec["timezone"] == "UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["suspend"] is False
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["stopStrategy"] == {"expression": "cronworkflow.failed >= 4"}


def test_settings_from_env_flow_into_the_resources():
    settings = PipelineSettings.from_env(
        {
            "PIPELINE_NAMESPACE": "ml-staging",
            "PIPELINE_IMAGE": "registry.example/step:abc",
            "PIPELINE_SCHEDULE": "30 2 * * 1",
            "PIPELINE_TIMEZONE": "Europe/Berlin",
            "PIPELINE_SUSPEND": "true",
            "PIPELINE_MLFLOW_TRACKING_URI": "http://mlflow.ml-staging.svc:5000",
        }
    )
    out = render(settings)
    assert validate_resources(out.values()) == []
    template, cron = out["workflow-template"], out["cron-workflow"]
    assert template["metadata"]["namespace"] == cron["metadata"]["namespace"] == "ml-staging"
    images = {t["container"]["image"] for t in template["spec"]["templates"] if "container" in t}
    assert images == {"registry.example/step:abc"}
    assert cron["spec"]["schedules"] == ["30 2 * * 1"]
    assert cron["spec"]["timezone"] == "Europe/Berlin"
    assert cron["spec"]["suspend"] is True
    params = {p["name"]: p["value"] for p in template["spec"]["arguments"]["parameters"]}
    assert params["mlflow-tracking-uri"] == "http://mlflow.ml-staging.svc:5000"


def test_bad_boolean_setting_is_a_clear_error():
    with pytest.raises(SettingsError, match="PIPELINE_SUSPEND='maybe' is not a boolean"):
        PipelineSettings.from_env({"PIPELINE_SUSPEND": "maybe"})


def test_render_refuses_an_invalid_schedule(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_SCHEDULE", "0 0 * * 9")
    assert submit.main(["--render", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: rendered resources are invalid")
    assert "day of week field: 9" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "cron-workflow.yaml").exists()
