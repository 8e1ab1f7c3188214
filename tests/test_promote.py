"""promote: the gate rule, alias moves and tags against a real MLflow server, and bad inputs."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from steps.cli import StepError
from steps.promote import CHAMPION, PREVIOUS_CHAMPION, decide, promote_if_better
from steps.register import register_version
from steps.settings import MlflowSettings
from steps.tracking import HTTP_RETRY_DEFAULTS, mlflow_session
from steps.train import TrainConfig, TrainResult, train_and_log
from tests.conftest import MlflowServer, free_port
from tests.model_helpers import (
    dewpoint_frame,
    error_line,
    make_experiment,
    run_step,
    write_dataset,
)


@pytest.mark.parametrize(
    ("champion", "champion_rmse", "new_rmse", "tolerance", "promoted", "phrase"),
    [
        (None, None, 2.0, 0.0, True, "no champion yet"),
        ("1", 2.1, 2.0, 0.0, True, "<="),
        ("1", 2.0, 2.0, 0.0, True, "<="),  # not worse is enough
        ("1", 2.0, 2.1, 0.0, False, "champion stays"),
        ("1", 2.0, 2.1, 0.2, True, "tolerance 0.2"),
        ("3", 2.0, 2.0, 0.0, True, "already the champion"),
    ],
)
def test_gate_rule(
    champion: str | None,
    champion_rmse: float | None,
    new_rmse: float,
    tolerance: float,
    promoted: bool,
    phrase: str,
) -> None:
    decision, reason = decide("3", new_rmse, champion, champion_rmse, tolerance)
    assert decision is promoted
    assert phrase in reason
    assert reason == decide("3", new_rmse, champion, champion_rmse, tolerance)[1]


def test_session_bounds_http_retries_and_restores_the_environment(
    sqlite_tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # the user's choice wins
    before = dict(os.environ)
    with mlflow_session(MlflowSettings(sqlite_tracking_uri)):
        assert (
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
            == (HTTP_RETRY_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
        )
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
        assert mlflow.get_tracking_uri() == sqlite_tracking_uri
    assert dict(os.environ) == before


# --- against the real server -------------------------------------------------------------------

HOLDOUT_SEED = 99


@dataclass(frozen=True)
class Trained:
    """Runs logged once per module on the shared server, registered per test under fresh names."""

    settings: MlflowSettings
    holdout: pd.DataFrame
    holdout_path: Path
    good: TrainResult  # the true relation
    off: TrainResult  # intercept shifted by 1 deg F: slightly worse
    bad: TrainResult  # trained on shuffled dew points: slope ~0, far worse


def _rmse(result: TrainResult, holdout: pd.DataFrame) -> float:
    c = result.coefficients
    predicted = holdout["temp"].to_numpy() * c.coef + c.intercept
    return float(np.sqrt(np.mean((holdout["dewp"].to_numpy() - predicted) ** 2)))


@pytest.fixture(scope="module")
def trained(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Three models of known quality, and one holdout frame (same relation, its own noise)."""
    settings = MlflowSettings(mlflow_server.url, experiment="promote-tests")
    holdout = dewpoint_frame(rows=1000, seed=HOLDOUT_SEED)
    holdout_path = write_dataset(holdout, tmp_path_factory.mktemp("promote") / "holdout.parquet")
    shuffled = dewpoint_frame(rows=2000, seed=3)
    shuffled["dewp"] = shuffled["dewp"].sample(frac=1.0, random_state=0).to_numpy()
    runs = Trained(
        settings,
        holdout,
        holdout_path,
        good=train_and_log(dewpoint_frame(rows=2000, seed=1), settings),
        off=train_and_log(dewpoint_frame(rows=2000, seed=2, intercept=-9.0), settings),
        bad=train_and_log(shuffled, settings, TrainConfig(model_type="elasticnet")),
    )
    # Preconditions of the scenarios below, from the fitted coefficients alone.
    good, off, bad = (_rmse(r, holdout) for r in (runs.good, runs.off, runs.bad))
    assert good < off < good + 0.5 < bad
    return runs


def _fresh(trained: Trained, *results: TrainResult) -> tuple[MlflowSettings, list[str]]:
    """A new registered model name with `results` registered in order; returns the versions."""
    settings = MlflowSettings(
        trained.settings.tracking_uri, model_name=f"gate-{uuid.uuid4().hex[:10]}"
    )
    versions = [register_version(settings, r.run_id, r.model_uri).version for r in results]
    return settings, versions


def _aliases(settings: MlflowSettings) -> dict[str, str]:
    client = mlflow.MlflowClient(settings.tracking_uri)
    return dict(client.get_registered_model(settings.model_name).aliases)


def _tags(settings: MlflowSettings, version: str) -> dict[str, str]:
    client = mlflow.MlflowClient(settings.tracking_uri)
    return client.get_model_version(settings.model_name, version).tags


@pytest.mark.slow
def test_first_model_becomes_champion_and_a_better_one_replaces_it(trained: Trained) -> None:
    settings, (off, good) = _fresh(trained, trained.off, trained.good)

    first = promote_if_better(settings, off, trained.holdout)
    assert first.promoted and "no champion yet" in first.reason
    assert first.outputs()["champion-rmse"] == "none"
    assert first.champion_version == off
    assert _aliases(settings) == {CHAMPION: off}

    second = promote_if_better(settings, good, trained.holdout)
    assert second.promoted
    assert second.new_rmse == pytest.approx(_rmse(trained.good, trained.holdout), abs=1e-9)
    assert second.champion_rmse == pytest.approx(_rmse(trained.off, trained.holdout), abs=1e-9)
    assert second.champion_rmse == first.new_rmse
    assert _aliases(settings) == {CHAMPION: good, PREVIOUS_CHAMPION: off}
    tags = _tags(settings, good)
    assert tags["gate.decision"] == "promoted"
    assert tags["gate.champion_version"] == off
    assert float(tags["gate.champion_rmse"]) == second.champion_rmse
    assert float(tags["gate.new_rmse"]) == second.new_rmse
    assert tags["gate.reason"] == second.reason


@pytest.mark.slow
def test_worse_model_is_rejected_and_the_champion_stays(trained: Trained) -> None:
    settings, (good, bad) = _fresh(trained, trained.good, trained.bad)
    promote_if_better(settings, good, trained.holdout)

    decision = promote_if_better(settings, bad, trained.holdout)
    assert not decision.promoted
    assert "champion stays" in decision.reason
    assert decision.champion_version == good
    assert decision.outputs()["promoted"] is False
    assert _aliases(settings) == {CHAMPION: good}
    assert _tags(settings, bad)["gate.decision"] == "rejected"


@pytest.mark.slow
def test_tolerance_lets_a_slightly_worse_model_through(trained: Trained) -> None:
    settings, (good, off) = _fresh(trained, trained.good, trained.off)
    promote_if_better(settings, good, trained.holdout)

    strict = promote_if_better(settings, off, trained.holdout, tolerance=0.0)
    assert not strict.promoted and _aliases(settings) == {CHAMPION: good}
    lenient = promote_if_better(settings, off, trained.holdout, tolerance=0.5)
    assert lenient.promoted
    assert _aliases(settings) == {CHAMPION: off, PREVIOUS_CHAMPION: good}
    assert _tags(settings, off)["gate.tolerance"] == "0.5"


@pytest.mark.slow
def test_promote_is_idempotent(trained: Trained) -> None:
    settings, (good, bad) = _fresh(trained, trained.good, trained.bad)
    first = promote_if_better(settings, good, trained.holdout)
    first_tags = _tags(settings, good)

    again = promote_if_better(settings, good, trained.holdout)
    assert again.promoted and "already the champion" in again.reason
    assert (again.champion_version, again.new_rmse) == (first.champion_version, first.new_rmse)
    assert _aliases(settings) == {CHAMPION: good}
    assert _tags(settings, good) == first_tags  # the decision that made it champion is kept

    rejected = [promote_if_better(settings, bad, trained.holdout).outputs() for _ in range(2)]
    assert rejected[0] == rejected[1]
    assert _aliases(settings) == {CHAMPION: good}


@pytest.mark.slow
def test_unknown_version_is_a_step_error_and_nothing_moves(trained: Trained) -> None:
    settings, (good,) = _fresh(trained, trained.good)
    promote_if_better(settings, good, trained.holdout)
    for version in ("99", "0", "latest"):
        with pytest.raises(StepError) as info:
            promote_if_better(settings, version, trained.holdout)
        assert "\n" not in str(info.value)
    with pytest.raises(StepError, match="tolerance"):
        promote_if_better(settings, good, trained.holdout, tolerance=-1.0)
    assert _aliases(settings) == {CHAMPION: good}


@pytest.mark.slow
def test_promote_cli_writes_outputs(trained: Trained, tmp_path: Path) -> None:
    settings, (good, bad) = _fresh(trained, trained.good, trained.bad)
    outputs = tmp_path / "outputs"
    common = ["--holdout", str(trained.holdout_path), "--tracking-uri", settings.tracking_uri]
    common += ["--model-name", settings.model_name, "--outputs-dir", str(outputs)]

    done = run_step("promote", "--version", good, *common)
    assert done.returncode == 0, done.stderr[-3000:]
    written = {p.name: p.read_text() for p in outputs.iterdir()}
    assert written == json.loads(done.stdout.strip().splitlines()[-1])
    assert written["promoted"] == "true"
    assert written["champion-rmse"] == "none"
    assert written["champion-version"] == good
    assert float(written["new-rmse"]) == pytest.approx(_rmse(trained.good, trained.holdout))

    done = run_step("promote", "--version", bad, *common)
    assert done.returncode == 0, done.stderr[-3000:]
    written = {p.name: p.read_text() for p in outputs.iterdir()}
    assert (written["promoted"], written["champion-version"]) == ("false", good)
    assert float(written["champion-rmse"]) == pytest.approx(_rmse(trained.good, trained.holdout))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown version", "has no version 7"),
        ("missing holdout", "does not exist"),
        ("holdout without dewp", "lacks column(s) dewp"),
        ("no tracking uri", "no MLflow tracking URI"),
        ("closed port", "Connection refused"),
    ],
)
def test_promote_cli_bad_input_is_one_line_and_champion_unchanged(
    case: str, message: str, trained: Trained, tmp_path: Path
) -> None:
    settings, (good, candidate) = _fresh(trained, trained.good, trained.off)
    promote_if_better(settings, good, trained.holdout)
    holdout = trained.holdout_path
    if case == "missing holdout":
        holdout = tmp_path / "nope.parquet"
    elif case == "holdout without dewp":
        holdout = write_dataset(trained.holdout.drop(columns=["dewp"]), tmp_path / "h.parquet")
    uri = settings.tracking_uri
    if case == "closed port":
        uri = f"http://127.0.0.1:{free_port()}"
    version = "7" if case == "unknown version" else candidate
    args = ["--version", version, "--holdout", str(holdout), "--tolerance", "0.5"]
    args += ["--model-name", settings.model_name, "--outputs-dir", str(tmp_path / "o")]
    if case != "no tracking uri":
        args += ["--tracking-uri", uri]

    assert message in error_line(run_step("promote", *args))
    assert not (tmp_path / "o").exists()
    assert _aliases(settings) == {CHAMPION: good}
    assert "gate.decision" not in _tags(settings, candidate)


def test_champion_that_cannot_be_scored_stops_the_gate_before_any_write(
    sqlite_tracking_uri: str, tmp_path: Path
) -> None:
    settings = MlflowSettings(sqlite_tracking_uri, experiment="gate-broken")
    make_experiment(settings.tracking_uri, settings.experiment, tmp_path / "artifacts")
    new = train_and_log(dewpoint_frame(rows=200, seed=8), settings)
    version = register_version(settings, new.run_id, new.model_uri).version
    client = mlflow.MlflowClient(settings.tracking_uri)
    # A champion whose artifacts are gone: scoring it fails after the new model was scored.
    gone = client.create_model_version(
        settings.model_name, source=(tmp_path / "deleted-model").as_uri()
    )
    client.set_registered_model_alias(settings.model_name, CHAMPION, gone.version)

    with pytest.raises(StepError) as info:
        promote_if_better(settings, version, dewpoint_frame(rows=100, seed=9), tolerance=100.0)
    assert f"cannot score models:/{settings.model_name}/{gone.version}" in str(info.value)
    assert "\n" not in str(info.value)
    assert _aliases(settings) == {CHAMPION: gone.version}
    assert "gate.decision" not in _tags(settings, version)
