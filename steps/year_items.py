"""The pipeline's per-year fan-out, resolved from the workflow parameters by check-parameters.

One loop item per year: fetch and validate run once per item (Argo `withParam`), each writing
its own dataset under `data-key` in the artifact repository; train reads them all. Past years
are memoized by `memo` (the same key on the next run); the current year, and a source that does
not split by year (`table`: one item, which keeps the rows of the years given), get a key that
never repeats, so they are never reused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from steps.contract import CommaList, Integer

# Sources whose fetch takes one year at a time (`--years Y`); any other reads everything at once
# and runs as one item.
BY_YEAR_SOURCES = ("gsod", "bigquery", "synthetic")
WHOLE_PART = "all"  # the part name of a source that does not split by year
FIRST_YEAR = 1901


@dataclass(frozen=True)
class Year:
    """A calendar year from FIRST_YEAR to this year, in ASCII digits: no source has a day of a
    later year. This year is `this_year`, else today's, read at each parse (so no declaration,
    docs table or test has to change when the year does)."""

    this_year: int | None = None
    empty_ok: bool = False

    def parse(self, text: str) -> int:
        """The year; ValueError for anything else, saying which year this is for a later one."""
        try:
            year = Integer(FIRST_YEAR, 9999).parse(text)
        except ValueError:
            raise ValueError(f"must be {self.describe()}") from None
        this_year = self.this_year or dt.date.today().year
        if year > this_year:
            raise ValueError(f"is after this year, {this_year}: give {self.describe()}")
        return year

    def describe(self) -> str:
        """`a year from 1901 to this year`."""
        return f"a year from {FIRST_YEAR} to this year"


YEARS = CommaList(Year())  # what fetch's --years and the `years` parameter take


def default_years(today: dt.date | None = None) -> tuple[int, ...]:
    """The previous and the current calendar year: a weekly run always has a full year behind it."""
    year = (today or dt.date.today()).year
    return (year - 1, year)


def resolve_years(raw_years: str, today: dt.date | None = None) -> tuple[int, ...]:
    """The years of a run: those given (sorted, once each), else `default_years` (fetch's gsod
    and bigquery sources use it too).

    Raises:
        ValueError: `raw_years` is not a comma list of years YEARS accepts (none after `today`'s).
    """
    this_year = (today or dt.date.today()).year
    years = CommaList(Year(this_year)).parse(raw_years)
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
    the current year, fetched on every run; for a source not in BY_YEAR_SOURCES, the one item
    `{"year": the years given (sorted, once each, comma-separated; "" for none: every row),
    "part": WHOLE_PART}`.

    Raises:
        ValueError: `raw_years` is not a comma list of years YEARS accepts (none after `today`'s).
    """
    this_year = (today or dt.date.today()).year
    if source not in BY_YEAR_SOURCES:
        given = sorted(set(CommaList(Year(this_year)).parse(raw_years)))
        return [], [{"year": ",".join(map(str, given)), "part": WHOLE_PART}]
    past, current = [], []
    for year in resolve_years(raw_years, today):
        item = {"year": str(year), "part": str(year)}
        if year < this_year:
            past.append({**item, "memo": f"{key}-{year}"})
        else:
            current.append(item)
    return past, current
