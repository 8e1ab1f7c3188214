"""Every flag, environment variable and chart value our manifests hand to a program we do not
build, checked against that program at its pinned version: MLflow's own --help (it installs
here), otherwise the list read from the pinned source in tests/data/upstream-flags.yaml.

A flag the program does not know makes it exit at start (argo-server with --basehref did, in
v4.1.2), so the pod never becomes ready and nothing says why until someone reads its log.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import mlflow_executable
from tests.upstream import pinned_versions

REPO = Path(__file__).resolve().parents[1]
KIND = REPO / "kind"
UPSTREAM = yaml.safe_load((Path(__file__).parent / "data" / "upstream-flags.yaml").read_text())


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def containers(path: Path) -> dict[str, dict[str, Any]]:
    """Containers (by name) of the workloads in one manifest file."""
    found = {}
    for doc in docs(path):
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            found[c["name"]] = c
    return found


def flag_names(args: list[str]) -> list[str]:
    """`--name` / `-name` of each flag argument (`--a=b`, `--a b`); values are skipped."""
    return [a.split("=", 1)[0] for a in args if a.startswith("-") and not a[1:2].isdigit()]


def unknown(flags: list[str], known: list[str]) -> list[str]:
    return [f for f in flags if f not in known]


def overlay_image_tag(name: str) -> str:
    images = yaml.safe_load((KIND / "overlays" / "kind" / "kustomization.yaml").read_text())
    return next(i["newTag"] for i in images["images"] if i["name"] == name)


# ---- each list is tied to the version we pin ---------------------------------------------------


def test_each_flag_list_was_read_at_the_pinned_version() -> None:
    v = pinned_versions()
    assert UPSTREAM["argo-server"]["tag"] == v["ARGO_WORKFLOWS_VERSION"]
    assert UPSTREAM["workflow-controller"]["tag"] == v["ARGO_WORKFLOWS_VERSION"]
    weed = overlay_image_tag("chrislusf/seaweedfs")
    assert UPSTREAM["weed server"]["tag"] == UPSTREAM["weed shell"]["tag"] == weed
    postgres = overlay_image_tag("postgres").split("-")[0]
    assert (
        UPSTREAM["pg_isready"]["tag"] == UPSTREAM["postgres image environment"]["tag"] == postgres
    )
    assert UPSTREAM["traefik chart values"]["tag"] == v["TRAEFIK_CHART_VERSION"]
    assert all(entry["source"] for entry in UPSTREAM.values())


# ---- Argo --------------------------------------------------------------------------------------


def test_argo_server_flags_exist_in_v4_1_2() -> None:
    (server,) = containers(KIND / "base" / "argo" / "patches" / "argo-server.yaml").values()
    entry = UPSTREAM["argo-server"]
    assert server["args"][0] == entry["subcommand"]
    flags = flag_names(server["args"][1:])
    assert flags and unknown(flags, entry["flags"]) == []
    # The spelling v3.6 removed and v4.1.2's server exits on.
    assert "--basehref" not in entry["flags"]


def test_workflow_controller_flags_exist_in_v4_1_2() -> None:
    (controller,) = containers(
        KIND / "base" / "argo" / "patches" / "workflow-controller.yaml"
    ).values()
    assert (
        unknown(flag_names(controller.get("args", [])), UPSTREAM["workflow-controller"]["flags"])
        == []
    )


def test_docs_server_mode_command_uses_flags_argo_server_knows() -> None:
    """docs/cluster.md patches argo-server's args for a throwaway demo: same flags, checked."""
    text = (REPO / "docs" / "cluster.md").read_text()
    (value,) = re.findall(
        r'"path":"/spec/template/spec/containers/0/args","value":(\[[^\]]*\])', text
    )
    args = yaml.safe_load(value)
    assert args[0] == "server"
    assert unknown(flag_names(args[1:]), UPSTREAM["argo-server"]["flags"]) == []


# ---- SeaweedFS ---------------------------------------------------------------------------------


def test_weed_server_flags_exist_in_the_pinned_seaweedfs() -> None:
    (weed,) = containers(KIND / "base" / "seaweedfs" / "deployment.yaml").values()
    assert weed["command"] == ["/usr/bin/weed"] and weed["args"][0] == "server"
    flags = flag_names(weed["args"][1:])
    assert flags and unknown(flags, UPSTREAM["weed server"]["flags"]) == []


def test_bucket_job_weed_shell_flags_and_commands_exist() -> None:
    (job,) = containers(KIND / "base" / "seaweedfs" / "bucket-job.yaml").values()
    script = "\n".join(job["args"])
    entry = UPSTREAM["weed shell"]
    shells = re.findall(r"weed shell ([^|)\n]*)", script)
    assert shells
    for line in shells:
        assert unknown(flag_names(shlex.split(line)), entry["flags"]) == [], line
    commands = re.findall(r'echo "([a-z0-9.]+)((?: [^"]*)?)"', script)
    assert {name for name, _ in commands} == set(entry["commands"])
    for name, rest in commands:
        assert unknown(flag_names(rest.split()), entry["commands"][name]) == [], name


# ---- PostgreSQL --------------------------------------------------------------------------------


def test_postgres_probes_and_environment_are_what_the_pinned_image_reads() -> None:
    (pg,) = containers(KIND / "base" / "postgres" / "statefulset.yaml").values()
    assert "args" not in pg and "command" not in pg, "the image's own entrypoint starts postgres"
    known_env = UPSTREAM["postgres image environment"]["variables"]
    assert unknown([e["name"] for e in pg["env"]], known_env) == []
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        shell = pg[probe]["exec"]["command"][-1]
        (call,) = re.findall(r"pg_isready (.*)", shell)
        assert unknown(flag_names(shlex.split(call)), UPSTREAM["pg_isready"]["flags"]) == []


# ---- Traefik chart -----------------------------------------------------------------------------


def test_traefik_values_use_only_keys_the_pinned_chart_defines() -> None:
    values = yaml.safe_load((KIND / "traefik-values.yaml").read_text())
    entry = UPSTREAM["traefik chart values"]
    objects, typed = entry["objects"], set(entry["kubernetes_typed"])
    problems = []

    def walk(node: dict, path: str) -> None:
        schema = objects.get(path) or objects.get(re.sub(r"\.[^.]+$", ".*", path))
        assert schema is not None, f"{path}: not read from the chart's schema yet"
        for key, value in node.items():
            child = key if path == "." else f"{path}.{key}"
            if key not in schema["keys"] and schema["keys"] != ["*"]:
                problems.append(f"{child}: not a value of the chart")
            elif child in typed:
                continue  # a Kubernetes type; checked as one in test_kind_manifests.py
            elif isinstance(value, dict):
                walk(value, child)

    walk(values, ".")
    assert problems == []
    # The check bites: a misspelt top-level key is refused by the chart's schema (closed).
    assert objects["."]["closed"] and "ingresClass" not in objects["."]["keys"]


# ---- MLflow: its own --help ---------------------------------------------------------------------


def mlflow_help(*command: str) -> list[str]:
    out = subprocess.run(
        [mlflow_executable(), *command, "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return re.findall(r"(?:^|[\s,/])(--[a-z][a-z0-9-]*)", out.stdout)


@pytest.mark.parametrize(
    ("deployment", "command"),
    [("mlflow", ("server",)), ("model-server", ("models", "serve"))],
)
def test_mlflow_flags_are_in_its_own_help(deployment: str, command: tuple[str, ...]) -> None:
    path = KIND / "base" / deployment / "deployment.yaml"
    (c,) = [c for c in containers(path).values() if c["command"] == ["mlflow"]]
    assert tuple(c["args"][: len(command)]) == command
    flags = flag_names(c["args"][len(command) :])
    assert flags and unknown(flags, mlflow_help(*command)) == []


# ---- workflow-controller ConfigMap and workflowRestrictions ------------------------------------


def controller_config() -> dict[str, Any]:
    (config,) = docs(KIND / "base" / "argo" / "patches" / "workflow-controller-configmap.yaml")
    return config["data"]


def test_controller_configmap_keys_and_restrictions_are_argos() -> None:
    entry = UPSTREAM["workflow-controller configmap"]
    assert entry["tag"] == pinned_versions()["ARGO_WORKFLOWS_VERSION"]
    data = controller_config()
    assert unknown(list(data), entry["keys"]) == []
    restrictions = yaml.safe_load(data["workflowRestrictions"])
    assert restrictions == {"templateReferencing": "Strict"}
    assert restrictions["templateReferencing"] in entry["templateReferencing"]


def test_what_we_submit_passes_the_template_referencing_restriction() -> None:
    """Under Strict the controller errors a Workflow that sets anything but these fields
    (workflow/util/merge.go, ValidateUserOverrides): our one-off runs and the cron's runs."""
    from workflows.pipeline import build_run_workflow, render
    from workflows.settings import PipelineSettings

    allowed = UPSTREAM["workflow-controller configmap"]["allowed_workflow_fields"]
    run = build_run_workflow(PipelineSettings(), {"source": "synthetic"}).to_dict()
    # A run over more years than the fan-out sets its own activeDeadlineSeconds.
    years = ",".join(map(str, range(2000, 2025)))
    many = build_run_workflow(PipelineSettings(), {"source": "gsod", "years": years}).to_dict()
    assert "activeDeadlineSeconds" in many["spec"]
    cron = render(PipelineSettings())["cron-workflow"]
    for spec in (run["spec"], many["spec"], cron["spec"]["workflowSpec"]):
        assert "workflowTemplateRef" in spec
        assert unknown(list(spec), allowed) == []
