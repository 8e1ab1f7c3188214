"""The pipeline's per-year fan-out, resolved from the workflow parameters by check-parameters.

One loop item per year: fetch and validate run once per item (Argo `withParam`), each writing
its own dataset under `data-key` in the artifact repository; train reads them all. Past years
are memoized by `memo` (the same key on the next run); the current year and later, and a source
that does not split by year (`table`), get a key that never repeats, so they are never reused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence

from steps.contract import CommaList, Integer

# Sources whose fetch takes one year at a time (`--years Y`); any other reads everything at once
# and runs as one item.
BY_YEAR_SOURCES = ("gsod", "bigquery", "synthetic")
WHOLE_PART = "all"  # the part name of a source that does not split by year
YEARS = CommaList(Integer(1901, 2100))  # what fetch's --years and the `years` parameter take


def default_years(today: dt.date | None = None) -> tuple[int, ...]:
    """The previous and the current calendar year: a weekly run always has a full year behind it."""
    year = (today or dt.date.today()).year
    return (year - 1, year)


def resolve_years(raw_years: str, today: dt.date | None = None) -> tuple[int, ...]:
    """The years of a run: those given (sorted, once each), else `default_years` (fetch's gsod
    and bigquery sources use it too).

    Raises:
        ValueError: `raw_years` is not a comma list of years YEARS accepts.
    """
    years = YEARS.parse(raw_years)
    return tuple(sorted(set(years))) if years else default_years(today)


def data_key(values: Mapping[str, str], names: Sequence[str], code_version: str) -> str:
    """Where a run's per-year datasets live: SHA-256 (first 32 hex digits) of the UTF-8 JSON
    object {name: value} of the parameters `names` (those that decide a year's rows: every
    workflow parameter fetch or validate reads, except `years`) plus `code-version`, keys sorted.
    Two runs with the same source settings and code share it, and so their past years."""
    chosen = {name: values.get(name, "") for name in names}
    chosen["code-version"] = code_version
    text = json.dumps(chosen, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def loop_items(
    source: str, raw_years: str, key: str, today: dt.date | None = None
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The loop items as (past, current), each in year order.

    past: `{"year": fetch's --years, "part": the dataset's name, "memo": "<key>-<year>"}` for
    each year before today's (complete: reused while cached). current: `{"year", "part"}` for
    the current year and later, fetched on every run; for a source not in BY_YEAR_SOURCES, the
    one item `{"year": "" (the source's own rule), "part": WHOLE_PART}`.
    """
    this_year = (today or dt.date.today()).year
    if source not in BY_YEAR_SOURCES:
        return [], [{"year": "", "part": WHOLE_PART}]
    past, current = [], []
    for year in resolve_years(raw_years, today):
        item = {"year": str(year), "part": str(year)}
        if year < this_year:
            past.append({**item, "memo": f"{key}-{year}"})
        else:
            current.append(item)
    return past, current
