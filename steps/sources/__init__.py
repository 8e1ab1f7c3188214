"""Data sources for the fetch step: one small module per source, each exposing `fetch(request)`."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from steps.cli import StepError

if TYPE_CHECKING:  # this module is read to render the workflow: no pyarrow needed for that
    import pyarrow as pa

# Module names under steps/sources/; the fetch declaration and the workflow's enum come from here.
SOURCES = ("gsod", "bigquery", "table", "synthetic")
# The dataset's columns, in order: what every source yields (steps/dataset.py SCHEMA gives their
# types) and the names a table's `--column-map` may map; here, where no pyarrow is needed.
COLUMNS = ("station", "date", "temp", "dewp", "frshtt")
DEFAULT_BASE_URL = "https://www.ncei.noaa.gov/data/global-summary-of-the-day"
# What the gsod source reads at `--path` besides a directory (steps/sources/gsod.py), by the end
# of the name in any case: one daily file (steps/gsod_format.py parses these), or an archive.
GSOD_FILE_SUFFIXES = (".csv", ".op", ".op.gz")
GSOD_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
# The table source's formats by the end of the file's name, or of a URL's path, in any case
# (steps/sources/table.py reads each): the name decides, so a bad one is refused at parse.
TABLE_FORMATS = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet"}


def table_suffix(uri: str) -> str | None:
    """The end of `TABLE_FORMATS` a table path or http(s) URL has (of a URL, of its path,
    without its query or fragment), in lower case; None for none."""
    name = urlsplit(uri).path if re.match(r"https?://", uri, re.IGNORECASE) else uri
    return next((end for end in TABLE_FORMATS if name.lower().endswith(end)), None)


@dataclass(frozen=True)
class SourceRequest:
    """Everything a source may need; each source reads only its own fields."""

    years: tuple[int, ...] = ()
    stations: tuple[str, ...] = ()
    path: Path | None = None
    base_url: str = DEFAULT_BASE_URL
    table_uri: str | None = None
    column_map: dict[str, str] = field(default_factory=dict)
    rows: int = 5000
    seed: int = 42
    # Scratch space for downloads; the fetch step puts it next to its output (under /work in a pod).
    work_dir: Path = Path(".")
    http_retries: int = 4
    http_timeout: float = 60.0


@dataclass
class Fetched:
    """A source's result: rows in the dataset schema and JSON-able metadata describing them."""

    table: pa.Table
    metadata: dict[str, Any]


def fetch_from(name: str, request: SourceRequest) -> Fetched:
    """Run source `name`; an unknown name is a StepError listing the valid ones."""
    if name not in SOURCES:
        raise StepError(f"unknown source {name!r}; choose one of {', '.join(SOURCES)}")
    # Imported on demand so that, e.g., the bigquery extra is only needed when it is used.
    module = importlib.import_module(f"steps.sources.{name}")
    return module.fetch(request)
