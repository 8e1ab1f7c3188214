"""What train reads: validated dataset files (one per year in the pipeline), streamed batch by batch
into the co-moments of the training rows and of the holdout rows, plus a bounded holdout sample.

Peak memory is one batch plus the sample, whatever the number of files: no file, and no year, is
ever held whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from steps.cli import BadInput, StepError, one_line
from steps.dataset import (
    SCHEMA,
    SOURCE_DIGEST_KEY,
    SOURCE_METADATA_KEY,
    VALIDATION_METADATA_KEY,
    CanonicalHasher,
    conform,
    in_key_order,
    json_object,
    source_metadata_digest,
)
from steps.files import path_problem
from steps.holdout_split import in_holdout, row_keys
from steps.least_squares import CoMoments
from steps.model import FEATURE, TARGET

KEY_COLUMNS = ("station", "date")  # what a row's holdout side is decided by (steps.holdout_split)
COLUMNS = (*KEY_COLUMNS, FEATURE, TARGET)
# The holdout rows kept as rows (for promote's gate, the plot, MAE and the reference holdout):
# those with the smallest split keys, a uniform sample. Every holdout row counts in RMSE and R2.
HOLDOUT_MAX_ROWS = 1_000_000
# Room past the limit before the sample prunes: limit/8 more rows, so pruning (linear in the
# limit) runs rarely, while the reservoir stays a fixed 1.125 x limit rows.
HOLDOUT_SLACK_DIVISOR = 8
READ_BATCH_ROWS = 1 << 18  # rows per batch read from Parquet: about 8 MiB of these four columns
MIN_ROWS_PER_SPLIT = 2  # R2 needs two holdout rows; a line needs two training rows


@dataclass(frozen=True)
class DatasetPart:
    """One validated dataset file; in the pipeline each is one year, named by it.

    `validated_hash`/`fetched_hash`/`report`/`source` come from the metadata validate and fetch
    store in the file (None when absent): `source` is the `dewpoint.source` text, and
    `source_metadata` the same read as fetch wrote it (JSON; None when absent or not a JSON
    object); `rows` is the file's row count.
    """

    name: str
    path: Path
    rows: int
    validated_hash: str | None
    fetched_hash: str | None
    source: str | None
    source_metadata: dict[str, Any] | None
    report: dict[str, Any] | None


def find_parts(path: Path, what: str = "input dataset") -> list[DatasetPart]:
    """The parts at `path`: the file itself, or every `*.parquet` directly in a directory, by name.

    Raises StepError when `path` does not exist, a directory holds no Parquet file, a file
    cannot be read as Parquet, or two files have the same name before `.parquet`.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".parquet" and p.is_file())
        if not files:
            raise StepError(f"{what} {path} is a directory with no .parquet file")
    elif path.is_file():
        files = [path]
    else:
        raise StepError(f"{what} {path} {path_problem(path, ('a file', 'a directory'))}")
    return [read_part(file, what) for file in files]


def select_parts(parts: Sequence[DatasetPart], names: Sequence[str]) -> list[DatasetPart]:
    """The parts named `names` (all when empty), in name order: in the pipeline, this run's
    years out of every year stored under the run's data key.

    Raises StepError naming the parts asked for but absent.
    """
    if not names:
        return list(parts)
    by_name = {p.name: p for p in parts}
    missing = sorted(set(names) - set(by_name))
    if missing:
        raise StepError(f"input has no part {', '.join(missing)} (it has {', '.join(by_name)})")
    return [by_name[name] for name in sorted(set(names))]


def read_part(path: Path, what: str = "input dataset") -> DatasetPart:
    """A DatasetPart from the file's Parquet footer alone (no rows are read).

    Raises:
        StepError: `path` is missing, damaged or not Parquet (`what` names it in the message).
        BadInput: its `dewpoint.validation` metadata is not a UTF-8 JSON object; it holds a
            validation report without a `validated_data_hash` or SOURCE_DIGEST_KEY string, or
            with `dewpoint.source` metadata other than the bytes validate wrote beside it; its
            `dewpoint.source` metadata is not UTF-8 text.
    """
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged or foreign file
        raise StepError(f"cannot read {what} {path} as Parquet: {one_line(exc)}") from exc
    metadata = parquet.schema_arrow.metadata or {}
    raw_report = metadata.get(VALIDATION_METADATA_KEY)
    report = json_object(raw_report)
    raw_source = metadata.get(SOURCE_METADATA_KEY)
    if raw_report is not None and report is None:  # else it would pass as a file without one
        raise BadInput(
            f"{what} {path}: its dewpoint.validation metadata is not a UTF-8 JSON object; "
            "validate the fetched data again"
        )
    validated_hash = (report or {}).get("validated_data_hash")
    # A report holds train to the rows it names; without their hash there is nothing to hold
    # it to, and an emptied hash turned the check off while the report's units evidence
    # still counted (adversarial review, issue 10).
    if report is not None and not (isinstance(validated_hash, str) and validated_hash):
        raise BadInput(
            f"{what} {path}: its validation report names no validated_data_hash; "
            "validate the fetched data again"
        )
    source_metadata = json_object(raw_source)  # parsed once, here
    if report is not None:
        _check_source_metadata(f"{what} {path}", report, raw_source, source_metadata)
    try:  # it becomes the run's `data.source` tag, text
        source = raw_source.decode("utf-8") if raw_source else None
    except UnicodeDecodeError:
        raise BadInput(f"{what} {path}: its dewpoint.source metadata is not UTF-8 text") from None
    return DatasetPart(
        name=path.name.removesuffix(".parquet"),
        path=path,
        rows=parquet.metadata.num_rows,
        validated_hash=validated_hash,
        fetched_hash=(report or {}).get("fetched_data_hash"),
        source=source,
        source_metadata=source_metadata,
        report=report,
    )


def _check_source_metadata(
    where: str,
    report: dict[str, Any],
    raw_source: bytes | None,
    source: dict[str, Any] | None,
) -> None:
    """BadInput unless the file's `dewpoint.source` metadata is what validate wrote beside its
    report (steps/validate.py `validate_file`), `source` being those bytes read as JSON
    (`json_object`): the very bytes whose SHA-256 the report names
    (SOURCE_DIGEST_KEY), their `data_hash` the report's `validated_data_hash`, their
    `fetched_data_hash` the report's. Train tags its run with that metadata (`data.source`, the
    source named in `data.units_basis`), and the report is tied to the rows by their hash
    (read_batches): so the source is tied to them too. Comparing the two hashes alone let every
    other field be rewritten (synthetic rows tagged `bigquery`: breaker, issue 10)."""
    digest = report.get(SOURCE_DIGEST_KEY)
    if not (isinstance(digest, str) and digest):
        raise BadInput(
            f"{where}: its validation report names no {SOURCE_DIGEST_KEY} (an older validate "
            "wrote it); validate the fetched data again"
        )
    if raw_source is None or source_metadata_digest(raw_source) != digest:
        raise BadInput(
            f"{where}: its dewpoint.source metadata is not what validate wrote beside its "
            f"validation report (its SHA-256 is not the report's {SOURCE_DIGEST_KEY}); "
            "validate the fetched data again"
        )
    expected = {
        "data_hash": report.get("validated_data_hash"),
        "fetched_data_hash": report.get("fetched_data_hash"),
    }
    found = {key: (source or {}).get(key) for key in expected}
    if source is None or found != expected:
        differing = (
            "it is missing or not a JSON object"
            if source is None
            else ", ".join(k for k in expected if found[k] != expected[k]) + " differ"
        )
        raise BadInput(
            f"{where}: its dewpoint.source metadata is not what validate wrote beside its "
            f"validation report ({differing}); validate the fetched data again"
        )


def combined_hash(hashes: Sequence[tuple[str, str | None]]) -> str | None:
    """One data hash for several parts: (part name, its hash) pairs.

    One part: its own hash. Several: SHA-256 (hex) of the UTF-8 text made of one line
    `<name> <hash>\\n` per part, in order of name. None when any part has no hash.
    """
    if not hashes or any(h is None for _, h in hashes):
        return None
    if len(hashes) == 1:
        return hashes[0][1]
    text = "".join(f"{name} {digest}\n" for name, digest in sorted(hashes))
    return hashlib.sha256(text.encode()).hexdigest()


def read_batches(parts: Sequence[DatasetPart], what: str = "input dataset") -> Iterator[pa.Table]:
    """The rows of every part in order, READ_BATCH_ROWS at a time: station, date, temp, dewp.

    A part with validate's report is hashed as it streams (every dataset column: the data hash,
    steps/dataset.py) and must hash to the report's `validated_data_hash`: the report, and the
    units evidence in it, describe only the rows validate kept (steps/validate.py). Train reads
    no other column, but the hash covers them all, so `frshtt` is read for it too.

    The data hash is of the rows in canonical order (sorted: the same rows in any order hash
    alike), and validate writes them in that order; train hashes them in file order as they
    stream, never holding a part whole, so it cannot sort them. A part whose rows are the ones
    validate kept but reordered is therefore refused as well, by a message that says so (the
    split and fit would not differ: steps/holdout_split.py decides by row content).

    Raises StepError when a part lacks one of those columns or has non-numeric temp/dewp;
    BadInput when a validated part's rows are not the ones validate kept.
    """
    import pyarrow.parquet as pq

    for part in parts:
        where = f"{what} {part.path}"
        try:
            # Stations as a dictionary: a few thousand ids, not millions of strings.
            parquet = pq.ParquetFile(part.path, read_dictionary=["station"])
        except Exception as exc:
            raise StepError(f"cannot read {where} as Parquet: {one_line(exc)}") from exc
        schema = parquet.schema_arrow
        check_columns(schema, where)
        hasher = CanonicalHasher() if part.validated_hash else None
        if hasher is not None and not set(SCHEMA.names) <= set(schema.names):
            raise BadInput(f"{where} lacks dataset columns: {_NOT_VALIDATED_ROWS}")
        columns = SCHEMA.names if hasher is not None else list(COLUMNS)
        order = _KeyOrder()
        try:
            for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, columns=columns):
                table = pa.Table.from_batches([batch])
                if hasher is not None:
                    rows = _dataset_rows(table, where)
                    hasher.update(rows)
                    order.update(rows)
                    table = table.select(list(COLUMNS))
                yield table
        except (OSError, pa.ArrowException) as exc:
            raise StepError(f"cannot read {where} as Parquet: {one_line(exc)}") from exc
        finally:
            # Hand the part's freed buffers back (jemalloc/mimalloc keep them otherwise), so one
            # part's read leaves nothing behind for the next: pyarrow.MemoryPool.release_unused.
            pa.default_memory_pool().release_unused()
        if hasher is not None:
            check_validated_rows(where, hasher.hexdigest(), part.validated_hash, order.ordered)


class _KeyOrder:
    """Whether the rows fed so far, batch after batch, are in (station, date) order."""

    def __init__(self) -> None:
        self.ordered = True
        self._last: tuple[str, Any] | None = None

    def update(self, rows: pa.Table) -> None:
        """Take the next batch (dataset columns)."""
        if not self.ordered or rows.num_rows == 0:
            return
        first = (rows.column("station")[0].as_py(), rows.column("date")[0].as_py())
        self.ordered = (self._last is None or self._last <= first) and in_key_order(rows)
        last = rows.num_rows - 1
        self._last = (rows.column("station")[last].as_py(), rows.column("date")[last].as_py())


# Why a validated part is refused: its rows are not the rows its own report describes.
_NOT_VALIDATED_ROWS = (
    "its rows are not the rows its validation report describes (changed after validate?); "
    "validate the fetched data again"
)
# Why a validated part whose rows are out of order is refused (read_batches).
_NOT_IN_VALIDATED_ORDER = (
    "its rows are not in the order validate writes them (by station, then date), and train "
    "checks them against its validation report in file order as it streams them, so it cannot "
    "tell reordered rows from changed ones; validate the fetched data again"
)


def check_validated_rows(
    where: str, digest: str, validated_hash: str | None, in_order: bool = True
) -> None:
    """BadInput unless rows hashing to `digest` are the ones validate kept (`validated_hash`,
    the report's `validated_data_hash`; None: no report, nothing to hold them to). `in_order`:
    whether they were hashed in (station, date) order; the message then says so when they were
    not (a data hash taken in file order differs for the same rows reordered)."""
    if validated_hash is not None and digest != validated_hash:
        if not in_order:  # `digest` is of the rows in file order: not their data hash
            raise BadInput(f"{where}: {_NOT_IN_VALIDATED_ORDER}")
        raise BadInput(
            f"{where}: {_NOT_VALIDATED_ROWS} (data hash {digest[:12]}, validate kept "
            f"{validated_hash[:12]})"
        )


def _dataset_rows(table: pa.Table, where: str) -> pa.Table:
    """A batch read with the dataset's columns, in SCHEMA as the data hash takes it (stations
    decoded from the dictionary they are read as)."""
    station = table.column("station")
    if pa.types.is_dictionary(station.type):
        index = table.schema.get_field_index("station")
        table = table.set_column(index, "station", station.cast(pa.string()))
    try:
        return conform(table)
    except StepError as exc:  # e.g. a null station: not what validate wrote
        raise BadInput(f"{where}: {_NOT_VALIDATED_ROWS} ({exc})") from None


def check_columns(schema: pa.Schema, where: str) -> None:
    """StepError unless `schema` has station, date and numeric temp and dewp columns."""
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise StepError(
            f"{where} lacks column(s) {', '.join(missing)}; "
            f"it has {', '.join(schema.names) or 'no columns'}"
        )
    for column in (FEATURE, TARGET):
        kind = schema.field(column).type
        if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
            raise StepError(f"{where}: column {column} is {kind}, not numeric")


def frame_batches(frame: pd.DataFrame, where: str = "input") -> Iterator[pa.Table]:
    """A pandas frame with station, date, temp and dewp as the batches `summarize` reads."""
    check_columns(pa.Schema.from_pandas(frame, preserve_index=False), where)
    table = pa.table(
        {
            "station": pa.array(frame["station"].astype(str), pa.string()),
            "date": pa.array(pd.to_datetime(frame["date"]).dt.date, pa.date32()),
            FEATURE: pa.array(frame[FEATURE], pa.float64(), from_pandas=True),
            TARGET: pa.array(frame[TARGET], pa.float64(), from_pandas=True),
        }
    )
    for start in range(0, max(table.num_rows, 1), READ_BATCH_ROWS):
        yield table.slice(start, READ_BATCH_ROWS)


class HoldoutSample:
    """The `limit` holdout rows with the smallest split keys, kept while rows stream past.

    Ties on the key (rows sharing station and date) are broken by temp, then dewp, so the sample
    depends only on the rows, not on their order: a rerun keeps the same rows. Memory: one fixed
    reservoir of `limit` + `limit // HOLDOUT_SLACK_DIVISOR` rows (key, temp, dewp: 24 bytes a
    row), allocated once; rows arriving past a full reservoir are pruned in place, so the bytes
    held do not grow with the number of rows or years offered.
    """

    def __init__(self, limit: int = HOLDOUT_MAX_ROWS) -> None:
        if limit < 1:
            raise ValueError(f"a holdout sample needs a limit >= 1, got {limit}")
        self.limit = limit
        self.capacity = limit + max(1, limit // HOLDOUT_SLACK_DIVISOR)
        # np.empty: pages are touched only as rows arrive, so a small run stays small.
        self._keys = np.empty(self.capacity, np.uint64)
        self._temp = np.empty(self.capacity, np.float64)
        self._dewp = np.empty(self.capacity, np.float64)
        self._size = 0
        self._cutoff: np.uint64 | None = None  # keys above this can no longer get in

    @property
    def rows_held(self) -> int:
        """How many rows are held now (at most `capacity`)."""
        return self._size

    @property
    def nbytes(self) -> int:
        """Bytes of the reservoir: fixed at construction."""
        return self._keys.nbytes + self._temp.nbytes + self._dewp.nbytes

    def add(self, keys: np.ndarray, temp: np.ndarray, dewp: np.ndarray) -> None:
        """Offer holdout rows (their keys, temp and dewp in deg F)."""
        if self._cutoff is not None:
            keep = keys <= self._cutoff
            keys, temp, dewp = keys[keep], temp[keep], dewp[keep]
        start = 0
        while start < keys.size:
            if self._size == self.capacity:
                self._prune()
                if self._cutoff is not None:  # the cutoff may have dropped: filter the rest
                    rest = slice(start, None)
                    keep = keys[rest] <= self._cutoff
                    keys, temp, dewp = keys[rest][keep], temp[rest][keep], dewp[rest][keep]
                    start = 0
                    continue
            take = min(keys.size - start, self.capacity - self._size)
            end = self._size + take
            self._keys[self._size : end] = keys[start : start + take]
            self._temp[self._size : end] = temp[start : start + take]
            self._dewp[self._size : end] = dewp[start : start + take]
            self._size = end
            start += take

    def _prune(self) -> None:
        """Keep the `limit` smallest rows (by key, then temp, then dewp), in no particular order,
        at the front of the reservoir."""
        n = self._size
        if n <= self.limit:
            return
        keys = self._keys[:n]
        # A linear-time selection of the limit-th key; only the rows tied on it are sorted.
        kth = np.partition(keys, self.limit - 1)[self.limit - 1]
        below = np.flatnonzero(keys < kth)
        tied = np.flatnonzero(keys == kth)
        tied = tied[np.lexsort((self._dewp[tied], self._temp[tied]))][: self.limit - below.size]
        chosen = np.concatenate([below, tied])
        for column in (self._keys, self._temp, self._dewp):
            column[: chosen.size] = column[chosen]  # the right side is a copy: safe in place
        self._size = chosen.size
        self._cutoff = kth

    def frame(self) -> pd.DataFrame:
        """The sample as temp/dewp columns (float64, deg F), in order of split key."""
        self._prune()
        keys, temp, dewp = (c[: self._size] for c in (self._keys, self._temp, self._dewp))
        order = np.lexsort((dewp, temp, keys))
        return pd.DataFrame({FEATURE: temp[order], TARGET: dewp[order]})


@dataclass(frozen=True)
class TrainingSummary:
    """Everything train needs from the data: co-moments of the training and holdout rows (deg F),
    the holdout sample (temp/dewp rows in split-key order), and how many rows were unusable."""

    train: CoMoments
    holdout: CoMoments
    sample: pd.DataFrame
    rows_dropped: int

    @property
    def rows(self) -> int:
        """Usable rows: training plus holdout."""
        return self.train.count + self.holdout.count


def summarize(
    batches: Iterable[pa.Table],
    test_size: float,
    seed: int,
    sample_rows: int = HOLDOUT_MAX_ROWS,
) -> TrainingSummary:
    """Split each batch's rows (steps.holdout_split) and fold them into the summary.

    Rows missing temp or dewp, or with a non-finite value, are dropped and counted.
    """
    train, holdout = CoMoments(), CoMoments()
    sample = HoldoutSample(sample_rows)
    dropped = 0
    for batch in batches:
        temp = _floats(batch.column(FEATURE))
        dewp = _floats(batch.column(TARGET))
        usable = np.isfinite(temp) & np.isfinite(dewp)
        dropped += int(usable.size - usable.sum())
        if not usable.any():
            continue
        if not usable.all():
            mask = pa.array(usable)
            batch = batch.filter(mask)
            temp, dewp = temp[usable], dewp[usable]
        keys = row_keys(batch.column("station"), batch.column("date"), seed)
        held = in_holdout(keys, test_size)
        train = train.merge(CoMoments.of(temp[~held], dewp[~held]))
        holdout = holdout.merge(CoMoments.of(temp[held], dewp[held]))
        sample.add(keys[held], temp[held], dewp[held])
    return TrainingSummary(train, holdout, sample.frame(), dropped)


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64, nulls as NaN."""
    return (
        pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    )


def check_split(summary: TrainingSummary, test_size: float, where: str = "input") -> None:
    """StepError when there are no usable rows, or too few on either side of the split."""
    if summary.rows == 0:
        raise StepError(f"{where} has no rows with both {FEATURE} and {TARGET}")
    if min(summary.train.count, summary.holdout.count) < MIN_ROWS_PER_SPLIT:
        raise StepError(
            f"too few rows to split: {summary.rows} usable rows with test size {test_size} give "
            f"{summary.train.count} training and {summary.holdout.count} holdout rows; "
            f"need {MIN_ROWS_PER_SPLIT} each"
        )
