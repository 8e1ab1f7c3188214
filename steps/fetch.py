"""Fetch stage: read weather observations from a source and write the normalised Parquet dataset."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from steps.cli import StepError, add_outputs_dir, env_default, run, write_outputs
from steps.dataset import canonical, hash_canonical, write_dataset
from steps.sources import DEFAULT_BASE_URL, SOURCES, SourceRequest, fetch_from


def fetch_dataset(source: str, request: SourceRequest, output: Path) -> dict[str, object]:
    """Fetch from `source`, write the canonical dataset to `output` atomically.

    Returns the output parameters (`row-count`, `data-hash`). An empty result is an error and
    leaves any existing `output` untouched.
    """
    fetched = fetch_from(source, request)
    table = canonical(fetched.table)
    if table.num_rows == 0:
        raise StepError(f"source {source} returned no rows ({_describe(fetched.metadata)})")
    digest = hash_canonical(table)
    write_dataset(table, output, {**fetched.metadata, "rows": table.num_rows, "data_hash": digest})
    return {"row-count": table.num_rows, "data-hash": digest}


def _describe(metadata: dict[str, object]) -> str:
    keys = ("path", "base_url", "years", "stations", "files", "uri")
    return ", ".join(f"{k}={metadata[k]}" for k in keys if metadata.get(k) not in (None, [], ""))


def parse_years(text: str | None) -> tuple[int, ...]:
    """`2023,2024` -> (2023, 2024); empty -> (); anything else is a StepError."""
    items = _split(text)
    try:
        years = tuple(int(item) for item in items)
    except ValueError:
        raise StepError(
            f"--years must be a comma list of years like 2023,2024, got {text!r}"
        ) from None
    if any(not 1901 <= year <= 2100 for year in years):
        raise StepError(f"--years out of GSOD's range 1901-2100: {text!r}")
    return years


def parse_stations(text: str | None) -> tuple[str, ...]:
    """`72530094846,A0000253928` -> ids; each must be 11 letters/digits (USAF + WBAN)."""
    stations = tuple(_split(text))
    bad = [s for s in stations if not (len(s) == 11 and s.isascii() and s.isalnum())]
    if bad:
        raise StepError(
            f"--stations: {', '.join(bad[:3])} is not an 11-character GSOD station id "
            "(USAF + WBAN, e.g. 72530094846)"
        )
    return stations


def parse_column_map(text: str | None) -> dict[str, str]:
    """`temp=TEMP,dewp=DEWP` (ours=theirs) -> {"temp": "TEMP", "dewp": "DEWP"}."""
    mapping = {}
    for item in _split(text):
        ours, sep, theirs = item.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise StepError(f"--column-map entries must look like temp=TEMP, got {item!r}")
        mapping[ours.strip()] = theirs.strip()
    return mapping


def _split(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _int(value: str, flag: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StepError(f"{flag} must be an integer, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The fetch CLI (flags and env fallbacks as in docs/steps.md)."""
    parser = argparse.ArgumentParser(prog="python -m steps fetch", description=__doc__)
    parser.add_argument(
        "--source",
        default=env_default("FETCH_SOURCE", "gsod"),
        help=f"one of {', '.join(SOURCES)} (env FETCH_SOURCE, default gsod)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("dataset.parquet"),
        help="Parquet file to write (default ./dataset.parquet; the workflow passes /work/out/...)",
    )
    parser.add_argument(
        "--years",
        default=env_default("GSOD_YEARS"),
        help="comma list; empty = previous and current year (env GSOD_YEARS)",
    )
    parser.add_argument(
        "--stations",
        default=env_default("GSOD_STATIONS"),
        help="comma list of station ids; empty = whole-year archives (env GSOD_STATIONS)",
    )
    parser.add_argument(
        "--path",
        default=env_default("GSOD_PATH"),
        help="local directory or .tar.gz of GSOD files instead of HTTP (env GSOD_PATH)",
    )
    parser.add_argument(
        "--base-url",
        default=env_default("GSOD_BASE_URL", DEFAULT_BASE_URL),
        help=f"GSOD base URL (env GSOD_BASE_URL, default {DEFAULT_BASE_URL})",
    )
    parser.add_argument(
        "--table-uri",
        default=env_default("TABLE_URI"),
        help="table source: CSV or Parquet path or http(s) URL (env TABLE_URI)",
    )
    parser.add_argument(
        "--column-map",
        default=env_default("TABLE_COLUMN_MAP"),
        help="table source: temp=TEMP,dewp=DEWP,... ours=theirs (env TABLE_COLUMN_MAP)",
    )
    parser.add_argument(
        "--rows",
        default=env_default("SYNTHETIC_ROWS", "5000"),
        help="synthetic source: number of rows (env SYNTHETIC_ROWS, default 5000)",
    )
    parser.add_argument(
        "--seed",
        default=env_default("SYNTHETIC_SEED", "42"),
        help="synthetic source: random seed (env SYNTHETIC_SEED, default 42)",
    )
    parser.add_argument(
        "--http-retries",
        default=env_default("FETCH_HTTP_RETRIES", "4"),
        help="retries on timeouts, dropped connections, 5xx (env FETCH_HTTP_RETRIES)",
    )
    parser.add_argument(
        "--http-timeout",
        default=env_default("FETCH_HTTP_TIMEOUT", "60"),
        help="seconds without progress before a request fails (env FETCH_HTTP_TIMEOUT)",
    )
    add_outputs_dir(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: `python -m steps fetch --source ... --output ...`."""
    args = build_parser().parse_args(argv)

    def body() -> None:
        try:
            timeout = float(args.http_timeout)
        except ValueError:
            raise StepError(f"--http-timeout must be seconds, got {args.http_timeout!r}") from None
        retries = _int(args.http_retries, "--http-retries")
        if timeout <= 0 or retries < 0:
            raise StepError("--http-timeout must be > 0 and --http-retries >= 0")
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        # Scratch next to the output: in a pod only /work is writable.
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=output.parent) as scratch:
            request = SourceRequest(
                years=parse_years(args.years),
                stations=parse_stations(args.stations),
                # An empty --path (Argo passes every parameter) means "download", not ".".
                path=Path(args.path) if args.path else None,
                base_url=args.base_url or DEFAULT_BASE_URL,
                table_uri=args.table_uri,
                column_map=parse_column_map(args.column_map),
                rows=_int(args.rows or "5000", "--rows"),
                seed=_int(args.seed or "42", "--seed"),
                work_dir=Path(scratch),
                http_retries=retries,
                http_timeout=timeout,
            )
            outputs = fetch_dataset(args.source, request, output)
        write_outputs(args.outputs_dir, outputs)

    return run(body)
