"""The NOAA GSOD file format: a parser for daily files (NCEI 'access' CSV and legacy fixed-width
'.op') to the dataset. Where they come from is `steps/sources/gsod.py`'s job.

Vectorised with pyarrow: small station files are concatenated (headers stripped) into ~4 MB
batches, each parsed by one pyarrow.csv call on a worker thread; a full year (~12,300 files,
~4M rows) costs about 1.1-1.3x a plain pyarrow.csv read of the same files (benchmarks/).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tarfile
import zlib
from collections import deque
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from steps.cli import StepError, one_line
from steps.dataset import SCHEMA, empty_table
from steps.files import NotRegularFile, OverBound, open_regular, read_regular, what_mode
from steps.sources import GSOD_FILE_SUFFIXES

# The 28 columns of every NCEI access CSV file, in order; the header line quotes each name.
GSOD_COLUMNS = (
    "STATION", "DATE", "LATITUDE", "LONGITUDE", "ELEVATION", "NAME",
    "TEMP", "TEMP_ATTRIBUTES", "DEWP", "DEWP_ATTRIBUTES", "SLP", "SLP_ATTRIBUTES",
    "STP", "STP_ATTRIBUTES", "VISIB", "VISIB_ATTRIBUTES", "WDSP", "WDSP_ATTRIBUTES",
    "MXSPD", "GUST", "MAX", "MAX_ATTRIBUTES", "MIN", "MIN_ATTRIBUTES",
    "PRCP", "PRCP_ATTRIBUTES", "SNDP", "FRSHTT",
)  # fmt: skip
GSOD_HEADER = ",".join(f'"{name}"' for name in GSOD_COLUMNS).encode()

# "Missing" sentinels from NCEI's GSOD readme
# (https://www.ncei.noaa.gov/data/global-summary-of-the-day/doc/readme.txt, "Format": TEMP and
# DEWP are written with one decimal, missing = 9999.9); only TEMP and DEWP reach the dataset.
MISSING = {
    **dict.fromkeys(("TEMP", "DEWP", "SLP", "STP", "MAX", "MIN"), 9999.9),
    **dict.fromkeys(("VISIB", "WDSP", "MXSPD", "GUST", "SNDP"), 999.9),
    "PRCP": 99.99,
}
FRSHTT_PATTERN = "^[01]{6}$"

# pyarrow's numeric conversion skips the padding spaces ("  45.3", " -35.0"); DATE is ISO.
_CSV_TYPES = {
    "STATION": pa.string(),
    "DATE": pa.date32(),
    "TEMP": pa.float64(),
    "DEWP": pa.float64(),
    "FRSHTT": pa.string(),
}
_CONVERT = pacsv.ConvertOptions(
    include_columns=list(_CSV_TYPES),
    column_types=_CSV_TYPES,
    # GSOD never leaves TEMP/DEWP empty (it writes 9999.9): an empty value is a broken row.
    null_values=[],
    strings_can_be_null=False,
    quoted_strings_can_be_null=False,
)
# Row counting per file relies on one row per line, so blank lines must not be skipped.
_PARSE = pacsv.ParseOptions(newlines_in_values=False, ignore_empty_lines=False)
DEFAULT_BATCH_BYTES = 4 * 1024 * 1024
PARSE_WORKERS = 2
GSOD_SUFFIXES = GSOD_FILE_SUFFIXES
# Size bounds, in uncompressed bytes. A GSOD station-year file is about 80 KB and a whole-year
# archive of every station about 0.9 GiB, so these leave wide room while a decompression bomb (a
# 4.7 MB .tar.gz holding one 1 GiB member) is refused from its tar header, before it is read.
MAX_FILE_BYTES = 64 * 1024 * 1024  # one file: an archive member, a local file, a gunzipped .op.gz
MAX_ARCHIVE_BYTES = 8 * 1024 * 1024 * 1024  # every member of one archive together
# A tar metadata record (GNU long name or link, pax header): tarfile reads it whole into memory
# while reading the next header, before any member is seen (CPython Lib/tarfile.py,
# TarInfo._proc_gnulong and _proc_pax), so a 0.5 MB .tar.gz holding a 512 MiB long name took
# fetch to 1.1 GB. A path is at most 4 KiB (PATH_MAX); pax records of a GSOD archive are a few.
MAX_TAR_METADATA_BYTES = 1024 * 1024
_TAR_METADATA_TYPES = frozenset(
    {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
     tarfile.SOLARIS_XHDTYPE}
)  # fmt: skip


class GsodFormatError(StepError):
    """A GSOD file that is not in the format NCEI publishes (truncated, wrong header, bad value)."""


class TooLargeError(GsodFormatError):
    """A file or archive larger than its bound (MAX_FILE_BYTES, MAX_ARCHIVE_BYTES)."""


def check_size(name: str, size: int, limit: int = MAX_FILE_BYTES, what: str = "file") -> None:
    """Refuse `name` of `size` bytes when it is over `limit` bytes, before it is read.

    Raises:
        TooLargeError: naming the file, its size and the bound, in bytes.
    """
    if size > limit:
        raise TooLargeError(
            f"{name}: {what} is {size:,} bytes, over the bound of {limit:,} bytes for one GSOD "
            f"{what}; not read (a corrupt or hostile archive?)"
        )


@dataclass
class ParseSummary:
    """What a parse consumed: files, rows, and the names of files without data rows."""

    files: int = 0
    rows: int = 0
    empty_files: list[str] = field(default_factory=list)


def is_gsod_name(name: str) -> bool:
    """Whether a file or archive member name looks like a GSOD daily file we can parse."""
    return name.lower().endswith(GSOD_SUFFIXES)


def iter_directory(
    path: Path,
    read_ahead: int = 64,
    max_file_bytes: int = MAX_FILE_BYTES,
    years: Collection[int] = (),
) -> Iterator[tuple[str, bytes]]:
    """Yield (relative name, bytes) for every GSOD file under `path`, sorted by file name.

    Up to `read_ahead` files are read by background threads while the caller parses: with
    ~12,300 small files per year, waiting on each read in turn costs more than the parse.
    With `years`, files under a top-level folder named as another year (NCEI's `{year}/` layout)
    are skipped unread: a per-year fetch of a many-year folder then parses one year's files, not
    all of them. Files elsewhere are still yielded (the caller filters their rows by date).

    Raises:
        TooLargeError: a file over `max_file_bytes`, before any of it is read.
    """
    root = str(path)
    # Station file first, then folder: `{year}/{station}.csv` trees come out in (station, date)
    # order, which is the dataset's canonical order, so fetch needs no sort.
    names = sorted(
        (
            os.path.relpath(os.path.join(folder, name), root)
            for folder, _, files in os.walk(root)
            for name in files
            if is_gsod_name(name) and _in_years(os.path.relpath(folder, root), years)
        ),
        key=lambda name: (os.path.basename(name), name),
    )
    for name in names:
        mode = os.stat(os.path.join(root, name)).st_mode  # links followed
        if not stat.S_ISREG(mode):
            # A named pipe would block the read for ever, a link to /dev/zero never end it.
            raise NotRegularFile(f"{name} in {root} is {what_mode(mode)}: only files are read")
        check_size(name, os.stat(os.path.join(root, name)).st_size, max_file_bytes)
    pending: deque[tuple[str, Future[bytes]]] = deque()
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="gsod-read") as pool:
        for name in names:
            path = os.path.join(root, name)
            pending.append((name, pool.submit(read_file, Path(path), max_file_bytes, name)))
            if len(pending) >= read_ahead:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def _in_years(folder: str, years: Collection[int]) -> bool:
    """False for a folder under a top-level year folder (`2019/...`) whose year is not in
    `years`; True otherwise, and always when `years` is empty."""
    top = folder.split(os.sep, 1)[0]
    return not years or not re.fullmatch(r"\d{4}", top) or int(top) in years


def read_file(path: Path, max_file_bytes: int = MAX_FILE_BYTES, name: str | None = None) -> bytes:
    """The bytes of the GSOD file at `path`, a regular file (`steps.files.open_regular`), of at
    most `max_file_bytes` bytes as read (not as its size said before: it may grow meanwhile).

    Raises:
        NotRegularFile: a named pipe, a device or a socket (a link to one included).
        TooLargeError: more than `max_file_bytes` bytes; no more is read.
    """
    try:
        return read_regular(path, max_file_bytes, name or str(path))
    except OverBound as exc:
        raise TooLargeError(str(exc)) from None


def iter_tar(
    source: Path | BinaryIO,
    *,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_archive_bytes: int = MAX_ARCHIVE_BYTES,
) -> Iterator[tuple[str, bytes]]:
    """Yield (member name, bytes) for each GSOD member of a .tar.gz, streaming member by member.

    The archive is read once, forward, as a stream (`tarfile` mode `r|gz`): only the current
    member is ever in memory. Each member's size comes from its header and is checked against
    `max_file_bytes`, and the running total of every member against `max_archive_bytes`, before
    any of its bytes are read; so a decompression bomb costs one header, not its expansion.

    Args:
        source: the archive's path, or a binary stream positioned at its start.

    Raises:
        TooLargeError: a member, or all members together, over their bound (bytes).
        GsodFormatError: not a readable .tar.gz.
    """
    name = str(source) if isinstance(source, Path | str) else getattr(source, "name", "archive")
    total = 0
    try:
        with _open_tar_stream(source) as archive:
            for member in archive:
                if not member.isreg():
                    continue
                check_size(f"{name}: {member.name}", member.size, max_file_bytes, "member")
                total += member.size
                if total > max_archive_bytes:
                    raise TooLargeError(
                        f"{name}: members add up to over {max_archive_bytes:,} bytes (the bound "
                        f"for one archive) at {member.name}; not read further"
                    )
                if is_gsod_name(member.name):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        yield member.name, handle.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise GsodFormatError(f"{name}: not a readable .tar.gz archive ({one_line(exc)})") from exc


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header checked as soon as it is decoded (`TarInfo.frombuf`, public API): a metadata
    record over MAX_TAR_METADATA_BYTES, or a GNU sparse member (its extension blocks are read
    into a list without bound, _proc_sparse; GSOD files are never sparse), is refused before
    tarfile reads what follows the header."""

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        info = super().frombuf(buf, encoding, errors)
        if info.type in _TAR_METADATA_TYPES:
            check_size(
                f"tar header before {info.name!r}", info.size, MAX_TAR_METADATA_BYTES,
                "tar metadata record",
            )  # fmt: skip
        if info.type == tarfile.GNUTYPE_SPARSE:
            raise GsodFormatError(f"{info.name}: a sparse tar member; GSOD files are never sparse")
        return info


@contextlib.contextmanager
def _open_tar_stream(source: Path | BinaryIO) -> Iterator[tarfile.TarFile]:
    """The archive as a forward-only tar stream; a path is opened as a regular file only
    (`steps.files.open_regular`: never a named pipe or a device)."""
    with contextlib.ExitStack() as stack:
        if isinstance(source, Path | str):
            source = stack.enter_context(open_regular(Path(source)))
        yield stack.enter_context(
            tarfile.open(fileobj=source, mode="r|gz", tarinfo=_BoundedTarInfo)
        )


def parse_files(
    files: Iterable[tuple[str, bytes]],
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    summary: ParseSummary | None = None,
) -> pa.Table:
    """Parse GSOD files given as (name, bytes) into one table in the dataset SCHEMA.

    CSV files are grouped into batches of about `batch_bytes` and parsed in one pyarrow call per
    batch; legacy `.op`/`.op.gz` files are parsed one by one. Any malformed file fails the whole
    parse (GsodFormatError naming the file): a truncated or foreign file means the download or
    the archive is broken, and training on silently partial data is worse than not retraining.
    """
    summary = summary if summary is not None else ParseSummary()
    tables: list[pa.Table | Future[pa.Table]] = []
    batch: list[tuple[str, bytes | memoryview]] = []
    size = 0
    # Batches are parsed by worker threads (pyarrow releases the GIL) while this thread reads
    # on; at most 2 * PARSE_WORKERS batches are in flight, so memory stays bounded.
    with ThreadPoolExecutor(max_workers=PARSE_WORKERS, thread_name_prefix="gsod-parse") as pool:
        in_flight: deque[Future[pa.Table]] = deque()

        def submit(batch: list[tuple[str, bytes | memoryview]]) -> None:
            while len(in_flight) >= 2 * PARSE_WORKERS:
                in_flight.popleft().result()
            future = pool.submit(_parse_csv_batch, batch)
            in_flight.append(future)
            tables.append(future)

        for name, data in files:
            summary.files += 1
            if name.lower().endswith((".op", ".op.gz")):
                table = parse_op(data, name)
                if not table.num_rows:
                    summary.empty_files.append(name)
                tables.append(table)
                continue
            body = _csv_body(data, name)
            if not body:
                summary.empty_files.append(name)
                continue
            batch.append((name, body))
            size += len(body)
            if size >= batch_bytes:
                submit(batch)
                batch, size = [], 0
        if batch:
            submit(batch)
        done = [t.result() if isinstance(t, Future) else t for t in tables]
    table = pa.concat_tables(done) if done else empty_table()
    summary.rows += table.num_rows
    return table


def parse_csv(data: bytes, name: str = "<bytes>") -> pa.Table:
    """Parse one NCEI access CSV file (header included) into the dataset SCHEMA."""
    body = _csv_body(data, name)
    return _parse_csv_batch([(name, body)]) if body else empty_table()


def _csv_body(data: bytes, name: str) -> bytes | memoryview:
    """Check the header; return the data lines, ending in exactly one newline (empty if none)."""
    if not data or data.isspace():
        raise GsodFormatError(f"bad GSOD file: {name}: empty, expected a GSOD CSV header")
    end = data.find(b"\n")
    header = (data if end < 0 else data[:end]).rstrip(b"\r")
    if header != GSOD_HEADER:
        got = [column.strip('" ') for column in header.decode("utf-8", "replace").split(",")]
        problem = next(
            (
                f"column {i + 1} is {g[:30]!r}, expected {e!r}"
                for i, (g, e) in enumerate(zip(got, GSOD_COLUMNS, strict=False))
                if g != e
            ),
            f"{len(got)} columns, expected {len(GSOD_COLUMNS)}",
        )
        raise GsodFormatError(f"bad GSOD file: {name}: wrong header, {problem}")
    if end < 0:
        return b""
    start, stop = end + 1, len(data)
    while stop > start and data[stop - 1] in b"\r\n":
        stop -= 1
    if stop == start:
        return b""
    if stop + 1 == len(data) and data[stop] == 10:  # ends in one "\n", the norm: no copy
        return memoryview(data)[start:]
    return data[start:stop] + b"\n"


def _read_csv(data: bytes) -> pa.Table:
    return pacsv.read_csv(
        pa.BufferReader(data),
        # One thread per batch: batches run in parallel already, and pyarrow's own thread
        # pool costs more CPU than it saves on 4 MB inputs (measured on 2 cores).
        read_options=pacsv.ReadOptions(use_threads=False, block_size=8 * 1024 * 1024),
        parse_options=_PARSE,
        convert_options=_CONVERT,
    )


def _parse_csv_batch(batch: list[tuple[str, bytes | memoryview]]) -> pa.Table:
    """Parse several header-stripped CSV bodies in one pyarrow call; locate the file on failure."""
    data = b"".join([GSOD_HEADER, b"\n", *(body for _, body in batch)])
    try:
        raw = _read_csv(data)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        # Slow path, only on failure: parse file by file to name the broken one(s).
        del data
        bad = []
        for name, body in batch:
            try:
                _read_csv(GSOD_HEADER + b"\n" + body)
            except (pa.ArrowInvalid, UnicodeDecodeError) as file_exc:
                bad.append(f"{name}: {one_line(file_exc)}")
        raise GsodFormatError(_bad_files_message(bad) if bad else one_line(exc)) from exc
    frshtt = raw.column("FRSHTT")
    # A row cut inside its last field still has 28 columns; its FRSHTT gives it away.
    good_flags = pc.match_substring_regex(frshtt, FRSHTT_PATTERN)
    if not pc.all(good_flags).as_py():
        first = pc.index(good_flags, False).as_py()
        value = frshtt[first].as_py()
        raise GsodFormatError(
            f"bad GSOD file: {_file_of_row(batch, first)}: FRSHTT {value!r} is not 6 digits 0/1 "
            "(truncated file?)"
        )
    return _normalise(raw)


def _normalise(raw: pa.Table) -> pa.Table:
    """Rename to dataset columns and turn GSOD's 9999.9 sentinels into nulls."""
    columns = ("STATION", "DATE", "TEMP", "DEWP", "FRSHTT")
    return null_sentinels(pa.Table.from_arrays([raw.column(c) for c in columns], schema=SCHEMA))


def null_sentinels(table: pa.Table) -> pa.Table:
    """Replace GSOD's 9999.9 "missing" value in `temp` and `dewp` of a SCHEMA table with null.

    The columns are float64 here (every source casts first); see `is_sentinel` for the rule.
    """
    for column in ("temp", "dewp"):
        index = table.schema.get_field_index(column)
        fixed = _sentinel_to_null(table.column(index), MISSING[column.upper()])
        table = table.set_column(index, table.schema.field(index), fixed)
    return table


def is_sentinel(column: pa.ChunkedArray, sentinel: float) -> pa.ChunkedArray:
    """Where a float64 column holds GSOD's "missing" value `sentinel` (9999.9), as NCEI means it.

    NCEI writes the field with one decimal (readme, "Format"), so the value is compared rounded
    to one decimal: a float32 column stores 9999.9 as 9999.900390625 and still matches. A copy
    that dropped the decimal (an integer column, "9999" in text) holds int(sentinel), which no
    real reading can be either (far outside every physical range), so it matches too.
    """
    rounded = pc.equal(pc.round(column, 1), sentinel)
    return pc.or_(rounded, pc.equal(column, float(int(sentinel))))


def _sentinel_to_null(column: pa.ChunkedArray, sentinel: float) -> pa.ChunkedArray:
    return pc.if_else(is_sentinel(column, sentinel), pa.scalar(None, pa.float64()), column)


def _file_of_row(batch: list[tuple[str, bytes | memoryview]], row: int) -> str:
    """Which file (and line) row `row` of a batch came from; one data row per line."""
    for name, body in batch:
        rows = bytes(body).count(b"\n")
        if row < rows:
            return f"{name} line {row + 2}"
        row -= rows
    return "<unknown file>"


def _bad_files_message(bad: list[str]) -> str:
    more = f" (+{len(bad) - 3} more bad files)" if len(bad) > 3 else ""
    return "bad GSOD file: " + "; ".join(bad[:3]) + more


def _gunzip(data: bytes, name: str, limit: int) -> bytes:
    """Decompress gzip `data` (one or more members), never producing more than `limit` bytes."""
    out = bytearray()
    rest = data
    while rest:
        decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += decompressor.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise GsodFormatError(f"{name}: broken gzip data ({one_line(exc)})") from exc
        if len(out) > limit:
            raise TooLargeError(
                f"{name}: expands to over {limit:,} bytes once decompressed (the bound for one "
                "GSOD file); not decompressed further"
            )
        if not decompressor.eof:
            raise GsodFormatError(f"{name}: broken gzip data (truncated)")
        rest = decompressor.unused_data
    return bytes(out)


# Legacy fixed-width '.op' format (NCEI readme, 1-based columns): STN 1-6, WBAN 8-12,
# YEARMODA 15-22, TEMP 25-30, DEWP 36-41, FRSHTT 133-138.
_OP_HEADER_PREFIX = b"STN--- WBAN   YEARMODA"
_OP_FIELDS = {
    "stn": (0, 6),
    "wban": (7, 12),
    "date": (14, 22),
    "temp": (24, 30),
    "dewp": (35, 41),
    "frshtt": (132, 138),
}


def parse_op(data: bytes, name: str = "<bytes>", max_file_bytes: int = MAX_FILE_BYTES) -> pa.Table:
    """Parse one legacy fixed-width GSOD '.op' file (optionally gzipped) into the dataset SCHEMA.

    Raises:
        TooLargeError: gzipped data that expands past `max_file_bytes` (stops decompressing there).
        GsodFormatError: broken gzip data, wrong header, short or non-UTF-8 lines.
    """
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, name, max_file_bytes)
    lines = data.rstrip(b"\r\n").split(b"\n")
    if not lines or not lines[0].startswith(_OP_HEADER_PREFIX):
        raise GsodFormatError(f"{name}: wrong header, expected a GSOD .op header 'STN--- WBAN'")
    body = [line.rstrip(b"\r") for line in lines[1:]]
    if not body:
        return empty_table()
    try:
        text = pa.array(body, pa.binary()).cast(pa.string())
    except pa.ArrowInvalid as exc:
        raise GsodFormatError(f"{name}: not UTF-8 text ({one_line(exc)})") from exc
    short = pc.less(pc.utf8_length(text), 138)
    if pc.any(short).as_py():
        line = pc.index(short, True).as_py() + 2
        raise GsodFormatError(f"{name} line {line}: shorter than 138 characters (truncated file?)")

    def cut(key: str) -> pa.Array:
        start, stop = _OP_FIELDS[key]
        return pc.utf8_trim_whitespace(pc.utf8_slice_codeunits(text, start, stop))

    try:
        station = pc.binary_join_element_wise(cut("stn"), cut("wban"), "")
        date = pc.strptime(cut("date"), format="%Y%m%d", unit="s").cast(pa.date32())
        temp, dewp = (cut(key).cast(pa.float64()) for key in ("temp", "dewp"))
    except pa.ArrowInvalid as exc:
        raise GsodFormatError(f"{name}: {one_line(exc)}") from exc
    frshtt = cut("frshtt")
    if not pc.all(pc.match_substring_regex(frshtt, FRSHTT_PATTERN)).as_py():
        raise GsodFormatError(f"{name}: FRSHTT is not 6 digits 0/1 on every line")
    return pa.Table.from_arrays(
        [
            station,
            date,
            _sentinel_to_null(pa.chunked_array([temp]), MISSING["TEMP"]),
            _sentinel_to_null(pa.chunked_array([dewp]), MISSING["DEWP"]),
            frshtt,
        ],
        schema=SCHEMA,
    )
