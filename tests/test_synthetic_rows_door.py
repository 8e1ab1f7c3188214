"""The `synthetic-rows` door is exact: the pipeline's parameters are refused up front exactly when
a year's validate would fail on the rows fetch generates (issue 11). It had refused only fewer
rows than validate's --min-rows: 100 rows passed every door, then validate kept 95 (21 with
rain-only) and failed after fetch had run. From `rows_sure_to_pass` on it generates nothing: the
bound it relies on covers every rule of validate, `unit_jumps` included (with rain-only 2070 rows
of 1932 passed the door, and validate failed one station on two day-to-day jumps: the generator's
daily noise was unbounded)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from steps.cli import BadInput
from steps.sources import SourceRequest, synthetic
from steps.stages import VALIDATE, check_pipeline_parameters

MIN_ROWS = VALIDATE.flag("min-rows").default
ROOT = Path(__file__).resolve().parents[1]


def _door(rows: int, rain_only: bool, years: str) -> str | None:
    """The door's verdict: None (taken) or its error line."""
    values = {"source": "synthetic", "synthetic-rows": str(rows), "years": years,
              "rain-only": "true" if rain_only else "false"}  # fmt: skip
    try:
        check_pipeline_parameters(values)
    except BadInput as exc:
        return str(exc)
    return None


def _stages_pass(rows: int, rain_only: bool, year: str, tmp_path: Path) -> bool:
    """Whether the real fetch and validate stages (subprocesses, as the pipeline runs them)
    pass one year of `rows` synthetic rows."""
    data, out, report = (tmp_path / f"{rows}-{year}{n}" for n in (".parquet", "v.parquet", ".json"))
    steps = [sys.executable, "-m", "steps"]
    subprocess.run(
        [*steps, "fetch", "--source", "synthetic", "--rows", str(rows), "--years", year,
         "--output", str(data)],
        check=True, capture_output=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    validate = subprocess.run(
        [*steps, "validate", "--input", str(data), "--output", str(out), "--report", str(report),
         "--rain-only", "true" if rain_only else "false"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert validate.returncode in (0, 1), validate.stderr
    return validate.returncode == 0


@pytest.mark.parametrize("rain_only", [False, True])
@pytest.mark.parametrize("year", ["2023", "2024"])  # 365 and 366 days: stations differ
def test_the_door_takes_exactly_the_rows_validate_passes(rain_only, year, tmp_path):
    sure = synthetic.rows_sure_to_pass(MIN_ROWS, rain_only)
    verdicts = {rows: _door(rows, rain_only, year) for rows in range(MIN_ROWS - 1, sure + 1)}
    taken = [rows for rows, refused in verdicts.items() if refused is None]
    refused = [rows for rows, why in verdicts.items() if why is not None]
    smallest, largest_refused = taken[0], refused[-1]
    assert smallest > MIN_ROWS  # 100 rows was the bug: missing values leave fewer
    assert f"year {year}'s validate would fail" in verdicts[largest_refused]
    assert "min_rows" in verdicts[largest_refused]
    assert _stages_pass(smallest, rain_only, year, tmp_path)
    assert not _stages_pass(largest_refused, rain_only, year, tmp_path)
    assert largest_refused < sure and verdicts[sure] is None


def test_fewer_rows_than_min_rows_are_refused_naming_the_rule():
    why = _door(MIN_ROWS - 1, False, "2023")
    assert why is not None and f"needs {MIN_ROWS} (--min-rows)" in why


def test_from_the_sure_count_on_nothing_is_generated(monkeypatch):
    """A million rows are not generated at the door (`SURE_MARGIN` bounds the chance)."""

    def no(*_: object) -> None:
        raise AssertionError("generated at the door")

    monkeypatch.setattr(synthetic, "fetch", no)
    for rain_only in (False, True):
        assert _door(synthetic.rows_sure_to_pass(MIN_ROWS, rain_only), rain_only, "2023") is None
        assert _door(1_000_000, rain_only, "2023") is None


@pytest.mark.parametrize("rain_only", [False, True])
def test_the_kept_fraction_is_what_validate_keeps(rain_only):
    """The bound's p: 100,000 generated rows keep it within 4 standard errors."""
    from steps.validate import ValidationPolicy, validate_table

    rows = 100_000
    table = synthetic.fetch(SourceRequest(years=(2023,), rows=rows, seed=7)).table
    kept, _ = validate_table(table, ValidationPolicy(1, rain_only))
    p = synthetic.kept_fraction(rain_only)
    assert abs(kept.num_rows / rows - p) < 4 * (p * (1 - p) / rows) ** 0.5


def _validate_passes(rows: int, rain_only: bool, year: int) -> bool:
    """Validate's answer (in-process) on one year of the rows fetch generates with its seed."""
    from steps.stages import FETCH
    from steps.validate import ValidationPolicy, validate_table

    request = SourceRequest(years=(year,), rows=rows, seed=FETCH.flag("seed").default)
    policy = ValidationPolicy(MIN_ROWS, rain_only)
    _, report = validate_table(synthetic.fetch(request).table, policy)
    return bool(report["passed"])


def test_the_breakers_year_passes_validate_as_the_door_said():
    """synthetic-rows=2070, rain-only, years=1932: taken by the door, refused by validate's
    `unit_jumps` (2 of a station's 12 consecutive-day pairs over 25 F, 1 allowed)."""
    assert _door(2070, True, "1932") is None
    assert _validate_passes(2070, True, 1932)


_SURE = {rain_only: synthetic.rows_sure_to_pass(MIN_ROWS, rain_only) for rain_only in (False, True)}


@pytest.mark.parametrize("rain_only", [False, True])
@pytest.mark.parametrize("year", [1929, 1932, 1951, 1976, 2000, 2020, 2023, 2024])
@pytest.mark.parametrize("rows_from_sure", [-40, -1, 0, 9, 500, 2999])
def test_the_doors_answer_is_validates_answer(rain_only, year, rows_from_sure):
    """Property sweep: around and above the count from which the door generates nothing, it
    takes a year's rows exactly when validate passes them."""
    rows = _SURE[rain_only] + rows_from_sure
    taken = _door(rows, rain_only, str(year)) is None
    assert taken == _validate_passes(rows, rain_only, year)


def test_no_two_generated_days_differ_by_a_unit_jump():
    """`unit_jumps` can count no generated pair: the bound is under UNIT_JUMP_F, and 200,000 rows
    (one station runs past several year ends) stay within it."""
    from steps.gsod_format import parse_files
    from steps.validate import UNIT_JUMP_F

    assert synthetic.max_daily_change() <= 24.6 < UNIT_JUMP_F  # docs/steps.md quotes 24.6 F
    assert "at most 24.6 F" in (ROOT / "docs/steps.md").read_text().replace("\n", " ")
    for year in (None, 1932, 2024):
        table = parse_files(synthetic.generate_files(200_000, 3, year=year))
        assert table.num_rows == 200_000
        station = np.asarray(table.column("station").to_pylist())
        temp = table.column("temp").to_numpy(zero_copy_only=False)
        days = table.column("date").cast("int32").to_numpy()
        pair = (station[1:] == station[:-1]) & (np.diff(days) == 1) & ~np.isnan(np.diff(temp))
        assert pair.sum() > 190_000
        assert np.abs(np.diff(temp))[pair].max() <= synthetic.max_daily_change()


def test_the_bound_covers_the_rules_that_hold_by_construction():
    """What the comment above `SURE_MARGIN` says holds whatever the draw: TEMP and DEWP inside
    validate's ranges, no thunder flag (no `thunder_above_freezing` judgement)."""
    from steps.climate import DEWP_RANGE_F, TEMP_RANGE_F, dewpoint_f
    from steps.gsod_format import parse_files
    from steps.validate import THUNDER_FLAG

    low = synthetic.STATION_MEAN_F[0] - synthetic.STATION_SWING_F[1] - synthetic.DAILY_NOISE_MAX_F
    high = synthetic.STATION_MEAN_F[1] + synthetic.STATION_SWING_F[1] + synthetic.DAILY_NOISE_MAX_F
    assert (low, high) == (-7.0, 97.0)  # the comment's figures
    assert TEMP_RANGE_F[0] <= synthetic.TEMP_MIN_F <= low and high <= synthetic.TEMP_MAX_F
    assert TEMP_RANGE_F[1] >= synthetic.TEMP_MAX_F and DEWP_RANGE_F[1] >= high
    assert dewpoint_f(low, synthetic.RH_MIN) > DEWP_RANGE_F[0]
    table = parse_files(synthetic.generate_files(50_000, 5, year=2023))
    temp = table.column("temp").to_numpy(zero_copy_only=False)
    assert low <= np.nanmin(temp) and np.nanmax(temp) <= high
    flags = set(table.column("frshtt").to_pylist())
    assert {f[THUNDER_FLAG] for f in flags} == {"0"}


@pytest.mark.parametrize("rain_only", [False, True])
def test_the_chance_the_bound_leaves_is_the_one_the_docs_quote(rain_only):
    """README and docs/steps.md quote 415 / 2,061 rows, a chance below 1e-14 a year and the
    share rain-only keeps."""
    assert _SURE == {False: 415, True: 2061}
    assert synthetic.failure_chance(MIN_ROWS, rain_only) < 1e-14
    for path in ("README.md", "docs/steps.md"):
        text = (ROOT / path).read_text()
        assert "below 1e-14" in text and "1e-37" not in text
    assert "415 rows, 2,061 with `rain-only`" in (ROOT / "README.md").read_text()
    assert round(100 * synthetic.kept_fraction(True)) == 19  # "about 19%" in both
    for path in ("README.md", "docs/steps.md"):
        assert "about 19% of the rows" in (ROOT / path).read_text().replace("\n", " ")


def test_the_spread_bound_is_small_only_from_enough_kept_rows():
    """`SPREAD_KEPT_ROWS` is why the sure count never falls below 4 x 100 / p, whatever the
    min-rows: 4 kept rows could well have a spread under validate's 1 F."""
    from steps.validate import MIN_SPREAD_F

    assert synthetic.spread_failure_chance(4, MIN_SPREAD_F) == 1.0
    assert synthetic.rows_sure_to_pass(1, True) == _SURE[True]
    assert synthetic.failure_chance(1, True) == synthetic.failure_chance(MIN_ROWS, True)
