"""promote and deploy refuse, in one line and without running it, a model version that is not
this project's served model (steps/model_trust.py): a pickled pyfunc of someone else's, our
models-from-code file with other bytes, our code registered by hand."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from steps.deploy_targets.local import BACKEND_FILE, MODELS_DIR, STATE_FILE
from steps.model import LinearCoefficients, log_served_model
from steps.model_trust import (
    SERVED_MODEL_FILE,
    known_code_sha256,
    untrusted_reason,
    verified_model_dir,
)
from steps.promote import CHAMPION
from steps.register import register_version
from steps.settings import MlflowSettings
from steps.tracking import mlflow_session
from steps.train import train_and_log
from tests.model_helpers import (
    REPO,
    dewpoint_frame,
    error_line,
    make_experiment,
    run_step,
    step_env,
)
from tests.model_helpers import write_dataset as write_frame

MARKER_ENV = "DEWPOINT_TEST_MARKER"


class MarkerModel(mlflow.pyfunc.PythonModel):
    """Someone else's pyfunc: loading it runs code (here: writes a marker file)."""

    def load_context(self, context) -> None:
        import os

        Path(os.environ[MARKER_ENV]).write_text("code of an untrusted model ran")

    def predict(self, context, model_input, params=None):
        return model_input["temp"] * 0.9 - 9.0


@pytest.fixture
def world(sqlite_tracking_uri: str, tmp_path: Path) -> dict:
    """A registry whose version 1 the pipeline registered (ours) and is the champion."""
    settings = MlflowSettings(sqlite_tracking_uri, experiment="trust")
    make_experiment(settings.tracking_uri, settings.experiment, tmp_path / "artifacts")
    ours = train_and_log(dewpoint_frame(rows=300, seed=1), settings)
    version = register_version(settings, ours.run_id, ours.model_uri).version
    client = mlflow.MlflowClient(settings.tracking_uri)
    client.set_registered_model_alias(settings.model_name, CHAMPION, version)
    holdout = write_frame(dewpoint_frame(rows=100, seed=2), tmp_path / "holdout.parquet")
    return {"settings": settings, "client": client, "ours": version, "holdout": holdout}


def register_foreign(world: dict, how: str) -> str:
    """Register a version that is not ours (`pickled`, `edited-code`, `by-hand`); its number."""
    settings = world["settings"]
    example = pd.DataFrame({"temp": [50.0]})
    with mlflow_session(settings) as client:
        mlflow.set_experiment(settings.experiment)
        with mlflow.start_run() as run:
            if how == "pickled":
                info = mlflow.pyfunc.log_model(
                    name="model", python_model=MarkerModel(), input_example=example
                )
            else:
                info = log_served_model(LinearCoefficients(0.9, -9.0), example)
            source = info.model_uri
            if how == "edited-code":
                # Our models-from-code file with one line more: not a served_model.py we ship.
                local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
                code = local / "served_model.py"
                code.write_text(code.read_text() + "\nimport os  # and anything else\n")
                mlflow.log_artifacts(str(local), "edited")
                source = f"runs:/{run.info.run_id}/edited"
        mv = client.create_model_version(settings.model_name, source, run.info.run_id)
        if how != "by-hand":
            client.set_model_version_tag(settings.model_name, mv.version, "code.version", "0.1.0")
    return str(mv.version)


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("pickled", "loader_module"),
        ("edited-code", "is not a served_model.py we ship"),
        ("by-hand", "no code.version tag"),
    ],
)
def test_promote_refuses_a_foreign_champion_without_running_it(
    world: dict, tmp_path: Path, how: str, reason: str
) -> None:
    settings, client = world["settings"], world["client"]
    foreign = register_foreign(world, how)
    client.set_registered_model_alias(settings.model_name, CHAMPION, foreign)
    new = train_and_log(dewpoint_frame(rows=300, seed=3), settings)
    version = register_version(settings, new.run_id, new.model_uri).version
    marker = tmp_path / "marker"
    result = run_step(
        "promote", "--version", version, "--holdout", str(world["holdout"]),
        "--tracking-uri", settings.tracking_uri,
        env=step_env(**{MARKER_ENV: str(marker)}),
    )  # fmt: skip
    line = error_line(result)
    assert f"champion {settings.model_name}/{foreign} is not this project's served model" in line
    assert reason in line
    assert not marker.exists(), "the foreign model's code ran"
    after = client.get_registered_model(settings.model_name).aliases
    assert {k: str(v) for k, v in after.items()} == {CHAMPION: foreign}, "nothing moved"
    assert "gate.decision" not in client.get_model_version(settings.model_name, version).tags


def test_deploy_refuses_a_foreign_version_before_touching_the_target(
    world: dict, tmp_path: Path
) -> None:
    settings = world["settings"]
    foreign = register_foreign(world, "pickled")
    state = tmp_path / "serve-state"
    marker = tmp_path / "marker"
    result = run_step(
        "deploy", "--target", "local", "--version", foreign, "--state-dir", str(state),
        "--tracking-uri", settings.tracking_uri,
        env=step_env(**{MARKER_ENV: str(marker)}),
    )  # fmt: skip
    line = error_line(result)
    assert f"version {settings.model_name}/{foreign} is not this project's served model" in line
    assert not marker.exists()  # none of its code ran
    # Nothing is served from it or recorded: deploy may have made its state directory (it holds
    # the deploy's lock and the download area), but no server record, no backend for the front
    # and no model copy are left in it.
    assert not (state / STATE_FILE).exists() and not (state / BACKEND_FILE).exists()
    assert not list((state / MODELS_DIR).glob("*"))


def test_our_registered_version_passes_and_each_rule_bites(world: dict, tmp_path: Path) -> None:
    settings, client = world["settings"], world["client"]
    local = verified_model_dir(
        client, settings.model_name, world["ours"], tmp_path / "ours", role="champion"
    )
    tags = dict(client.get_model_version(settings.model_name, world["ours"]).tags)
    assert untrusted_reason(local, tags) is None

    def variant(change) -> str | None:
        copy = tmp_path / f"variant-{len(list(tmp_path.glob('variant-*')))}"
        shutil.copytree(local, copy)
        mlmodel = yaml.safe_load((copy / "MLmodel").read_text())
        change(mlmodel["flavors"], copy)
        (copy / "MLmodel").write_text(yaml.safe_dump(mlmodel))
        return untrusted_reason(copy, tags)

    assert "code paths" in variant(lambda f, d: f["python_function"].update(code="code"))
    assert "flavours" in variant(lambda f, d: f.update(sklearn={"pickled_model": "m.pkl"}))
    assert "artifacts" in variant(
        lambda f, d: f["python_function"]["artifacts"].update(extra={"path": "x"})
    )
    assert "missing" in variant(lambda f, d: (d / "served_model.py").unlink())


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, check=True).stdout


def test_every_committed_served_model_file_stays_trusted() -> None:
    """A champion logged by any steps/served_model.py committed since the trust check began must
    stay deployable: a change to the file (a comment too) lists the old bytes' hash in
    PREVIOUS_SERVED_MODEL_SHA256. Reads this checkout's git history (CI clones main whole)."""
    path = SERVED_MODEL_FILE.relative_to(REPO).as_posix()
    began = (
        _git("log", "--diff-filter=A", "--format=%H", "--", "steps/model_trust.py").decode().split()
    )
    assert began, "steps/model_trust.py has no commit adding it: is this a whole git clone?"
    commits = _git("rev-list", "HEAD", "--not", f"{began[-1]}^@", "--", path).decode().split()
    assert commits, f"no commit changed {path} since the trust check began"
    untrusted = [
        commit[:12]
        for commit in commits
        if hashlib.sha256(_git("show", f"{commit}:{path}")).hexdigest() not in known_code_sha256()
    ]
    assert not untrusted, f"{path} of these commits is no longer trusted: {untrusted}"
