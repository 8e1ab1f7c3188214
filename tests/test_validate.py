"""The validate step: real-shaped data passes, bad data fails listing every broken rule."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steps import fetch, validate
from steps.cli import BadInput
from steps.climate import TEMP_RANGE_F
from steps.dataset import (
    SCHEMA,
    SOURCE_DIGEST_KEY,
    SOURCE_METADATA_KEY,
    data_hash,
    read_dataset,
    write_dataset,
)
from steps.sources import Fetched, SourceRequest
from steps.training_data import read_part
from tests.conftest import assert_bad_input, assert_one_line_error
from tests.model_helpers import (
    ROW_EDITS,
    edit_rows,
    error_line,
    gsod_access_csv,
    in_celsius,
    mixed_units,
    run_step,
    station_year,
    summer,
)
from tests.test_gsod_format import FIXTURES, fixture_bytes

RunValidate = Callable[..., tuple[int, dict[str, str], str, dict]]


@pytest.fixture
def run_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> RunValidate:
    """Call `steps.validate.main` like the CLI; returns (exit code, outputs, stderr, report)."""

    def call(dataset: Path, *args: str) -> tuple[int, dict[str, str], str, dict]:
        report = tmp_path / "validation.json"
        report.unlink(missing_ok=True)
        code = validate.main(
            ["--input", str(dataset), "--output", str(tmp_path / "validated.parquet"),
             "--report", str(report), *args]
        )  # fmt: skip
        captured = capsys.readouterr()
        lines = captured.out.strip().splitlines()
        outputs = json.loads(lines[-1]) if code == 0 else {}
        return (
            code,
            outputs,
            captured.err,
            (json.loads(report.read_text()) if report.exists() else {}),
        )

    return call


def fetched(tmp_path: Path, *args: str) -> Path:
    """Run the real fetch step and return the dataset it wrote."""
    output = tmp_path / "dataset.parquet"
    assert fetch.main([*args, "--output", str(output)]) == 0
    return output


def dataset_file(tmp_path: Path, temp: list, dewp: list, frshtt: list | None = None, **kw) -> Path:
    """A dataset file with the given values (one station, consecutive days unless given)."""
    n = len(temp)
    table = pa.table(
        {
            "station": kw.get("station", ["72530094846"] * n),
            "date": kw.get("date", [dt.date(2023, 1, 1) + dt.timedelta(i) for i in range(n)]),
            "temp": pa.array(temp, pa.float64()),
            "dewp": pa.array(dewp, pa.float64()),
            "frshtt": frshtt or ["000000"] * n,
        },
        schema=SCHEMA,
    )
    path = tmp_path / "input.parquet"
    write_dataset(table, path, {"name": "test"})
    return path


def realistic(n: int, seed: int = 0) -> tuple[list[float], list[float]]:
    """`n` consecutive days of one station: a seasonal cycle over about -20..95 F, day-to-day
    weather (as real daily means change: validate's unit_jumps rule), dewp below temp."""
    rng = np.random.default_rng(seed)
    day = np.arange(n)
    temp = (37.5 + 45 * np.cos(2 * np.pi * (day - 200) / 365.25) + rng.normal(0, 5, n)).round(1)
    dewp = (temp - rng.uniform(0, 25, n)).round(1)
    return temp.tolist(), dewp.tolist()


def test_gsod_fixtures_pass_dropping_missing_values(
    tmp_path: Path, run_validate: RunValidate
) -> None:
    dataset = fetched(tmp_path, "--path", str(FIXTURES))
    code, outputs, err, report = run_validate(dataset, "--min-rows", "5")
    assert code == 0, err
    # 11 rows: two DEWP and one TEMP are 9999.9 in the files.
    assert outputs == {"row-count": "8", "dropped-rows": "3"}
    assert report["passed"] and report["rows_in"] == 11 and report["rows_out"] == 8
    assert report["dropped_missing_temp_or_dewp"] == 3
    assert {rule["name"] for rule in report["rules"]} >= {"temp_range", "dewp_range", "min_rows"}
    kept, source = read_dataset(tmp_path / "validated.parquet")
    assert kept.schema.equals(SCHEMA) and source["name"] == "gsod"
    assert (source["rows"], source["fetched_rows"]) == (8, 11)
    assert source["data_hash"] == data_hash(kept) != source["fetched_data_hash"]
    assert kept.column("dewp").null_count == kept.column("temp").null_count == 0
    # Both hashes named in the report, and the report stored with the rows it describes.
    assert report["validated_data_hash"] == data_hash(kept)
    assert report["fetched_data_hash"] == source["fetched_data_hash"]
    assert read_part(tmp_path / "validated.parquet").report == report
    # ... and the digest of the exact source metadata bytes written beside it (train checks it).
    raw_source = pq.read_schema(tmp_path / "validated.parquet").metadata[SOURCE_METADATA_KEY]
    assert report[SOURCE_DIGEST_KEY] == hashlib.sha256(raw_source).hexdigest()


def test_rain_only_keeps_rain_and_drizzle_days(tmp_path: Path, run_validate: RunValidate) -> None:
    dataset = fetched(tmp_path, "--path", str(FIXTURES))
    code, outputs, _, report = run_validate(dataset, "--min-rows", "1", "--rain-only", "true")
    assert code == 0
    assert outputs["row-count"] == "3" and report["filtered_not_rain"] == 5
    kept, _ = read_dataset(tmp_path / "validated.parquet")
    assert all(flags[1] == "1" for flags in kept.column("frshtt").to_pylist())


def test_synthetic_data_passes(tmp_path: Path, run_validate: RunValidate) -> None:
    dataset = fetched(tmp_path, "--source", "synthetic", "--rows", "2000")
    code, outputs, _, report = run_validate(dataset)
    assert code == 0
    assert int(outputs["row-count"]) + int(outputs["dropped-rows"]) == 2000
    assert report["removed_dewp_above_temp"] == 0


def test_a_full_disk_for_the_outputs_fails_validate_before_its_work(tmp_path: Path) -> None:
    """The outputs' files get their room first (before: validate read, checked and wrote the
    whole dataset, then failed writing its outputs)."""
    dataset = fetched(tmp_path, "--source", "synthetic", "--rows", "2000")
    out = tmp_path / "full"
    result = run_step(
        "validate", "--input", str(dataset), "--output", str(out / "validated.parquet"),
        "--report", str(out / "validation.json"), "--outputs-dir", str(out / "outputs"),
        full_disk=out,
    )  # fmt: skip
    assert f"cannot write {out / 'outputs'}" in error_line(result)
    assert "No space left on device" in result.stderr
    assert not out.exists()


def test_every_broken_rule_is_listed_with_counts(tmp_path: Path, run_validate: RunValidate) -> None:
    temp, dewp = realistic(500)
    temp[0] = 150.0  # beyond the world record
    temp[1] = 9999.9  # a sentinel that escaped cleaning
    dewp[2] = -180.0
    frshtt = ["000000"] * 500
    frshtt[3] = "0100"
    output = tmp_path / "validated.parquet"
    output.write_bytes(b"previous validated dataset")
    code, _, err, report = run_validate(dataset_file(tmp_path, temp, dewp, frshtt))
    assert_one_line_error(
        code,
        err,
        "temp_range",
        "2 rows",
        "dewp_range",
        "no_sentinels",
        "frshtt_format",
        "500 rows in",
    )
    assert "min_rows" not in err and "dewp_not_above_temp" not in err
    failed = {r["name"]: r["violations"] for r in report["rules"] if not r["passed"]}
    assert failed == {"no_sentinels": 1, "temp_range": 2, "dewp_range": 1, "frshtt_format": 1}
    assert output.read_bytes() == b"previous validated dataset"


def test_dew_point_slightly_above_temperature_is_tolerated(
    tmp_path: Path, run_validate: RunValidate
) -> None:
    # Daily means: dewp can beat temp by a few tenths; that must pass untouched.
    temp, dewp = realistic(2000)
    for i in range(0, 2000, 20):
        dewp[i] = temp[i] + 0.5
    code, outputs, _, report = run_validate(dataset_file(tmp_path, temp, dewp))
    assert code == 0 and outputs["row-count"] == "2000"
    assert report["removed_dewp_above_temp"] == 0


def test_rare_inconsistent_rows_are_removed_many_fail(
    tmp_path: Path, run_validate: RunValidate
) -> None:
    temp, dewp = realistic(2000)
    dewp[5] = temp[5] + 10.0
    dewp[6] = temp[6] + 10.0
    code, outputs, _, report = run_validate(dataset_file(tmp_path, temp, dewp))
    assert code == 0
    assert outputs == {"row-count": "1998", "dropped-rows": "2"}
    assert report["removed_dewp_above_temp"] == 2

    for i in range(0, 2000, 100):
        dewp[i] = temp[i] + 10.0
    code, _, err, report = run_validate(dataset_file(tmp_path, temp, dewp))
    assert_one_line_error(code, err, "dewp_not_above_temp", "22 rows, 2 allowed")


def test_all_dewp_sentinel_fails_on_min_rows(tmp_path: Path, run_validate: RunValidate) -> None:
    data = fixture_bytes("01234599999.csv")
    for value in (b'"  10.3"', b'" -41.2"', b'"  -2.8"'):
        data = data.replace(value, b'"9999.9"')
    folder = tmp_path / "gsod"
    folder.mkdir()
    (folder / "01234599999.csv").write_bytes(data)
    code, _, err, report = run_validate(fetched(tmp_path, "--path", str(folder)), "--min-rows", "1")
    assert_one_line_error(code, err, "min_rows", "4 rows in, 0 left")
    assert report["dropped_missing_temp_or_dewp"] == 4 and not report["passed"]
    assert not (tmp_path / "validated.parquet").exists()


def test_empty_dataset_fails(tmp_path: Path, run_validate: RunValidate) -> None:
    code, _, err, _ = run_validate(dataset_file(tmp_path, [], []))
    assert_one_line_error(code, err, "min_rows", "0 rows in")


def test_nan_and_duplicate_days_fail(tmp_path: Path, run_validate: RunValidate) -> None:
    temp, dewp = realistic(200)
    dewp[7] = float("nan")
    dates = [dt.date(2023, 1, 1) + dt.timedelta(i) for i in range(200)]
    dates[9] = dates[8]
    code, _, err, _ = run_validate(dataset_file(tmp_path, temp, dewp, date=dates))
    assert_one_line_error(code, err, "finite_values", "unique_station_day")


def test_missing_column_and_non_numeric_values(tmp_path: Path, run_validate: RunValidate) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"station": ["X"], "date": [dt.date(2023, 1, 1)], "temp": [1.0]}), path)
    code, _, err, _ = run_validate(path)
    assert_one_line_error(code, err, "missing column(s) dewp, frshtt")
    pq.write_table(
        pa.table({"station": ["X"], "date": [dt.date(2023, 1, 1)], "temp": ["warm"],
                  "dewp": [1.0], "frshtt": ["000000"]}),
        path,
    )  # fmt: skip
    code, _, err, _ = run_validate(path)
    assert_one_line_error(code, err, "column temp")


def test_input_that_is_not_parquet(tmp_path: Path, run_validate: RunValidate) -> None:
    path = tmp_path / "dataset.parquet"
    path.write_text("station,date\n")
    code, _, err, _ = run_validate(path)
    assert_one_line_error(code, err, "cannot read dataset")
    code, _, err, _ = run_validate(tmp_path / "absent.parquet")
    assert_bad_input(code, err, "--input", "does not exist where the step runs")


def test_bad_flag_values_via_python_m(tmp_path: Path) -> None:
    path = dataset_file(tmp_path, *realistic(200))
    result = subprocess.run(
        [sys.executable, "-m", "steps", "validate", "--input", str(path), "--output",
         str(tmp_path / "v.parquet"), "--report", str(tmp_path / "r.json"), "--rain-only", "maybe"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert_bad_input(result.returncode, result.stderr, "--rain-only 'maybe': must be true or false")


def test_duplicate_count_does_not_depend_on_row_order(tmp_path: Path) -> None:
    from steps.dataset import duplicate_keys

    temp, dewp = realistic(300)
    dates = [dt.date(2023, 1, 1) + dt.timedelta(i % 250) for i in range(300)]
    path = dataset_file(tmp_path, temp, dewp, date=dates)
    table, _ = read_dataset(path)
    shuffled = table.take(np.random.default_rng(1).permutation(300))
    assert duplicate_keys(table) == duplicate_keys(shuffled) == 50


# --- the dataset as a whole: spread and units --------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    constant=st.sampled_from(["temp", "dewp", "both"]),
    level=st.floats(-40.0, 100.0).map(lambda x: round(x, 1)),
    rows=st.integers(validate.DEFAULT_MIN_ROWS, 400),
    seed=st.integers(0, 1000),
)
def test_a_column_without_spread_fails_naming_it(
    constant: str, level: float, rows: int, seed: int
) -> None:
    """Property: whatever the constant value and row count, a dataset whose temp (or dewp, or
    both) does not vary fails on the spread rule(s), every other rule passing."""
    varying = np.random.default_rng(seed).uniform(1.0, 20.0, rows).round(1)
    temp = np.full(rows, level) if constant in ("temp", "both") else level + varying
    dewp = np.full(rows, level - 5) if constant in ("dewp", "both") else level - 5 - varying
    temp, dewp = temp.tolist(), dewp.tolist()  # dewp <= temp and both in range, always
    table = pa.table(
        {"station": ["72530094846"] * rows,
         "date": [dt.date(2020, 1, 1) + dt.timedelta(i) for i in range(rows)],
         "temp": temp, "dewp": dewp, "frshtt": ["000000"] * rows},
        schema=SCHEMA,
    )  # fmt: skip

    _, _, report = validate.check_table(table, validate.ValidationPolicy())

    failed = {r["name"] for r in report["rules"] if not r["passed"]}
    expected = {"temp": {"temp_spread"}, "dewp": {"dewp_spread"}}.get(
        constant, {"temp_spread", "dewp_spread"}
    )
    assert failed == expected, validate.failure_message(report)


@pytest.mark.parametrize(
    ("case", "temp", "dewp"),
    [("every row temp=50 dewp=40", 50.0, 40.0), ("constant temp, varying dew point", 50.0, None)],
)
def test_degenerate_data_fails_the_step_in_one_line(
    tmp_path: Path, case: str, temp: float, dewp: float | None
) -> None:
    """The two instances from the field, through the real CLI: no validated dataset is written,
    so nothing is trained on them."""
    rows = 500
    dewps = [dewp] * rows if dewp is not None else (30.0 + np.arange(rows) % 15).tolist()
    path = dataset_file(tmp_path, [temp] * rows, dewps)
    result = subprocess.run(
        [sys.executable, "-m", "steps", "validate", "--input", str(path), "--output",
         str(tmp_path / "v.parquet"), "--report", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert_one_line_error(result.returncode, result.stderr, "temp_spread", "0 F")
    assert not (tmp_path / "v.parquet").exists()


@settings(max_examples=25, deadline=None)
@given(mean=st.floats(40.0, 62.0), swing=st.floats(5.0, 20.0), seed=st.integers(0, 10_000))
def test_data_in_celsius_fails_on_units_the_same_data_in_fahrenheit_passes(
    mean: float, swing: float, seed: int
) -> None:
    """Property: for a station-year of any climate whose summer peaks below about 85 F (30 C)
    with thunder days, the data in deg F passes and its summer extract converted to deg C fails
    on thunder_above_freezing. (In hotter summers most thunder days are above 32 C, which reads
    as above freezing: the rule cannot see those; the gate's reference holdout judges them.)"""
    year = station_year(mean, swing, seed)
    policy = validate.ValidationPolicy(min_rows=50)

    in_f = validate.check_table(pa.Table.from_pandas(year, schema=SCHEMA), policy)[2]
    extract = in_celsius(summer(year))
    in_c = validate.check_table(pa.Table.from_pandas(extract, schema=SCHEMA), policy)[2]

    assert in_f["passed"], validate.failure_message(in_f)
    thunder_days = int(extract["frshtt"].str[4].eq("1").sum())
    if thunder_days >= validate.MIN_THUNDER_DAYS:
        assert not in_c["passed"]
        assert "thunder_above_freezing" in validate.failure_message(in_c)
        assert "deg C?" in validate.failure_message(in_c)
    assert max(extract["temp"]) < TEMP_RANGE_F[1]  # the row rules alone cannot see it


# --- units mixed row by row: any fraction of deg C rows among deg F ones -----------------------

# (annual mean, seasonal swing), deg F: station-years as station_year draws them.
CLIMATES = {"continental": (50.0, 22.0), "maritime": (52.0, 8.0), "subtropical": (68.0, 12.0),
            "cold": (30.0, 25.0)}  # fmt: skip
SEASONS = {"year": range(1, 13), "spring": (3, 4, 5), "summer": (6, 7, 8), "autumn": (9, 10, 11)}
MIXTURES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


def stations_in(season: str) -> pd.DataFrame:
    """One station-year of each climate in CLIMATES (deg F, FRSHTT flags), cut to `season`."""
    years = [
        station_year(mean, swing, seed=i, station=f"7299990000{i}")
        for i, (mean, swing) in enumerate(CLIMATES.values())
    ]
    frame = pd.concat(years, ignore_index=True)
    return frame[pd.to_datetime(frame["date"]).dt.month.isin(SEASONS[season])]


@pytest.mark.parametrize("season", SEASONS)
@pytest.mark.parametrize("fraction", MIXTURES)
def test_rows_in_deg_c_among_deg_f_fail_on_units_whatever_the_fraction(
    fraction: float, season: str
) -> None:
    """Whatever fraction of rows (5 % to 95 %) was converted to deg C, in a whole year or a
    season's extract, validate refuses the mixture on unit_jumps; the same rows all in deg F pass
    every rule. (Before unit_jumps a 90 % mixture passed.)"""
    frame = stations_in(season)
    policy = validate.ValidationPolicy(min_rows=50)
    in_f = validate.check_table(pa.Table.from_pandas(frame, schema=SCHEMA), policy)[2]
    assert in_f["passed"], validate.failure_message(in_f)

    mixed = mixed_units(frame, fraction, seed=int(fraction * 100))
    report = validate.check_table(pa.Table.from_pandas(mixed, schema=SCHEMA), policy)[2]
    failed = {r["name"] for r in report["rules"] if not r["passed"]}
    assert "unit_jumps" in failed, validate.failure_message(report)
    assert "deg C among deg F?" in validate.failure_message(report)


@settings(max_examples=40, deadline=None)
@given(
    mean=st.floats(-40.0, 85.0), swing=st.floats(2.0, 30.0), seed=st.integers(0, 10_000),
    season=st.sampled_from(list(SEASONS)),
)  # fmt: skip
def test_station_years_of_any_climate_pass_unit_jumps(
    mean: float, swing: float, seed: int, season: str
) -> None:
    """Property: a station-year in deg F of any climate, polar to tropical, whole or a season's
    extract, passes unit_jumps (day-to-day weather of N(0, 5 F) noise on a seasonal cycle; on 12
    real NCEI station-years no station came near the bound: module docstring of steps/validate)."""
    year = station_year(mean, swing, seed)
    year = year[pd.to_datetime(year["date"]).dt.month.isin(SEASONS[season])]
    report = validate.check_table(
        pa.Table.from_pandas(year, schema=SCHEMA), validate.ValidationPolicy(min_rows=50)
    )[2]
    (rule,) = [r for r in report["rules"] if r["name"] == "unit_jumps"]
    assert rule["passed"], rule


def test_gsod_files_with_90_percent_of_rows_in_deg_c_fail_validate_in_one_line(
    tmp_path: Path,
) -> None:
    """The adversary's instance through the real steps: GSOD files in NCEI's access CSV format,
    90 % of their rows converted to deg C, fetched and validated by the CLI: one `error:` line
    naming unit_jumps, no validated dataset. The same files in deg F pass."""
    frame = stations_in("year")
    for name, data in (("in-f", frame), ("mixed", mixed_units(frame, 0.9, seed=7))):
        folder = tmp_path / name / "gsod"
        folder.mkdir(parents=True)
        for station, rows in data.groupby("station"):
            (folder / f"{station}.csv").write_bytes(gsod_access_csv(rows))
        dataset = fetched(tmp_path / name, "--path", str(folder))
        result = subprocess.run(
            [sys.executable, "-m", "steps", "validate", "--input", str(dataset), "--output",
             str(tmp_path / name / "v.parquet"), "--report", str(tmp_path / name / "r.json")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if name == "in-f":
            assert result.returncode == 0, result.stderr
            continue
        assert_one_line_error(result.returncode, result.stderr, "unit_jumps", "deg C among deg F?")
        assert not (tmp_path / name / "v.parquet").exists()


@pytest.mark.parametrize("season", ["year", "summer"])
@pytest.mark.parametrize("stations_in_f", [12, 30])
def test_one_station_in_deg_c_among_stations_in_deg_f_fails_on_thunder(
    stations_in_f: int, season: str
) -> None:
    """Units switched for a whole station (no day-to-day jump for unit_jumps to see): with
    FRSHTT flags, its thunder days read as sub-freezing; judged per station, however many
    stations in deg F dilute the pool. (Judged over the pool only, one station of 13 or of 31
    passed: under 20 % of all thunder days.)"""
    months = SEASONS[season]
    frames = [station_year(50.0 + i % 4 * 5, 15.0, seed=i, station=f"7299990001{i:02d}")
              for i in range(stations_in_f)]  # fmt: skip
    warm = station_year(68.0, 12.0, seed=1, station="72999900099")
    frame = pd.concat([*frames, in_celsius(warm).round({"temp": 1, "dewp": 1})])
    frame = frame[pd.to_datetime(frame["date"]).dt.month.isin(months)].reset_index(drop=True)
    thunder_days = frame[frame["station"] == "72999900099"]["frshtt"].str[4].eq("1").sum()
    assert thunder_days >= validate.MIN_THUNDER_DAYS  # the station can be judged

    report = validate.check_table(
        pa.Table.from_pandas(frame, schema=SCHEMA), validate.ValidationPolicy(min_rows=50)
    )[2]
    failed = {r["name"] for r in report["rules"] if not r["passed"]}
    assert failed == {"thunder_above_freezing"}, validate.failure_message(report)
    assert "station 72999900099" in validate.failure_message(report)


def test_the_report_counts_the_stations_whose_units_thunder_days_judged() -> None:
    """The report's `units`: every kept station, and those with MIN_THUNDER_DAYS thunder days
    (their units judged by thunder_above_freezing); flags zeroed, a station has none."""
    years = [station_year(55.0 + 5 * i, 22.0, seed=i, station=f"7253009484{i}") for i in range(3)]
    years[1] = years[1].assign(frshtt="000000")
    frame = pd.concat(years, ignore_index=True)
    policy = validate.ValidationPolicy(min_rows=50)

    report = validate.check_table(pa.Table.from_pandas(frame, schema=SCHEMA), policy)[2]

    assert report["passed"], validate.failure_message(report)
    assert report["units"] == {"stations": 3, "judged_by_thunder": 2}
    assert validate.units_evidence(report, {"name": "table"}) == "unchecked"
    years[1] = years[0].assign(station="72530094849")  # every station has its thunder days
    frame = pd.concat(years, ignore_index=True)
    report = validate.check_table(pa.Table.from_pandas(frame, schema=SCHEMA), policy)[2]
    assert validate.units_evidence(report, {"name": "table"}) == "thunder"


GSOD = {"name": "gsod", "base_url": validate.DEFAULT_BASE_URL, "years": [2024]}


@pytest.mark.parametrize(
    ("units", "source", "evidence"),
    [
        ({"stations": 3, "judged_by_thunder": 3}, {"name": "table", "uri": "t.csv"}, "thunder"),
        ({"stations": 3, "judged_by_thunder": 2}, {"name": "table", "uri": "t.csv"}, "unchecked"),
        ({"stations": 0, "judged_by_thunder": 0}, None, "unchecked"),
        ({"stations": "3", "judged_by_thunder": "3"}, None, "unchecked"),  # not counts
        (None, GSOD, "publisher"),  # downloaded by fetch from NCEI's default location
        (None, {**GSOD, "base_url": validate.DEFAULT_BASE_URL + "/"}, "publisher"),
        (None, {**GSOD, "base_url": "http://127.0.0.1:8080/gsod"}, "unchecked"),  # a mirror
        (None, {"name": "gsod", "path": "/data/gsod", "years": []}, "unchecked"),  # local files
        (None, {**GSOD, "path": "/data/gsod"}, "unchecked"),
        (None, {"name": "bigquery", "table": "bigquery-public-data.noaa_gsod.gsod{year}"},
         "publisher"),
        (None, {"name": "synthetic", "rows": 10}, "generated"),
        (None, {"name": "table", "uri": "https://example.org/gsod.csv"}, "unchecked"),
        (None, {}, "unchecked"),
    ],
)  # fmt: skip
def test_units_evidence_comes_from_thunder_days_or_from_who_made_the_rows(
    units: dict | None, source: dict | None, evidence: str
) -> None:
    report = None if units is None else {"units": units}
    assert validate.units_evidence(report, source) == evidence


PUBLISHER, GENERATED = ({"units_evidence": e} for e in ("publisher", "generated"))


@pytest.mark.parametrize(
    ("datasets", "weakest"),
    [
        ([], "unchecked"),
        ([({"units": {"stations": 2, "judged_by_thunder": 2}}, None), (PUBLISHER, GSOD)],
         "publisher"),
        ([(PUBLISHER, GSOD), (GENERATED, {"name": "synthetic"})], "generated"),
        ([(GENERATED, {"name": "synthetic"}), ({"units_evidence": "unchecked"}, {"name": "table"})],
         "unchecked"),
        ([(None, None)], "unchecked"),  # a file without validate's report or fetch's source
        # Fetch's metadata alone is no evidence: only validate knows whether the rows are fetch's.
        ([(None, GSOD)], "unchecked"),
        ([({"units_evidence": "deg F, trust me"}, GSOD)], "unchecked"),
    ],
)  # fmt: skip
def test_the_units_of_several_datasets_are_the_weakest_evidence(
    datasets: list, weakest: str
) -> None:
    units, basis = validate.units_of(datasets)
    assert units == weakest
    assert "\n" not in basis and "stations had the 5 FRSHTT thunder days" in basis


# What fetch records for each source whose metadata is evidence of units (steps/validate.py):
# gsod at NOAA's default location and bigquery are given their rows here (no network).
PUBLISHED = {
    "gsod": {**GSOD, "stations": [], "files": 3, "files_without_rows": 0},
    "bigquery": {"name": "bigquery", "table": "bigquery-public-data.noaa_gsod.gsod{year}",
                 "years": [2024], "stations": []},
}  # fmt: skip
SOURCE_EVIDENCE = {"gsod": "publisher", "bigquery": "publisher", "synthetic": "generated"}


def fetched_from(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, thunder: bool = False
) -> Path:
    """The dataset fetch writes from source `kind` (its rows hashed into its metadata): the
    synthetic source itself, or three station-years in deg F as gsod or bigquery would give them,
    with FRSHTT flags (`thunder`: every station has its thunder days) or zeroed."""
    if kind == "synthetic":
        return fetched(tmp_path, "--source", "synthetic", "--rows", "2000")
    frame = pd.concat(
        [station_year(55.0 + 5 * i, 22.0, seed=i, station=f"7253009484{i}") for i in range(3)]
    )
    frame = frame if thunder else frame.assign(frshtt="000000")
    rows = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
    monkeypatch.setattr(fetch, "fetch_from", lambda name, request: Fetched(rows, PUBLISHED[kind]))
    output = tmp_path / "dataset.parquet"
    fetch.fetch_dataset(kind, SourceRequest(years=(2024,)), output)
    return output


@pytest.mark.parametrize("change", [None, *ROW_EDITS])
@pytest.mark.parametrize("kind", ["gsod", "bigquery", "synthetic"])
def test_the_sources_evidence_of_units_counts_only_for_the_rows_fetch_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_validate: RunValidate,
    kind: str, change: str | None,
) -> None:  # fmt: skip
    """Rows changed after fetch keep fetch's metadata, not its evidence: converted to deg C they
    would have made a first champion as `publisher`/`generated` data (adversarial review)."""
    dataset = fetched_from(kind, tmp_path, monkeypatch)
    if change:
        edit_rows(dataset, change)

    code, _, err, report = run_validate(dataset)

    assert code == 0, err  # no thunder flags: validate cannot tell the units from the rows
    assert read_dataset(dataset)[1]["name"] == kind
    assert report["rows_as_fetched"] is (change is None)
    evidence = "unchecked" if change else SOURCE_EVIDENCE[kind]
    assert report["units_evidence"] == evidence
    validated = tmp_path / "validated.parquet"
    units, basis = validate.units_of([(read_part(validated).report, read_dataset(validated)[1])])
    assert units == evidence
    assert ("rows changed since fetch" in basis) is bool(change)


@pytest.mark.parametrize("change", [None, *ROW_EDITS])
def test_validating_again_keeps_the_evidence_the_first_validate_granted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_validate: RunValidate, change: str | None
) -> None:
    """Breaker (issue 10): rows converted to deg C were `unchecked` at the first validate and
    `generated` at a second one, whose input's `data_hash` is the validated rows' own."""
    dataset = fetched_from("synthetic", tmp_path, monkeypatch)
    if change:
        edit_rows(dataset, change)
    assert run_validate(dataset)[0] == 0
    again = tmp_path / "again.parquet"
    (tmp_path / "validated.parquet").rename(again)
    code, _, err, report = run_validate(again)
    assert code == 0, err
    assert report["units_evidence"] == ("unchecked" if change else "generated")
    assert report["rows_as_fetched"] is (change is None)


def test_validate_reads_its_input_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_validate: RunValidate
) -> None:
    """Rows, fetch's source and an earlier validate's report come from one read of the input (it
    was two: the whole file, then its footer again for the report)."""
    import pyarrow.parquet as pq

    dataset = fetched_from("synthetic", tmp_path, monkeypatch)
    assert run_validate(dataset)[0] == 0
    again = tmp_path / "again.parquet"
    (tmp_path / "validated.parquet").rename(again)
    reads: list[str] = []
    for name in ("read_table", "read_schema", "read_metadata", "ParquetFile"):
        original = getattr(pq, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(pq, name, counted)

    code, _, err, report = run_validate(again)

    assert code == 0, err
    assert reads == ["read_table"]
    assert report["units_evidence"] == "generated"  # the earlier report was read: its evidence


# Metadata values that are no UTF-8 JSON object. A JSON list describes nothing (`.get` on it was a
# traceback); UTF-16 JSON, which `json.loads` of bytes takes, is not what fetch or validate write,
# and train could not decode it as text (breaker, issue 10). The report in UTF-16 says
# `unchecked`: read, it would withhold the source's evidence.
NOT_UTF8_JSON_OBJECTS = {
    "JSON list": lambda source: b"[1, 2]",
    "UTF-16 JSON": lambda source: json.dumps(source).encode("utf-16"),
}


@pytest.mark.parametrize("key", ["dewpoint.source", "dewpoint.validation"])
@pytest.mark.parametrize("value", sorted(NOT_UTF8_JSON_OBJECTS))
def test_metadata_that_is_not_a_utf8_json_object_counts_as_none(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    run_validate: RunValidate,
    key: str,
    value: str,
) -> None:
    """A source or report that is not a UTF-8 JSON object: validate reads it as absent (as it
    reads text that is not JSON)."""
    dataset = fetched_from("synthetic", tmp_path, monkeypatch)
    table = pq.read_table(dataset)
    source = json.loads(table.schema.metadata[SOURCE_METADATA_KEY])
    written = source if key == "dewpoint.source" else {"units_evidence": "unchecked"}
    metadata = {**table.schema.metadata, key.encode(): NOT_UTF8_JSON_OBJECTS[value](written)}
    pq.write_table(table.replace_schema_metadata(metadata), dataset)

    code, _, err, report = run_validate(dataset)

    assert code == 0, err
    # No source: no evidence from it; no earlier report: the source's evidence is granted.
    assert report["units_evidence"] == ("unchecked" if key == "dewpoint.source" else "generated")
    if key == "dewpoint.validation":  # validate read past it; train refuses the file
        with pytest.raises(BadInput, match="validation metadata is not a UTF-8 JSON object"):
            read_part(dataset)


def test_rows_changed_after_fetch_keep_the_evidence_their_thunder_days_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_validate: RunValidate
) -> None:
    dataset = fetched_from("gsod", tmp_path, monkeypatch, thunder=True)
    edit_rows(dataset, "one temp edited")
    code, _, err, report = run_validate(dataset)
    assert code == 0, err
    assert report["units_evidence"] == "thunder"
    assert report["rows_as_fetched"] is None  # thunder judged every station: nothing to hash
