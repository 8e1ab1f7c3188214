"""One rule at every stage: a registered model, model version, alias or run that a flag names and
the registry does not have is bad input, one `error:` line, exit 2, and nothing is written,
started or stopped (steps.tracking.named_by_input; docs/steps.md "Exit codes"). Before, promote
(`--version 99`, an unknown `--model-name`), register (`--run-id` of no run) and deploy (`--alias`
the model lacks) exited 1, while deploy's unknown `--version` exited 2 (breaker 58).

Every case runs the real CLI against a real MLflow server on 127.0.0.1.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from steps.cli import EXIT_BAD_INPUT
from steps.deploy_targets.local import LOCK_FILE, MODELS_DIR
from steps.model import LinearCoefficients
from tests.conftest import MlflowServer, free_port
from tests.model_helpers import error_line, register_served, run_step, step_env, write_dataset

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Known:
    """A model with one version and no alias, on the session's MLflow server."""

    url: str
    name: str
    version: str
    run_id: str
    holdout: Path


@pytest.fixture(scope="module")
def known(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Known:
    name = f"not-in-registry-{uuid.uuid4().hex[:8]}"
    client = mlflow.MlflowClient(mlflow_server.url)
    experiment = client.create_experiment(name)
    version = register_served(mlflow_server.url, experiment, name, LinearCoefficients(0.9, -8.0))
    run_id = client.get_model_version(name, version).run_id
    temps = [float(t) for t in range(20, 95, 5)]
    frame = pd.DataFrame({"temp": temps, "dewp": [0.9 * t - 8.0 for t in temps]})
    holdout = write_dataset(frame, tmp_path_factory.mktemp("holdout") / "holdout.parquet")
    return Known(mlflow_server.url, name, version, run_id, holdout)


def _registry(known: Known, *names: str) -> dict[str, object]:
    """Every version (with its tags) and alias of the models `names`, and each run's versions."""
    client = mlflow.MlflowClient(known.url)
    state: dict[str, object] = {}
    for name in names:
        found = client.search_model_versions(f"name = '{name}'")
        state[name] = sorted((v.version, sorted(v.tags.items())) for v in found)
        models = client.search_registered_models(f"name = '{name}'")
        state[f"{name} aliases"] = dict(models[0].aliases) if models else None
    return state


NO_RUN = "0" * 32
PROMOTE = "promote --holdout {holdout} --version"
DEPLOY = "deploy --target local"
# case -> (the stage and its flags, what the line names), filled in per test.
CASES = {
    "promote, a version the model lacks": (
        f"{PROMOTE} 99 --model-name {{name}}",
        "version 99 of registered model {name!r}",
    ),
    "promote, a model the registry lacks": (
        f"{PROMOTE} {{version}} --model-name {{missing}}",
        "registered model {missing!r}",
    ),
    "register, a run the server lacks": (
        f"register --run-id {NO_RUN} --model-name {{name}}",
        f"run {NO_RUN!r}",
    ),
    "deploy, a version the model lacks": (
        f"{DEPLOY} --version 99 --model-name {{name}}",
        "version 99 of registered model {name!r}",
    ),
    "deploy, a model the registry lacks": (
        f"{DEPLOY} --version {{version}} --model-name {{missing}}",
        "version {version} of registered model {missing!r}",
    ),
    "deploy, an alias the model lacks": (
        f"{DEPLOY} --alias champion --model-name {{name}}",
        "alias 'champion' of registered model {name!r}",
    ),
    "deploy, an alias of a model the registry lacks": (
        f"{DEPLOY} --alias champion --model-name {{missing}}",
        "registered model {missing!r}",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_name_the_registry_does_not_have_is_bad_input_at_every_stage(
    case: str, known: Known, tmp_path: Path
) -> None:
    """Exit 2 and one line `<what> does not exist at <tracking URI>`; the registry (versions, their
    tags, aliases) is as it was, and deploy made no state directory and started nothing."""
    missing = f"{known.name}-missing"
    state_dir = tmp_path / "serve"
    fill = {
        "name": known.name, "missing": missing, "version": known.version,
        "holdout": str(known.holdout),
    }  # fmt: skip
    flags, what = CASES[case]
    args = flags.format(**fill).split()
    args += ["--tracking-uri", known.url, "--outputs-dir", str(tmp_path / "outputs")]
    if args[0] == "deploy":
        args += ["--state-dir", str(state_dir), "--port", str(free_port())]
    before = _registry(known, known.name, missing)

    line = error_line(run_step(*args, env=step_env()), EXIT_BAD_INPUT)

    assert f"{what.format(**fill)} does not exist at {known.url}" in line
    assert _registry(known, known.name, missing) == before
    assert not (tmp_path / "outputs").exists()
    assert not state_dir.exists()


def test_a_refused_local_deploy_leaves_its_state_directory_as_it_was(
    known: Known, tmp_path: Path
) -> None:
    """A version the registry lacks is refused before the state directory is locked or its unused
    model copies are pruned (before: `models/junk` was deleted, then exit 2)."""
    state_dir = tmp_path / "serve"
    junk = state_dir / MODELS_DIR / "junk"
    junk.mkdir(parents=True)
    (junk / "file").write_text("kept\n")
    before = sorted(p.relative_to(state_dir) for p in state_dir.rglob("*"))
    args = ["deploy", "--target", "local", "--version", "99", "--model-name", known.name]
    args += ["--tracking-uri", known.url, "--state-dir", str(state_dir)]
    args += ["--port", str(free_port()), "--outputs-dir", str(tmp_path / "outputs")]

    error_line(run_step(*args, env=step_env()), EXIT_BAD_INPUT)

    assert sorted(p.relative_to(state_dir) for p in state_dir.rglob("*")) == before
    assert not (state_dir / LOCK_FILE).exists()
    assert (junk / "file").read_text() == "kept\n"
    assert os.listdir(tmp_path) == ["serve"]
