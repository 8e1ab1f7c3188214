"""The dataset shared by fetch, validate and train: schema, canonical hash, atomic Parquet I/O."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from steps.cli import StepError, one_line
from steps.files import path_problem, write_atomically
from steps.redaction import redact_values
from steps.sources import COLUMNS

SCHEMA = pa.schema(
    [
        pa.field("station", pa.string(), nullable=False),
        pa.field("date", pa.date32(), nullable=False),
        pa.field("temp", pa.float64()),
        pa.field("dewp", pa.float64()),
        pa.field("frshtt", pa.string()),
    ]
)  # its names are COLUMNS, in that order (tests/test_contract.py holds them together)
SOURCE_METADATA_KEY = b"dewpoint.source"
VALIDATION_METADATA_KEY = b"dewpoint.validation"
# validate's report key: SHA-256 of the `dewpoint.source` bytes it wrote beside the report.
SOURCE_DIGEST_KEY = "source_metadata_sha256"
SORT_KEYS = [(name, "ascending") for name in COLUMNS]


def empty_table() -> pa.Table:
    """A dataset with the right schema and no rows."""
    return SCHEMA.empty_table()


def rows_of(table: pa.Table, years: Iterable[int], stations: Iterable[str]) -> pa.Table:
    """The rows of `table` (dataset columns) dated in one of `years` and from one of `stations`;
    no filter for either when it is empty (what fetch's `--years` and `--stations` mean for a
    source that reads every row it is given: local GSOD files, a table)."""
    years, stations = list(years), list(stations)
    if years:
        table = table.filter(pc.is_in(pc.year(table.column("date")), pa.array(years, pa.int64())))
    if stations:
        table = table.filter(pc.is_in(table.column("station"), pa.array(stations, pa.string())))
    return table


def conform(table: pa.Table) -> pa.Table:
    """Cast `table` to SCHEMA (column order, types) and drop any schema metadata.

    Raises StepError naming the missing columns or the column that cannot be cast.
    """
    missing = [name for name in COLUMNS if name not in table.column_names]
    if missing:
        raise StepError(f"dataset is missing column(s) {', '.join(missing)}")
    columns = []
    for field in SCHEMA:
        column = table.column(field.name)
        if not column.type.equals(field.type):
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise StepError(
                    f"dataset column {field.name} is {column.type}, not {field.type}: "
                    f"{one_line(exc)}"
                ) from exc
        if not field.nullable and column.null_count:
            raise StepError(f"dataset column {field.name} has {column.null_count} null value(s)")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def canonical(table: pa.Table) -> pa.Table:
    """The dataset in canonical form: SCHEMA types, rows sorted by every column in order.

    Fetch writes this form, so the same observations give the same file and the same hash
    whatever order the source delivered them in.
    """
    table = conform(table)
    if not _is_sorted(table):
        table = table.take(pc.sort_indices(table, sort_keys=SORT_KEYS))
    return table


def _is_sorted(table: pa.Table) -> bool:
    """Whether rows are already in canonical order; a vectorised check that avoids a sort."""
    ordered, same_key = _key_order(table)
    # Ties on (station, date) are rare; sorting then orders them by the remaining columns.
    return ordered and not pc.any(same_key).as_py()


def _key_order(table: pa.Table) -> tuple[bool, pa.ChunkedArray]:
    """(rows are in non-decreasing (station, date) order, row i has the key of row i + 1)."""
    if table.num_rows < 2:
        return True, pa.chunked_array([], pa.bool_())
    head = table.slice(0, table.num_rows - 1)
    tail = table.slice(1)
    station_a, station_b = head.column("station"), tail.column("station")
    date_a, date_b = head.column("date"), tail.column("date")
    same_station = pc.equal(station_a, station_b)
    same_key = pc.and_(same_station, pc.equal(date_a, date_b))
    if pc.any(pc.greater(station_a, station_b)).as_py():
        return False, same_key
    return not pc.any(pc.and_(same_station, pc.greater(date_a, date_b))).as_py(), same_key


def in_key_order(table: pa.Table) -> bool:
    """Whether rows (with `station` and `date` columns) are in (station, date) order."""
    return _key_order(table)[0]


def duplicate_keys(table: pa.Table) -> int:
    """How many rows repeat an earlier row's (station, date); cheap when rows are in key order."""
    ordered, same_key = _key_order(table)
    if ordered:
        return int(pc.sum(same_key.cast(pa.int64())).as_py() or 0)
    groups = table.group_by(["station", "date"]).aggregate([([], "count_all")])
    return table.num_rows - groups.num_rows


def data_hash(table: pa.Table) -> str:
    """SHA-256 (hex) of the dataset's columns in canonical form.

    The hash covers column names and types, each column's validity (nulls) and values in
    canonical row order; it ignores Parquet encoding, chunking and key-value metadata.
    """
    return hash_canonical(canonical(table))


def hash_canonical(table: pa.Table) -> str:
    """`data_hash` of a table already returned by `canonical` (skips re-checking the order).

    Each column feeds three SHA-256 streams (validity bytes, value lengths, value bytes) chunk by
    chunk, so chunking never changes the result and nothing is copied into one big array; the
    final hash is SHA-256 over the row count, column names and types, and those digests.
    """
    hasher = CanonicalHasher()
    hasher.update(table)
    return hasher.hexdigest()


class CanonicalHasher:
    """`hash_canonical` fed piece by piece: `update` with consecutive row ranges of a canonical
    table (in order), then `hexdigest`; the result equals hash_canonical of the whole table."""

    def __init__(self) -> None:
        self.rows = 0
        self._streams = {
            f.name: (hashlib.sha256(), hashlib.sha256(), hashlib.sha256()) for f in SCHEMA
        }

    def update(self, table: pa.Table) -> None:
        """Hash the next rows (a SCHEMA table)."""
        self.rows += table.num_rows
        for field in SCHEMA:
            valid, lengths, values = self._streams[field.name]
            for chunk in table.column(field.name).chunks:
                valid.update(pc.is_valid(chunk).to_numpy(zero_copy_only=False).view(np.uint8))
                if pa.types.is_string(field.type):
                    chunk = chunk.fill_null("") if chunk.null_count else chunk
                    offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)
                    offsets = offsets[chunk.offset : chunk.offset + len(chunk) + 1]
                    lengths.update(np.diff(offsets).astype("<i4"))
                    values.update(memoryview(chunk.buffers()[2])[offsets[0] : offsets[-1]])
                elif pa.types.is_date32(field.type):
                    days = chunk.cast(pa.int32()).fill_null(0).to_numpy(zero_copy_only=False)
                    values.update(days.astype("<i4"))
                else:
                    numbers = chunk.fill_null(0.0).to_numpy(zero_copy_only=False)
                    # -0.0 and 0.0 are the same observation.
                    values.update((numbers + 0.0).astype("<f8"))

    def hexdigest(self) -> str:
        """The data hash of every row passed to `update` so far."""
        final = hashlib.sha256(f"rows={self.rows};".encode())
        for field in SCHEMA:
            final.update(f"{field.name}:{field.type};".encode())
            for part in self._streams[field.name]:
                final.update(part.digest())
        return final.hexdigest()


def is_canonical(table: pa.Table) -> bool:
    """Whether `table` (SCHEMA) is already in canonical order, so `canonical` returns it as is."""
    return _is_sorted(table)


def write_dataset(table: pa.Table, path: Path, source: dict[str, Any] | None = None) -> None:
    """Write `table` as Parquet at `path` atomically (temporary name in the same folder, rename).

    `source` is stored as JSON under the `dewpoint.source` key-value metadata, credentials in
    its URLs redacted (`steps.redaction`).
    """
    table = table.replace_schema_metadata(_source_metadata(source))
    write_atomically(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def write_dataset_pieces(
    pieces: Iterable[pa.Table],
    path: Path,
    source: dict[str, Any] | None = None,
    validation: dict[str, Any] | None = None,
) -> None:
    """`write_dataset` of the concatenation of `pieces` (SCHEMA tables), written as they come:
    the whole table is never in memory at once. `validation` (validate's report) is stored as JSON
    under `dewpoint.validation`, so the report travels with the rows it describes."""
    metadata = _source_metadata(source)
    if validation is not None:
        validation = redact_values(validation)
        metadata[VALIDATION_METADATA_KEY] = json.dumps(validation, sort_keys=True).encode()
    schema = SCHEMA.with_metadata(metadata)

    def write(tmp: str) -> None:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for piece in pieces:
                writer.write_table(pa.Table.from_arrays(piece.columns, schema=schema))

    write_atomically(path, write)


def _source_metadata(source: dict[str, Any] | None) -> dict[bytes, bytes]:
    """The Parquet key-value metadata for `source`."""
    return {SOURCE_METADATA_KEY: source_metadata_bytes(source)}


def source_metadata_bytes(source: dict[str, Any] | None) -> bytes:
    """The exact `dewpoint.source` bytes written for `source`: JSON (UTF-8), keys sorted, with no
    credential left in clear."""
    return json.dumps(redact_values(source or {}), sort_keys=True).encode()


def source_metadata_digest(raw: bytes) -> str:
    """SHA-256 (hex) of `dewpoint.source` bytes: validate's report names the one it wrote
    (SOURCE_DIGEST_KEY), so train can tell them from any other."""
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class StoredDataset:
    """A dataset file as read: its rows (SCHEMA), fetch's source metadata (`{}` when absent or
    unreadable) and validate's report (None when absent or unreadable: a file validate did not
    write)."""

    table: pa.Table
    source: dict[str, Any]
    report: dict[str, Any] | None


def read_stored_dataset(path: Path) -> StoredDataset:
    """Read a dataset written by `write_dataset` or `write_dataset_pieces`, rows and metadata in
    one read of the file.

    Raises StepError when the file is missing, is not Parquet, or lacks dataset columns.
    """
    path = Path(path)
    problem = path_problem(path)
    if problem:
        raise StepError(f"dataset {path} {problem}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise StepError(f"cannot read dataset {path} as Parquet: {one_line(exc)}") from exc
    metadata = table.schema.metadata or {}
    return StoredDataset(
        conform(table),
        json_object(metadata.get(SOURCE_METADATA_KEY)) or {},
        json_object(metadata.get(VALIDATION_METADATA_KEY)),
    )


def read_dataset(path: Path) -> tuple[pa.Table, dict[str, Any]]:
    """(table in SCHEMA, source metadata dict) of `read_stored_dataset`."""
    stored = read_stored_dataset(path)
    return stored.table, stored.source


def json_object(raw: bytes | None) -> dict[str, Any] | None:
    """Parquet key-value metadata read as a JSON object; None when absent, not UTF-8 JSON, or JSON
    that is not an object (a list or a number describes no source and no report).

    Only UTF-8, what every writer here writes: `json.loads` of bytes also takes UTF-16 and
    UTF-32, which train then could not decode as its `data.source` text (breaker, issue 10)."""
    try:  # UnicodeDecodeError is a ValueError
        value = json.loads(raw.decode("utf-8")) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
