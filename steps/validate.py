"""Validate stage: schema and physical-range checks on the fetched dataset, drop unusable rows,
then judge the rows kept as a whole (spread, plausibility of the units).

Policy: rows with a missing temp or dewp are dropped and counted. Every other row rule is a hard
rule (any violating row fails the step), except `dewp_not_above_temp`: a daily mean dew point
can exceed the daily mean temperature slightly (the two means come from different hourly
observations), so rows with dewp > temp + tolerance are allowed up to
MAX_INCONSISTENT_FRACTION of the rows and removed; more than that fails the step.

Dataset rules (the kept rows together; physical sources in steps/climate.py):
- `temp_spread`, `dewp_spread`: each column's standard deviation is at least MIN_SPREAD_F, ten
  times GSOD's reporting resolution (0.1 F). A regression slope is undefined without spread in
  temp (every row `temp=50` fits any line with RMSE 0) and meaningless without spread in dewp; no
  station's daily means stay that still across a season.
- `thunder_above_freezing`: units. Thunderstorms need a warm, moist, unstable surface layer;
  thunder with snow at sub-freezing surface temperatures ("thundersnow") is rare (Market, Halcomb
  and Ebert 2002, "A climatology of thundersnow events over the contiguous United States", Wea.
  Forecasting 17, 1290-1295). In data that is really in deg C, summer thunder days read as daily
  means of 15-35 "F". So when at least MIN_THUNDER_DAYS kept rows carry the thunder flag (FRSHTT's
  5th character), at most MAX_COLD_THUNDER_FRACTION of them may be below 32 F, over all stations
  and at each station with MIN_THUNDER_DAYS (one station in deg C among many). Checked on 11 real
  NCEI station-years (2023-2024, tropics to Antarctica): no thunder day below 40 F; the same
  files converted to deg C: every thunder day below 32. Without flags (a user's table) units are
  judged by the gate instead (steps/promote.py: the champion's reference holdout; with no
  champion, the evidence below).
- `unit_jumps`: units, row by row. GSOD gives TEMP and DEWP in deg F to tenths (NCEI GSOD readme,
  https://www.ncei.noaa.gov/data/global-summary-of-the-day/doc/readme.txt). A row converted to
  deg C, (x - 32) / 1.8, reads (0.8 * x + 32) / 1.8 F lower than it was: 35.6 F lower at 40 F,
  53.3 F at 80 F (0 at -40, where the scales meet). So a station whose rows mix the two units,
  in any proportion, changes its daily mean temp between consecutive days by more than
  UNIT_JUMP_F far more often than weather does: with a fraction p of rows converted at random,
  2p(1 - p) of day pairs cross units (9.5 % at p = 5 % or 95 %). Weather's own bound was measured
  on 12 real NCEI station-years (2023-2024; Chicago, New York, Beijing, Norway, Scotland, Alaska,
  Antarctica, Tanzania, ...): 5 of 3,724 consecutive-day changes of daily mean temp exceed 25 F
  (at most 2 of one station's 303 pairs), 1 exceeds 30 F (31.5 F, an Antarctic winter); the
  99.9th percentile is 26.5 F. A station fails when more than MAX_UNIT_JUMP_FRACTION of its
  consecutive-day pairs (plus one, so that a single front never fails a short extract) change by
  more than UNIT_JUMP_F (25 F): a converted row jumps by more than that wherever it was above
  16.2 F. Not seen by this rule: rows converted below about 16 F (a polar winter), and units
  switched once per station (a whole station, or every row after one date, in deg C): with
  FRSHTT flags `thunder_above_freezing` judges those station by station, without them only the
  gate does (steps/promote.py; with no champion it asks for the evidence below).

How the units are known (`units_evidence`; train tags its run `data.units` with the weakest over
its datasets, and promote makes no first champion of a chain on `unchecked` data: no reference
judges it, and temp and dewp alone cannot tell a deg C summer from a cold deg F station):
- `thunder`: the report's `units` counts the kept stations and those with MIN_THUNDER_DAYS
  thunder days; when every station has them, `thunder_above_freezing` judged each one.
- `publisher`: fetch downloaded the rows itself from NOAA at its default locations, which publish
  TEMP and DEWP in deg F (NCEI GSOD readme, above): the gsod source at DEFAULT_BASE_URL (not
  local `--path` files, not another `--base-url`), or the bigquery source (it reads only NOAA's
  public `noaa_gsod` tables, steps/sources/bigquery.py TABLE_PREFIX, the same GSOD values). A
  user's table, local files or a mirror can hold converted rows.
- `generated`: the synthetic source, which writes deg F by construction.
- `unchecked`: none of these (a missing or unreadable report or source counts as none).
The source is read from the dataset's `dewpoint.source` metadata, written by fetch, and counts only
for the rows fetch wrote: validate hashes the rows it reads (steps/dataset.py `data_hash`) and
takes `publisher` or `generated` only when they hash to fetch's recorded `data_hash` (report
`rows_as_fetched`). Rows changed after fetch (converted to deg C, one row edited) keep the
metadata but not its evidence: they have what the rows themselves show, `thunder` or `unchecked`.
Validate records the result in its report (`units_evidence`); train checks that the rows it fits
hash to the report's `validated_data_hash` before it uses the report (steps/training_data.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from steps.cli import BadInput, StepError, run
from steps.climate import DEWP_RANGE_F, FREEZING_F, REPORTING_RESOLUTION_F, TEMP_RANGE_F
from steps.dataset import (
    SOURCE_DIGEST_KEY,
    CanonicalHasher,
    canonical,
    conform,
    data_hash,
    duplicate_keys,
    hash_canonical,
    in_key_order,
    is_canonical,
    read_stored_dataset,
    source_metadata_bytes,
    source_metadata_digest,
    write_dataset_pieces,
)
from steps.files import write_text_atomically
from steps.gsod_format import FRSHTT_PATTERN, MISSING, is_sentinel
from steps.sources import DEFAULT_BASE_URL
from steps.stages import VALIDATE

DEFAULT_DEWP_TOLERANCE_F: float = VALIDATE.flag("dewp-tolerance").default
MAX_INCONSISTENT_FRACTION = 0.001
DEFAULT_MIN_ROWS: int = VALIDATE.flag("min-rows").default
MIN_SPREAD_F = 10 * REPORTING_RESOLUTION_F  # standard deviation of temp and of dewp, deg F
MIN_THUNDER_DAYS = 5
MAX_COLD_THUNDER_FRACTION = 0.2
UNIT_JUMP_F = 25.0  # a change of daily mean temp between consecutive days weather rarely makes
MAX_UNIT_JUMP_FRACTION = 0.02  # of a station's consecutive-day pairs (module docstring)
THUNDER_FLAG = 4  # FRSHTT: Fog, Rain/drizzle, Snow/ice pellets, Hail, Thunder, Tornado/funnel
FILTER_SLICE_ROWS = 1 << 20  # rows filtered and written at a time (one Parquet row group)
# GSOD "missing" values that must not survive fetch (9999.9 for temp/dewp; 999.9 would mean a
# column mix-up). 99.99 (PRCP) is left out: it is a possible temperature in a user's table.
SENTINELS = sorted({MISSING["TEMP"], MISSING["WDSP"]})
# How the units of a dataset are known (module docstring), strongest first: over several datasets
# the weakest holds. Every one but the last is evidence enough for a first champion.
UNITS_EVIDENCE = ("thunder", "publisher", "generated", "unchecked")
UNCHECKED = UNITS_EVIDENCE[-1]
UNITS_COUNTS = ("stations", "judged_by_thunder")  # the report's `units` (`dataset_rules`)


@dataclass(frozen=True)
class ValidationPolicy:
    """What validate enforces; every field is a flag of the stage."""

    min_rows: int = DEFAULT_MIN_ROWS
    rain_only: bool = False
    dewp_tolerance: float = DEFAULT_DEWP_TOLERANCE_F

    def __post_init__(self) -> None:
        # The CLI refuses these already; a caller in Python must not switch a rule off either
        # (a NaN tolerance makes every dewp > temp comparison false).
        if not (math.isfinite(self.dewp_tolerance) and self.dewp_tolerance >= 0):
            raise BadInput(
                f"dewp tolerance must be a finite number >= 0, got {self.dewp_tolerance}"
            )
        if self.min_rows < 1:
            raise BadInput(f"min rows must be >= 1, got {self.min_rows}")


@dataclass
class Rule:
    """One check: how many rows broke it and how many may (0 for hard rules)."""

    name: str
    description: str
    violations: int
    allowed: int = 0
    measured: str = ""  # dataset rules: what was measured, for the report and the error line

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
    judged_rules, units = dataset_rules(station, temp, dewp, frshtt, selected)
    rules.extend(judged_rules)
    rules.append(unit_jumps(station, table.column("date"), temp, selected))

    report = {
        "passed": all(rule.passed for rule in rules),
        "rows_in": rows_in,
        "rows_out": rows_out,
        "dropped_missing_temp_or_dewp": dropped_missing,
        "removed_dewp_above_temp": removed_inconsistent,
        "filtered_not_rain": filtered_not_rain,
        "policy": {**asdict(policy), "max_inconsistent_fraction": MAX_INCONSISTENT_FRACTION,
                   "temp_range_f": list(TEMP_RANGE_F), "dewp_range_f": list(DEWP_RANGE_F),
                   "min_spread_f": MIN_SPREAD_F, "min_thunder_days": MIN_THUNDER_DAYS,
                   "max_cold_thunder_fraction": MAX_COLD_THUNDER_FRACTION,
                   "unit_jump_f": UNIT_JUMP_F, "max_unit_jump_fraction": MAX_UNIT_JUMP_FRACTION},
        "rules": [{**asdict(rule), "passed": rule.passed} for rule in rules],
        "units": units,
    }  # fmt: skip
    return table, selected, report


def dataset_rules(
    station: pa.ChunkedArray,
    temp: pa.ChunkedArray,
    dewp: pa.ChunkedArray,
    frshtt: pa.ChunkedArray,
    kept: pa.ChunkedArray,
) -> tuple[list[Rule], dict[str, int]]:
    """The rules that judge the kept rows together (module docstring): spread and units; and
    how units were judged, the report's `units`: `stations` (kept) and `judged_by_thunder` (those
    with MIN_THUNDER_DAYS thunder days, each judged by `thunder_above_freezing`)."""
    rules = []
    for name, column in (("temp", temp), ("dewp", dewp)):
        spread = pc.stddev(pc.filter(column, kept)).as_py()
        spread = 0.0 if spread is None or math.isnan(spread) else spread
        rules.append(
            Rule(f"{name}_spread", f"standard deviation of {name} >= {MIN_SPREAD_F:g} F over the "
                 "kept rows", int(spread < MIN_SPREAD_F), measured=f"{spread:.3g} F")
        )  # fmt: skip
    flag = pc.utf8_slice_codeunits(frshtt, THUNDER_FLAG, THUNDER_FLAG + 1)
    thunder = pc.and_(kept, pc.fill_null(pc.equal(flag, "1"), False))
    days = _count(thunder)
    cold = _count(pc.and_(thunder, pc.fill_null(pc.less(temp, FREEZING_F), False)))
    judged = days >= MIN_THUNDER_DAYS
    description = (
        f"at most {MAX_COLD_THUNDER_FRACTION:.0%} of thunder days (FRSHTT 5th flag, judged from "
        f"{MIN_THUNDER_DAYS} days, over all stations and at each) below {FREEZING_F:g} F; more "
        "means the data is not in deg F (deg C?)"
    )
    measured = f"{cold} of {days} thunder days below {FREEZING_F:g} F"
    allowed = math.floor(MAX_COLD_THUNDER_FRACTION * days) if judged else days
    station_days, station_cold, names = _per_station(station, thunder, temp)
    stations = int(pc.count_distinct(pc.filter(station, kept)).as_py())
    judged_stations = int((station_days >= MIN_THUNDER_DAYS).sum())
    units = dict(zip(UNITS_COUNTS, (stations, judged_stations), strict=True))
    if cold <= allowed:  # the pool passes: judge each station too (one in deg C among many)
        station_allowed = np.floor(MAX_COLD_THUNDER_FRACTION * station_days).astype(np.int64)
        failing = (station_days >= MIN_THUNDER_DAYS) & (station_cold > station_allowed)
        if failing.any():
            worst = int(np.argmax(np.where(failing, station_cold - station_allowed, -1)))
            cold, allowed = int(station_cold[worst]), int(station_allowed[worst])
            measured = (
                f"station {names[worst]}: {cold} of {station_days[worst]} thunder days below "
                f"{FREEZING_F:g} F ({measured} over all stations)"
            )
    rules.append(Rule("thunder_above_freezing", description, cold, allowed, measured=measured))
    return rules, units


def _per_station(
    station: pa.ChunkedArray, thunder: pa.ChunkedArray, temp: pa.ChunkedArray
) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """(thunder days, of which below freezing, station ids), per station with thunder days."""
    codes = pc.dictionary_encode(pc.filter(station, thunder).combine_chunks())
    index = codes.indices.to_numpy(zero_copy_only=False)
    cold = pc.filter(pc.fill_null(pc.less(temp, FREEZING_F), False), thunder)
    cold = cold.combine_chunks().to_numpy(zero_copy_only=False).astype(bool)
    count = len(codes.dictionary)
    days = np.bincount(index, minlength=count)
    return days, np.bincount(index[cold], minlength=count), codes.dictionary


def unit_jumps(
    station: pa.ChunkedArray, date: pa.ChunkedArray, temp: pa.ChunkedArray, kept: pa.ChunkedArray
) -> Rule:
    """`unit_jumps` (module docstring): the stations whose kept rows change temp by more than
    UNIT_JUMP_F between consecutive days more often than MAX_UNIT_JUMP_FRACTION of their pairs
    (+ 1) allows. `violations` counts those stations; `measured` names the worst."""
    rows = pa.table({"station": station, "date": date, "temp": temp}).filter(kept)
    if not in_key_order(rows):
        rows = rows.take(pc.sort_indices(rows, sort_keys=[("station", "ascending"),
                                                           ("date", "ascending")]))  # fmt: skip
    codes = pc.dictionary_encode(rows.column("station").combine_chunks())
    station_code = codes.indices.to_numpy(zero_copy_only=False)
    days = rows.column("date").combine_chunks().cast(pa.int32()).to_numpy(zero_copy_only=False)
    temps = rows.column("temp").combine_chunks().to_numpy(zero_copy_only=False)
    del rows
    pair = (station_code[1:] == station_code[:-1]) & (np.diff(days) == 1)
    jump = pair & (np.abs(np.diff(temps)) > UNIT_JUMP_F)
    stations = len(codes.dictionary)
    pairs = np.bincount(station_code[1:][pair], minlength=stations)
    jumps = np.bincount(station_code[1:][jump], minlength=stations)
    allowed = np.floor(MAX_UNIT_JUMP_FRACTION * pairs).astype(np.int64) + 1
    failing = jumps > allowed
    description = (
        f"per station, at most {MAX_UNIT_JUMP_FRACTION:.0%} (+1) of consecutive-day changes of "
        f"temp above {UNIT_JUMP_F:g} F; more means rows in mixed units (deg C among deg F?)"
    )
    if not failing.any():
        return Rule("unit_jumps", description, 0,
                    measured=f"{int(jumps.sum())} of {int(pairs.sum())} day pairs")  # fmt: skip
    worst = int(np.argmax(np.where(failing, jumps - allowed, -1)))
    return Rule(
        "unit_jumps", description, int(failing.sum()),
        measured=f"{int(failing.sum())} station(s); station {codes.dictionary[worst]}: "
        f"{jumps[worst]} of {pairs[worst]} day-to-day changes above {UNIT_JUMP_F:g} F, "
        f"{allowed[worst]} allowed",
    )  # fmt: skip


def units_evidence(report: Mapping[str, Any] | None, source: Mapping[str, Any] | None) -> str:
    """How the units of one validated dataset are known (module docstring): one of
    UNITS_EVIDENCE, from validate's `report` and fetch's `source` metadata (None: absent, or
    not counted because the rows are not the ones fetch wrote)."""
    stations, judged = _units_counts(report)
    if stations > 0 and judged == stations:
        return "thunder"
    return source_evidence(source) or UNCHECKED


def source_evidence(source: Mapping[str, Any] | None) -> str | None:
    """`publisher` or `generated` when fetch's `source` metadata says who made the rows in deg F
    (module docstring), else None."""
    source = source or {}
    name, base_url = source.get("name"), source.get("base_url")
    downloaded = not source.get("path") and isinstance(base_url, str)
    if name == "bigquery" or (
        name == "gsod" and downloaded and base_url.rstrip("/") == DEFAULT_BASE_URL
    ):
        return "publisher"
    return "generated" if name == "synthetic" else None


def units_of(
    datasets: Iterable[tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]],
) -> tuple[str, str]:
    """(the weakest evidence over the (report, source) of each dataset, one line saying what it
    rests on: the stations judged by thunder, the sources). UNCHECKED for none.

    A dataset's evidence is its report's `units_evidence` (validate weighed the source against
    the rows it read); a report without one (a frame, an older report) counts thunder only."""
    evidence, judged, stations, names, changed = [], 0, 0, set(), False
    for report, source in datasets:
        recorded = (report or {}).get("units_evidence")
        if recorded not in UNITS_EVIDENCE:
            recorded = units_evidence(report, None)
        evidence.append(UNITS_EVIDENCE.index(recorded))
        counts = _units_counts(report)
        stations, judged = stations + counts[0], judged + counts[1]
        names.add(str((source or {}).get("name") or "unknown"))
        changed = changed or (report or {}).get("rows_as_fetched") is False
    line = (
        f"{judged} of {stations} stations had the {MIN_THUNDER_DAYS} FRSHTT thunder days "
        f"validate judges units by; source {', '.join(sorted(names)) or 'unknown'}"
    )
    if changed:
        line += " (rows changed since fetch: the source's own evidence not counted)"
    return UNITS_EVIDENCE[max(evidence, default=len(UNITS_EVIDENCE) - 1)], line


def rows_as_fetched(table: pa.Table, source: Mapping[str, Any]) -> bool:
    """Whether `table` (SCHEMA) holds the rows fetch wrote: its data hash (steps/dataset.py) is
    the `data_hash` fetch recorded in `source`."""
    recorded = source.get("data_hash")
    if not isinstance(recorded, str):
        return False
    return data_hash(table) == recorded


def _units_counts(report: Mapping[str, Any] | None) -> tuple[int, int]:
    """(stations, judged_by_thunder) of a report's `units`; (0, 0) when it has none readable."""
    units = (report or {}).get("units")
    counts = [units.get(k) if isinstance(units, Mapping) else 0 for k in UNITS_COUNTS]
    return (0, 0) if not all(type(c) is int for c in counts) else (counts[0], counts[1])


def failure_message(report: dict[str, Any]) -> str:
    """One line naming every failed rule and how many rows broke it (or what was measured)."""

    def broken(r: dict[str, Any]) -> str:
        if r.get("measured"):
            return r["measured"]
        if r["name"] == "min_rows":
            return f"{r['violations']} rows short"
        return f"{r['violations']} rows" + (f", {r['allowed']} allowed" if r["allowed"] else "")

    failed = [
        f"{r['name']} ({r['description']}): {broken(r)}" for r in report["rules"] if not r["passed"]
    ]
    return (
        f"validation failed ({report['rows_in']} rows in, {report['rows_out']} left): "
        + "; ".join(failed)
    )


def _count(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(pc.fill_null(mask, False).cast(pa.int64())).as_py() or 0)


def _is_sentinel(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Any GSOD sentinel, by the sources' own rule (rounded to one decimal, or its integer)."""
    found = pc.is_in(column, pa.array([], pa.float64()))
    for sentinel in SENTINELS:
        found = pc.or_(found, is_sentinel(column, sentinel))
    return found


def _not_finite(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.invert(pc.is_finite(column))


def _outside(column: pa.ChunkedArray, low: float, high: float) -> pa.ChunkedArray:
    return pc.or_(pc.less(column, low), pc.greater(column, high))


def validate_file(
    input_path: Path, output: Path, report_path: Path, policy: ValidationPolicy
) -> dict[str, object]:
    """Validate the dataset at `input_path`; write the report always, the dataset only if valid.

    Returns the output parameters; raises StepError listing every failed rule.
    """
    # One read of the input: its rows, fetch's source and (a file validate wrote) its report.
    stored = read_stored_dataset(input_path)
    table, source = stored.table, stored.source
    table, keep, report = check_table(table, policy)
    report["input"] = str(input_path)
    # Two hashes, named: fetch's `data-hash` of the dataset as fetched, and (when it passes) the
    # hash of the rows kept, which train fits on and logs as its dataset digest.
    report["fetched_data_hash"] = source.get("data_hash")
    # The source's evidence of units counts only for the rows fetch wrote (module docstring).
    # The input is hashed only when that evidence would decide: not when thunder judged every
    # station, nor when the source gives none (`rows_as_fetched` stays null then).
    # A file validate wrote carries the validated rows' hash as `data_hash`: validated again, it
    # keeps only the evidence its first validate granted (validating twice cleared a "rows
    # changed since fetch" verdict: adversarial review, issue 10).
    evidence = units_evidence(report, None)
    report["rows_as_fetched"] = None
    earlier = stored.report
    if evidence == UNCHECKED and source_evidence(source):
        granted = earlier is None or earlier.get("units_evidence") == source_evidence(source)
        report["rows_as_fetched"] = granted and rows_as_fetched(table, source)
        evidence = units_evidence(report, source if report["rows_as_fetched"] else None)
    report["units_evidence"] = evidence

    # The kept rows are filtered, hashed and written a slice at a time: the input table is the
    # only full copy of the data in memory (a filtered copy would double the peak at 16 years).
    def kept_slices() -> Iterator[pa.Table]:
        for start in range(0, table.num_rows, FILTER_SLICE_ROWS):
            stop = min(start + FILTER_SLICE_ROWS, table.num_rows)
            yield table.slice(start, stop - start).filter(keep.slice(start, stop - start))

    # Written in canonical order, so that train can hash the rows as it streams them.
    sorted_kept: pa.Table | None = None
    if report["passed"]:
        if is_canonical(table):  # fetch's output is: the kept rows are then canonical too
            hasher = CanonicalHasher()
            for piece in kept_slices():
                hasher.update(piece)
            report["validated_data_hash"] = hasher.hexdigest()
        else:
            sorted_kept = canonical(table.filter(keep))
            report["validated_data_hash"] = hash_canonical(sorted_kept)
    # Keep the source description; rows and hash must describe this file, not fetch's.
    metadata = {
        **source,
        "fetched_rows": source.get("rows"),
        "fetched_data_hash": source.get("data_hash"),
        "rows": report["rows_out"],
        "data_hash": report.get("validated_data_hash"),
    }
    if report["passed"]:  # train refuses source metadata other than these bytes (read_part)
        report[SOURCE_DIGEST_KEY] = source_metadata_digest(source_metadata_bytes(metadata))
    report_text = json.dumps(report, indent=2, sort_keys=True, allow_nan=False)  # strict JSON
    write_text_atomically(report_path, report_text + "\n")
    if not report["passed"]:
        raise StepError(failure_message(report))
    pieces = kept_slices() if sorted_kept is None else [sorted_kept]
    write_dataset_pieces(pieces, output, metadata, validation=report)
    dropped = report["dropped_missing_temp_or_dewp"] + report["removed_dewp_above_temp"]
    return {"row-count": report["rows_out"], "dropped-rows": dropped}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: `python -m steps validate --input ... --output ... --report ...`."""

    def body() -> None:
        args = VALIDATE.parse(argv)
        policy = ValidationPolicy(args.min_rows, args.rain_only, args.dewp_tolerance)
        with VALIDATE.reserve_outputs(args.outputs_dir) as outputs:  # a full disk fails first
            outputs.write(validate_file(args.input, args.output, args.report, policy))

    return run(body)
