"""Validate stage: schema and physical-range checks on the fetched dataset, drop unusable rows.

Policy: rows with a missing temp or dewp are dropped and counted. Every other rule is a hard
rule (any violating row fails the step), except `dewp_not_above_temp`: a daily mean dew point
can exceed the daily mean temperature slightly (the two means come from different hourly
observations), so rows with dewp > temp + tolerance are allowed up to
MAX_INCONSISTENT_FRACTION of the rows and removed; more than that fails the step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from steps.cli import StepError, add_outputs_dir, env_default, run, write_outputs
from steps.dataset import (
    CanonicalHasher,
    conform,
    data_hash,
    duplicate_keys,
    is_canonical,
    read_dataset,
    write_dataset_pieces,
)
from steps.gsod import FRSHTT_PATTERN, MISSING

TEMP_RANGE_F = (-130.0, 140.0)  # beyond the world records (-128.6 F, 134.1 F)
DEWP_RANGE_F = (-150.0, 100.0)  # Antarctic winter dew points reach about -125 F; record high 95 F
DEFAULT_DEWP_TOLERANCE_F = 2.0
MAX_INCONSISTENT_FRACTION = 0.001
DEFAULT_MIN_ROWS = 100
FILTER_SLICE_ROWS = 1 << 20  # rows filtered and written at a time (one Parquet row group)
# GSOD "missing" values that must not survive fetch (9999.9 for temp/dewp; 999.9 would mean a
# column mix-up). 99.99 (PRCP) is left out: it is a possible temperature in a user's table.
SENTINELS = sorted({MISSING["TEMP"], MISSING["WDSP"]})


@dataclass(frozen=True)
class ValidationPolicy:
    """What validate enforces; every field is a flag of the stage."""

    min_rows: int = DEFAULT_MIN_ROWS
    rain_only: bool = False
    dewp_tolerance: float = DEFAULT_DEWP_TOLERANCE_F


@dataclass
class Rule:
    """One check: how many rows broke it and how many may (0 for hard rules)."""

    name: str
    description: str
    violations: int
    allowed: int = 0

    @property
    def passed(self) -> bool:
        """Whether the violations stay within what the rule allows."""
        return self.violations <= self.allowed


def validate_table(table: pa.Table, policy: ValidationPolicy) -> tuple[pa.Table, dict[str, Any]]:
    """Check `table` against the rules; return (rows kept, report).

    The report lists every rule with its violation count and `passed`. The caller decides what a
    failed report means (the CLI fails the step); the returned table is only meaningful then.
    """
    table, keep, report = check_table(table, policy)
    return table.filter(keep), report


def check_table(
    table: pa.Table, policy: ValidationPolicy
) -> tuple[pa.Table, pa.ChunkedArray, dict[str, Any]]:
    """`validate_table` without the filter: (table in SCHEMA, mask of the rows kept, report)."""
    table = conform(table)
    rows_in = table.num_rows
    temp, dewp = table.column("temp"), table.column("dewp")
    frshtt, station = table.column("frshtt"), table.column("station")
    # Masks over all rows, one filter at the end: no intermediate copies of a 4M-row table.
    missing = pc.or_(pc.is_null(temp), pc.is_null(dewp))
    selected = pc.invert(missing)
    dropped_missing = _count(missing)
    filtered_not_rain = 0
    if policy.rain_only:
        # The prototype's filter: FRSHTT's 2nd character is the rain/drizzle flag.
        rain = pc.fill_null(pc.equal(pc.utf8_slice_codeunits(frshtt, 1, 2), "1"), False)
        filtered_not_rain = _count(selected) - _count(pc.and_(selected, rain))
        selected = pc.and_(selected, rain)
    rows_selected = _count(selected)

    def among_selected(mask: pa.ChunkedArray) -> int:
        return _count(pc.and_(selected, mask))

    lo_t, hi_t = TEMP_RANGE_F
    lo_d, hi_d = DEWP_RANGE_F
    inconsistent = pc.fill_null(pc.greater(dewp, pc.add(temp, policy.dewp_tolerance)), False)
    bad_flags = pc.invert(pc.fill_null(pc.match_substring_regex(frshtt, FRSHTT_PATTERN), True))
    tolerated = Rule(
        "dewp_not_above_temp",
        f"dewp <= temp + {policy.dewp_tolerance:g} F (at most "
        f"{MAX_INCONSISTENT_FRACTION:.1%} of rows, which are removed)",
        among_selected(inconsistent),
        math.floor(MAX_INCONSISTENT_FRACTION * rows_selected),
    )
    rules = [
        Rule("no_sentinels", f"no GSOD missing-value sentinel ({', '.join(map(str, SENTINELS))}) "
             "left in temp/dewp", _count(pc.or_(_is_sentinel(temp), _is_sentinel(dewp)))),
        Rule("finite_values", "temp and dewp are not NaN or infinite",
             _count(pc.or_(_not_finite(temp), _not_finite(dewp)))),
        Rule("temp_range", f"temp within [{lo_t:g}, {hi_t:g}] F",
             among_selected(_outside(temp, lo_t, hi_t))),
        Rule("dewp_range", f"dewp within [{lo_d:g}, {hi_d:g}] F",
             among_selected(_outside(dewp, lo_d, hi_d))),
        tolerated,
        Rule("frshtt_format", "frshtt is null or 6 characters 0/1", among_selected(bad_flags)),
        Rule("station_present", "station id is not empty",
             among_selected(pc.equal(station, ""))),
        Rule("unique_station_day", "one row per station and date", duplicate_keys(table)),
    ]  # fmt: skip
    removed_inconsistent = 0
    if tolerated.passed and tolerated.violations:
        removed_inconsistent = tolerated.violations
        selected = pc.and_(selected, pc.invert(inconsistent))
    rows_out = _count(selected)
    rules.append(
        Rule("min_rows", f"at least {policy.min_rows} rows left after dropping and filtering",
             max(0, policy.min_rows - rows_out))
    )  # fmt: skip

    report = {
        "passed": all(rule.passed for rule in rules),
        "rows_in": rows_in,
        "rows_out": rows_out,
        "dropped_missing_temp_or_dewp": dropped_missing,
        "removed_dewp_above_temp": removed_inconsistent,
        "filtered_not_rain": filtered_not_rain,
        "policy": {**asdict(policy), "max_inconsistent_fraction": MAX_INCONSISTENT_FRACTION,
                   "temp_range_f": list(TEMP_RANGE_F), "dewp_range_f": list(DEWP_RANGE_F)},
        "rules": [{**asdict(rule), "passed": rule.passed} for rule in rules],
    }  # fmt: skip
    return table, selected, report


def failure_message(report: dict[str, Any]) -> str:
    """One line naming every failed rule and how many rows broke it."""
    failed = [
        f"{r['name']} ({r['description']}): "
        + (f"{r['violations']} rows short" if r["name"] == "min_rows" else
           f"{r['violations']} rows" + (f", {r['allowed']} allowed" if r["allowed"] else ""))
        for r in report["rules"]
        if not r["passed"]
    ]  # fmt: skip
    return (
        f"validation failed ({report['rows_in']} rows in, {report['rows_out']} left): "
        + "; ".join(failed)
    )


def _count(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(pc.fill_null(mask, False).cast(pa.int64())).as_py() or 0)


def _is_sentinel(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.is_in(column, pa.array(SENTINELS, pa.float64()))


def _not_finite(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.invert(pc.is_finite(column))


def _outside(column: pa.ChunkedArray, low: float, high: float) -> pa.ChunkedArray:
    return pc.or_(pc.less(column, low), pc.greater(column, high))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def validate_file(
    input_path: Path, output: Path, report_path: Path, policy: ValidationPolicy
) -> dict[str, object]:
    """Validate the dataset at `input_path`; write the report always, the dataset only if valid.

    Returns the output parameters; raises StepError listing every failed rule.
    """
    table, source = read_dataset(input_path)
    table, keep, report = check_table(table, policy)
    report["input"] = str(input_path)

    # The kept rows are filtered, hashed and written a slice at a time: the input table is the
    # only full copy of the data in memory (a filtered copy would double the peak at 16 years).
    def kept_slices() -> Iterator[pa.Table]:
        for start in range(0, table.num_rows, FILTER_SLICE_ROWS):
            stop = min(start + FILTER_SLICE_ROWS, table.num_rows)
            yield table.slice(start, stop - start).filter(keep.slice(start, stop - start))

    if report["passed"]:
        if is_canonical(table):  # fetch's output is: the kept rows are then canonical too
            hasher = CanonicalHasher()
            for piece in kept_slices():
                hasher.update(piece)
            report["data_hash"] = hasher.hexdigest()
        else:
            report["data_hash"] = data_hash(table.filter(keep))
    _write_json(report_path, report)
    if not report["passed"]:
        raise StepError(failure_message(report))
    # Keep the source description; rows and hash must describe this file, not fetch's.
    metadata = {
        **source,
        "fetched_rows": source.get("rows"),
        "fetched_data_hash": source.get("data_hash"),
        "rows": report["rows_out"],
        "data_hash": report["data_hash"],
    }
    write_dataset_pieces(kept_slices(), output, metadata)
    dropped = report["dropped_missing_temp_or_dewp"] + report["removed_dewp_above_temp"]
    return {"row-count": report["rows_out"], "dropped-rows": dropped}


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise StepError(f"--rain-only must be true or false, got {text!r}")
    return value in ("true", "1", "yes")


def build_parser() -> argparse.ArgumentParser:
    """The validate CLI (flags and env fallbacks as in docs/steps.md)."""
    parser = argparse.ArgumentParser(prog="python -m steps validate", description=__doc__)
    parser.add_argument("--input", type=Path, required=True, help="dataset from fetch (Parquet)")
    parser.add_argument("--output", type=Path, required=True, help="validated dataset to write")
    parser.add_argument("--report", type=Path, required=True, help="JSON report to write")
    parser.add_argument(
        "--min-rows",
        default=env_default("VALIDATE_MIN_ROWS", str(DEFAULT_MIN_ROWS)),
        help=f"fail with fewer rows left (env VALIDATE_MIN_ROWS, default {DEFAULT_MIN_ROWS})",
    )
    parser.add_argument(
        "--rain-only",
        default=env_default("VALIDATE_RAIN_ONLY", "false"),
        help="true: keep rain/drizzle days only, FRSHTT 2nd char 1 (env VALIDATE_RAIN_ONLY)",
    )
    parser.add_argument(
        "--dewp-tolerance",
        default=env_default("VALIDATE_DEWP_TOLERANCE", str(DEFAULT_DEWP_TOLERANCE_F)),
        help="deg F dewp may exceed temp (env VALIDATE_DEWP_TOLERANCE, default 2.0)",
    )
    add_outputs_dir(parser)
    return parser  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: `python -m steps validate --input ... --output ... --report ...`."""
    args = build_parser().parse_args(argv)

    def body() -> None:
        try:
            min_rows, tolerance = int(args.min_rows), float(args.dewp_tolerance)
        except ValueError:
            raise StepError(
                f"--min-rows must be an integer and --dewp-tolerance a number, got "
                f"{args.min_rows!r} and {args.dewp_tolerance!r}"
            ) from None
        if tolerance < 0 or min_rows < 1:
            raise StepError("--dewp-tolerance must be >= 0 and --min-rows >= 1")
        policy = ValidationPolicy(min_rows, _bool(args.rain_only), tolerance)
        outputs = validate_file(args.input, args.output, args.report, policy)
        write_outputs(args.outputs_dir, outputs)

    return run(body)
