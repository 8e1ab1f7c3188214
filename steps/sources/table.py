"""Table source: a user's own CSV or Parquet (path or http(s) URL) with a column mapping."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from steps import gsod_format
from steps.cli import StepError, one_line
from steps.dataset import COLUMNS, rows_of
from steps.files import OverBound, open_regular, path_problem
from steps.sources import TABLE_FORMATS, Fetched, SourceRequest, table_suffix
from steps.sources.http import RetryPolicy, download

REQUIRED = ("date", "temp", "dewp")
DEFAULT_STATION = "unknown"
# A table is read whole into memory. `fetch --source table` on a 94 MiB CSV (3,000,000 rows of
# station, date, temp, dewp) peaked at 600 MB: about 4.5 bytes of memory per byte of CSV over
# 175 MB for Python and the libraries. At this bound that is about 0.75 GB, within the fetch
# pod's 1 GiB memory limit (workflows/pipeline.py); the bound counts CSV bytes as read (after
# gunzip for .csv.gz), and a Parquet file's uncompressed data (its footer says how much).
TABLE_MAX_BYTES = 128 * 1024 * 1024


def resolve_columns(available: list[str], column_map: dict[str, str]) -> dict[str, str]:
    """Dataset column -> table column. Unmapped dataset columns match a table column by name,
    ignoring case (so GSOD-like TEMP/DEWP/DATE work without a map). `column_map`'s own names
    are dataset columns, checked with the flag (steps/stages.py, `Pairs(COLUMNS)`).

    StepError for mapped columns the table lacks, or missing required ones.
    """
    by_lower = {name.lower(): name for name in available}
    resolved = {}
    for ours in COLUMNS:
        theirs = column_map.get(ours) or by_lower.get(ours)
        if theirs is None:
            continue
        if theirs not in available:
            raise StepError(
                f"column {theirs!r} (for {ours}) is not in the table; it has: "
                f"{', '.join(available[:20])}"
            )
        resolved[ours] = theirs
    missing = [ours for ours in REQUIRED if ours not in resolved]
    if missing:
        raise StepError(
            f"table has no column for {', '.join(missing)}: map it with --column-map "
            f"{missing[0]}=<column>; the table has: {', '.join(available[:20])}"
        )
    return resolved


def read_table(path: Path, name: str) -> pa.Table:
    """Read CSV (every column as text, converted later) or Parquet from a local file, the
    format chosen by `name`'s end (`steps.sources.table_suffix`, as `--table-uri` is checked).

    Raises:
        StepError: the file cannot be read, is no regular file, or `name` ends in no format.
    """
    suffix = table_suffix(name)
    if suffix is None:
        raise StepError(f"table {name}: unknown format, expected {', '.join(TABLE_FORMATS)}")

    def opened() -> Any:
        """The file, never a named pipe or a device (`open_regular`), gunzipped for .csv.gz,
        refusing to read past TABLE_MAX_BYTES (`steps.files.OverBound`)."""
        handle: Any = open_regular(path)
        if suffix.endswith(".gz"):
            handle = pa.CompressedInputStream(handle, "gzip")
        return io.BufferedReader(_Bounded(handle, TABLE_MAX_BYTES, f"table {name}"))

    try:
        if TABLE_FORMATS[suffix] == "parquet":
            with open_regular(path) as handle:
                parquet = pq.ParquetFile(handle)
                meta = parquet.metadata
                size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
                if size > TABLE_MAX_BYTES:
                    raise OverBound(
                        f"table {name}: holds {size:,} bytes of data uncompressed, over the "
                        f"bound of {TABLE_MAX_BYTES:,} bytes for a table; not read"
                    )
                return parquet.read()
        # Text first, so a bad value is reported by column rather than mis-inferred.
        with opened() as handle, pacsv.open_csv(handle) as reader:
            names = reader.schema.names
        as_text = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()))
        with opened() as handle:
            return pacsv.read_csv(handle, convert_options=as_text)
    except (pa.ArrowInvalid, OSError) as exc:
        raise StepError(f"cannot read table {name}: {one_line(exc)}") from exc


def to_dataset(table: pa.Table, columns: dict[str, str], name: str) -> pa.Table:
    """Convert mapped columns to the dataset schema; non-numeric or bad dates are StepErrors.

    GSOD's "missing" value in temp/dewp becomes null exactly as in the gsod and bigquery sources
    (`steps.gsod_format.null_sentinels`, the one definition), so an NCEI file read as a table
    gives the same dataset as through `--source gsod`.
    """
    rows = table.num_rows
    out = {}
    for ours, theirs in columns.items():
        column = table.column(theirs)
        try:
            out[ours] = _convert(ours, column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise StepError(
                f"table {name}: column {theirs} is not a valid {ours} ({one_line(exc)})"
            ) from exc
    station = out.get("station", pa.array([DEFAULT_STATION] * rows, pa.string()))
    frshtt = out.get("frshtt", pa.nulls(rows, pa.string()))
    return gsod_format.null_sentinels(
        pa.table(
            {"station": station, "date": out["date"], "temp": out["temp"], "dewp": out["dewp"],
             "frshtt": frshtt}
        )
    )  # fmt: skip


def _convert(ours: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    if ours in ("temp", "dewp"):
        if text:
            column = pc.utf8_trim_whitespace(column)
            column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
        return column.cast(pa.float64())
    if ours == "date":
        if text:
            column = pc.strptime(pc.utf8_trim_whitespace(column), format="%Y-%m-%d", unit="s")
        return column.cast(pa.date32())
    column = column.cast(pa.string())
    column = pc.utf8_trim_whitespace(column)
    if ours == "frshtt":  # an empty flags field means "not reported"
        column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
    return column


def fetch(request: SourceRequest) -> Fetched:
    """Read `request.table_uri` (downloading http(s) URLs first), map its columns and keep the
    rows of `request.years` and `request.stations` (every row when they are empty).

    Raises:
        StepError: no --table-uri, a local path that is not a file, or a table that cannot be
            read or mapped.
    """
    uri = request.table_uri
    if not uri:
        raise StepError("table source needs --table-uri (a CSV or Parquet path or http(s) URL)")
    if uri.startswith(("http://", "https://")):
        suffix = table_suffix(uri) or ".csv"  # checked at parse: a format's end
        request.work_dir.mkdir(parents=True, exist_ok=True)
        path = request.work_dir / f"table{suffix}"
        policy = RetryPolicy(retries=request.http_retries, timeout=request.http_timeout)
        download(uri, path, policy, max_bytes=TABLE_MAX_BYTES)
    else:
        path = Path(uri)
        problem = path_problem(path)
        if problem:
            raise StepError(f"--table-uri {uri} {problem}")
    raw = read_table(path, uri)
    columns = resolve_columns(raw.column_names, request.column_map)
    table = rows_of(to_dataset(raw, columns, uri), request.years, request.stations)
    metadata = {"name": "table", "uri": uri, "columns": columns, "rows_read": raw.num_rows,
                "years": list(request.years), "stations": list(request.stations)}  # fmt: skip
    return Fetched(table, metadata)


class _Bounded(io.RawIOBase):
    """A readable stream that raises OverBound once more than `limit` bytes were read from it
    (the bytes actually read count: a gunzipped stream says no size before)."""

    def __init__(self, raw: Any, limit: int, name: str) -> None:
        super().__init__()
        self._raw, self._limit, self._name, self._read = raw, limit, name, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        self._read += len(data)
        if self._read > self._limit:
            raise OverBound(
                f"{self._name}: holds over {self._limit:,} bytes, the bound for a table; not "
                "read further"
            )
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()
