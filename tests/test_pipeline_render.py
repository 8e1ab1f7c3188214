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
from steps.contract import Flag, Stage, Text, check_workflow_parameters
from steps.revision import source_revision
from steps.stages import CHAMPION, CHECK_PARAMETERS, NO_CHAMPION, PIPELINE, WORKFLOW_PARAMETERS
from steps.stages import STAGES as STAGE_DECLARATIONS
from workflows import submit
from workflows.argo_rules import read_backoff
from workflows.pipeline import (
    CRON_NAME,
    GIT_COMMIT_LABEL,
    GIT_DIRTY_LABEL,
    TEMPLATE_NAME,
    render,
    stage_task,
    stage_template,
)
from workflows.settings import PipelineSettings, SettingsError, default_image
from workflows.validate_resources import validate_resources

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
STAGES = ("check-parameters", "fetch", "validate", "train", "register", "promote", "deploy")
NETWORK_STAGES = {"fetch", "register", "promote", "deploy"}
# The current year's fetch and validate: the same stages through templates without `memoize`.
CURRENT = {"fetch-current": "fetch", "validate-current": "validate"}
# The loops over years (the entrypoint's tasks) and the dag template each calls per year.
YEAR_LOOPS = {"past-years": "past-year", "current-years": "current-year"}


# A stage taking fetch's `data-hash` output as an input of the same name (no real stage after
# validate's memoization key does: register copies its data tags from train's run, issue 10).
HASH_READER = Stage("hash-reader", "reads a data hash", (Flag("data-hash", Text(), "a hash"),))


def _stage(template: str) -> str:
    """The stage a template runs (its own name, or the stage of a current-year template)."""
    return CURRENT.get(template, template)


VERSION_PLACEHOLDER = "<version>"
GIT_LABELS = {GIT_COMMIT_LABEL, GIT_DIRTY_LABEL}


def normalise(value: Any) -> Any:
    """Replace the package version (image tag, version label, --code-version) and the git commit
    labels by placeholders, so the golden files survive a version bump and every commit."""
    if isinstance(value, dict):
        return {
            k: f"<{k.rsplit('/', 1)[1]}>" if k in GIT_LABELS else normalise(v)
            for k, v in value.items()
        }
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


def flag_values(args: list[str]) -> dict[str, str]:
    """A container's args, each one `--flag=value` (the only form the builders render), as
    option -> value; an arg of any other form fails the test."""
    pairs = [a.partition("=") for a in args]
    assert all(a.startswith("--") and sep for a, sep, _ in pairs), args
    return {option: value for option, _, value in pairs}


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
    assert "sys.path[" not in (ROOT / "workflows" / "submit.py").read_text()  # no path edit
    module = subprocess.run(
        [sys.executable, "-m", "workflows.submit", "--render", str(tmp_path / "m")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert module.returncode == 0, module.stderr
    assert (tmp_path / "m" / "workflow-template.yaml").read_text() == text


def test_no_module_in_workflows_shadows_a_top_level_module():
    """Run as a script, submit.py has workflows/ first on sys.path: a module there named like a
    top-level one (`yaml.py`, `requests.py`) would replace it for every import."""
    import importlib.util

    names = {p.stem for p in (ROOT / "workflows").glob("*.py")} | {
        p.name for p in (ROOT / "workflows").iterdir() if (p / "__init__.py").exists()
    }
    shadowed = sorted(n for n in names - {"__init__", "__main__"} if importlib.util.find_spec(n))
    assert shadowed == []


def test_names_and_namespace_match_the_contract(resources):
    template, cron = resources["workflow-template"], resources["cron-workflow"]
    assert template["metadata"]["name"] == TEMPLATE_NAME == "dewpoint-pipeline"
    assert cron["metadata"]["name"] == CRON_NAME == "dewpoint-pipeline-weekly"
    assert template["metadata"]["namespace"] == cron["metadata"]["namespace"] == "mlops"
    assert template["spec"]["serviceAccountName"] == "dewpoint-pipeline"
    assert cron["spec"]["workflowSpec"]["workflowTemplateRef"] == {"name": TEMPLATE_NAME}


def test_dag_runs_the_stages_in_order_and_deploys_the_champion_whatever_the_gate_says(resources):
    """Deploy runs after every gate, refused candidates included, and serves the champion after
    the gate (a no-op when it is served already); it is skipped only when there is none."""
    templates = _templates(resources)
    dag = templates["pipeline"]["dag"]["tasks"]
    assert [t["name"] for t in dag] == [STAGES[0], *YEAR_LOOPS, *STAGES[3:]]
    depends = {t["name"]: t.get("depends") for t in dag}
    assert depends == {
        "check-parameters": None,
        "past-years": "check-parameters",
        "current-years": "check-parameters",
        "train": "past-years && current-years",
        **{task: previous for previous, task in itertools.pairwise(STAGES[3:])},
    }
    # Each year is one dag node: fetch, then validate of that year.
    for loop, year_template in YEAR_LOOPS.items():
        (task,) = [t for t in dag if t["name"] == loop]
        inner = templates[task["template"]]["dag"]["tasks"]
        assert task["template"] == year_template
        assert [(t["name"], t["template"], t.get("depends")) for t in inner] == [
            ("fetch", "fetch" if loop == "past-years" else "fetch-current", None),
            ("validate", "validate" if loop == "past-years" else "validate-current", "fetch"),
        ]
    deploy = dag[-1]
    champion = "{{tasks.promote.outputs.parameters.champion-version}}"
    assert deploy["when"] == f"{champion} != {NO_CHAMPION}"
    assert "promoted" not in deploy["when"]
    assert all("when" not in t for t in dag[:-1])
    arguments = {p["name"]: p["value"] for p in deploy["arguments"]["parameters"]}
    # Deploy serves what the alias names when it serves, which may be newer than what promote
    # saw (a promote from another door: steps/deploy.py); the version is not passed.
    assert "version" not in arguments
    assert "run-id" not in arguments, "the champion's run is not this run's after a refusal"
    args = flag_values(_templates(resources)["deploy"]["container"]["args"])
    assert args["--alias"] == CHAMPION
    assert "--version" not in args and "--run-id" not in args


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
    check = templates["check-parameters"]["container"]["args"]
    passed = {p.name for p in WORKFLOW_PARAMETERS if not p.by_env}
    assert {a[2:] for a in flag_values(check)} == passed | {"outputs-dir"}
    for stage in STAGES[1:]:
        container = templates[stage]["container"]
        assert container["command"] == ["python", "-m", "steps", stage]
        args = flag_values(container["args"])
        assert set(args) <= contract[stage], stage
        assert args["--outputs-dir"] == "/work/outputs"


# Values a workflow parameter may hold that argparse would misread as two args `--flag VALUE`:
# an option of its own (`--foo`, `-x`), nothing, more `=`, a negative number.
AWKWARD_VALUES = ["--foo", "-x", "", "a=b", "--model-name=y", "-1", " -x ", "-"]


@pytest.mark.parametrize("value", AWKWARD_VALUES)
@pytest.mark.parametrize("stage", [CHECK_PARAMETERS, *PIPELINE], ids=lambda s: s.name)
def test_every_parameter_value_reaches_its_step_as_given(resources, stage, value):
    """Each rendered template's args with every input parameter set to `value`, as Argo would
    substitute them, parse with the stage's own parser (steps/contract.py) to exactly `value`
    for each flag that takes one: a value is never read as a flag of its own."""
    container = _templates(resources)[stage.name]["container"]
    args = [
        re.sub(r"\{\{inputs\.parameters\.[^}]+\}\}", lambda _: value, a) for a in container["args"]
    ]
    namespace = stage.parser().parse_args(args)
    for arg in container["args"]:
        option, _, rendered = arg.partition("=")
        if rendered.startswith("{{inputs.parameters."):
            assert getattr(namespace, stage.flag(option[2:]).dest) == value, option


def test_all_io_lives_under_work(resources):
    for stage, template in _templates(resources).items():
        if _stage(stage) not in STAGES:
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

    templates = _templates(resources)

    def key(template: str, kind: str, name: str) -> str:
        (found,) = [a for a in templates[template][kind]["artifacts"] if a["name"] == name]
        return found["s3"]["key"]

    # The years reach fetch and validate as key-only objects under the run's data key: one per
    # year, written by fetch and validate and read back by name, never passed by `from`.
    check = "{{tasks.check-parameters.outputs.parameters.%s}}"
    for loop, year_template in YEAR_LOOPS.items():
        assert tasks[loop]["withParam"] == check % loop
        assert param(loop, "data-key") == check % "data-key"
        assert param(loop, "part") == "{{item.part}}"
        assert param(loop, "year") == "{{item.year}}"
        inner = {t["name"]: t for t in templates[year_template]["dag"]["tasks"]}
        for task in inner.values():
            given = {p["name"]: p["value"] for p in task["arguments"]["parameters"]}
            assert given["data-key"] == "{{inputs.parameters.data-key}}"
            assert given["part"] == "{{inputs.parameters.part}}"
            assert "artifacts" not in task["arguments"]
        fetch = {p["name"]: p["value"] for p in inner["fetch"]["arguments"]["parameters"]}
        assert fetch["years"] == "{{inputs.parameters.year}}"
    year = "dewpoint-pipeline/data/{{inputs.parameters.data-key}}/%s/{{inputs.parameters.part}}"
    for fetch, validate in (("fetch", "validate"), ("fetch-current", "validate-current")):
        assert key(fetch, "outputs", "dataset") == year % "fetched" + ".parquet"
        assert key(validate, "inputs", "dataset") == year % "fetched" + ".parquet"
        assert key(validate, "outputs", "validated") == year % "validated" + ".parquet"
    prefix = "dewpoint-pipeline/data/{{inputs.parameters.data-key}}/validated"
    assert key("train", "inputs", "validated") == prefix
    assert param("train", "parts") == check % "parts"
    assert "artifacts" not in tasks["train"]["arguments"]
    assert artifact_from("promote", "holdout") == "{{tasks.train.outputs.artifacts.holdout}}"
    # Issue 10: register takes no data tag; its version copies them from train's run.
    assert "data-hash" not in {p["name"] for p in tasks["register"]["arguments"]["parameters"]}
    assert not any("data" in arg for arg in templates["register"]["container"]["args"])
    assert param("register", "run-id") == "{{tasks.train.outputs.parameters.run-id}}"
    assert param("register", "model-uri") == "{{tasks.train.outputs.parameters.model-uri}}"
    assert param("promote", "version") == "{{tasks.register.outputs.parameters.version}}"


def test_past_years_are_memoized_and_the_current_year_is_not(resources):
    """One cache entry per past year, none per run: the current year's templates have no
    `memoize` (Argo keeps every entry until its cache GC, off by default, deletes it). validate's
    key holds the hash of the data fetch gave it, from the fetch of the same year's dag, so data
    fetched anew is validated anew (issue 13)."""
    templates = _templates(resources)
    for name, cache, key in (
        ("fetch", "dewpoint-pipeline-fetch-cache", "{{inputs.parameters.memo}}"),
        ("validate", "dewpoint-pipeline-validate-cache",
         "{{inputs.parameters.memo}}-{{inputs.parameters.data-hash}}"),
    ):  # fmt: skip
        assert templates[name]["memoize"] == {
            "key": key,
            "maxAge": "720h",
            "cache": {"configMap": {"name": cache}},
        }
        current = templates[f"{name}-current"]
        assert "memoize" not in current
        assert {"memo", "data-hash"}.isdisjoint(p["name"] for p in current["inputs"]["parameters"])
        # Otherwise the same step: same command line, resources, retries and deadline.
        for field in ("container", "retryStrategy", "activeDeadlineSeconds", "volumes"):
            assert current.get(field) == templates[name].get(field), (name, field)
    memoized = {n for n, t in templates.items() if "memoize" in t}
    assert memoized == {"fetch", "validate"}
    (validate,) = [t for t in templates["past-year"]["dag"]["tasks"] if t["name"] == "validate"]
    given = {p["name"]: p["value"] for p in validate["arguments"]["parameters"]}
    assert given["data-hash"] == "{{tasks.fetch.outputs.parameters.data-hash}}"
    assert given["memo"] == "{{inputs.parameters.memo}}"


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
        if _stage(stage) not in STAGES:
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
        if _stage(stage) not in STAGES:
            continue
        retry = template.get("retryStrategy")
        if _stage(stage) in NETWORK_STAGES:
            assert isinstance(retry["limit"], int) and retry["limit"] >= 1, stage
            assert retry["backoff"]["duration"], stage
            # Only a transient failure (exit 75) or an Argo `Error` is retried, never bad input.
            assert retry["expression"] == (
                'asInt(lastRetry.exitCode) == 75 || lastRetry.status == "Error"'
            )
        else:
            assert retry is None, stage


def argo_attempt_deadlines(deadline: int, retry: dict, pod_start: int = 60) -> list[int]:
    """The pod deadline each attempt gets when every attempt fails at its own deadline, by Argo's
    rules (workflow/controller/operator.go, processNodeRetries, v4.1.2): maxDuration counts from
    the first attempt's start; no retry starts whose backoff would end past it; a retry's pod
    deadline is cut to it. `pod_start` is the time each pod needs before its deadline starts."""
    limit, backoff = retry["limit"], read_backoff(retry["backoff"])
    max_deadline = backoff.max_duration_s
    now, attempts = 0, []
    for attempt in range(1, limit + 2):
        attempts.append(deadline if attempt == 1 else min(deadline, max_deadline - now))
        finished = now + pod_start + attempts[-1]
        wait = backoff.wait_seconds(attempt)
        if attempt == limit + 1 or finished > max_deadline or finished + wait > max_deadline:
            break
        now = finished + wait
    return attempts


def test_every_retry_of_a_step_gets_its_whole_deadline(resources):
    """A step that fails late is still retried, each retry with its full activeDeadlineSeconds,
    and the run's own deadline leaves room for every step's worst case."""
    worst_cases = 0
    for stage in STAGES:
        template = _templates(resources)[stage]
        deadline, retry = template["activeDeadlineSeconds"], template.get("retryStrategy")
        if retry is None:
            worst_cases += deadline
            continue
        assert argo_attempt_deadlines(deadline, retry) == [deadline] * (retry["limit"] + 1), stage
        worst_cases += read_backoff(retry["backoff"]).max_duration_s
    assert resources["workflow-template"]["spec"]["activeDeadlineSeconds"] >= worst_cases


def test_the_attempt_model_sees_a_budget_shorter_than_the_retries():
    """The check above bites: 10m for a 30-minute step leaves no retry at all."""
    retry = {"limit": 3, "backoff": {"duration": "30s", "factor": 2, "maxDuration": "10m"}}
    assert argo_attempt_deadlines(1800, retry) == [1800]
    assert argo_attempt_deadlines(300, retry) == [300, 210]


def test_workflow_level_guards(resources):
    spec = resources["workflow-template"]["spec"]
    # One lock per registered model, named after the workflow's own model-name parameter.
    mutex = "dewpoint-pipeline-release-{{workflow.parameters.model-name}}"
    assert spec["synchronization"] == {"mutexes": [{"name": mutex}]}
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
    for stage in STAGES:
        if stage != "fetch":
            assert all("secret" not in v for v in _templates(resources)[stage]["volumes"])


def test_version_labels_and_image_come_from_the_package_version(resources):
    labels = resources["workflow-template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/version"] == __version__
    assert default_image() == f"dewpoint-pipeline/step:{__version__}"
    for stage in STAGES:
        assert _templates(resources)[stage]["container"]["image"] == default_image()
    register_args = flag_values(_templates(resources)["register"]["container"]["args"])
    assert register_args["--code-version"] == __version__


def test_cron_schedule_and_policies(resources):
    spec = resources["cron-workflow"]["spec"]
    assert spec["schedules"] == ["0 0 * * 0"]
    assert spec["timezone"] == "UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["suspend"] is False
    assert spec["startingDeadlineSeconds"] > 0
    # A lifetime failure count would stop a weekly job for good after N failures spread over
    # years (build_cron_workflow); no stop strategy.
    assert "stopStrategy" not in spec


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


@pytest.mark.parametrize("maybe", ["maybe", "on", "off", "YES", "1", "No", "0", "True"])
def test_bad_boolean_setting_is_a_clear_error(maybe: str):
    """Settings take the steps' boolean spellings and no others (on/off included): `true` or
    `false`, the one spelling every door takes (issue 11)."""
    with pytest.raises(SettingsError, match=f"PIPELINE_SUSPEND='{maybe}' is not a boolean"):
        PipelineSettings.from_env({"PIPELINE_SUSPEND": maybe})


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("false", False), ("", False)],
)  # fmt: skip
def test_boolean_settings_read_the_steps_spellings(text: str, value: bool):
    assert PipelineSettings.from_env({"PIPELINE_SUSPEND": text}).suspend is value


def test_render_refuses_an_invalid_schedule(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_SCHEDULE", "0 0 * * 9")
    assert submit.main(["--render", str(tmp_path)]) == 2  # a bad setting: bad input
    err = capsys.readouterr().err
    assert err.startswith("error: PIPELINE_SCHEDULE '0 0 * * 9': bad cron expression")
    assert "day of week field: 9" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "cron-workflow.yaml").exists()


def test_resources_and_each_run_carry_the_rendering_commit(resources: dict[str, dict]) -> None:
    revision = source_revision()
    expected = {GIT_COMMIT_LABEL: revision.commit, GIT_DIRTY_LABEL: str(revision.dirty).lower()}
    template, cron = resources["workflow-template"], resources["cron-workflow"]
    for labels in (
        template["metadata"]["labels"],
        cron["metadata"]["labels"],
        template["spec"]["workflowMetadata"]["labels"],  # copied onto every Workflow it runs
    ):
        assert {k: labels[k] for k in expected} == expected


def test_fit_plot_and_validation_report_are_artifacts_the_argo_ui_previews(
    resources: dict[str, dict],
) -> None:
    """Argo v4.1.2's artifact panel previews an output artifact only when it is not archived and
    its key ends in png/json/... (the key is the file name when `archive: none`)."""
    templates = _templates(resources)
    shown = {
        (stage, a["name"]): a
        for stage in ("train", "validate")
        for a in templates[stage]["outputs"]["artifacts"]
    }
    for key, suffix in ((("train", "plot"), ".png"), (("validate", "validation-report"), ".json")):
        artifact = shown[key]
        assert artifact["archive"] == {"none": {}}
        assert artifact["path"].endswith(suffix)


# ---- templates and tasks generated from the stage declarations (steps/stages.py) ---------------


@pytest.mark.parametrize("stage", [CHECK_PARAMETERS, *PIPELINE], ids=lambda s: s.name)
def test_each_template_is_its_stage_declaration(resources, stage):
    template = _templates(resources)[stage.name]
    container = template["container"]
    assert container["command"] == ["python", "-m", "steps", stage.name]
    args = flag_values(container["args"])
    passed = set(args)
    assert passed <= {f.option for f in stage.all_flags}
    env = {e["name"]: e.get("value") for e in container["env"]}
    for flag in stage.flags:
        if flag.parameter and flag.by_env:  # credentials: by variable, never on argv
            assert env[flag.env] == "{{inputs.parameters." + flag.parameter + "}}"
            assert flag.option not in passed
        elif flag.parameter and stage.name != "check-parameters":
            assert args[flag.option] == "{{inputs.parameters." + flag.parameter + "}}"
    outputs = template.get("outputs", {})
    assert [p["name"] for p in outputs.get("parameters", [])] == [o.name for o in stage.outputs]
    declared_out = {a.name: a for a in stage.artifacts if a.output}
    declared_in = {a.name: a for a in stage.artifacts if not a.output}
    assert {a["name"] for a in outputs.get("artifacts", [])} == set(declared_out)
    assert {a["name"] for a in template.get("inputs", {}).get("artifacts", [])} == set(declared_in)
    for artifact in stage.artifacts:
        where = "out" if artifact.output else "in"
        assert args[f"--{artifact.flag}"] == f"/work/{where}/{artifact.file}"


def test_workflow_parameters_and_enums_come_from_the_declarations(resources):
    from steps.deploy_targets import TARGETS
    from steps.model import MODEL_TYPES
    from steps.sources import SOURCES

    declared = resources["workflow-template"]["spec"]["arguments"]["parameters"]
    assert [p["name"] for p in declared] == [p.name for p in WORKFLOW_PARAMETERS]
    enums = {p["name"]: p.get("enum") for p in declared}
    assert enums["source"] == list(SOURCES)
    assert enums["model-type"] == list(MODEL_TYPES)
    assert enums["deploy-target"] == list(TARGETS)
    assert enums["rain-only"] == ["true", "false"]
    values = {p["name"]: p["value"] for p in declared}
    check_workflow_parameters(values, WORKFLOW_PARAMETERS)  # every default passes the check


def test_parameter_check_runs_first_and_everything_waits_for_it(resources):
    dag = _templates(resources)["pipeline"]["dag"]["tasks"]
    assert dag[0]["name"] == "check-parameters" and "depends" not in dag[0]
    given = {p["name"]: p["value"] for p in dag[0]["arguments"]["parameters"]}
    assert given == {p.name: "{{workflow.parameters." + p.name + "}}" for p in WORKFLOW_PARAMETERS}
    assert "retryStrategy" not in _templates(resources)["check-parameters"]


def test_a_misspelt_output_fails_at_render(resources):
    """Tasks are wired with Hera's checked getters: a name no template declares raises."""
    from hera.workflows import DAG, WorkflowTemplate

    settings = PipelineSettings()
    with WorkflowTemplate(name="t", entrypoint="d"), DAG(name="d"):
        fetch = stage_task(stage_template(settings, STAGE_DECLARATIONS["fetch"]))
        with pytest.raises(KeyError, match="data-hsh"):
            fetch.get_parameter("data-hsh")
        with pytest.raises(KeyError, match="datasett"):
            fetch.get_artifact("datasett")
        with pytest.raises(KeyError, match="no flag --yeras"):
            stage_template(settings, STAGE_DECLARATIONS["fetch"], values={"yeras": "2023"})
        validate = stage_template(settings, STAGE_DECLARATIONS["validate"])
        with pytest.raises(ValueError, match="artifact dataset has no source"):
            stage_task(validate)
        with pytest.raises(ValueError, match="takes no"):
            stage_task(validate, arguments={"dataset": fetch.get_artifact("dataset"), "x": "1"})
        reader = stage_template(settings, HASH_READER, inputs=["data-hash"])
        with pytest.raises(ValueError, match="input data-hash has no value"):
            stage_task(reader)


def test_inputs_are_wired_from_the_last_upstream_output_of_the_same_name(resources):
    """`upstream`: an input with no argument takes the output of its name from the last task that
    declares one (parameter to parameter, artifact to artifact), and fails at render without."""
    from hera.workflows import DAG, WorkflowTemplate

    settings = PipelineSettings()
    with WorkflowTemplate(name="t", entrypoint="d") as wt, DAG(name="d"):
        fetch = stage_template(settings, STAGE_DECLARATIONS["fetch"])
        first, second = stage_task(fetch, name="first"), stage_task(fetch, name="second")
        validate = stage_template(settings, STAGE_DECLARATIONS["validate"])
        stage_task(validate, upstream=(first, second))
        train = stage_template(settings, STAGE_DECLARATIONS["train"])
        with pytest.raises(ValueError, match="artifact validated has no source"):
            stage_task(train, upstream=(first, second))  # fetch's `dataset` is not `validated`
        reader = stage_template(settings, HASH_READER, inputs=["data-hash"])
        with pytest.raises(ValueError, match="input data-hash has no value"):
            stage_task(reader, upstream=())
        stage_task(reader, name="reader", upstream=(second, first))
    tasks = {t["name"]: t for t in wt.to_dict()["spec"]["templates"][0]["dag"]["tasks"]}
    (dataset,) = tasks["validate"]["arguments"]["artifacts"]
    assert dataset == {"name": "dataset", "from": "{{tasks.second.outputs.artifacts.dataset}}"}
    (data_hash,) = [
        p for p in tasks["reader"]["arguments"]["parameters"] if p["name"] == "data-hash"
    ]
    assert data_hash["value"] == "{{tasks.first.outputs.parameters.data-hash}}"


def test_a_stage_template_takes_per_task_overrides(resources):
    """What a fan-out (one fetch per year) needs: the same declaration, another template name,
    and a task argument in place of a workflow parameter."""
    from hera.workflows import DAG, WorkflowTemplate

    settings = PipelineSettings()
    with WorkflowTemplate(name="fan-out", entrypoint="d") as wt, DAG(name="d"):
        template = stage_template(settings, STAGE_DECLARATIONS["fetch"], name="fetch-year")
        for year in ("2023", "2024"):
            stage_task(template, name=f"fetch-{year}", arguments={"years": year})
    rendered = wt.to_dict()
    tasks = rendered["spec"]["templates"][0]["dag"]["tasks"]
    years = [next(p for p in t["arguments"]["parameters"] if p["name"] == "years") for t in tasks]
    assert [y["value"] for y in years] == ["2023", "2024"]
    source = next(p for p in tasks[0]["arguments"]["parameters"] if p["name"] == "source")
    assert source["value"] == "{{workflow.parameters.source}}"
