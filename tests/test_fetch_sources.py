"""The non-GSOD sources: a user's table (CSV/Parquet, local or HTTP), BigQuery errors, synthetic."""

from __future__ import annotations

import datetime as dt
import gzip
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steps import gsod_format
from steps.dataset import data_hash, read_dataset
from steps.sources import SourceRequest, fetch_from, synthetic
from steps.sources import bigquery as bq
from steps.validate import ValidationPolicy, check_table
from tests.conftest import assert_bad_input
from tests.test_fetch import GsodServer, RunFetch, assert_one_line_error, run_fetch, server
from tests.test_gsod_format import FIXTURES

__all__ = ["run_fetch", "server"]  # fixtures shared with test_fetch

CSV = b"""Station,Day,T,D,Flags
X1, 2023-01-01, 45.3 ,40.1,010000
X1,2023-01-02,50,,000000
X2,2023-01-01,-3.5,-10,
"""


def test_table_csv_with_column_map(tmp_path: Path, run_fetch: RunFetch) -> None:
    source = tmp_path / "mine.csv"
    source.write_bytes(CSV)
    code, outputs, err = run_fetch(
        "--source", "table", "--table-uri", str(source),
        "--column-map", "station=Station,date=Day,temp=T,dewp=D,frshtt=Flags",
    )  # fmt: skip
    assert code == 0, err
    table, meta = read_dataset(tmp_path / "out" / "dataset.parquet")
    rows = [(r["station"], r["date"], r["temp"], r["dewp"], r["frshtt"]) for r in table.to_pylist()]
    assert rows == [
        ("X1", dt.date(2023, 1, 1), 45.3, 40.1, "010000"),
        ("X1", dt.date(2023, 1, 2), 50.0, None, "000000"),
        ("X2", dt.date(2023, 1, 1), -3.5, -10.0, None),
    ]
    assert (
        outputs["row-count"] == "3" and meta["name"] == "table" and meta["columns"]["temp"] == "T"
    )


YEARS_CSV = b"""station,date,temp,dewp
72530094846,2022-12-31,30.0,20.0
72530094846,2023-01-01,31.0,21.0
72219013874,2023-06-01,80.0,60.0
72219013874,2024-01-01,50.0,40.0
"""


@pytest.mark.parametrize(
    ("args", "dates"),
    [([], ["2022-12-31", "2023-01-01", "2023-06-01", "2024-01-01"]),
     (["--years", "2023"], ["2023-01-01", "2023-06-01"]),
     (["--years", "2024,2022"], ["2022-12-31", "2024-01-01"]),
     (["--stations", "72219013874"], ["2023-06-01", "2024-01-01"]),
     (["--years", "2023", "--stations", "72530094846"], ["2023-01-01"])],
)  # fmt: skip
def test_a_table_keeps_the_rows_of_the_years_and_stations_given(
    args: list[str], dates: list[str], tmp_path: Path, run_fetch: RunFetch
) -> None:
    """`--years` and `--stations` choose a table's rows as they choose local GSOD files' rows;
    they were silently ignored for `--source table` (issue 11)."""
    source = tmp_path / "mine.csv"
    source.write_bytes(YEARS_CSV)
    code, outputs, err = run_fetch("--source", "table", "--table-uri", str(source), *args)
    assert code == 0, err
    table, meta = read_dataset(tmp_path / "out" / "dataset.parquet")
    assert sorted(str(d) for d in table.column("date").to_pylist()) == dates
    assert outputs["row-count"] == str(len(dates)) and meta["rows_read"] == 4


def test_a_table_without_rows_of_the_years_given_is_a_one_line_error(
    tmp_path: Path, run_fetch: RunFetch
) -> None:
    source = tmp_path / "mine.csv"
    source.write_bytes(YEARS_CSV)
    code, _, err = run_fetch("--source", "table", "--table-uri", str(source), "--years", "2021")
    assert_one_line_error(code, err, "source table returned no rows", "years=[2021]")
    assert not (tmp_path / "out" / "dataset.parquet").exists()


def test_table_parquet_over_http_matches_names_without_a_map(
    tmp_path: Path, server: GsodServer, run_fetch: RunFetch
) -> None:
    local = tmp_path / "obs.parquet"
    pq.write_table(
        pa.table({"DATE": ["2023-05-01", "2023-05-02"], "TEMP": [60.0, 62.5], "DEWP": [50, 51]}),
        local,
    )
    server.routes["/data/obs.parquet"] = [("status:502", b""), ("ok", local.read_bytes())]
    code, _, err = run_fetch("--source", "table", "--table-uri", f"{server.url}/data/obs.parquet")
    assert code == 0, err
    table, _ = read_dataset(tmp_path / "out" / "dataset.parquet")
    assert table.column("dewp").to_pylist() == [50.0, 51.0]
    assert table.column("station").to_pylist() == ["unknown", "unknown"]


def _gsod_and_table(directory: Path, name: str) -> tuple[pa.Table, pa.Table]:
    """The same NCEI file fetched by `--source gsod` (folder) and by `--source table` (file)."""
    by_gsod = fetch_from("gsod", SourceRequest(path=directory, work_dir=directory)).table
    request = SourceRequest(table_uri=str(directory / name), work_dir=directory)
    return by_gsod, fetch_from("table", request).table


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.csv")))
def test_an_ncei_file_is_the_same_dataset_through_table_and_gsod(tmp_path: Path, name: str) -> None:
    """GSOD's 9999.9 "missing" value is null through every source (one definition, shared), so
    the same file gives the same data hash and the same validation outcome either way."""
    (tmp_path / name).write_bytes((FIXTURES / name).read_bytes())

    by_gsod, by_table = _gsod_and_table(tmp_path, name)

    assert data_hash(by_table) == data_hash(by_gsod)
    policy = ValidationPolicy(min_rows=1)
    assert check_table(by_table, policy)[2] == check_table(by_gsod, policy)[2]


_READING = st.one_of(
    st.just(gsod_format.MISSING["TEMP"]),
    st.integers(-900, 1200).map(lambda tenths: tenths / 10),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(readings=st.lists(st.tuples(_READING, _READING), min_size=1, max_size=30))
def test_any_gsod_rows_are_the_same_dataset_through_table_and_gsod(
    tmp_path_factory: pytest.TempPathFactory, readings: list[tuple[float, float]]
) -> None:
    """Property: for any TEMP/DEWP values, sentinels anywhere, the two sources agree."""
    directory = tmp_path_factory.mktemp("same-file")
    lines = [gsod_format.GSOD_HEADER.decode()]
    for day, (temp, dewp) in enumerate(readings):
        date = dt.date(2023, 1, 1) + dt.timedelta(days=day)
        lines.append(
            f'"72530094846","{date}","41.98","-87.9","201.8","CHICAGO OHARE, IL US",'
            f'"{temp:6.1f}","24","{dewp:6.1f}","24","1013.2","24","999.9"," 0","  6.2","24",'
            f'"  5.1","24"," 11.1","999.9","  50.0"," ","  30.0"," "," 0.00","G","999.9","010000"'
        )
    (directory / "72530094846.csv").write_text("\n".join(lines) + "\n")

    by_gsod, by_table = _gsod_and_table(directory, "72530094846.csv")

    assert data_hash(by_table) == data_hash(by_gsod)
    sentinel = gsod_format.MISSING["TEMP"]
    assert by_table.column("temp").null_count == sum(t == sentinel for t, _ in readings)


@pytest.mark.parametrize(
    ("content", "args", "needles"),
    [
        (CSV, ["--column-map", "date=Day,temp=T,dewp=DEW"], ["'DEW'", "not in the table"]),
        (CSV, [], ["no column for date, temp, dewp"]),
        (CSV.replace(b"-3.5", b"cold"), ["--column-map", "date=Day,temp=T,dewp=D"],
         ["column T is not a valid temp", "cold"]),
        (b"station,date,temp,dewp\n", [], ["returned no rows"]),
    ],
)  # fmt: skip
def test_table_bad_input_is_a_one_line_error(
    tmp_path: Path, run_fetch: RunFetch, content: bytes, args: list[str], needles: list[str]
) -> None:
    source = tmp_path / "mine.csv"
    source.write_bytes(content)
    code, _, err = run_fetch("--source", "table", "--table-uri", str(source), *args)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "out" / "dataset.parquet").exists()


@pytest.mark.parametrize(
    ("column_map", "needle"),
    [("temp", "temp=TEMP"), ("temp=", "temp=TEMP"), ("=T", "temp=TEMP"),
     ("humidity=H", "'humidity', which is none of station, date, temp, dewp, frshtt"),
     ("Temp=T,dewp=D", "'Temp', which is none of"),  # ours are the dataset's lower-case names
     ("temp=T,dewp=D,temp=U", "maps 'temp' twice"),
     # One source column read as two of ours: dewp == temp then passed validate (issue 11).
     ("temp=temp,dewp=temp", "maps the source column 'temp' to two of ours")],
)  # fmt: skip
def test_a_column_map_fetch_cannot_use_is_bad_input_before_the_table_is_read(
    column_map: str, needle: str, tmp_path: Path, run_fetch: RunFetch
) -> None:
    """A name of ours that is no dataset column was exit 1 inside fetch, after the table was read
    (issue 11); one mapped twice silently kept the last. Now the flag refuses both, exit 2."""
    source = tmp_path / "mine.csv"
    source.write_bytes(CSV)
    code, _, err = run_fetch(
        "--source", "table", "--table-uri", str(source), "--column-map", column_map
    )
    assert_bad_input(code, err, f"--column-map {column_map!r}", needle)


def test_table_unknown_format(tmp_path: Path, run_fetch: RunFetch) -> None:
    source = tmp_path / "mine.xlsx"
    source.write_bytes(b"PK")
    code, _, err = run_fetch("--source", "table", "--table-uri", str(source))
    # Refused at parse, where check-parameters refuses it too (issue 11: it was exit 1 in fetch).
    assert_bad_input(code, err, "--table-uri", "ends in none of .csv, .csv.gz, .parquet, .pq")


def _rows_csv(rows: int) -> bytes:
    return b"date,temp,dewp\n" + b"2023-05-01,60.0,50.0\n" * rows


@pytest.mark.parametrize("form", ["csv", "csv.gz", "parquet", "http", "http-undeclared"])
def test_a_table_over_its_bound_is_refused_in_one_line_before_it_is_held(
    form: str,
    tmp_path: Path,
    server: GsodServer,
    run_fetch: RunFetch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A table is read whole into memory: past TABLE_MAX_BYTES (bytes read, gunzipped, a
    Parquet file's uncompressed data, or a download's body) it is refused, never held (it was
    read whatever its size). Just under the bound the same table is read."""
    from steps.sources import table as table_source

    monkeypatch.setattr(table_source, "TABLE_MAX_BYTES", 4000)
    small, big = _rows_csv(20), _rows_csv(400)  # about 0.4 kB and 8.4 kB of CSV
    if form == "parquet":
        path = tmp_path / "t.parquet"
        temps = np.linspace(40.0, 80.0, 1000)  # distinct values: 8 kB a column uncompressed
        data = pa.table({"date": ["2023-05-01"] * 1000, "temp": temps, "dewp": temps - 9})
        pq.write_table(data, path)
        uri = str(path)
    elif form.startswith("http"):
        server.routes["/t.csv"] = [("ok" if form == "http" else "undeclared", big)]
        uri = f"{server.url}/t.csv"
    else:
        path = tmp_path / f"t.{form}"
        path.write_bytes(gzip.compress(big) if form == "csv.gz" else big)
        uri = str(path)
    code, _, err = run_fetch("--source", "table", "--table-uri", uri)
    assert_one_line_error(
        code,
        err,
        "over the bound of 4,000 bytes"
        if form != "csv" and form != "csv.gz"
        else "holds over 4,000 bytes",
    )
    assert not (tmp_path / "out" / "dataset.parquet").exists()
    assert not list((tmp_path).glob("**/table.csv")), "a refused download is not kept"
    if form == "csv":
        (tmp_path / "t.csv").write_bytes(small)
        code, _, err = run_fetch("--source", "table", "--table-uri", uri)
        assert code == 0, err


def test_bigquery_query_is_parameterised() -> None:
    sql, params = bq.build_query((2023, 2024), ("72530094846",))
    assert "`bigquery-public-data.noaa_gsod.gsod*`" in sql
    assert "_TABLE_SUFFIX IN UNNEST(@years)" in sql
    assert "CONCAT(stn, wban) IN UNNEST(@stations)" in sql
    assert "2023" not in sql and "72530094846" not in sql
    assert params == {"years": ["2023", "2024"], "stations": ["72530094846"]}
    every_station, params = bq.build_query((2023,), ())
    assert "@stations" not in every_station and "stations" not in params
    for column in ("temp", "dewp", "rain_drizzle", "CAST(year AS INT64)"):
        assert column in sql


def test_bigquery_without_credentials(
    run_fetch: RunFetch, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    code, _, err = run_fetch("--source", "bigquery", "--years", "2023")
    assert_one_line_error(code, err, "GOOGLE_APPLICATION_CREDENTIALS")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    code, _, err = run_fetch("--source", "bigquery", "--years", "2023")
    assert_one_line_error(code, err, "missing.json", "not a file")


def test_bigquery_without_the_extra(
    run_fetch: RunFetch, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = tmp_path / "key.json"
    key.write_text("{}")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    # As where the extra is not installed: `from google.cloud import bigquery` raises ImportError.
    monkeypatch.setitem(sys.modules, "google.cloud.bigquery", None)
    code, _, err = run_fetch("--source", "bigquery", "--years", "2023")
    assert_one_line_error(code, err, "bigquery extra", "dewpoint-pipeline[bigquery]")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{}", "does not have a valid type"),
        (
            '{"type": "service_account", "project_id": "p", "private_key_id": "k", '
            '"private_key": "-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----\\n", '
            '"client_email": "a@p.iam.gserviceaccount.com", '
            '"token_uri": "https://oauth2.googleapis.com/token"}',
            "Failed to load service account credentials",
        ),
    ],
)
def test_bigquery_with_an_unusable_key_fails_on_credentials_before_any_query(
    run_fetch: RunFetch, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str, reason: str
) -> None:
    """The real client (the bigquery extra, as in the step image): google-auth rejects the key
    while the client is built, so nothing is sent anywhere and the error names the key file."""
    key = tmp_path / "key.json"
    key.write_text(content)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    code, _, err = run_fetch("--source", "bigquery", "--years", "2023")
    assert_one_line_error(code, err, "credentials in", str(key), "not usable", reason)


def test_synthetic_is_deterministic_and_exercises_sentinels(tmp_path: Path) -> None:
    def run(seed: int) -> pa.Table:
        request = SourceRequest(rows=3000, seed=seed, work_dir=tmp_path)
        return fetch_from("synthetic", request).table

    first, again, other = run(7), run(7), run(8)
    assert first.equals(again) and not first.equals(other)
    assert first.num_rows == 3000
    assert len(set(first.column("station").to_pylist())) == synthetic.DEFAULT_STATIONS
    # The 9999.9 sentinels written into the CSV text came back as nulls via the GSOD parser.
    assert 0 < first.column("dewp").null_count < 0.1 * first.num_rows
    flags = first.column("frshtt").to_pylist()
    assert all(len(f) == 6 for f in flags) and any(f[1] == "1" for f in flags)


def test_synthetic_relation_is_what_a_linear_fit_recovers(tmp_path: Path) -> None:
    table = fetch_from("synthetic", SourceRequest(rows=20000, seed=3, work_dir=tmp_path)).table
    both = table.drop_null()
    temp, dewp = both.column("temp").to_numpy(), both.column("dewp").to_numpy()
    slope, intercept = np.polyfit(temp, dewp, 1)
    for t in (20.0, 50.0, 80.0):
        assert abs(slope * t + intercept - synthetic.expected_dewpoint(t)) < 0.5
    assert slope == pytest.approx(synthetic.LINEAR_FIT[0], abs=0.02)
    assert intercept == pytest.approx(synthetic.LINEAR_FIT[1], abs=1.0)
    # Physically: dew point never exceeds temperature (RH <= 100 %), and is close to it when humid.
    assert np.all(dewp <= temp + 0.05)
    assert synthetic.dewpoint_f(68.0, 100.0) == pytest.approx(68.0)
    assert synthetic.expected_dewpoint(50.0) < 50.0


def test_synthetic_needs_rows(run_fetch: RunFetch) -> None:
    code, _, err = run_fetch("--source", "synthetic", "--rows", "0")
    assert_bad_input(code, err, "--rows '0'", "from 1 to")


def test_synthetic_years_are_rows_in_each_year_and_a_year_is_the_same_alone(tmp_path: Path) -> None:
    def run(*years: int, rows: int = 500) -> pa.Table:
        request = SourceRequest(years=years, rows=rows, seed=5, work_dir=tmp_path)
        return fetch_from("synthetic", request).table

    both = run(2023, 2024)
    assert both.num_rows == 1000
    assert sorted(set(pc.year(both.column("date")).to_pylist())) == [2023, 2024]
    alone = run(2024)
    in_2024 = both.filter(pc.equal(pc.year(both.column("date")), 2024))
    assert in_2024.sort_by([("station", "ascending"), ("date", "ascending")]).equals(
        alone.sort_by([("station", "ascending"), ("date", "ascending")])
    )
    # More rows than DEFAULT_STATIONS station-years hold: more stations, still one year.
    many = run(2024, rows=5000)
    assert set(pc.year(many.column("date")).to_pylist()) == {2024}
    assert len(set(many.column("station").to_pylist())) == 14  # ceil(5000 / 366)


_SENTINEL_ROWS = {"DATE": ["2023-07-01", "2023-07-02", "2023-07-03"], "TEMP": [80.5, 9999.9, 70.0],
                  "DEWP": [60.5, 50.0, 9999.9]}  # fmt: skip


def _sentinel_file(directory: Path, kind: str) -> Path:
    """The same three rows (one good, TEMP missing, DEWP missing) as `kind` of file."""
    if kind.startswith("csv"):
        text = "9999" if kind == "csv-integer" else "9999.9"
        rows = zip(*_SENTINEL_ROWS.values(), strict=True)
        lines = ["DATE,TEMP,DEWP", *(f"{d},{t},{w}" for d, t, w in rows)]
        path = directory / "obs.csv"
        path.write_text("\n".join(lines).replace("9999.9", text) + "\n")
        return path
    column_type = {"float32": pa.float32(), "float64": pa.float64(), "int32": pa.int32()}[kind]

    def column(values: list[float]) -> pa.Array:
        if pa.types.is_integer(column_type):  # an integer copy drops the decimal: 9999
            values = [int(v) for v in values]
        return pa.array(values, column_type)

    path = directory / "obs.parquet"
    pq.write_table(
        pa.table({"DATE": _SENTINEL_ROWS["DATE"], "TEMP": column(_SENTINEL_ROWS["TEMP"]),
                  "DEWP": column(_SENTINEL_ROWS["DEWP"])}),
        path,
    )  # fmt: skip
    return path


@pytest.mark.parametrize("kind", ["float32", "float64", "int32", "csv", "csv-integer"])
def test_gsod_missing_markers_are_null_whatever_the_column_type(tmp_path: Path, kind: str) -> None:
    """9999.9 is missing however a table stores it (float32 keeps it as 9999.900390625, an integer
    column as 9999): each row with one is dropped, never failing dewp_range or temp_range."""
    path = _sentinel_file(tmp_path, kind)

    table = fetch_from("table", SourceRequest(table_uri=str(path), work_dir=tmp_path)).table

    assert table.column("temp").null_count == 1 and table.column("dewp").null_count == 1
    kept = [(r["temp"], r["dewp"]) for r in table.to_pylist() if r["temp"] is not None]
    assert [(round(t), round(d)) for t, d in kept if d is not None] == [(80, 60)]
    _, _, report = check_table(table, ValidationPolicy(min_rows=1))
    failed = {r["name"] for r in report["rules"] if not r["passed"]}
    assert not failed & {"no_sentinels", "temp_range", "dewp_range"}, failed
    assert report["dropped_missing_temp_or_dewp"] == 2
