"""train: split, fit, metrics and plot as functions; the MLflow run and the CLI against sqlite."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import matplotlib
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH as MAX_TAG_VALUE
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from steps import fetch, train, validate
from steps.cli import EXIT_BAD_INPUT, EXIT_FAILED, BadInput, StepError
from steps.dataset import (
    SOURCE_DIGEST_KEY,
    SOURCE_METADATA_KEY,
    VALIDATION_METADATA_KEY,
    data_hash,
)
from steps.model import LinearCoefficients, serving_pip_requirements
from steps.settings import MlflowSettings
from steps.train import (
    TrainConfig,
    _frame_digest,
    fit_line,
    holdout_metrics,
    plot_fit,
    train_and_log,
)
from steps.training_data import (
    check_split,
    find_parts,
    frame_batches,
    read_batches,
    read_part,
    summarize,
)
from tests.conftest import assert_bad_input
from tests.model_helpers import (
    ROW_EDITS,
    dewpoint_frame,
    edit_rows,
    error_line,
    make_experiment,
    run_step,
    split_rows,
    step_env,
    write_dataset,
)


def test_split_is_decided_row_by_row_and_seeded() -> None:
    frame = dewpoint_frame(rows=2000, seed=3)
    train, holdout = split_rows(frame, 0.2, seed=7)
    again_train, again_holdout = split_rows(frame, 0.2, seed=7)
    _, other_holdout = split_rows(frame, 0.2, seed=8)

    pd.testing.assert_frame_equal(holdout, again_holdout)
    pd.testing.assert_frame_equal(train, again_train)
    assert not holdout["temp"].equals(other_holdout["temp"])
    together = pd.concat([train, holdout])["temp"]
    assert sorted(together) == sorted(frame["temp"])
    # A row's side does not depend on the other rows: half the frame splits the same way.
    _, half_holdout = split_rows(frame.iloc[::2], 0.2, seed=7)
    assert set(half_holdout["temp"]) == set(holdout["temp"]) & set(frame["temp"].iloc[::2])
    assert len(holdout) / len(frame) == pytest.approx(0.2, abs=0.05)


@pytest.mark.parametrize(("rows", "test_size"), [(3, 0.2), (9, 0.01), (4, 0.99)])
def test_split_refuses_too_few_rows(rows: int, test_size: float) -> None:
    summary = summarize(frame_batches(dewpoint_frame(rows=rows)), test_size, seed=0)
    with pytest.raises(StepError, match="too few rows to split"):
        check_split(summary, test_size)


def _write_bad(kind: str, path: Path) -> Path:
    if kind == "missing":
        return path
    if kind == "not parquet":
        path.write_text("STATION,DATE,TEMP\n1,2,3\n")
    elif kind == "no rows":
        write_dataset(dewpoint_frame(rows=0), path)
    elif kind == "no dewp column":
        write_dataset(dewpoint_frame(rows=50).drop(columns=["dewp"]), path)
    elif kind == "all dewp null":
        write_dataset(dewpoint_frame(rows=50).assign(dewp=np.nan), path)
    elif kind == "text temp":
        write_dataset(dewpoint_frame(rows=50).assign(temp="warm"), path)
    elif kind == "empty directory":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "does not exist"),
        ("not parquet", "as Parquet"),
        ("no rows", "no rows with both temp and dewp"),
        ("no dewp column", "lacks column(s) dewp"),
        ("all dewp null", "no rows with both temp and dewp"),
        ("text temp", "not numeric"),
        ("empty directory", "no .parquet file"),
    ],
)
def test_reading_the_training_data_rejects_bad_input(
    kind: str, message: str, tmp_path: Path
) -> None:
    path = _write_bad(kind, tmp_path / "validated.parquet")
    with pytest.raises(StepError) as info:
        parts = find_parts(path)
        summary = summarize(read_batches(parts), 0.2, seed=0)
        check_split(summary, 0.2, f"input dataset {path}")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_rows_missing_temp_or_dewp_are_dropped_and_counted() -> None:
    frame = dewpoint_frame(rows=10)
    frame.loc[2, "temp"] = np.nan
    frame.loc[5, "dewp"] = np.nan
    frame.loc[7, "dewp"] = np.inf
    summary = summarize(frame_batches(frame), 0.2, seed=0)
    assert summary.rows == 7
    assert summary.rows_dropped == 3


def test_linear_fit_recovers_the_known_relation() -> None:
    frame = dewpoint_frame(rows=4000, seed=1, slope=0.8, intercept=-10.0, noise=2.0)
    line = fit_line(summarize(frame_batches(frame), 0.2, seed=0), TrainConfig())
    assert line.coef == pytest.approx(0.8, abs=0.01)
    assert line.intercept == pytest.approx(-10.0, abs=0.3)


def test_elasticnet_uses_the_prototype_hyperparameters_and_alpha_shrinks() -> None:
    summary = summarize(frame_batches(dewpoint_frame(rows=2000, seed=2)), 0.2, seed=0)
    default = TrainConfig(model_type="elasticnet")
    assert (default.alpha, default.l1_ratio) == (0.5, 0.5)
    # temp spans ~100 deg F, so alpha 0.5 barely shrinks the slope; a huge alpha flattens it.
    assert fit_line(summary, default).coef == pytest.approx(0.8, abs=0.02)
    flat = fit_line(summary, TrainConfig(model_type="elasticnet", alpha=1e6))
    assert flat.coef == 0.0
    assert flat.intercept == pytest.approx(summary.train.mean_y)


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(model_type="forest"),
        TrainConfig(test_size=0.0),
        TrainConfig(test_size=1.0),
        TrainConfig(model_type="elasticnet", l1_ratio=1.5),
    ],
)
def test_bad_config_is_a_step_error(config: TrainConfig) -> None:
    with pytest.raises(StepError):
        config.check()


def test_holdout_metrics_agree_with_sklearn() -> None:
    frame = dewpoint_frame(rows=3000, seed=5)
    summary = summarize(frame_batches(frame), 0.2, seed=1)
    line = LinearCoefficients(0.75, -8.0)  # any line: the metrics are of it, not of the fit
    metrics = holdout_metrics(summary, line)
    _, holdout = split_rows(frame, 0.2, seed=1)
    predicted = holdout["temp"] * line.coef + line.intercept
    assert metrics.rmse == pytest.approx(
        math.sqrt(mean_squared_error(holdout["dewp"], predicted)), rel=1e-9
    )
    assert metrics.mae == pytest.approx(mean_absolute_error(holdout["dewp"], predicted), rel=1e-9)
    assert metrics.r2 == pytest.approx(r2_score(holdout["dewp"], predicted), rel=1e-9)


def test_plot_is_a_png_and_leaves_the_matplotlib_backend_alone(tmp_path: Path) -> None:
    backend = matplotlib.get_backend()
    summary = summarize(frame_batches(dewpoint_frame(rows=300)), 0.2, seed=0)
    path = plot_fit(
        summary.sample, LinearCoefficients(0.8, -10.0), tmp_path / "sub" / "fit.png", (-10, 95)
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    assert matplotlib.get_backend() == backend
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


@pytest.fixture
def tracking(
    sqlite_tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> MlflowSettings:
    """A private sqlite store whose experiment keeps artifacts under tmp_path.

    MLFLOW_TRACKING_URI points there too, so the test's own mlflow calls read the same store.
    """
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_tracking_uri)
    settings = MlflowSettings(sqlite_tracking_uri, experiment="dewpoint-test")
    make_experiment(settings.tracking_uri, settings.experiment, tmp_path / "artifacts")
    return settings


def test_train_and_log_records_the_run(tracking: MlflowSettings, tmp_path: Path) -> None:
    frame = dewpoint_frame(rows=500, seed=4)
    result = train_and_log(
        frame,
        tracking,
        TrainConfig(seed=11),
        data_source="https://www.ncei.noaa.gov/data/global-summary-of-the-day/access/2024/",
        holdout_out=tmp_path / "out" / "holdout.parquet",
        plot_out=tmp_path / "out" / "fit.png",
    )

    client = mlflow.MlflowClient(tracking.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.params["model_type"] == "linear"
    assert run.data.params["seed"] == "11"
    _, holdout_rows = split_rows(frame, 0.2, seed=11)
    assert run.data.params["split"] == "hash(station, date, seed) v1"
    assert run.data.params["holdout_rows"] == str(len(holdout_rows))
    assert run.data.params["holdout_sample_rows"] == str(len(holdout_rows))
    assert run.data.metrics["rmse"] == pytest.approx(result.metrics.rmse)
    assert run.data.metrics["mae"] == pytest.approx(result.metrics.mae)
    assert run.data.metrics["r2"] == pytest.approx(result.metrics.r2)
    # No validation report given: no hash is tied to these rows, so none is tagged.
    assert "data.fetched_hash" not in run.data.tags
    assert "data.validated_hash" not in run.data.tags
    assert run.data.tags["data.source"].startswith("https://www.ncei.noaa.gov/")

    (dataset_input,) = run.inputs.dataset_inputs
    # The digest describes the rows logged, not fetch's file: without a report, their own hash.
    assert dataset_input.dataset.digest == _frame_digest(frame)[:36]
    assert json.loads(dataset_input.dataset.source)["url"].startswith("https://www.ncei")
    assert [t.value for t in dataset_input.tags] == ["training"]
    schema = json.loads(dataset_input.dataset.schema)["mlflow_colspec"]
    assert [(c["name"], c["type"]) for c in schema] == [("temp", "double"), ("dewp", "double")]
    assert [a.path for a in client.list_artifacts(result.run_id, "plots")] == ["plots/fit.png"]

    # The holdout file is exactly the split the metrics were computed on.
    holdout = pd.read_parquet(tmp_path / "out" / "holdout.parquet")
    pd.testing.assert_frame_equal(holdout, result.holdout)
    residual = holdout["dewp"] - (
        holdout["temp"] * result.coefficients.coef + result.coefficients.intercept
    )
    assert result.metrics.rmse == pytest.approx(float(np.sqrt(np.mean(residual**2))))
    assert (tmp_path / "out" / "fit.png").read_bytes()[:4] == b"\x89PNG"

    local = mlflow.artifacts.download_artifacts(result.model_uri, dst_path=str(tmp_path / "m"))
    info = mlflow.models.Model.load(local)
    # `any`: MLflow must not cast "12.8" to a number before the model checks it (steps/model.py).
    assert info.signature.inputs.to_dict() == [{"type": "any", "name": "temp", "required": True}]
    assert info.signature.outputs.input_types()[0].name == "double"
    assert set(info.flavors) == {"python_function"}  # no sklearn flavour: nothing pickled


def test_logged_model_requirements_are_minimal_and_pinned(
    tracking: MlflowSettings, tmp_path: Path
) -> None:
    result = train_and_log(dewpoint_frame(rows=60), tracking)
    local = Path(mlflow.artifacts.download_artifacts(result.model_uri, dst_path=str(tmp_path)))
    requirements = (local / "requirements.txt").read_text().split()
    assert requirements == serving_pip_requirements()
    assert [r.split("==")[0] for r in requirements] == ["mlflow-skinny", "numpy", "pandas"]
    assert all("==" in r for r in requirements)


def test_train_cli_writes_outputs_and_files(tracking: MlflowSettings, tmp_path: Path) -> None:
    dataset = write_dataset(
        dewpoint_frame(rows=300, seed=9), tmp_path / "in" / "validated.parquet", {"name": "t"}
    )
    outputs = tmp_path / "outputs"
    result = run_step(
        "train",
        "--input", str(dataset),
        "--holdout-out", str(tmp_path / "out" / "holdout.parquet"),
        "--plot-out", str(tmp_path / "out" / "fit.png"),
        "--model-type", "elasticnet",
        "--tracking-uri", tracking.tracking_uri,
        "--experiment", tracking.experiment,
        "--outputs-dir", str(outputs),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(p.name for p in outputs.iterdir()) == [
        "data-hash", "mae", "model-uri", "r2", "rmse", "run-id"
    ]  # fmt: skip
    assert {p.name: p.read_text() for p in outputs.iterdir()} == printed
    assert printed["data-hash"] == ""  # a file without validate's report: no fetched hash
    assert float(printed["rmse"]) == pytest.approx(2.0, rel=0.25)  # the noise we put in
    assert printed["model-uri"].startswith("models:/")

    run = mlflow.MlflowClient(tracking.tracking_uri).get_run(printed["run-id"])
    assert run.data.params["alpha"] == "0.5"
    assert json.loads(run.data.tags["data.source"]) == {"name": "t"}  # from Parquet metadata
    _, holdout_rows = split_rows(dewpoint_frame(rows=300, seed=9), 0.2, seed=42)
    assert len(pd.read_parquet(tmp_path / "out" / "holdout.parquet")) == len(holdout_rows)


def test_a_full_disk_for_the_outputs_fails_train_before_a_run_is_logged(
    tracking: MlflowSettings, tmp_path: Path
) -> None:
    """The outputs' files get their room first (before: a run was logged to MLflow, then
    writing the outputs failed)."""
    dataset = write_dataset(dewpoint_frame(rows=300, seed=9), tmp_path / "in" / "v.parquet")
    full = tmp_path / "full"
    result = run_step(
        "train", "--input", str(dataset),
        "--holdout-out", str(tmp_path / "out" / "holdout.parquet"),
        "--plot-out", str(tmp_path / "out" / "fit.png"),
        "--tracking-uri", tracking.tracking_uri, "--experiment", tracking.experiment,
        "--outputs-dir", str(full / "outputs"), full_disk=full,
    )  # fmt: skip
    assert f"cannot write {full / 'outputs'}" in error_line(result)
    assert "No space left on device" in result.stderr
    client = mlflow.MlflowClient(tracking.tracking_uri)
    experiment = client.get_experiment_by_name(tracking.experiment)
    assert client.search_runs([experiment.experiment_id]) == []
    assert not full.exists()


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "does not exist"),
        ("no dewp column", "lacks column(s) dewp"),
        ("too few rows", "too few rows to split"),
        ("no tracking uri", "no MLflow tracking URI"),
    ],
)
def test_train_cli_bad_input_is_one_line_error(
    kind: str, message: str, sqlite_tracking_uri: str, tmp_path: Path
) -> None:
    path = tmp_path / "validated.parquet"
    if kind == "too few rows":
        write_dataset(dewpoint_frame(rows=3), path)  # 2 + 2 rows are needed
    elif kind == "no tracking uri":
        write_dataset(dewpoint_frame(rows=50), path)
    else:
        _write_bad(kind, path)
    uri = [] if kind == "no tracking uri" else ["--tracking-uri", sqlite_tracking_uri]
    result = run_step(
        "train", "--input", str(path), "--holdout-out", str(tmp_path / "h.parquet"),
        "--plot-out", str(tmp_path / "fit.png"), "--outputs-dir", str(tmp_path / "o"), *uri,
    )  # fmt: skip
    # A missing --input is refused with the flag, before the step reads anything.
    exit_code = EXIT_BAD_INPUT if kind in ("no tracking uri", "missing") else EXIT_FAILED
    assert message in error_line(result, exit_code)
    assert not (tmp_path / "o").exists()
    assert not (tmp_path / "h.parquet").exists()


def test_the_validation_report_and_both_hashes_reach_the_run_and_the_version(
    tracking: MlflowSettings, tmp_path: Path
) -> None:
    """fetch -> validate -> train -> register through the CLIs, as the workflow chains them."""
    out = tmp_path / "o"
    fetched = run_step(
        "fetch", "--source", "synthetic", "--rows", "600",
        "--output", str(tmp_path / "dataset.parquet"), "--outputs-dir", str(out / "fetch"),
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    fetched_hash = (out / "fetch" / "data-hash").read_text()
    validated = run_step(
        "validate", "--input", str(tmp_path / "dataset.parquet"),
        "--output", str(tmp_path / "validated.parquet"),
        "--report", str(tmp_path / "validation.json"), "--outputs-dir", str(out / "validate"),
    )  # fmt: skip
    assert validated.returncode == 0, validated.stderr[-2000:]
    report = json.loads((tmp_path / "validation.json").read_text())
    assert report["fetched_data_hash"] == fetched_hash != report["validated_data_hash"]
    trained = run_step(
        "train", "--input", str(tmp_path / "validated.parquet"),
        "--holdout-out", str(tmp_path / "holdout.parquet"), "--plot-out", str(tmp_path / "fit.png"),
        "--tracking-uri", tracking.tracking_uri,
        "--experiment", tracking.experiment, "--outputs-dir", str(out / "train"),
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_id = (out / "train" / "run-id").read_text()

    client = mlflow.MlflowClient(tracking.tracking_uri)
    run = client.get_run(run_id)
    assert run.data.tags["data.fetched_hash"] == fetched_hash
    assert run.data.tags["data.validated_hash"] == report["validated_data_hash"]
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == report["validated_data_hash"][:36]
    logged = client.download_artifacts(run_id, "validation/validation.json", str(tmp_path / "d"))
    assert json.loads(Path(logged).read_text()) == report

    # Issue 10: register's old data flags' variables, left in its environment, tag nothing; the
    # provenance it does take (code version, workflow) still reaches the version.
    registered = run_step(
        "register", "--run-id", run_id, "--tracking-uri", tracking.tracking_uri,
        "--outputs-dir", str(out / "register"), "--code-version", "9.9.9",
        "--workflow-name", "dewpoint-pipeline-x", "--workflow-uid", "uid-x",
        env=step_env(DATA_HASH="ab" * 32, DATA_SOURCE="https://elsewhere.example/other.csv"),
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr[-2000:]
    version = client.get_model_version("dewpoint-lr", (out / "register" / "version").read_text())
    assert version.tags["data.fetched_hash"] == fetched_hash
    assert version.tags["data.validated_hash"] == report["validated_data_hash"]
    # Every data tag of the version is the run's, exactly, and no other.
    assert {k: v for k, v in version.tags.items() if k.startswith("data.")} == {
        k: v for k, v in run.data.tags.items() if k.startswith("data.")
    }
    assert (version.tags["code.version"], version.tags["workflow.name"]) == (
        "9.9.9",
        "dewpoint-pipeline-x",
    )
    assert version.tags["workflow.uid"] == "uid-x"


def _train_args(validated: Path, tmp_path: Path, tracking: MlflowSettings) -> list[str]:
    """train's flags for one validated file, its outputs in `tmp_path` (`out/`)."""
    return [
        "--input", str(validated), "--holdout-out", str(tmp_path / "holdout.parquet"),
        "--plot-out", str(tmp_path / "fit.png"), "--tracking-uri", tracking.tracking_uri,
        "--experiment", tracking.experiment, "--outputs-dir", str(tmp_path / "out"),
    ]  # fmt: skip


def _train_file(validated: Path, tmp_path: Path, tracking: MlflowSettings) -> int:
    """train's CLI on one validated file, its outputs in `tmp_path` (`out/`)."""
    return train.main(_train_args(validated, tmp_path, tracking))


def _assert_train_refuses(
    validated: Path,
    tmp_path: Path,
    tracking: MlflowSettings,
    capsys: pytest.CaptureFixture[str],
    needle: str,
) -> str:
    """Train `validated`: refused in one line naming it and `needle` (exit 2), no run logged.
    Returns what it wrote on stderr."""
    capsys.readouterr()
    code = _train_file(validated, tmp_path, tracking)
    err = capsys.readouterr().err
    assert_bad_input(code, err, str(validated), needle)
    assert mlflow.search_runs(experiment_names=[tracking.experiment], output_format="list") == []
    return err


@pytest.mark.parametrize("edit", ["untouched", *ROW_EDITS])
def test_train_refuses_rows_that_are_not_the_ones_validate_kept(
    tracking: MlflowSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str
) -> None:
    """validate's report (its units evidence, its validated hash) describes the rows it kept: a
    validated file edited afterwards is refused in one line (exit 2) before any run is made."""
    dataset, validated = tmp_path / "dataset.parquet", tmp_path / "validated.parquet"
    assert fetch.main(["--source", "synthetic", "--rows", "600", "--output", str(dataset)]) == 0
    policy = validate.ValidationPolicy()
    validate.validate_file(dataset, validated, tmp_path / "validation.json", policy)
    if edit != "untouched":
        edit_rows(validated, edit)
    assert read_part(validated).report["units_evidence"] == "generated"
    capsys.readouterr()

    code = _train_file(validated, tmp_path, tracking)

    err = capsys.readouterr().err
    runs = mlflow.search_runs(experiment_names=[tracking.experiment], output_format="list")
    if edit == "untouched":  # no regression: validated rows keep their evidence
        assert code == 0, err
        assert [r.data.tags["data.units"] for r in runs] == ["generated"]
        return
    assert_bad_input(code, err, str(validated), "not the rows its validation report describes")
    assert runs == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("hash_value", ["", None, 12345, "deleted"])
def test_train_refuses_a_validation_report_without_its_rows_hash(
    tracking: MlflowSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str], hash_value
) -> None:
    """Breaker (issue 10): an emptied or deleted `validated_data_hash` turned train's row check
    off while the report's `units_evidence: generated` still counted (deg C rows became a first
    champion); a number was a TypeError traceback."""
    dataset, validated = tmp_path / "dataset.parquet", tmp_path / "validated.parquet"
    assert fetch.main(["--source", "synthetic", "--rows", "600", "--output", str(dataset)]) == 0
    validate.validate_file(dataset, validated, tmp_path / "v.json", validate.ValidationPolicy())
    edit_rows(validated, "deg C")
    table = pq.read_table(validated)
    report = json.loads(table.schema.metadata[VALIDATION_METADATA_KEY])
    if hash_value == "deleted":
        del report["validated_data_hash"]
    else:
        report["validated_data_hash"] = hash_value
    metadata = {**table.schema.metadata, VALIDATION_METADATA_KEY: json.dumps(report).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), validated)

    _assert_train_refuses(validated, tmp_path, tracking, capsys, "no validated_data_hash")


def test_a_frame_given_with_a_report_must_be_the_rows_the_report_describes(
    tracking: MlflowSettings,
) -> None:
    frame = dewpoint_frame(rows=300, seed=1).assign(frshtt="000000")
    report = {
        "validated_data_hash": data_hash(pa.Table.from_pandas(frame)),
        "units_evidence": "generated",
    }
    assert train_and_log(frame, tracking, validation_report=report).run_id
    with pytest.raises(BadInput, match="not the rows its validation report describes"):
        train_and_log(frame.assign(temp=frame["temp"] + 0.1), tracking, validation_report=report)


def _validated_file(tmp_path: Path) -> tuple[Path, dict]:
    """fetch (synthetic) then validate: the validated file and its report."""
    dataset, validated = tmp_path / "dataset.parquet", tmp_path / "validated.parquet"
    assert fetch.main(["--source", "synthetic", "--rows", "600", "--output", str(dataset)]) == 0
    validate.validate_file(dataset, validated, tmp_path / "v.json", validate.ValidationPolicy())
    return validated, read_part(validated).report


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--data-hash", "ab" * 32), ("--data-source", "https://elsewhere.example/other.csv")],
)
def test_train_takes_no_flag_that_would_tag_its_data(
    tracking: MlflowSettings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flag: str,
    value: str,
) -> None:
    """Issue 10: `--data-hash X --data-source Y` tagged a run with a hash and source that were
    not those of the rows it fit. Every data tag now comes from the file: the flags are refused,
    and their old environment variables change nothing."""
    validated, report = _validated_file(tmp_path)
    source = json.loads(pq.read_schema(validated).metadata[SOURCE_METADATA_KEY])
    capsys.readouterr()

    code = train.main([*_train_args(validated, tmp_path, tracking), flag, value])

    assert_bad_input(code, capsys.readouterr().err, flag)
    assert mlflow.search_runs(experiment_names=[tracking.experiment], output_format="list") == []
    monkeypatch.setenv("DATA_HASH", "ab" * 32)
    monkeypatch.setenv("DATA_SOURCE", "https://elsewhere.example/other.csv")
    assert _train_file(validated, tmp_path, tracking) == 0, capsys.readouterr().err
    (run,) = mlflow.search_runs(experiment_names=[tracking.experiment], output_format="list")
    tags = run.data.tags
    assert tags["data.fetched_hash"] == report["fetched_data_hash"] == source["fetched_data_hash"]
    assert tags["data.validated_hash"] == report["validated_data_hash"] == source["data_hash"]
    assert json.loads(tags["data.source"]) == source
    assert tags["data.units"] == report["units_evidence"] == "generated"
    assert (tmp_path / "out" / "data-hash").read_text() == report["fetched_data_hash"]


def test_a_source_longer_than_mlflows_tag_limit_is_cut_in_the_tag_not_a_failed_run(
    tracking: MlflowSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """fetch's source metadata holds every station asked for (`--stations`, unbounded): 900 of
    them is about 12,000 characters, over MLflow's 8,000 for a tag value (mlflow 3.17.2
    mlflow/utils/validation.py MAX_TAG_VAL_LENGTH), so train failed after fitting once the tag
    came from the data. The tag is cut, says so, and the whole text stays in the dataset."""
    dataset, validated = tmp_path / "dataset.parquet", tmp_path / "validated.parquet"
    assert fetch.main(["--source", "synthetic", "--rows", "600", "--output", str(dataset)]) == 0
    table = pq.read_table(dataset)
    metadata = dict(table.schema.metadata)
    source = json.loads(metadata[SOURCE_METADATA_KEY])
    source["stations"] = [f"{n:06d}99999" for n in range(900)]
    metadata[SOURCE_METADATA_KEY] = json.dumps(source).encode()
    pq.write_table(table.replace_schema_metadata(metadata), dataset)
    validate.validate_file(dataset, validated, tmp_path / "v.json", validate.ValidationPolicy())
    whole = pq.read_schema(validated).metadata[SOURCE_METADATA_KEY].decode()
    assert len(whole) > MAX_TAG_VALUE

    assert _train_file(validated, tmp_path, tracking) == 0, capsys.readouterr().err

    (run,) = mlflow.search_runs(experiment_names=[tracking.experiment], output_format="list")
    tag = run.data.tags["data.source"]
    assert len(tag) <= MAX_TAG_VALUE
    kept, _, said = tag.partition(" ... ")
    assert whole.startswith(kept) and f"{len(whole)} characters" in said


def _edit_footer(path: Path, edit: Callable[[dict[bytes, bytes]], None]) -> None:
    """Rewrite `path` with its rows kept and `edit` applied to its key-value metadata."""
    table = pq.read_table(path)
    metadata = dict(table.schema.metadata)
    edit(metadata)
    pq.write_table(table.replace_schema_metadata(metadata), path)


# Footer edits that keep the rows (and so the report's validated hash) but make the source
# metadata train tags its run with disagree with the report validate wrote beside it. Breaker 55
# (issue 10): with both hashes kept, `name` and `url` were rewritten and tagged the run
# (`data.source`, `data.units_basis`) as BigQuery's rows.
FOOTER_EDITS = {
    "source data_hash": lambda source, report: source.update(data_hash="ab" * 32),
    "source fetched_data_hash": lambda source, report: source.update(fetched_data_hash="ab" * 32),
    "source name and url": lambda source, report: source.update(name="bigquery", url="https://x"),
    "source re-encoded": lambda source, report: None,  # the same JSON, other bytes (indented)
    "report fetched_data_hash": lambda source, report: report.update(fetched_data_hash="ab" * 32),
    "source removed": lambda source, report: source.clear(),
}


@pytest.mark.parametrize("edit", sorted(FOOTER_EDITS))
def test_train_refuses_source_metadata_validate_did_not_write_with_its_report(
    tracking: MlflowSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str
) -> None:
    """read_part's promise: `dewpoint.source` metadata other than the bytes validate wrote
    beside its report (the report's source_metadata_sha256) is refused, exit 2, one line."""
    validated, _ = _validated_file(tmp_path)

    def forge(metadata: dict[bytes, bytes]) -> None:
        source = json.loads(metadata[SOURCE_METADATA_KEY])
        report = json.loads(metadata[VALIDATION_METADATA_KEY])
        FOOTER_EDITS[edit](source, report)
        metadata[VALIDATION_METADATA_KEY] = json.dumps(report).encode()
        if edit != "report fetched_data_hash":  # the source bytes validate wrote stay
            source_text = json.dumps(source, indent=1 if edit == "source re-encoded" else None)
            metadata[SOURCE_METADATA_KEY] = source_text.encode() if source else b"not json"

    _edit_footer(validated, forge)

    _assert_train_refuses(validated, tmp_path, tracking, capsys, "dewpoint.source metadata")


def test_train_refuses_a_validation_report_without_its_source_digest(
    tracking: MlflowSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A report written by a validate older than SOURCE_DIGEST_KEY cannot tie the source
    metadata to it: train asks for the data to be validated again."""
    validated, _ = _validated_file(tmp_path)

    def older_report(metadata: dict[bytes, bytes]) -> None:
        report = json.loads(metadata[VALIDATION_METADATA_KEY])
        del report[SOURCE_DIGEST_KEY]
        metadata[VALIDATION_METADATA_KEY] = json.dumps(report).encode()

    _edit_footer(validated, older_report)

    err = _assert_train_refuses(validated, tmp_path, tracking, capsys, SOURCE_DIGEST_KEY)
    assert "validate the fetched data again" in err


def _in_utf16(key: bytes) -> Callable[[dict[bytes, bytes]], None]:
    def edit(metadata: dict[bytes, bytes]) -> None:
        metadata[key] = json.dumps(json.loads(metadata[key])).encode("utf-16")

    return edit


# Breaker 55 (issue 10): metadata bytes that are not UTF-8 were a UnicodeDecodeError traceback
# (UTF-16 JSON passed the metadata check, `json.loads` takes it) or passed as a file without a
# report. Each case: (the file is validate's output, else fetch's; the footer edit).
NOT_UTF8_FOOTERS = {
    "UTF-16 source with a report": (True, _in_utf16(SOURCE_METADATA_KEY)),
    "UTF-16 report": (True, _in_utf16(VALIDATION_METADATA_KEY)),
    "non-UTF-8 source without a report": (
        False,
        lambda metadata: metadata.update({SOURCE_METADATA_KEY: b"\xff\xfe\x00junk"}),
    ),
}


@pytest.mark.parametrize("case", sorted(NOT_UTF8_FOOTERS))
def test_metadata_that_is_not_utf8_is_one_error_line(
    tracking: MlflowSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    validated_by_validate, edit = NOT_UTF8_FOOTERS[case]
    if validated_by_validate:
        path, _ = _validated_file(tmp_path)
    else:
        path = tmp_path / "dataset.parquet"
        assert fetch.main(["--source", "synthetic", "--rows", "600", "--output", str(path)]) == 0
    _edit_footer(path, edit)

    _assert_train_refuses(path, tmp_path, tracking, capsys, "dewpoint.")


def test_reordered_validated_rows_are_refused_as_out_of_order_not_as_changed(
    tracking: MlflowSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 10: the data hash does not depend on row order (steps/dataset.py sorts), but train
    hashes a file's rows in file order as it streams them, so reordered rows were refused as
    "not the rows its validation report describes". The split is by row content, so the model
    would be the same; train still cannot check them without sorting the file (it never holds
    one whole), and now says that is why."""
    validated, report = _validated_file(tmp_path)
    table = pq.read_table(validated)
    reordered = table.take(pa.array(range(table.num_rows - 1, -1, -1)))
    assert data_hash(reordered) == report["validated_data_hash"]  # the same rows, by the hash
    # ... and the same split and fit: the split is decided by each row's content.
    config = TrainConfig()
    summaries = [
        summarize([rows.select(["station", "date", "temp", "dewp"])], config.test_size, config.seed)
        for rows in (table, reordered)
    ]
    assert summaries[0].train.count == summaries[1].train.count
    assert summaries[0].holdout.count == summaries[1].holdout.count
    pd.testing.assert_frame_equal(summaries[0].sample, summaries[1].sample)
    first, second = (fit_line(s, config) for s in summaries)
    assert second.coef == pytest.approx(first.coef, rel=1e-12)
    assert second.intercept == pytest.approx(first.intercept, rel=1e-12)
    pq.write_table(reordered.replace_schema_metadata(table.schema.metadata), validated)

    err = _assert_train_refuses(
        validated, tmp_path, tracking, capsys, "not in the order validate writes them"
    )
    assert "not the rows its validation report describes" not in err
    # A frame is hashed whole (sorted): the same rows reordered are accepted there.
    frame = table.to_pandas()
    assert train_and_log(frame.iloc[::-1], tracking, validation_report=report).run_id
