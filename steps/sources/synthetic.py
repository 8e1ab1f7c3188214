"""Offline, seeded GSOD-format data with a known dew point relation (Magnus formula).

Rows are written as real GSOD access CSV text (padded, quoted, 9999.9 for missing values) and go
through the same parser as downloaded files, so the offline demo exercises the real cleaning.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from steps import gsod_format
from steps.cli import StepError
from steps.climate import dewpoint_f
from steps.sources import Fetched, SourceRequest

if TYPE_CHECKING:
    from steps.validate import ValidationPolicy

# Relative humidity per day: normal(RH_MEAN, RH_SD) percent, clipped to [RH_MIN, 100].
RH_MEAN, RH_SD, RH_MIN = 70.0, 12.0, 15.0
# Fraction of rows whose DEWP (resp. TEMP) is written as GSOD's 9999.9 "missing" sentinel.
MISSING_DEWP_FRACTION = 0.03
MISSING_TEMP_FRACTION = 0.005
DEFAULT_STATIONS = 8
TEMP_MIN_F, TEMP_MAX_F = -30.0, 100.0
# A station's climate: mean temp uniform in STATION_MEAN_F, seasonal swing (amplitude) uniform in
# STATION_SWING_F; each day adds normal(0, DAILY_NOISE_SD_F) clipped to +-DAILY_NOISE_MAX_F, so
# two consecutive days differ by at most MAX_DAILY_CHANGE_F (`max_daily_change`), under
# validate's UNIT_JUMP_F: a generated station never trips `unit_jumps`. Unclipped, one day 3.5
# SD off its neighbours was two jumps, and a rain-only station with 12 consecutive-day pairs
# (one allowed) failed validate (synthetic-rows=2070, years=1932, rain-only).
STATION_MEAN_F, STATION_SWING_F = (25.0, 65.0), (5.0, 20.0)
DAILY_NOISE_SD_F, DAILY_NOISE_MAX_F = 5.0, 12.0
# A day rains (FRSHTT's 2nd digit) with RAIN_CHANCE_HUMID when its humidity is over RAIN_HUMID_RH
# percent, else with RAIN_CHANCE_DRY.
RAIN_HUMID_RH, RAIN_CHANCE_HUMID, RAIN_CHANCE_DRY = 80.0, 0.6, 0.1
# (slope, intercept) of the least-squares line of dewp on temp, 200,000 rows, seed 1.
LINEAR_FIT = (0.958, -7.70)
START_DATE = dt.date(2023, 1, 1)


def expected_dewpoint(temp_f: float) -> float:
    """The generating relation: mean dew point (deg F) of synthetic rows at temperature `temp_f`.

    It averages the Magnus dew point over the humidity distribution, so it is E[DEWP | TEMP].
    Over 0-100 deg F it is nearly a straight line, LINEAR_FIT (dewp = 0.958 * temp - 7.70): a
    least-squares line on 200,000 synthetic rows is within 0.15 deg F of this function there,
    and single rows scatter around it with an SD of about 4.5 deg F. A model trained on a few
    thousand synthetic rows should predict within about 1 deg F of this value.
    """
    quantiles = (np.arange(2000) + 0.5) / 2000
    normal = NormalDist(RH_MEAN, RH_SD)
    rh = np.clip([normal.inv_cdf(q) for q in quantiles], RH_MIN, 100.0)
    return float(np.mean(dewpoint_f(temp_f, rh)))


def station_id(index: int) -> str:
    """An 11-character GSOD-style id for synthetic station `index` (USAF 990xxx, WBAN 99999)."""
    return f"990{index:03d}99999"


def station_csv(station: str, start: dt.date, days: int, rng: np.random.Generator) -> bytes:
    """One station's GSOD access CSV file (header + `days` daily rows) with the generating relation.

    Each station gets its own climate (mean and seasonal swing); daily temperature adds bounded
    noise (DAILY_NOISE_SD_F, DAILY_NOISE_MAX_F); humidity is drawn per day and dew point follows
    by Magnus. Rain days (FRSHTT 2nd digit) are likelier when humid. Some TEMP/DEWP values are
    the 9999.9 sentinel, like real data.
    """
    mean = rng.uniform(*STATION_MEAN_F)
    swing = rng.uniform(*STATION_SWING_F)
    day_of_year = np.array([(start + dt.timedelta(i)).timetuple().tm_yday for i in range(days)])
    temp = mean + swing * np.cos(2 * math.pi * (day_of_year - 200) / 365.25)
    noise = np.clip(rng.normal(0.0, DAILY_NOISE_SD_F, days), -DAILY_NOISE_MAX_F, DAILY_NOISE_MAX_F)
    # Clipped so that even a saturated day keeps dew point within validate's plausible range.
    temp = np.clip(temp + noise, TEMP_MIN_F, TEMP_MAX_F)
    rh = np.clip(rng.normal(RH_MEAN, RH_SD, days), RH_MIN, 100.0)
    dewp = dewpoint_f(temp, rh)
    rain = rng.random(days) < np.where(rh > RAIN_HUMID_RH, RAIN_CHANCE_HUMID, RAIN_CHANCE_DRY)
    fog = rh > 95.0
    snow = rain & (temp < 32.0)
    temp_missing = rng.random(days) < MISSING_TEMP_FRACTION
    dewp_missing = rng.random(days) < MISSING_DEWP_FRACTION
    lat, lon = rng.uniform(-60.0, 70.0), rng.uniform(-180.0, 180.0)
    name = f"SYNTHETIC STATION {station[3:6]}, ZZ"
    lines = [gsod_format.GSOD_HEADER.decode()]
    for i in range(days):
        t = "9999.9" if temp_missing[i] else f"{temp[i]:6.1f}"
        d = "9999.9" if dewp_missing[i] else f"{dewp[i]:6.1f}"
        flags = f"{int(fog[i])}{int(rain[i])}{int(snow[i])}000"
        hi, lo = f"{temp[i] + 9.0:6.1f}", f"{temp[i] - 9.0:6.1f}"
        lines.append(
            f'"{station}","{start + dt.timedelta(i)}","{lat:.4f}","{lon:.4f}","10.0","{name}",'
            f'"{t}","24","{d}","24","1013.2","24","999.9"," 0","  6.2","24","  5.1","24",'
            f'" 11.1","999.9","{hi}"," ","{lo}"," "," 0.00","G","999.9","{flags}"'
        )
    return ("\n".join(lines) + "\n").encode()


def generate_files(
    rows: int, seed: int, stations: int = DEFAULT_STATIONS, year: int | None = None
) -> list[tuple[str, bytes]]:
    """`rows` daily rows spread over `stations` stations, as (file name, GSOD CSV bytes).

    With `year`, every row falls in that year (more stations when `rows` would not fit in
    `stations` station-years) and the random stream is seeded by (seed, year), so each year has
    its own data and the same year is the same data whatever else is asked for; without it rows
    start on START_DATE.

    Raises:
        StepError: `rows` below 1.
    """
    if rows < 1:
        raise StepError(f"synthetic source needs --rows >= 1, got {rows}")
    start = START_DATE if year is None else dt.date(year, 1, 1)
    if year is not None:
        days_in_year = (dt.date(year + 1, 1, 1) - start).days
        stations = max(stations, -(-rows // days_in_year))
    stations = max(1, min(stations, rows))
    rng = np.random.default_rng(seed if year is None else [seed, year])
    per_station = [rows // stations + (1 if i < rows % stations else 0) for i in range(stations)]
    files = []
    for index, days in enumerate(per_station):
        station = station_id(index)
        files.append((f"{station}.csv", station_csv(station, start, days, rng)))
    return files


def fetch(request: SourceRequest) -> Fetched:
    """Generate `request.rows` synthetic rows with `request.seed` and parse them as GSOD files;
    with `request.years`, `request.rows` rows in each of those years."""
    if request.years:
        files = [
            f for y in request.years for f in generate_files(request.rows, request.seed, year=y)
        ]
    else:
        files = generate_files(request.rows, request.seed)
    table = gsod_format.parse_files(files)
    metadata = {
        "name": "synthetic",
        "rows": request.rows,
        "seed": request.seed,
        "years": list(request.years),
        "stations": sorted({name.removesuffix(".csv") for name, _ in files}),
        "files": len(files),
        "relation": "Magnus dew point, RH ~ clip(normal(70, 12), 15, 100) %",
    }
    return Fetched(table, metadata)


def kept_fraction(rain_only: bool) -> float:
    """The chance that validate keeps a generated row, each row drawn on its own: its TEMP and
    DEWP are not missing (MISSING_TEMP_FRACTION, MISSING_DEWP_FRACTION) and, with `rain_only`, it
    rains (RAIN_CHANCE_HUMID above RAIN_HUMID_RH percent humidity, else RAIN_CHANCE_DRY; the
    clip at RH_MIN and 100 does not move the humid share). Nothing else drops a generated row:
    TEMP is clipped into validate's range and DEWP, by Magnus at RH <= 100 %, is at most TEMP.
    With the defaults: 0.965 of all rows; rain-only keeps 0.194 (the humid share is 0.20)."""
    humid = 1 - NormalDist(RH_MEAN, RH_SD).cdf(RAIN_HUMID_RH)
    rain = RAIN_CHANCE_HUMID * humid + RAIN_CHANCE_DRY * (1 - humid)
    present = (1 - MISSING_TEMP_FRACTION) * (1 - MISSING_DEWP_FRACTION)
    return present * (rain if rain_only else 1.0)


def max_daily_change() -> float:
    """The most a generated station's TEMP (deg F, as written to tenths) changes between two
    consecutive days: twice DAILY_NOISE_MAX_F, plus the seasonal curve's steepest step (its
    largest swing times 2 pi / 365.25 a day, over 1.25 days of phase where day 365 is followed
    by day 1), plus 0.1 for rounding both days. The clip into [TEMP_MIN_F, TEMP_MAX_F] only
    shortens a step. Below validate's UNIT_JUMP_F, so `unit_jumps` counts no generated pair."""
    seasonal = STATION_SWING_F[1] * 2 * math.pi / 365.25 * 1.25
    return 2 * DAILY_NOISE_MAX_F + seasonal + 0.1


# Why a year of `rows_sure_to_pass` rows or more passes validate, rule by rule (steps/validate.py),
# but for a chance `failure_chance` bounds (below 1e-14 for the pipeline's min-rows, either way
# of rain-only). By construction, whatever the draw: no sentinel or non-finite value is left
# (9999.9 is parsed as missing); TEMP stays in STATION_MEAN_F +- the largest swing +- the noise
# bound ([-7, 97] F, inside validate's range) and DEWP, by Magnus at RH in [RH_MIN, 100], is at
# most TEMP (both rounded alike) and above validate's low bound; flags are six 0/1 characters
# and never thunder, so `thunder_above_freezing` judges nothing; one row per station and day;
# `unit_jumps` counts nothing (`max_daily_change`). By chance: `min_rows` (Hoeffding's
# inequality on the rows kept, each kept on its own with chance p = `kept_fraction`: at
# n >= 4 m' / p rows, fewer than 2 m' kept has a chance below exp(-2 m' p), m' =
# max(min_rows, SPREAD_KEPT_ROWS)) and `temp_spread`/`dewp_spread` (`spread_failure_chance`
# for 2 m' kept rows: the daily noise, independent of which rows are kept, spreads them).
SURE_MARGIN = 4
SPREAD_KEPT_ROWS = 100  # the least m': `spread_failure_chance` is near 1 for a handful of rows


def rows_sure_to_pass(min_rows: int, rain_only: bool) -> int:
    """The rows from which each year passes validate with `min_rows` but for a chance
    `failure_chance` bounds (the comment above): max(min_rows, SPREAD_KEPT_ROWS) rows to keep,
    divided by `kept_fraction`, times `SURE_MARGIN`. 415 rows, 2,061 with rain-only, at the
    pipeline's min-rows (100)."""
    kept = max(min_rows, SPREAD_KEPT_ROWS)
    return math.ceil(SURE_MARGIN * kept / kept_fraction(rain_only))


def spread_failure_chance(kept: int, min_spread: float) -> float:
    """A bound on the chance that `kept` rows of generated data have a TEMP or a DEWP standard
    deviation below `min_spread` (deg F), whichever rows are kept.

    Each row's TEMP is a value fixed by its station and day plus its own noise (density at most
    phi = 1 / (DAILY_NOISE_SD_F sqrt(2 pi)), plus an atom at each clip), rounded to tenths; its
    DEWP is an increasing function of TEMP for its humidity, with slope at least `k` (the least
    over the generated TEMP range and RH_MIN-100 %, on a 0.01 F x 0.25 % grid), so a row falls
    in an interval of width w with chance at most (w + 0.1) / k * phi + 2 atoms. A standard
    deviation below s leaves more than (1 - s^2 / a^2) of the rows within a of their mean, so in
    one of the intervals of width 2a + d starting every d over the column's range; Hoeffding's
    inequality bounds each, a union bound all of them: the least bound over a grid of (a, d).
    """

    phi = 1 / (DAILY_NOISE_SD_F * math.sqrt(2 * math.pi))
    atom = 1 - NormalDist(0.0, DAILY_NOISE_SD_F).cdf(DAILY_NOISE_MAX_F)
    low = STATION_MEAN_F[0] - STATION_SWING_F[1] - DAILY_NOISE_MAX_F
    high = STATION_MEAN_F[1] + STATION_SWING_F[1] + DAILY_NOISE_MAX_F
    temps = np.arange(low, high + 0.005, 0.01)
    dewp = dewpoint_f(temps, np.arange(RH_MIN, 100.0 + 0.1, 0.25)[:, None])
    slope = float((np.diff(dewp, axis=1) / 0.01).min())
    chance = 0.0
    for k, span in ((1.0, high - low), (slope, high - float(dewp.min()))):
        best = 1.0
        for a in np.arange(1.2, 6.0, 0.05) * min_spread:
            for d in (0.05, 0.1, 0.2, 0.5, 1.0):
                gap = 1 - (min_spread / a) ** 2 - ((2 * a + d + 0.1) / k * phi + 2 * atom)
                if gap > 0:
                    best = min(best, (math.ceil(span / d) + 1) * math.exp(-2 * kept * gap**2))
        chance += best
    return min(1.0, chance)


def failure_chance(min_rows: int, rain_only: bool) -> float:
    """A bound on the chance that a year of `rows_sure_to_pass(min_rows, rain_only)` rows or
    more fails validate (the comment above `SURE_MARGIN`): exp(-2 m' p) for keeping fewer than
    2 m' rows plus `spread_failure_chance` of 2 m'."""
    from steps.validate import MIN_SPREAD_F

    kept = max(min_rows, SPREAD_KEPT_ROWS)
    return min(
        1.0,
        math.exp(-2 * kept * kept_fraction(rain_only))
        + spread_failure_chance(2 * kept, MIN_SPREAD_F),
    )


def validate_problem(
    rows: int, seed: int, years: Sequence[int], policy: ValidationPolicy
) -> str | None:
    """Why validate with `policy` would fail a year of the pipeline's synthetic data (`rows` rows
    for each of `years`, generated with `seed`), else None: exact below `rows_sure_to_pass`,
    where each year is generated and checked here with validate's own rules (that few rows take
    milliseconds a year), and from it on taken as passing (`failure_chance` bounds the chance it
    does not): a million rows take about 10 s and 450 MB to generate and check
    (benchmarks/bench_synthetic_door.py), in each of up to a hundred years. Fewer rows than
    `policy.min_rows` are never enough."""
    if rows < policy.min_rows:
        return f"validate keeps at most that many rows and needs {policy.min_rows}"
    if rows >= rows_sure_to_pass(policy.min_rows, policy.rain_only):
        return None
    for year in years:
        problem = year_problem(rows, seed, year, policy)
        if problem:
            return f"year {year}'s validate would fail: {problem}"
    return None


def year_problem(rows: int, seed: int, year: int, policy: ValidationPolicy) -> str | None:
    """Validate's failure line for `year` of `rows` rows generated with `seed`, else None: the
    year generated as fetch generates it and checked with validate's own rules."""
    from steps.validate import failure_message, validate_table

    table = fetch(SourceRequest(years=(year,), rows=rows, seed=seed)).table
    _, report = validate_table(table, policy)
    return None if report["passed"] else failure_message(report)
