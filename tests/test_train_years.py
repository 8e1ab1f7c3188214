"""train over many years: the streamed fit equals one table's fit on the same rows, the split and
sample depend only on the rows, and what train holds does not grow with the number of years."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
import tracemalloc
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steps import training_data
from steps.cli import StepError
from steps.dataset import data_hash, write_dataset_pieces
from steps.holdout_split import in_holdout, row_keys
from steps.least_squares import CoMoments, elasticnet_fit, line_errors, linear_fit
from steps.settings import MlflowSettings
from steps.training_data import (
    HoldoutSample,
    combined_hash,
    find_parts,
    read_batches,
    summarize,
)
from tests.model_helpers import (
    DATASET_SCHEMA,
    make_experiment,
    run_step,
    sklearn_fit,
    split_rows,
)

TOLERANCE = 1e-9
STATIONS = ("72509014739", "72530094846", "A0000253928", "99000199999", "01001099999")


def year_frame(year: int, rows: int, seed: int, slope: float, intercept: float) -> pd.DataFrame:
    """`rows` observations in `year` at a few stations; about 2% of dewp missing."""
    rng = np.random.default_rng(seed)
    temp = rng.uniform(-20.0, 100.0, rows)
    dewp = slope * temp + intercept + rng.normal(0.0, 3.0, rows)
    dewp[rng.random(rows) < 0.02] = np.nan
    days = (dt.date(year, 12, 31) - dt.date(year, 1, 1)).days + 1
    return pd.DataFrame(
        {
            "station": rng.choice(STATIONS, rows),
            "date": [
                dt.date(year, 1, 1) + dt.timedelta(int(d)) for d in rng.integers(0, days, rows)
            ],
            "temp": temp,
            "dewp": dewp,
            "frshtt": ["000000"] * rows,
        }
    )


def write_years(
    folder: Path, frames: dict[int, pd.DataFrame], row_group_rows: int = 1000
) -> list[Path]:
    """One Parquet file per year (`<year>.parquet`), in row groups of `row_group_rows`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for year, frame in frames.items():
        table = pa.Table.from_pandas(frame, schema=DATASET_SCHEMA, preserve_index=False)
        path = folder / f"{year}.parquet"
        pq.write_table(table, path, row_group_size=row_group_rows)
        paths.append(path)
    return paths


year_sets = st.lists(
    st.tuples(st.integers(1950, 2030), st.integers(1, 400)), min_size=1, max_size=6,
    unique_by=lambda pair: pair[0],
)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(
    years=year_sets,
    seed=st.integers(0, 2**32 - 1),
    test_size=st.sampled_from([0.1, 0.2, 0.5]),
    slope=st.floats(0.3, 1.2),
    intercept=st.floats(-30.0, 10.0),
    row_group_rows=st.integers(3, 300),
    batch_rows=st.integers(2, 500),
    alpha=st.floats(1e-3, 50.0),
    l1_ratio=st.floats(0.0, 1.0),
)
def test_the_streamed_fit_equals_one_tables_fit_on_the_same_rows(
    years: list[tuple[int, int]],
    seed: int,
    test_size: float,
    slope: float,
    intercept: float,
    row_group_rows: int,
    batch_rows: int,
    alpha: float,
    l1_ratio: float,
) -> None:
    frames = {year: year_frame(year, rows, seed + year, slope, intercept) for year, rows in years}
    whole = pd.concat(frames.values(), ignore_index=True)
    train, holdout = split_rows(whole, test_size, seed)
    if min(len(train), len(holdout)) < 2:
        return  # too few rows to split: train refuses them (tested in test_train.py)
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(training_data, "READ_BATCH_ROWS", batch_rows)
        write_years(Path(tmp), frames, row_group_rows)
        summary = summarize(read_batches(find_parts(Path(tmp))), test_size, seed)

    assert (summary.train.count, summary.holdout.count) == (len(train), len(holdout))
    assert summary.rows_dropped == int(whole["dewp"].isna().sum())
    ours, reference = linear_fit(summary.train), sklearn_fit(train)
    assert ours.coef == pytest.approx(reference.coef, rel=TOLERANCE, abs=TOLERANCE)
    assert ours.intercept == pytest.approx(reference.intercept, rel=TOLERANCE, abs=TOLERANCE)
    ours = elasticnet_fit(summary.train, alpha, l1_ratio)
    reference = sklearn_fit(train, "elasticnet", alpha, l1_ratio)
    assert ours.coef == pytest.approx(reference.coef, rel=TOLERANCE, abs=TOLERANCE)
    assert ours.intercept == pytest.approx(reference.intercept, rel=TOLERANCE, abs=TOLERANCE)
    # The holdout's co-moments give the RMSE over every holdout row.
    residual = holdout["dewp"] - (holdout["temp"] * ours.coef + ours.intercept)
    rmse = float(np.sqrt(np.mean(residual**2)))
    assert line_errors(summary.holdout, ours).rmse == pytest.approx(rmse, rel=1e-9, abs=1e-12)


def test_co_moments_merged_in_pieces_equal_those_of_the_whole() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(50, 20, 10_000), rng.normal(40, 15, 10_000)
    merged = CoMoments()
    for piece in np.array_split(np.arange(10_000), 37):
        merged = merged.merge(CoMoments.of(x[piece], y[piece]))
    whole = CoMoments.of(x, y)
    assert merged.count == whole.count
    for name in ("mean_x", "mean_y", "m2_x", "m2_y", "c_xy", "min_x", "max_x"):
        assert getattr(merged, name) == pytest.approx(getattr(whole, name), rel=1e-12)


def test_a_rerun_and_any_row_or_file_order_give_the_same_split_and_model(tmp_path: Path) -> None:
    frames = {year: year_frame(year, 3000, year, 0.9, -8.0) for year in (2021, 2022, 2023)}
    write_years(tmp_path / "a", frames, row_group_rows=700)
    first = summarize(read_batches(find_parts(tmp_path / "a")), 0.2, 42)
    again = summarize(read_batches(find_parts(tmp_path / "a")), 0.2, 42)
    assert linear_fit(first.train) == linear_fit(again.train)  # bit for bit
    pd.testing.assert_frame_equal(first.sample, again.sample)

    # The same rows shuffled, in one file instead of three: same sides, same sample, same line.
    shuffled = pd.concat(frames.values()).sample(frac=1.0, random_state=5)
    write_years(tmp_path / "b", {"all": shuffled}, row_group_rows=900)  # type: ignore[dict-item]
    other = summarize(read_batches(find_parts(tmp_path / "b")), 0.2, 42)
    assert (other.train.count, other.holdout.count) == (first.train.count, first.holdout.count)
    pd.testing.assert_frame_equal(other.sample, first.sample)
    assert linear_fit(other.train).coef == pytest.approx(linear_fit(first.train).coef, rel=1e-12)

    # Adding a year moves no earlier row to the other side.
    old = pd.concat(frames.values(), ignore_index=True)
    _, old_holdout = split_rows(old, 0.2, 42)
    new = pd.concat([old, year_frame(2024, 3000, 9, 0.9, -8.0)], ignore_index=True)
    _, new_holdout = split_rows(new, 0.2, 42)
    earlier = new_holdout[pd.to_datetime(new_holdout["date"]).dt.year < 2024]
    pd.testing.assert_frame_equal(earlier.reset_index(drop=True), old_holdout)


def test_the_split_key_is_the_documented_hash() -> None:
    """steps/holdout_split.py states the key; this recomputes it by hand for one row."""
    station, date, seed = "72530094846", dt.date(2024, 7, 1), 42
    mask = (1 << 64) - 1

    def mix(z: int) -> int:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    station_hash = int.from_bytes(
        hashlib.blake2b(station.encode(), digest_size=8).digest(), "little"
    )
    days = (date - dt.date(1970, 1, 1)).days
    expected = mix(station_hash ^ mix((days + (seed + 1) * 0x9E3779B97F4A7C15) & mask))
    (key,) = row_keys(pa.array([station]), pa.array([date], pa.date32()), seed)
    assert int(key) == expected
    assert bool(in_holdout(np.array([key]), 0.2)[0]) == (expected < 0.2 * 2**64)


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.integers(0, 40), min_size=0, max_size=300),
    limit=st.integers(1, 50),
    chunk=st.integers(1, 60),
)
def test_the_holdout_sample_is_the_smallest_keys_whatever_the_chunks(
    keys: list[int], limit: int, chunk: int
) -> None:
    """Few distinct keys: ties are broken by temp, then dewp, so the order of arrival is moot."""
    n = len(keys)
    key_array = np.array(keys, dtype=np.uint64)
    temp = (np.arange(n) * 7 % 11).astype(np.float64)
    dewp = (np.arange(n) * 5 % 13).astype(np.float64)
    sample = HoldoutSample(limit)
    order = np.random.default_rng(n).permutation(n)
    for start in range(0, n, chunk):
        picked = order[start : start + chunk]
        sample.add(key_array[picked], temp[picked], dewp[picked])
        assert sample.rows_held <= sample.capacity <= limit + max(1, limit // 8)
    best = np.lexsort((dewp, temp, key_array))[:limit]
    expected = pd.DataFrame({"temp": temp[best], "dewp": dewp[best]})
    pd.testing.assert_frame_equal(sample.frame(), expected)


def test_reading_is_one_batch_at_a_time_and_a_part_is_opened_only_when_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training_data, "READ_BATCH_ROWS", 500)
    frames = {year: year_frame(year, 2000, year, 0.9, -8.0) for year in (2001, 2002)}
    write_years(tmp_path, frames, row_group_rows=2000)
    batches = read_batches(find_parts(tmp_path))
    first = [next(batches) for _ in range(4)]  # all of 2001
    assert [b.num_rows for b in first] == [500] * 4
    assert first[0].column_names == ["station", "date", "temp", "dewp"]
    (tmp_path / "2002.parquet").write_bytes(b"gone")  # replaced after it was listed
    with pytest.raises(StepError, match=r"2002\.parquet"):
        next(batches)


def _traced_peak(folder: Path, sample_rows: int) -> int:
    """Peak bytes traced by tracemalloc (numpy arrays included) plus Arrow's pool while
    summarising the parts in `folder`."""
    peak_arrow = 0

    def watched() -> object:
        nonlocal peak_arrow
        for batch in read_batches(find_parts(folder)):
            peak_arrow = max(peak_arrow, pa.total_allocated_bytes())
            yield batch

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        summarize(watched(), 0.2, 42, sample_rows=sample_rows)  # type: ignore[arg-type]
        _, peak_python = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak_python + peak_arrow


def test_what_train_holds_does_not_grow_with_the_number_of_years(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes, not time: 8 years of data need no more memory than 1 beyond a bounded sample (the
    RSS of the real step at 1, 4 and 16 years is measured by `make bench-scale`)."""
    monkeypatch.setattr(training_data, "READ_BATCH_ROWS", 20_000)
    frames = {year: year_frame(year, 60_000, year, 0.9, -8.0) for year in range(2001, 2009)}
    write_years(tmp_path / "one", {2001: frames[2001]}, row_group_rows=20_000)
    write_years(tmp_path / "eight", frames, row_group_rows=20_000)
    one = _traced_peak(tmp_path / "one", sample_rows=5_000)
    eight = _traced_peak(tmp_path / "eight", sample_rows=5_000)
    assert eight < 1.25 * one, (one, eight)


def test_the_holdout_sample_holds_a_fixed_reservoir_however_many_years_arrive() -> None:
    """A count, not a time: 16 years of holdout rows, each past the limit on its own, never make
    the sample hold more rows, or more bytes, than it had allocated before the first row."""
    limit = 1_000
    sample = HoldoutSample(limit)
    allocated = sample.nbytes
    assert allocated == 24 * sample.capacity and sample.capacity <= limit + limit // 8
    held = []
    for year in range(16):
        rng = np.random.default_rng(year)
        for _ in range(10):  # 10 batches of 700 rows a year: 7 x the limit per year
            keys = rng.integers(0, 2**63, 700, dtype=np.uint64)
            sample.add(keys, rng.normal(50, 20, 700), rng.normal(40, 20, 700))
            assert sample.rows_held <= sample.capacity
        held.append(sample.rows_held)
    assert sample.nbytes == allocated
    assert max(held) <= sample.capacity
    assert len(sample.frame()) == limit


def test_combined_hash_is_the_stated_digest_of_the_parts() -> None:
    assert combined_hash([("2024", "ab" * 32)]) == "ab" * 32
    parts = [("2024", "cd" * 32), ("2023", "ab" * 32)]
    text = f"2023 {'ab' * 32}\n2024 {'cd' * 32}\n"
    assert combined_hash(parts) == hashlib.sha256(text.encode()).hexdigest()
    assert combined_hash([("2023", "ab" * 32), ("2024", None)]) is None


@pytest.fixture
def tracking(sqlite_tracking_uri: str, tmp_path: Path) -> MlflowSettings:
    settings = MlflowSettings(sqlite_tracking_uri, experiment="years")
    make_experiment(settings.tracking_uri, settings.experiment, tmp_path / "artifacts")
    return settings


def _validated_years(folder: Path, frames: dict[int, pd.DataFrame], tmp: Path) -> list[dict]:
    """Each year through the real validate CLI into `folder/<year>.parquet`; their reports."""
    reports = []
    for year, frame in frames.items():
        fetched = tmp / f"fetched-{year}.parquet"
        table = pa.Table.from_pandas(frame, schema=DATASET_SCHEMA, preserve_index=False)
        source = {"name": "test", "years": [year], "data_hash": data_hash(table)}
        write_dataset_pieces([table], fetched, source)
        report = tmp / f"report-{year}.json"
        done = run_step(
            "validate", "--input", str(fetched), "--output", str(folder / f"{year}.parquet"),
            "--report", str(report), "--min-rows", "10",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        reports.append(json.loads(report.read_text()))
    return reports


def test_train_cli_on_a_folder_of_years_records_every_year_and_their_hashes(
    tracking: MlflowSettings, tmp_path: Path
) -> None:
    frames = {year: year_frame(year, 800, year, 0.9, -8.0) for year in (2022, 2023, 2024)}

    # Rows validate keeps as they are: one per station and day, dew point not above temperature,
    # temp following the seasons (a random temp every day would fail validate's unit_jumps).
    def seasonal(f: pd.DataFrame) -> pd.Series:
        day = pd.to_datetime(f["date"]).dt.dayofyear
        return 40.0 + 40.0 * np.cos(2 * np.pi * (day - 200) / 365.25) + f["temp"] % 5

    frames = {
        y: f.drop_duplicates(["station", "date"])
        .assign(temp=seasonal)
        .assign(dewp=lambda f: np.minimum(0.9 * f["temp"] - 8.0 + f["dewp"] % 3, f["temp"]))
        .sort_values(["station", "date"])
        for y, f in frames.items()
    }
    folder = tmp_path / "validated"
    reports = _validated_years(folder, frames, tmp_path)
    outputs = tmp_path / "outputs"
    done = run_step(
        "train", "--input", str(folder), "--holdout-out", str(tmp_path / "holdout.parquet"),
        "--plot-out", str(tmp_path / "fit.png"), "--tracking-uri", tracking.tracking_uri,
        "--experiment", tracking.experiment, "--outputs-dir", str(outputs),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    run = mlflow.MlflowClient(tracking.tracking_uri).get_run((outputs / "run-id").read_text())
    tags = run.data.tags
    assert tags["data.parts"] == "2022,2023,2024"
    for year, report in zip(frames, reports, strict=True):
        assert tags[f"data.part.{year}.validated_hash"] == report["validated_data_hash"]
        assert tags[f"data.part.{year}.fetched_hash"] == report["fetched_data_hash"]
        assert tags[f"data.part.{year}.rows"] == str(report["rows_out"])
    pairs = [(str(y), r["validated_data_hash"]) for y, r in zip(frames, reports, strict=True)]
    assert tags["data.validated_hash"] == combined_hash(pairs)
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == combined_hash(pairs)[:36]
    logged = {a.path for a in mlflow.MlflowClient(tracking.tracking_uri).list_artifacts(
        run.info.run_id, "validation")}  # fmt: skip
    assert logged == {f"validation/{year}.json" for year in frames}

    # The coefficients are those of one table of all three years, split the same way.
    train, holdout = split_rows(pd.concat(frames.values(), ignore_index=True), 0.2, 42)
    reference = sklearn_fit(train)
    assert run.data.metrics["coef_temp"] == pytest.approx(reference.coef, rel=TOLERANCE)
    assert run.data.metrics["intercept"] == pytest.approx(reference.intercept, rel=TOLERANCE)
    assert run.data.params["train_rows"] == str(len(train))
    assert len(pd.read_parquet(tmp_path / "holdout.parquet")) == len(holdout)

    # The model version lists the years and their hashes too.
    registered = run_step(
        "register", "--run-id", run.info.run_id, "--tracking-uri", tracking.tracking_uri,
        "--outputs-dir", str(tmp_path / "register"),
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr[-2000:]
    version = mlflow.MlflowClient(tracking.tracking_uri).get_model_version(
        "dewpoint-lr", (tmp_path / "register" / "version").read_text()
    )
    # Every data tag is the run's, exactly (the years, their hashes, the source, the units).
    assert {k: v for k, v in version.tags.items() if k.startswith("data.")} == {
        k: v for k, v in tags.items() if k.startswith("data.")
    }
    assert version.tags["data.validated_hash"] == combined_hash(pairs)
