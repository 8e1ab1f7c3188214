"""register: provenance tags, one version per run (retry-safe), one-line errors."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException
from mlflow.utils.search_utils import SearchModelVersionUtils

import steps
from steps import register
from steps.cli import EXIT_BAD_INPUT, EXIT_TRANSIENT, BadInput, StepError
from steps.register import (
    TAG_DATA_PART_PREFIX,
    TAG_DATA_SOURCE,
    TAG_FETCHED_HASH,
    TAG_VALIDATED_HASH,
    provenance_tags,
    register_version,
    search_literal,
    train_and_register,
    versions_of_run,
)
from steps.revision import source_revision
from steps.settings import MlflowSettings
from steps.tracking import mlflow_session
from steps.train import TrainResult, train_and_log
from tests.conftest import MlflowServer, assert_bad_input, free_port
from tests.model_helpers import dewpoint_frame, error_line, make_experiment, run_step, step_env


@pytest.fixture
def tracking(
    sqlite_tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> MlflowSettings:
    """A private sqlite store (also MLFLOW_TRACKING_URI) with artifacts under tmp_path."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_tracking_uri)
    settings = MlflowSettings(sqlite_tracking_uri, experiment="register-test")
    make_experiment(settings.tracking_uri, settings.experiment, tmp_path / "artifacts")
    return settings


def _train(settings: MlflowSettings, seed: int = 0) -> TrainResult:
    return train_and_log(
        dewpoint_frame(rows=120, seed=seed),
        settings,
        data_source="synthetic",
    )


def test_register_tags_the_version_and_reuses_it_for_the_same_run(
    tracking: MlflowSettings,
) -> None:
    first_run = _train(tracking, seed=1)
    tags = provenance_tags(workflow_name="dewpoint-pipeline-abc", workflow_uid="uid-1")
    first = register_version(tracking, first_run.run_id, first_run.model_uri, tags)
    assert (first.version, first.created) == ("1", True)

    # An Argo retry of the same step: same run, same version, refreshed tags, no second version.
    retried = register_version(
        tracking, first_run.run_id, first_run.model_uri, {**tags, "workflow.uid": "uid-2"}
    )
    assert (retried.version, retried.created) == ("1", False)

    second_run = _train(tracking, seed=2)
    second = register_version(tracking, second_run.run_id, second_run.model_uri)
    assert (second.version, second.created) == ("2", True)

    client = mlflow.MlflowClient(tracking.tracking_uri)
    assert len(client.search_model_versions(f"name = '{tracking.model_name}'")) == 2
    version = client.get_model_version(tracking.model_name, "1")
    assert version.run_id == first_run.run_id
    revision = source_revision()
    assert revision.commit != "unknown"  # the tests run from a git checkout
    assert version.tags == {
        "data.source": "synthetic",  # copied from the training run
        # A frame with no validation report or fetch metadata: nothing checked its units.
        "data.units": "unchecked",
        "data.units_basis": "0 of 0 stations had the 5 FRSHTT thunder days validate judges "
        "units by; source unknown",
        "code.version": steps.__version__,
        "code.git_commit": revision.commit,  # the commit of the code that trained it
        "code.git_dirty": str(revision.dirty).lower(),
        "workflow.name": "dewpoint-pipeline-abc",
        "workflow.uid": "uid-2",
    }
    run_tags = client.get_run(first_run.run_id).data.tags
    assert run_tags["code.git_commit"] == run_tags["mlflow.source.git.commit"] == revision.commit
    # The registered version serves the same coefficients the run logged.
    model = mlflow.pyfunc.load_model(f"models:/{tracking.model_name}/1")
    assert model.metadata.run_id == first_run.run_id


def test_register_derives_the_model_uri_from_the_run(tracking: MlflowSettings) -> None:
    result = _train(tracking)
    registered = register_version(tracking, result.run_id)
    client = mlflow.MlflowClient(tracking.tracking_uri)
    assert client.get_model_version(tracking.model_name, registered.version).run_id == result.run_id


def test_train_and_register_gives_a_loadable_version_in_one_call(
    tracking: MlflowSettings,
) -> None:
    frame = dewpoint_frame(rows=100, seed=6)
    result, registered = train_and_register(frame, tracking, workflow_uid="w-9")
    assert registered.created and registered.version == "1"
    model = mlflow.pyfunc.load_model(f"models:/{tracking.model_name}/{registered.version}")
    predicted = model.predict(pd.DataFrame({"temp": [50.0]}))
    c = result.coefficients
    assert predicted[0] == pytest.approx(50.0 * c.coef + c.intercept, abs=1e-9)
    assert _tags(tracking, "1")["workflow.uid"] == "w-9"


def _tags(settings: MlflowSettings, version: str) -> dict[str, str]:
    client = mlflow.MlflowClient(settings.tracking_uri)
    return client.get_model_version(settings.model_name, version).tags


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--data-hash", "ab" * 32), ("--data-source", "https://elsewhere.example/other.csv")],
)
def test_register_takes_no_flag_that_would_tag_its_data(
    tracking: MlflowSettings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flag: str,
    value: str,
) -> None:
    """Issue 10: `register --data-hash X` tagged a version with a hash its run never trained on
    (the caller's value won over the run's tag). Every data tag is the run's: the flags are
    refused before a version exists, and their old environment variables change nothing."""
    result = _train(tracking)
    args = ["--run-id", result.run_id, "--tracking-uri", tracking.tracking_uri]
    capsys.readouterr()

    assert_bad_input(register.main([*args, flag, value]), capsys.readouterr().err, flag)
    client = mlflow.MlflowClient(tracking.tracking_uri)
    assert client.search_registered_models() == []

    monkeypatch.setenv("DATA_HASH", "ab" * 32)
    monkeypatch.setenv("DATA_SOURCE", "https://elsewhere.example/other.csv")
    assert register.main(args) == 0, capsys.readouterr().err
    run_tags = client.get_run(result.run_id).data.tags
    data_tags = {k: v for k, v in _tags(tracking, "1").items() if k.startswith("data.")}
    assert data_tags == {k: v for k, v in run_tags.items() if k.startswith("data.")}
    assert data_tags[TAG_DATA_SOURCE] == "synthetic" and TAG_FETCHED_HASH not in data_tags


@pytest.mark.parametrize(
    "tag",
    [TAG_FETCHED_HASH, TAG_VALIDATED_HASH, TAG_DATA_SOURCE, f"{TAG_DATA_PART_PREFIX}2024.rows"],
)
def test_a_data_tag_from_the_caller_is_refused_before_a_version_exists(
    tracking: MlflowSettings, tag: str
) -> None:
    """The functions behind the CLI hold the same rule: a caller's data tag is an error."""
    result = _train(tracking)
    with pytest.raises(ValueError, match="data tags come from the training run"):
        register_version(tracking, result.run_id, result.model_uri, {tag: "x"})
    assert mlflow.MlflowClient(tracking.tracking_uri).search_registered_models() == []


@pytest.mark.parametrize("keyword", ["data_hash", "data_source"])
def test_train_and_register_takes_no_data_tag(tracking: MlflowSettings, keyword: str) -> None:
    """The helper for tests and demos: no data keyword, refused before it trains."""
    with pytest.raises(TypeError, match=keyword):
        train_and_register(dewpoint_frame(rows=100), tracking, **{keyword: "x"})
    assert mlflow.search_runs(experiment_names=[tracking.experiment], output_format="list") == []


@pytest.mark.parametrize("run_id", ["0123456789abcdef0123456789abcdef", ""])
def test_register_unknown_or_missing_run_is_a_step_error(
    run_id: str, tracking: MlflowSettings
) -> None:
    with pytest.raises(StepError, match="run" if run_id else "no run id") as info:
        register_version(tracking, run_id)
    assert "\n" not in str(info.value)
    names = mlflow.MlflowClient(tracking.tracking_uri).search_registered_models()
    assert names == []


def test_register_cli_writes_the_version(tracking: MlflowSettings, tmp_path: Path) -> None:
    result = _train(tracking)
    outputs = tmp_path / "outputs"
    args = [
        "--run-id", result.run_id, "--model-uri", result.model_uri,
        "--tracking-uri", tracking.tracking_uri, "--model-name", "dewpoint-cli",
        "--code-version", "9.9.9", "--workflow-uid", "w-1", "--outputs-dir", str(outputs),
    ]  # fmt: skip
    done = run_step("register", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = {"model-name": "dewpoint-cli", "version": "1"}
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected
    assert {name: (outputs / name).read_text() for name in expected} == expected
    again = run_step("register", *args)
    assert (outputs / "version").read_text() == "1", again.stderr[-3000:]

    version = mlflow.MlflowClient(tracking.tracking_uri).get_model_version("dewpoint-cli", "1")
    assert version.tags["code.version"] == "9.9.9"
    assert version.tags["workflow.uid"] == "w-1"


def test_a_full_disk_for_the_outputs_fails_before_a_version_is_registered(
    tracking: MlflowSettings, tmp_path: Path
) -> None:
    """The outputs' files get their room before the version is made (before: a version was
    registered, then writing the outputs failed)."""
    result = _train(tracking)
    outputs = tmp_path / "full" / "outputs"
    args = ["--run-id", result.run_id, "--model-uri", result.model_uri, "--tracking-uri"]
    args += [tracking.tracking_uri, "--model-name", "full-disk", "--outputs-dir", str(outputs)]
    done = run_step("register", *args, full_disk=tmp_path / "full")
    assert f"cannot write {tmp_path / 'full'}" in error_line(done)
    assert "No space left on device" in done.stderr
    assert (
        mlflow.MlflowClient(tracking.tracking_uri).search_model_versions("name='full-disk'") == []
    )
    assert not outputs.exists()


@pytest.mark.parametrize("form", ["train's model-uri", "runs:/", "models:/name/version", "path"])
def test_a_model_uri_of_another_run_is_refused_before_anything_is_registered(
    form: str, tracking: MlflowSettings
) -> None:
    """`--run-id A --model-uri <B's model>` registered B's model as a version of run A."""
    ours, theirs = _train(tracking, seed=1), _train(tracking, seed=2)
    model_uri = {
        "train's model-uri": theirs.model_uri,
        "runs:/": f"runs:/{theirs.run_id}/model",
        "models:/name/version": "models:/other/1",
        "path": "/tmp/model",
    }[form]
    if form == "models:/name/version":
        other = MlflowSettings(tracking.tracking_uri, model_name="other")
        assert register_version(other, theirs.run_id, theirs.model_uri).version == "1"
    done = run_step(
        "register", "--run-id", ours.run_id, "--model-uri", model_uri,
        "--tracking-uri", tracking.tracking_uri, "--model-name", "mixed",
    )  # fmt: skip
    line = error_line(done, EXIT_BAD_INPUT)
    assert f"--model-uri {model_uri}" in line
    assert (theirs.run_id in line) if form != "path" else "names no one run's model" in line
    assert mlflow.MlflowClient(tracking.tracking_uri).search_model_versions("name='mixed'") == []


@pytest.mark.parametrize("artifact_path", ["", "plots", "no-such-model", "model/MLmodel"])
def test_a_runs_uri_naming_no_model_of_the_run_is_bad_input_not_transient(
    artifact_path: str, tracking: MlflowSettings
) -> None:
    """Breaker (issue 11): `runs:/<run>/plots` was 4 attempts, then exit 75 (Argo retries
    it): MLflow's "Unable to find a logged_model" error reads as INTERNAL_ERROR."""
    ours = _train(tracking, seed=1)
    model_uri = f"runs:/{ours.run_id}/{artifact_path}"
    done = run_step(
        "register", "--run-id", ours.run_id, "--model-uri", model_uri,
        "--tracking-uri", tracking.tracking_uri, "--model-name", "nomodel",
    )  # fmt: skip
    assert "logged no model at" in error_line(done, EXIT_BAD_INPUT)
    assert "Creating a new version" not in done.stderr  # nothing was tried
    client = mlflow.MlflowClient(tracking.tracking_uri)
    assert client.search_model_versions("name='nomodel'") == []
    assert client.search_registered_models("name='nomodel'") == []  # not even the name


# Where a run keeps a model: a logged model of that name (`log_model(name=...)`, MLflow 3), or an
# MLflow model directory among the run's own artifacts (`save_model`, then `log_artifacts`).
# MLflow allows quotes and a final backslash in an artifact path, and a final backslash (no
# quote) in a logged model's name: `a\\` was refused, its name having no model-version search
# literal (`search_literal`), which the logged-model search had borrowed.
MODEL_PLACES = [
    ("logged model", "lm"),
    ("logged model", "a\\"),
    ("run artifacts", "saved"),
    ("run artifacts", "it's"),
    ("run artifacts", 'dq"x'),
    ("run artifacts", "back\\"),
    ("run artifacts", "nested/model"),
]


@pytest.mark.parametrize(("how", "path"), MODEL_PLACES)
def test_a_runs_uri_registers_the_model_wherever_the_run_keeps_it(
    mlflow_server: MlflowServer, tmp_path: Path, how: str, path: str
) -> None:
    """Against a real server: `runs:/<run>/<path>` registers the model kept there, as MLflow
    finds it; `runs:/<run>/plots` (artifacts, no model) and a path with a quote where no model
    is are refused before anything is registered, exit 2."""
    from sklearn.linear_model import LinearRegression

    settings = MlflowSettings(mlflow_server.url, model_name=f"at-{uuid.uuid4().hex[:8]}")
    model = LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])
    experiment = mlflow.MlflowClient(mlflow_server.url).create_experiment(settings.model_name)
    with mlflow_session(settings), mlflow.start_run(experiment_id=experiment) as run:
        if how == "logged model":
            mlflow.sklearn.log_model(model, name=path)
        else:
            mlflow.sklearn.save_model(model, tmp_path / "m")
            mlflow.log_artifacts(str(tmp_path / "m"), artifact_path=path)
        mlflow.log_text("x", "plots/a.txt")
        mlflow.log_text("x", "plot's/a.txt")
    run_id = run.info.run_id

    done = register_version(settings, run_id, f"runs:/{run_id}/{path}")
    assert (done.version, done.created) == ("1", True)
    for empty in ("plots", "plot's"):
        with pytest.raises(BadInput, match=f"logged no model at {empty!r}") as refused:
            register_version(settings, run_id, f"runs:/{run_id}/{empty}")
        assert refused.value.exit_code == EXIT_BAD_INPUT
    client = mlflow.MlflowClient(mlflow_server.url)
    assert [v.version for v in client.search_model_versions(f"name='{done.name}'")] == ["1"]


def test_register_cli_errors_are_one_line(tracking: MlflowSettings) -> None:
    no_uri = run_step("register", "--run-id", "a" * 32, env=step_env())
    assert "no MLflow tracking URI" in error_line(no_uri, EXIT_BAD_INPUT)
    bad_id = run_step("register", "--run-id", "abc", "--tracking-uri", tracking.tracking_uri)
    assert "--run-id 'abc': must be an MLflow run id" in error_line(bad_id, EXIT_BAD_INPUT)
    unknown = run_step("register", "--run-id", "f" * 32, "--tracking-uri", tracking.tracking_uri)
    assert "does not exist at" in error_line(unknown, EXIT_BAD_INPUT)


@pytest.mark.slow
def test_register_against_a_real_server_is_retry_safe(mlflow_server: MlflowServer) -> None:
    settings = MlflowSettings(mlflow_server.url, model_name=f"reg-{uuid.uuid4().hex[:8]}")
    result = _train(settings, seed=3)
    first = register_version(settings, result.run_id, result.model_uri, provenance_tags())
    again = register_version(settings, result.run_id, result.model_uri, provenance_tags())
    assert first.created and not again.created
    assert again.version == first.version == "1"

    other = register_version(settings, _train(settings, seed=4).run_id)
    assert other.version == "2"


@pytest.mark.slow
def test_register_against_a_closed_port_fails_in_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = run_step("register", "--run-id", "a" * 32, "--tracking-uri", url)
    message = error_line(done, EXIT_TRANSIENT)  # Argo retries it
    assert url in message
    assert "Connection refused" in message or "Max retries" in message
    # The hint is true in every door: in a workflow the template sets MLFLOW_TRACKING_URI from
    # the parameter, so naming only the flag and the variable would send users the wrong way.
    assert "--tracking-uri" in message and "parameter mlflow-tracking-uri" in message


def test_register_takes_the_commit_from_the_training_run_not_its_own(
    tracking: MlflowSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Train in one image, register in a newer one: the version names the code that trained."""
    monkeypatch.setenv("DEWPOINT_GIT_COMMIT", "a" * 40)
    monkeypatch.setenv("DEWPOINT_GIT_DIRTY", "false")
    result = _train(tracking)
    monkeypatch.setenv("DEWPOINT_GIT_COMMIT", "b" * 40)
    registered = register_version(tracking, result.run_id, result.model_uri)
    tags = _tags(tracking, registered.version)
    assert (tags["code.git_commit"], tags["code.git_dirty"]) == ("a" * 40, "false")


@given(st.text())
def test_search_literal_is_read_back_exactly_by_mlflows_own_filter_parser(value: str) -> None:
    """Property: any name either has a literal that MLflow 3.17.2's parser reads back as exactly
    that name, next to the run-id clause register adds, or gets None (both quote kinds, or a
    trailing backslash; register then compares names itself)."""
    literal = search_literal(value)
    if literal is None:
        assert ("'" in value and '"' in value) or value.endswith("\\")
        return
    run_id = "0123456789abcdef0123456789abcdef"
    try:
        parsed = SearchModelVersionUtils.parse_search_filter(
            f"name = {literal} and run_id = '{run_id}'"
        )
    except MlflowException:
        # sqlparse cannot tokenise the text at all (e.g. a newline inside): MLflow rejects the
        # filter, so register cannot silently match the wrong versions either.
        return
    assert parsed == [
        {"type": "attribute", "key": "name", "comparator": "=", "value": value},
        {"type": "attribute", "key": "run_id", "comparator": "=", "value": run_id},
    ]


@pytest.mark.parametrize("name", ["o'brien-dewpoint", 'the "best" model', 'it\'s "both"', "x\\"])
def test_register_reuses_the_version_whatever_quotes_the_name_holds(
    tracking: MlflowSettings, name: str
) -> None:
    settings = MlflowSettings(tracking.tracking_uri, name, tracking.experiment)
    result = _train(settings, seed=8)

    first = register_version(settings, result.run_id, result.model_uri)
    again = register_version(settings, result.run_id, result.model_uri)

    assert first.created and not again.created and again.version == first.version == "1"
    client = mlflow.MlflowClient(tracking.tracking_uri)
    assert [str(mv.version) for mv in versions_of_run(client, name, result.run_id)] == ["1"]
