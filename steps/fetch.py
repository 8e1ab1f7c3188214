"""Fetch stage: read weather observations from a source and write the normalised Parquet dataset."""

from __future__ import annotations

import tempfile
from pathlib import Path

from steps.cli import BadInput, StepError, run
from steps.dataset import canonical, hash_canonical, write_dataset
from steps.sources import SourceRequest, fetch_from
from steps.stages import FETCH


def fetch_dataset(source: str, request: SourceRequest, output: Path) -> dict[str, object]:
    """Fetch from `source`, write the canonical dataset to `output` atomically.

    Returns the output parameters (`row-count`, `data-hash`). An empty result is an error and
    leaves any existing `output` untouched.

    Raises:
        StepError: the source returned no rows, or failed (its own StepError passes through).
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


def refuse_too_many_rows(source: str, rows: int, years: tuple[int, ...]) -> None:
    """BadInput when the synthetic source would generate more rows in all (`--rows` in each of
    `--years`) than one fetch can hold: `--rows`'s own bound (steps/stages.py
    SYNTHETIC_MAX_ROWS). In the pipeline each fetch takes one year, so the flag's bound alone
    holds there."""
    limit = FETCH.flag("rows").kind.maximum
    if source == "synthetic" and rows * max(1, len(years)) > limit:
        raise BadInput(
            f"--rows {rows} in each of {len(years)} --years is {rows * len(years):,} rows, over "
            f"the {limit:,} one fetch can hold: give fewer rows or fewer years"
        )


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: `python -m steps fetch --source ... --output ...`."""

    def body() -> None:
        args = FETCH.parse(argv)
        refuse_too_many_rows(args.source, args.rows, args.years)
        output: Path = args.output
        output.parent.mkdir(parents=True, exist_ok=True)
        # Scratch next to the output: in a pod only /work is writable.
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=output.parent) as scratch:
            request = SourceRequest(
                years=args.years,
                stations=args.stations,
                path=args.path,
                base_url=args.base_url,
                table_uri=args.table_uri,
                column_map=args.column_map,
                rows=args.rows,
                seed=args.seed,
                work_dir=Path(scratch),
                http_retries=args.http_retries,
                http_timeout=args.http_timeout,
            )
            outputs = fetch_dataset(args.source, request, output)
        FETCH.write_outputs(args.outputs_dir, outputs)

    return run(body)
