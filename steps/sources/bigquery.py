"""BigQuery source (the prototype's): `bigquery-public-data.noaa_gsod.gsod{year}` tables.

Needs the `bigquery` extra (google-cloud-bigquery) and a service-account key file named by
GOOGLE_APPLICATION_CREDENTIALS. google.cloud is imported only when this source runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from steps import gsod_format
from steps.cli import StepError, one_line
from steps.dataset import conform
from steps.sources import Fetched, SourceRequest
from steps.year_items import default_years

TABLE_PREFIX = "bigquery-public-data.noaa_gsod.gsod"
EXTRA_HINT = "pip install 'dewpoint-pipeline[bigquery]' (google-cloud-bigquery==3.47.0)"

# Every yearly table has stn/wban/year/mo/da as strings, temp/dewp as floats with 9999.9 for
# missing, and the six weather flags as "0"/"1" strings in FRSHTT order. `date` exists only in
# newer tables, so the day is rebuilt from year/mo/da.
QUERY = """\
SELECT
  CONCAT(stn, wban) AS station,
  DATE(CAST(year AS INT64), CAST(mo AS INT64), CAST(da AS INT64)) AS date,
  temp,
  dewp,
  CONCAT(fog, rain_drizzle, snow_ice_pellets, hail, thunder, tornado_funnel_cloud) AS frshtt
FROM `{prefix}*`
WHERE _TABLE_SUFFIX IN UNNEST(@years){station_filter}"""


def build_query(years: tuple[int, ...], stations: tuple[str, ...]) -> tuple[str, dict[str, list]]:
    """SQL over the yearly GSOD tables and its array parameters (no values are pasted into SQL).

    Returns (sql, {parameter name: values}); `years` become table suffixes, `stations` are the
    11-character ids (USAF stn + WBAN) matched against CONCAT(stn, wban).
    """
    if not years:
        raise StepError("bigquery source needs at least one year")
    params: dict[str, list] = {"years": [str(year) for year in years]}
    station_filter = ""
    if stations:
        station_filter = "\n  AND CONCAT(stn, wban) IN UNNEST(@stations)"
        params["stations"] = list(stations)
    return QUERY.format(prefix=TABLE_PREFIX, station_filter=station_filter), params


def check_credentials(environ: Mapping[str, str] = os.environ) -> Path:
    """The key file named by GOOGLE_APPLICATION_CREDENTIALS; StepError if unset or missing."""
    value = environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")
    if not value:
        raise StepError(
            "bigquery source needs credentials: set GOOGLE_APPLICATION_CREDENTIALS to a "
            "service-account key file"
        )
    path = Path(value)
    if not path.is_file():
        raise StepError(f"GOOGLE_APPLICATION_CREDENTIALS points to {path}, which is not a file")
    return path


def _bigquery_module() -> Any:
    try:
        from google.cloud import bigquery
    except ImportError:
        raise StepError(f"bigquery source needs the bigquery extra: {EXTRA_HINT}") from None
    return bigquery


def client(key_file: Path) -> Any:
    """A BigQuery client from the key file; a key google-auth cannot use is a one-line StepError.

    google-auth reads and parses the file here, before any network call, and raises
    `google.auth.exceptions.DefaultCredentialsError` for a file that is not a usable credential
    (no `type`, a malformed private key, ...).
    """
    bigquery = _bigquery_module()
    from google.auth.exceptions import GoogleAuthError

    try:
        return bigquery.Client()
    except (GoogleAuthError, ValueError) as exc:
        raise StepError(
            f"bigquery source: the credentials in {key_file} (GOOGLE_APPLICATION_CREDENTIALS) "
            f"are not usable: {one_line(exc)}"
        ) from exc


def fetch(request: SourceRequest) -> Fetched:
    """Query the public GSOD tables for `request.years` (and stations) and normalise the rows."""
    key_file = check_credentials()
    bigquery = _bigquery_module()
    years = request.years or default_years()
    sql, params = build_query(years, request.stations)
    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ArrayQueryParameter(k, "STRING", v) for k, v in params.items()]
    )
    bq = client(key_file)
    try:
        result: pa.Table = bq.query(sql, job_config=config).to_arrow()
    except Exception as exc:  # the client raises many google.api_core types; report any in one line
        raise StepError(f"bigquery query failed: {type(exc).__name__}: {exc}") from exc
    table = gsod_format.null_sentinels(conform(result))
    metadata = {"name": "bigquery", "table": f"{TABLE_PREFIX}{{year}}", "years": list(years),
                "stations": list(request.stations)}  # fmt: skip
    return Fetched(table, metadata)
