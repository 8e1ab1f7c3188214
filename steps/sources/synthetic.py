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

    Each station gets its own climate (mean and seasonal swing); daily temperature adds noise;
    humidity is drawn per day and dew point follows by Magnus. Rain days (FRSHTT 2nd digit) are
    likelier when humid. Some TEMP/DEWP values are the 9999.9 sentinel, like real data.
    """
    mean = rng.uniform(25.0, 65.0)
    swing = rng.uniform(5.0, 20.0)
    day_of_year = np.array([(start + dt.timedelta(i)).timetuple().tm_yday for i in range(days)])
    temp = mean + swing * np.cos(2 * math.pi * (day_of_year - 200) / 365.25)
    # Clipped so that even a saturated day keeps dew point within validate's plausible range.
    temp = np.clip(temp + rng.normal(0.0, 5.0, days), TEMP_MIN_F, TEMP_MAX_F)
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


# From `rows_sure_to_pass` on, the rows validate keeps are at least a quarter under their mean
# only with a chance below exp(-4.5 * min_rows * kept_fraction) (Hoeffding's inequality for n
# rows kept independently with chance p: P(kept <= n p - t) <= exp(-2 t^2 / n); at n >= 4 m / p,
# t = n p - m >= 0.75 n p, so the bound is at most exp(-2 * 0.5625 n p^2) <= exp(-4.5 m p)):
# with validate's default 100 rows, exp(-87) rain-only, exp(-434) otherwise.
SURE_MARGIN = 4


def rows_sure_to_pass(min_rows: int, rain_only: bool) -> int:
    """The rows from which each year holds `min_rows` rows validate keeps, but for a chance
    `SURE_MARGIN` bounds (about 1e-38 for the defaults): min_rows / kept_fraction, times 4."""
    return math.ceil(SURE_MARGIN * min_rows / kept_fraction(rain_only))


def validate_problem(
    rows: int, seed: int, years: Sequence[int], policy: ValidationPolicy
) -> str | None:
    """Why validate with `policy` would fail a year of the pipeline's synthetic data (`rows` rows
    for each of `years`, generated with `seed`), else None: exact below `rows_sure_to_pass`,
    where each year is generated and checked here with validate's own rules (that few rows take
    milliseconds a year), and from it on taken as passing (`SURE_MARGIN`), so a run of a
    million rows is not generated twice. Fewer rows than `policy.min_rows` are never enough."""
    from steps.validate import failure_message, validate_table

    if rows < policy.min_rows:
        return f"validate keeps at most that many rows and needs {policy.min_rows}"
    if rows >= rows_sure_to_pass(policy.min_rows, policy.rain_only):
        return None
    for year in years:
        _, report = validate_table(
            fetch(SourceRequest(years=(year,), rows=rows, seed=seed)).table, policy
        )
        if not report["passed"]:
            return f"year {year}'s validate would fail: {failure_message(report)}"
    return None
