"""The `synthetic-rows` door is exact: the pipeline's parameters are refused up front exactly when
a year's validate would fail on the rows fetch generates (issue 11). It had refused only fewer
rows than validate's --min-rows: 100 rows passed every door, then validate kept 95 (21 with
rain-only) and failed after fetch had run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
