"""promote: the gate rule, alias moves and tags against a real MLflow server, and bad inputs."""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import mlflow
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from steps.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_TRANSIENT, StepError, TransientError
from steps.history import HISTORY_ARTIFACT_DIR, HISTORY_FILE, model_history, plot_model_history
from steps.promote import (
    CHAMPION,
    CLAIM_LEASE_S,
    PREVIOUS_CHAMPION,
    TAG_REASON,
    decide,
    physical_band,
    promote_if_better,
    units_problem,
)
from steps.register import register_version
from steps.settings import MlflowSettings
from steps.sources import SourceRequest, fetch_from
from steps.tracking import HTTP_RETRY_DEFAULTS, canonical_version, mlflow_session
from steps.train import TrainConfig, TrainResult, train_and_log
from tests.conftest import MlflowServer, free_port
from tests.model_helpers import (
    dewpoint_frame,
    edit_rows,
    error_line,
    in_celsius,
    made_in_fahrenheit,
    make_experiment,
    register_served,
    run_step,
    station_year,
    step_env,
    summer,
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


@pytest.mark.parametrize(
    ("champion", "trust", "promoted", "phrase"),
    [
        (None, False, False, "no champion to judge against and nothing checked; if the data"),
        (None, True, True, "its units taken on trust (--trust-units): nothing checked"),
        ("1", False, True, "<="),  # with a champion its references judge, not this rule
    ],
)
def test_with_no_champion_unchecked_units_decide_unless_trusted(
    champion: str | None, trust: bool, promoted: bool, phrase: str
) -> None:
    decision, reason = decide(
        "3", 2.0, champion, 2.0 if champion else None, 0.0,
        unchecked_units="nothing checked", trust_units=trust,
    )  # fmt: skip
    assert (decision, "\n" in reason) == (promoted, False)
    assert phrase in reason, reason


@pytest.mark.parametrize(
    ("run_tags", "known"),
    [
        (None, False),  # no training run
        ({}, False),  # a run logged without the tag: fail closed
        ({"data.units": "unchecked", "data.units_basis": "0 of 3 stations"}, False),
        ({"data.units": "yes"}, False),  # a value train never writes
        ({"data.units": "thunder"}, True),
        ({"data.units": "publisher"}, True),
        ({"data.units": "generated"}, True),
    ],
)
def test_only_the_evidence_train_records_makes_units_known(
    run_tags: dict | None, known: bool
) -> None:
    problem = units_problem(run_tags)
    assert (problem is None) is known
    assert problem is None or ("\n" not in problem and "units" in problem)


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
    off: TrainResult  # intercept shifted by 0.5 deg F: slightly worse
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
        off=train_and_log(dewpoint_frame(rows=2000, seed=2, intercept=-9.5), settings),
        bad=train_and_log(shuffled, settings, TrainConfig(model_type="elasticnet")),
    )
    made_in_fahrenheit(settings.tracking_uri, *(r.run_id for r in (runs.good, runs.off, runs.bad)))
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

    # A rejection is final for its version (next test): the lenient gate judges a fresh registry.
    settings, (good, off) = _fresh(trained, trained.good, trained.off)
    promote_if_better(settings, good, trained.holdout)
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
@pytest.mark.parametrize("first", ["rejected", "promoted"])
def test_a_rerun_on_a_decided_version_keeps_its_evidence_after_the_champion_moved(
    trained: Trained, first: str
) -> None:
    """A version the gate decided on keeps that decision's gate.* tags whichever way it went:
    before, a rerun judged it again against the champion of the day and replaced the evidence
    (gate.champion_version, gate.reason, ...), and could even promote a version once rejected."""
    settings, (off, bad, good) = _fresh(trained, trained.off, trained.bad, trained.good)
    judged = bad if first == "rejected" else off
    if first == "rejected":
        promote_if_better(settings, off, trained.holdout)
    decision = promote_if_better(settings, judged, trained.holdout)
    assert decision.promoted is (first == "promoted")
    evidence = _tags(settings, judged)
    assert promote_if_better(settings, good, trained.holdout).promoted  # the champion moves on

    # A tolerance that would promote `bad` now if it were judged again.
    again = promote_if_better(settings, judged, trained.holdout, tolerance=100.0)

    assert not again.promoted
    assert _tags(settings, judged) == evidence
    assert _aliases(settings) == {CHAMPION: good, PREVIOUS_CHAMPION: off}
    assert again.champion_version == good
    if first == "rejected":
        assert again.outputs() == {**decision.outputs(), "champion-version": good}
    else:
        assert "promoted before and replaced since" in again.reason


@pytest.mark.slow
@pytest.mark.parametrize(
    ("age_s", "lease", "blocks"),
    [
        (0.0, None, True),
        (CLAIM_LEASE_S - 60, None, True),  # a claim recording no lease: CLAIM_LEASE_S
        (CLAIM_LEASE_S + 60, None, False),
        (CLAIM_LEASE_S + 60, "junk", False),  # unreadable: CLAIM_LEASE_S
        (1000.0, "900", False),  # the claim's own lease, shorter than this promote's default
        (CLAIM_LEASE_S + 60, str(3 * CLAIM_LEASE_S), True),  # ... or longer
        (120.0, "60", True),  # below --claim-lease's minimum: CLAIM_LEASE_S
        (120.0, "1e300", True),  # above its maximum (before: an OverflowError traceback)
    ],
)
def test_an_undecided_claim_blocks_a_promote_from_the_same_champion_until_its_lease_ends(
    trained: Trained, age_s: float, lease: str | None, blocks: bool
) -> None:
    """Another promote's claim on the same champion, with no decision yet, means it is moving
    the champion now: this promote refuses (exit 75) naming it and moves nothing. A claim older
    than its lease (the `gate.claim_lease_s` it records, else CLAIM_LEASE_S) is one whose promote
    died: it no longer blocks."""
    settings, (off, rival, good) = _fresh(trained, trained.off, trained.bad, trained.good)
    promote_if_better(settings, off, trained.holdout)
    client = mlflow.MlflowClient(settings.tracking_uri)
    claimed = time.time() - age_s
    client.set_model_version_tag(settings.model_name, rival, "gate.claimed_at",
                                 f"{claimed:.3f}")  # fmt: skip
    if lease is not None:
        client.set_model_version_tag(settings.model_name, rival, "gate.claim_lease_s", lease)
    client.set_model_version_tag(settings.model_name, rival, "gate.replaces", off)
    lasts = float(lease) if lease in ("900", str(3 * CLAIM_LEASE_S)) else CLAIM_LEASE_S

    if blocks:
        with pytest.raises(TransientError) as info:
            promote_if_better(settings, good, trained.holdout)
        assert f"raced the promote of version {rival} from the same champion" in str(info.value)
        # What frees it: the lease's end, to the second, or deleting the claim tag.
        ends = {time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claimed + lasts + d))
                for d in (-1, 0, 1)}  # fmt: skip
        assert any(f"stops blocking at {end}" in str(info.value) for end in ends), info.value
        assert f"the tag gate.replaces is deleted from version {rival}" in str(info.value)
        assert _aliases(settings) == {CHAMPION: off}
        assert "gate.replaces" not in _tags(settings, good)  # its own claim withdrawn
    else:
        assert promote_if_better(settings, good, trained.holdout, claim_lease=900.0).promoted
        assert _aliases(settings) == {CHAMPION: good, PREVIOUS_CHAMPION: off}
        assert _tags(settings, good)["gate.replaces"] == off
        assert _tags(settings, good)["gate.claim_lease_s"] == "900"  # recorded for the others


@pytest.mark.slow
def test_a_claim_time_no_calendar_holds_blocks_naming_it_and_leaves_no_claim_of_ours(
    trained: Trained,
) -> None:
    """A rival claim whose `gate.claimed_at` was edited to 1e300: one line saying it never stops
    blocking but for deleting its tag, and this promote's own claim withdrawn (before: an
    OverflowError traceback, and this promote's claim left to block every later promote)."""
    settings, (off, rival, good) = _fresh(trained, trained.off, trained.bad, trained.good)
    promote_if_better(settings, off, trained.holdout)
    client = mlflow.MlflowClient(settings.tracking_uri)
    client.set_model_version_tag(settings.model_name, rival, "gate.claimed_at", "1e300")
    client.set_model_version_tag(settings.model_name, rival, "gate.replaces", off)

    with pytest.raises(TransientError) as info:
        promote_if_better(settings, good, trained.holdout)

    assert "stops blocking at never (no readable gate.claimed_at)" in str(info.value)
    assert "gate.replaces" not in _tags(settings, good)
    assert _aliases(settings) == {CHAMPION: off}


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

    # A recorded reason anyone can edit in MLflow's UI, with white space around it: a rerun
    # writes it without (before: a traceback, as outputs with white space around are a bug).
    client = mlflow.MlflowClient(settings.tracking_uri)
    client.set_model_version_tag(settings.model_name, bad, TAG_REASON, " edited by hand\n")
    done = run_step("promote", "--version", bad, *common)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (outputs / "reason").read_text() == "edited by hand"


@pytest.mark.slow
def test_a_full_disk_for_the_outputs_fails_promote_before_champion_moves(
    trained: Trained, tmp_path: Path
) -> None:
    """The outputs' files get their room before the alias moves (before: `champion` moved, then
    writing the outputs failed)."""
    settings, (good,) = _fresh(trained, trained.good)
    outputs = tmp_path / "outputs"
    args = ["--version", good, "--holdout", str(trained.holdout_path), "--outputs-dir"]
    args += [str(outputs), "--tracking-uri", settings.tracking_uri]
    result = run_step("promote", *args, "--model-name", settings.model_name, full_disk=tmp_path)
    assert f"cannot write {outputs}" in error_line(result, EXIT_FAILED)
    assert "No space left on device" in result.stderr
    assert _aliases(settings) == {}
    assert "gate.decision" not in _tags(settings, good)
    assert not outputs.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown version", "version 7 of registered model"),
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

    exit_code = {"no tracking uri": EXIT_BAD_INPUT, "missing holdout": EXIT_BAD_INPUT,
                 "unknown version": EXIT_BAD_INPUT, "closed port": EXIT_TRANSIENT}  # fmt: skip
    assert message in error_line(run_step("promote", *args), exit_code.get(case, EXIT_FAILED))
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


# --- the model history plot ----------------------------------------------------------------------


@pytest.mark.slow
def test_each_promote_logs_the_model_history_to_the_judged_run(
    trained: Trained, tmp_path: Path
) -> None:
    extra = train_and_log(dewpoint_frame(rows=300, seed=7), trained.settings)
    made_in_fahrenheit(trained.settings.tracking_uri, extra.run_id)
    settings, (off, good, bad, never) = _fresh(
        trained, trained.off, trained.good, trained.bad, extra
    )
    decisions = [promote_if_better(settings, v, trained.holdout) for v in (off, good, bad)]
    client = mlflow.MlflowClient(settings.tracking_uri)

    points = model_history(client, settings.model_name, champion=good)
    assert [(p.version, p.decision, p.champion) for p in points] == [
        (int(off), "promoted", False),
        (int(good), "promoted", True),
        (int(bad), "rejected", False),
        (int(never), None, False),  # registered, never gated: its run's rmse metric
    ]
    assert [p.rmse for p in points[:3]] == [d.new_rmse for d in decisions]
    assert points[3].rmse == pytest.approx(extra.metrics.rmse)
    assert [p.registered for p in points] == sorted(p.registered for p in points)

    # The last promote judged `bad`: the picture is on its training run, a real PNG.
    local = client.download_artifacts(
        trained.bad.run_id, f"{HISTORY_ARTIFACT_DIR}/{HISTORY_FILE}", str(tmp_path)
    )
    image = matplotlib.image.imread(local)
    assert image.shape[0] > 200 and image.shape[1] > 400


@pytest.mark.slow
def test_a_failed_history_plot_warns_and_the_decision_stands(
    trained: Trained, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, (good,) = _fresh(trained, trained.good)

    def unreachable(*args: object) -> str:
        raise ConnectionError("artifact store unreachable")

    monkeypatch.setattr("steps.history.log_model_history", unreachable)
    decision = promote_if_better(settings, good, trained.holdout)
    assert decision.promoted and _aliases(settings) == {CHAMPION: good}
    assert _tags(settings, good)["gate.decision"] == "promoted"
    err = capsys.readouterr().err
    assert "warning: model history plot not logged" in err and "unreachable" in err


def test_history_plot_of_nothing_scored_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no version of m has a holdout RMSE"):
        plot_model_history([], "m", tmp_path / "h.png")
    assert not (tmp_path / "h.png").exists()


@given(st.one_of(st.text(), st.integers(0, 10**6).map(lambda n: "0" * (n % 3) + str(n))))
def test_canonical_version_accepts_ascii_integers_only_and_writes_them_one_way(text: str) -> None:
    """Property: a version is a positive integer in ASCII digits (padding and leading zeros
    allowed) and always comes back as str(int); anything else (non-ASCII digits, signs, `_`, 0) is
    a one-line StepError naming the flag."""
    stripped = text.strip()
    ascii_integer = stripped.isascii() and stripped.isdigit() and int(stripped) > 0
    if ascii_integer:
        assert canonical_version(text) == str(int(stripped))
        assert canonical_version(canonical_version(text)) == canonical_version(text)
    else:
        with pytest.raises(StepError, match="--version must be a positive integer") as info:
            canonical_version(text)
        assert "\n" not in str(info.value)


class _Line:
    """A model answering dewp = a * temp + b, for the physical band alone."""

    def __init__(self, a: float, b: float) -> None:
        self.a, self.b = a, b

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.a * frame["temp"].to_numpy() + self.b


TEMPS = np.linspace(-10.0, 95.0, 500)


@given(a=st.floats(0.75, 1.0), b=st.floats(-15.0, -4.0))
def test_lines_like_real_stations_stay_in_the_physical_band(a: float, b: float) -> None:
    """Real GSOD station-years fit slopes of 0.87-1.18 with intercepts of -3 to -23 F over their
    own temperatures; over -10..95 F those of slope <= 1 and intercept <= -4 stay in the band."""
    assert physical_band(_Line(a, b), TEMPS, 2.0) is None


def test_a_line_as_dry_as_the_driest_deserts_stays_in_the_band_a_drier_one_leaves_it() -> None:
    """The floor is MIN_RH_PERCENT = 10 % (sourced in steps/promote.py: the driest deserts'
    average afternoon minimum in their driest months is slightly under 10 %). A desert station's
    line, dewp = 0.32 * temp + 7.6 over 40-108 F (45 % RH at 40 F, 11 % on its hottest days),
    stays in the band (the unsourced 15 % refused it); dewp = 0.3 * temp - 5 (7.7 % at 95 F)
    leaves it, naming the floor."""
    desert = np.linspace(40.0, 108.0, 300)
    assert physical_band(_Line(0.32, 7.6), desert, 2.0) is None
    verdict = physical_band(_Line(0.3, -5.0), TEMPS, 2.0) or ""
    assert "below" in verdict and "the dew point at 10% relative humidity" in verdict


@given(level=st.floats(-10.0 + 2.5, 95.0), spread_temps=st.just(TEMPS))
def test_a_flat_line_above_the_coldest_temperatures_leaves_the_band(
    level: float, spread_temps: np.ndarray
) -> None:
    """A flat line (what constant temps train) at any level above the coldest judged temperature
    predicts dew point above temperature there."""
    low = np.percentile(spread_temps, 1.0)
    if level > low + 2.0 + 1e-6:
        assert "above the temperature" in (physical_band(_Line(0.0, level), TEMPS, 2.0) or "")


@given(temp=st.floats(-40.0, 120.0))
def test_temperatures_without_spread_cannot_judge_a_line(temp: float) -> None:
    verdict = physical_band(_Line(0.8, -10.0), np.full(200, temp), 2.0)
    assert verdict is not None and "standard deviation" in verdict


def _synthetic(rows: int, seed: int) -> pd.DataFrame:
    table = fetch_from("synthetic", SourceRequest(rows=rows, seed=seed)).table
    return table.to_pandas().dropna(subset=["temp", "dewp"]).reset_index(drop=True)


CANDIDATES = {
    # The demo's data (deg F) from another seed: a new week's model, which must still win.
    "next week's data": lambda: _synthetic(6000, seed=8),
    "summer extract in deg C": lambda: in_celsius(summer(_synthetic(6000, seed=8))),
    "every row temp=50 dewp=40": lambda: dewpoint_frame(rows=600).assign(temp=50.0, dewp=40.0),
    "constant temp, varying dew point": lambda: dewpoint_frame(rows=600).assign(temp=50.0),
}


@pytest.mark.slow
@pytest.mark.parametrize("with_champion", [True, False])
@pytest.mark.parametrize("candidate", list(CANDIDATES))
def test_only_a_plausible_model_becomes_champion(
    mlflow_server: MlflowServer, candidate: str, with_champion: bool
) -> None:
    """Candidates trained on data validate would refuse (trained here directly, as if validate
    had been bypassed) are refused by the gate, which is never decided by their own holdout
    alone: the champion's reference holdout and the physical band decide too."""
    settings = MlflowSettings(
        mlflow_server.url, model_name=f"gate-{uuid.uuid4().hex[:10]}", experiment="gate-kinds"
    )
    if with_champion:
        champion = train_and_log(_synthetic(6000, seed=42), settings)
        made_in_fahrenheit(settings.tracking_uri, champion.run_id)
        champion_version = register_version(settings, champion.run_id, champion.model_uri).version
        assert promote_if_better(settings, champion_version, champion.holdout).promoted
    result = train_and_log(CANDIDATES[candidate](), settings)
    plausible = candidate == "next week's data"
    if plausible:  # the synthetic source's rows; the others are the test's conversions
        made_in_fahrenheit(settings.tracking_uri, result.run_id)
    version = register_version(settings, result.run_id, result.model_uri).version

    decision = promote_if_better(settings, version, result.holdout)

    if plausible:
        assert decision.promoted, decision.reason
        return
    assert not decision.promoted, decision.reason
    assert "\n" not in decision.reason
    aliases = _aliases(settings)
    assert aliases.get(CHAMPION) == (champion_version if with_champion else None)
    assert _tags(settings, version)["gate.decision"] == "rejected"
    if candidate == "summer extract in deg C" and with_champion:
        assert f"on the reference holdout of version {champion_version}" in decision.reason
    elif candidate == "summer extract in deg C":
        # Its line passes near -40, where both scales meet, and stays in the band: with no
        # champion only the unchecked units refuse it (no FRSHTT thunder days, no source).
        assert "no champion to judge against" in decision.reason
        assert "data.units=unchecked" in decision.reason and "--trust-units" in decision.reason
    else:
        assert "rejected:" in decision.reason


def _mixed_units(celsius_fraction: float, rows: int = 3000, seed: int = 8) -> pd.DataFrame:
    """Valid deg F data with `celsius_fraction` of its rows replaced by summer rows in deg C
    (temps about 10-35), the attacker's drift step; 1.0 is all deg C."""
    fahrenheit = _synthetic(rows, seed=seed)
    celsius = in_celsius(summer(_synthetic(4 * rows, seed=seed + 1)))
    n_celsius = round(celsius_fraction * rows)
    picked = celsius.sample(n=n_celsius, replace=True, random_state=seed)
    mixed = pd.concat([fahrenheit.head(rows - n_celsius), picked], ignore_index=True)
    # One row per station and day, as validate demands: the dates are only labels here.
    start = pd.Timestamp("2000-01-01")
    mixed["date"] = [(start + pd.Timedelta(days=i)).date() for i in range(len(mixed))]
    return mixed


@pytest.mark.slow
@pytest.mark.parametrize("step", [0.1, 0.25])
def test_a_chain_of_small_unit_drifts_never_makes_the_deg_c_model_champion(
    mlflow_server: MlflowServer, step: float
) -> None:
    """The gate is anchored: each promotion used to replace the reference with the new champion's
    own holdout, so deg C rows mixed in by `step` per run walked the champion to a model of deg C
    data that a direct candidate could not reach. The anchor's reference and bound stay fixed."""
    settings = MlflowSettings(
        mlflow_server.url, model_name=f"drift-{uuid.uuid4().hex[:10]}", experiment="gate-drift"
    )
    first = train_and_log(_synthetic(6000, seed=42), settings)
    made_in_fahrenheit(settings.tracking_uri, first.run_id)
    first_version = register_version(settings, first.run_id, first.model_uri).version
    assert promote_if_better(settings, first_version, first.holdout).promoted
    fractions = [min(1.0, round(step * k, 2)) for k in range(1, math.ceil(1 / step) + 1)]
    decisions = []
    for fraction in fractions:
        result = train_and_log(_mixed_units(fraction), settings)
        version = register_version(settings, result.run_id, result.model_uri).version
        decision = promote_if_better(settings, version, result.holdout)
        decisions.append((fraction, version, decision.promoted, decision.reason))
        assert "\n" not in decision.reason
        if fraction == 1.0:
            assert not decision.promoted, decisions
            assert _aliases(settings)[CHAMPION] != version
            assert "on the reference holdout of version" in decision.reason, decisions
    # The anchor is carried forward, never replaced by a later champion.
    champion = _aliases(settings)[CHAMPION]
    assert _tags(settings, champion)["gate.anchor_version"] in (first_version, "none"), decisions


@pytest.mark.slow
def test_data_far_drier_than_any_climate_never_becomes_the_first_champion(
    mlflow_server: MlflowServer,
) -> None:
    """dewp = 0.3 * temp - 5 fits perfectly well, but implies about 8 % relative humidity at 95 F
    as a mean: outside the band even with no champion to compare with."""
    settings = MlflowSettings(
        mlflow_server.url, model_name=f"dry-{uuid.uuid4().hex[:10]}", experiment="gate-dry"
    )
    rng = np.random.default_rng(5)
    frame = dewpoint_frame(rows=2000, seed=5)
    frame["temp"] = rng.uniform(30.0, 100.0, len(frame))
    frame["dewp"] = 0.3 * frame["temp"] - 5.0 + rng.normal(0.0, 2.0, len(frame))
    result = train_and_log(frame, settings)
    version = register_version(settings, result.run_id, result.model_uri).version

    decision = promote_if_better(settings, version, result.holdout)

    assert not decision.promoted
    assert "\n" not in decision.reason and "relative humidity" in decision.reason, decision.reason
    assert "no champion" in decision.reason
    assert CHAMPION not in _aliases(settings)
    assert _tags(settings, version)["gate.decision"] == "rejected"


# --- rule 2: the first champion's units ----------------------------------------------------------


def _thunder_years(stations: int = 3) -> pd.DataFrame:
    """Station-years in deg F with FRSHTT flags: thunder on warm humid days at every station."""
    years = [
        station_year(55.0 + 5 * i, 22.0, seed=i, station=f"7253009484{i}") for i in range(stations)
    ]
    return pd.concat(years, ignore_index=True)


def _summer_in_celsius_without_flags() -> pd.DataFrame:
    """The same stations' summers converted to deg C, FRSHTT zeroed (a user's table, or local
    GSOD files edited): validate's thunder rule has nothing to judge, unit_jumps sees no mix."""
    return in_celsius(summer(_thunder_years())).assign(frshtt="000000")


FIRST_CHAMPIONS = {
    # (rows written as a user's table, or None: fetched by the synthetic source, or a row edit
    #  (tests/model_helpers.py edit_rows) of what it fetched; --trust-units, promoted,
    #  data.units train tags)
    "deg C summer, no flags": (_summer_in_celsius_without_flags, False, False, "unchecked"),
    "deg C summer, no flags, trusted": (_summer_in_celsius_without_flags, True, True, "unchecked"),
    "deg F with thunder days": (_thunder_years, False, True, "thunder"),
    "synthetic source": (None, False, True, "generated"),
    # Converted after fetch, its metadata kept: the source's evidence is no longer the rows'.
    "synthetic source, then deg C": ("deg C", False, False, "unchecked"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(FIRST_CHAMPIONS))
def test_a_first_champion_needs_evidence_of_its_units(
    mlflow_server: MlflowServer, tmp_path: Path, case: str
) -> None:
    """With no champion no reference judges the candidate, and a deg C summer extract looks like
    a cold station in deg F: its line stays in the physical band. Through the real fetch or
    table, validate, train, register and promote CLIs, the first champion needs its units known
    (validate judged every station by thunder days, or the source says so), or --trust-units."""
    make_rows, trust, promoted, units = FIRST_CHAMPIONS[case]
    name = f"units-{uuid.uuid4().hex[:10]}"
    env = step_env(MLFLOW_TRACKING_URI=mlflow_server.url, MLFLOW_EXPERIMENT_NAME="gate-units",
                   MODEL_NAME=name)  # fmt: skip
    dataset = tmp_path / "dataset.parquet"
    if make_rows is None or isinstance(make_rows, str):
        fetched = run_step("fetch", "--source", "synthetic", "--rows", "2000", "--output",
                           str(dataset), "--outputs-dir", str(tmp_path / "f"))  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr[-2000:]
        if make_rows:
            edit_rows(dataset, make_rows)
    else:
        write_dataset(make_rows(), dataset, {"name": "table", "uri": "/data/user.csv"})
    steps = [
        ("validate", "--input", str(dataset), "--output", str(tmp_path / "validated.parquet"),
         "--report", str(tmp_path / "report.json")),
        ("train", "--input", str(tmp_path / "validated.parquet"), "--holdout-out",
         str(tmp_path / "holdout.parquet"), "--plot-out", str(tmp_path / "fit.png")),
    ]  # fmt: skip
    outputs = {}
    for stage, *args in steps:
        done = run_step(stage, *args, "--outputs-dir", str(tmp_path / stage), env=env)
        assert done.returncode == 0, (stage, done.stderr[-2000:])
        outputs[stage] = json.loads(done.stdout.strip().splitlines()[-1])
    report = json.loads((tmp_path / "report.json").read_text())
    run = mlflow.MlflowClient(mlflow_server.url).get_run(outputs["train"]["run-id"])
    assert run.data.tags["data.units"] == units, (report["units"], run.data.tags)
    registered = run_step("register", "--run-id", outputs["train"]["run-id"], env=env)
    assert registered.returncode == 0, registered.stderr[-2000:]
    version = json.loads(registered.stdout.strip().splitlines()[-1])["version"]

    done = run_step("promote", "--version", version, "--holdout", str(tmp_path / "holdout.parquet"),
                    "--trust-units", str(trust).lower(), "--outputs-dir", str(tmp_path / "p"),
                    env=env)  # fmt: skip

    assert done.returncode == 0, done.stderr[-2000:]
    written = {p.name: p.read_text() for p in (tmp_path / "p").iterdir()}
    settings = MlflowSettings(mlflow_server.url, model_name=name)
    assert (written["promoted"], _aliases(settings).get(CHAMPION)) == (
        str(promoted).lower(),
        version if promoted else None,
    ), written["reason"]
    tags = _tags(settings, version)
    assert (tags["gate.units"], tags["gate.trust_units"]) == (units, str(trust).lower())
    assert tags["data.units"] == units  # register copies it to the version
    if units == "unchecked":
        stations = report["units"]["stations"]
        assert report["units"] == {"stations": stations, "judged_by_thunder": 0} and stations
        assert f"0 of {stations} stations had the 5 FRSHTT thunder days" in written["reason"]
        assert ("taken on trust" if trust else "again with --trust-units true") in written["reason"]


@pytest.mark.slow
def test_a_run_without_the_units_tag_counts_as_unchecked(trained: Trained) -> None:
    """A version whose training run was logged without `data.units` (before the tag, or not by
    train) is no first champion: fail closed. --trust-units promotes it, saying so."""
    settings = MlflowSettings(
        trained.settings.tracking_uri, model_name=f"untagged-{uuid.uuid4().hex[:10]}"
    )
    experiment = mlflow.MlflowClient(settings.tracking_uri).get_experiment_by_name(
        trained.settings.experiment
    )
    line = trained.good.coefficients
    version = register_served(
        settings.tracking_uri, experiment.experiment_id, settings.model_name, line
    )

    decision = promote_if_better(settings, version, trained.holdout)

    assert not decision.promoted and CHAMPION not in _aliases(settings)
    assert "has no data.units tag" in decision.reason and "--trust-units" in decision.reason
    assert _tags(settings, version)["gate.units"] == "missing"
    # A decision is final: a rerun with --trust-units answers the recorded rejection.
    assert not promote_if_better(settings, version, trained.holdout, trust_units=True).promoted
    again = register_served(
        settings.tracking_uri, experiment.experiment_id, settings.model_name, line
    )
    trusted = promote_if_better(settings, again, trained.holdout, trust_units=True)
    assert trusted.promoted and "taken on trust" in trusted.reason, trusted.reason
    assert _tags(settings, again)["gate.trust_units"] == "true"
