"""NOAA GSOD source: station files or whole-year archives from NCEI over HTTPS, or local files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx

from steps import gsod_format
from steps.cli import BadInput
from steps.dataset import rows_of
from steps.files import path_problem
from steps.sources import GSOD_ARCHIVE_SUFFIXES, Fetched, SourceRequest
from steps.sources.http import RetryPolicy, download
from steps.year_items import default_years


def station_url(base_url: str, year: int, station: str) -> str:
    """URL of one station-year CSV: `{base}/access/{year}/{station}.csv`."""
    return f"{base_url.rstrip('/')}/access/{year}/{station}.csv"


def archive_url(base_url: str, year: int) -> str:
    """URL of a whole-year archive of every station: `{base}/archive/{year}.tar.gz`."""
    return f"{base_url.rstrip('/')}/archive/{year}.tar.gz"


def fetch(request: SourceRequest) -> Fetched:
    """Read GSOD from `request.path` if set, else download from `request.base_url`.

    Local files are filtered by `years`/`stations` only when those are given; downloads use
    them to choose what to fetch (no stations = whole-year archives).
    """
    summary = gsod_format.ParseSummary()
    if request.path is not None:
        table = gsod_format.parse_files(
            _local_files(Path(request.path), request.years), summary=summary
        )
        table = rows_of(table, request.years, request.stations)
        where = {"path": str(request.path), "years": list(request.years)}
    else:
        years = request.years or default_years()
        policy = RetryPolicy(retries=request.http_retries, timeout=request.http_timeout)
        files = _downloaded_files(request, years, policy)
        table = gsod_format.parse_files(files, summary=summary)
        where = {"base_url": request.base_url, "years": list(years)}
    metadata = {
        "name": "gsod",
        **where,
        "stations": list(request.stations),
        "files": summary.files,
        "files_without_rows": len(summary.empty_files),
    }
    return Fetched(table, metadata)


def _local_files(path: Path, years: tuple[int, ...] = ()) -> Iterator[tuple[str, bytes]]:
    if path.is_dir():
        return gsod_format.iter_directory(path, years=years)
    if path.is_file() and path.name.lower().endswith(GSOD_ARCHIVE_SUFFIXES):
        return gsod_format.iter_tar(path)
    if path.is_file() and gsod_format.is_gsod_name(path.name):
        gsod_format.check_size(str(path), path.stat().st_size)
        return iter([(path.name, gsod_format.read_file(path))])
    # Checked at parse (steps/stages.py `--path`): reached only when the path changed since.
    problem = path_problem(path, ("a file", "a directory"))
    raise BadInput(f"--path {path} {problem or 'is no directory, .tar.gz or GSOD .csv/.op file'}")


def _downloaded_files(
    request: SourceRequest, years: tuple[int, ...], policy: RetryPolicy
) -> Iterator[tuple[str, bytes]]:
    """Download then yield files one archive (or one station file) at a time; delete each after."""
    request.work_dir.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=policy.timeout, follow_redirects=True) as client:
        for year in years:
            if request.stations:
                for station in request.stations:
                    dest = request.work_dir / f"{year}-{station}.csv"
                    download(
                        station_url(request.base_url, year, station), dest, policy, client,
                        max_bytes=gsod_format.MAX_FILE_BYTES,
                    )  # fmt: skip
                    try:
                        name = f"{year}/{station}.csv"
                        gsod_format.check_size(name, dest.stat().st_size)
                        yield name, gsod_format.read_file(dest, name=name)
                    finally:
                        dest.unlink(missing_ok=True)
            else:
                dest = request.work_dir / f"{year}.tar.gz"
                # A year's archive is about 0.1 GiB (0.9 GiB of members): its members' bound,
                # 8 GiB, leaves wide room and keeps a server from filling the disk without end.
                download(
                    archive_url(request.base_url, year), dest, policy, client,
                    max_bytes=gsod_format.MAX_ARCHIVE_BYTES,
                )  # fmt: skip
                try:
                    for name, data in gsod_format.iter_tar(dest):
                        yield f"{year}/{name}", data
                finally:
                    dest.unlink(missing_ok=True)
