"""Scale benchmark of the data stages: fetch (local GSOD files) + validate + a train-equivalent fit.

Compares fetch with a plain pyarrow.csv read of the same files; each phase runs in its own
process so its peak RSS is its own. Usage: `python benchmarks/bench_pipeline.py [--scale N]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

# About one year of NCEI GSOD: ~12,300 station files, ~4 million rows (~325 days per station).
STATIONS_PER_YEAR = 12_300
MIN_DAYS, MAX_DAYS = 285, 366
ROOT = Path(__file__).resolve().parent.parent


def _generate_chunk(args: tuple[Path, int, int, int]) -> int:
    """Write station files `start`..`stop` of one year under `folder`; returns rows written."""
    folder, year, start, stop = args
    sys.path.insert(0, str(ROOT))
    from steps.sources.synthetic import station_csv

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([year, start])
    rows = 0
    in_year = (dt.date(year + 1, 1, 1) - dt.date(year, 1, 1)).days
    for index in range(start, stop):
        days = int(rng.integers(MIN_DAYS, MAX_DAYS + 1))
        station = f"{700000 + index:06d}99999"
        data = station_csv(station, dt.date(year, 1, 1), days, rng)
        if days > in_year:
            # Day 366 of a common year is January 1st of the next: a duplicate of that year's
            # first row. Cut after generating, so the random stream (the data) stays the same.
            data = b"".join(data.splitlines(keepends=True)[: in_year - days])
            days = in_year
        (folder / f"{station}.csv").write_bytes(data)
        rows += days
    return rows


def generate(root: Path, scale: int, first_year: int = 2000) -> int:
    """GSOD-format files for `scale` years (one folder per year) under `root`; returns rows."""
    return generate_years(root, range(first_year, first_year + scale))


def generate_years(root: Path, years: Iterable[int]) -> int:
    """Full-year GSOD-format files for each of `years` in `root/{year}/`; returns rows.

    Deterministic (seeded by year and station block), so a cached year equals a fresh one.
    """
    step = 500
    jobs = [
        (root / str(year), year, start, min(start + step, STATIONS_PER_YEAR))
        for year in years
        for start in range(0, STATIONS_PER_YEAR, step)
    ]
    if not jobs:
        return 0
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return sum(pool.map(_generate_chunk, jobs))


def measure(argv: list[str]) -> dict[str, Any]:
    """Run `argv` as a child process: wall and CPU seconds, that child's own peak RSS (MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Pipes are small: a phase prints one JSON line, so reading after wait4 cannot deadlock.
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    out, err = proc.communicate()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"phase failed: {' '.join(argv)}\n{err.decode()}")
    lines = out.decode().strip().splitlines()
    outputs = json.loads(lines[-1]) if lines else {}
    return {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux reports KiB
        "rows": int(outputs.get("rows", outputs.get("row-count", 0))),
    }


def summarise(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median wall/CPU seconds over `runs`, the largest peak RSS; printed as one table row."""
    result = {
        "rows": runs[-1]["rows"],
        "seconds": statistics.median(r["seconds"] for r in runs),
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
    }
    print(
        f"{name:18} {result['rows']:>11,} rows {result['seconds']:8.2f} s wall "
        f"{result['cpu_seconds']:7.2f} s CPU {result['rows'] / result['seconds']:>11,.0f} rows/s "
        f"peak RSS {result['peak_rss_mib']:6.0f} MiB  (median of {len(runs)})",
        flush=True,
    )
    return result


def read_floor(folder: Path) -> Any:
    """The floor: a plain pyarrow.csv read of STATION, TEMP, DEWP from every .csv, concatenated."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    types = {"STATION": pa.string(), "TEMP": pa.float64(), "DEWP": pa.float64()}
    options = pacsv.ConvertOptions(include_columns=list(types), column_types=types)
    files = sorted(p for p in folder.rglob("*.csv"))
    return pa.concat_tables([pacsv.read_csv(f, convert_options=options) for f in files])


def phase_pyarrow(folder: Path) -> None:
    """The floor phase: read_floor, print the row count."""
    print(json.dumps({"rows": read_floor(folder).num_rows}))


def phase_train(validated: Path) -> None:
    """The train-equivalent: least-squares fit of dewp on temp from the validated dataset."""
    import pyarrow.parquet as pq

    table = pq.read_table(validated, columns=["temp", "dewp"])
    temp = table.column("temp").to_numpy()
    dewp = table.column("dewp").to_numpy()
    design = np.column_stack([temp, np.ones_like(temp)])
    (slope, intercept), *_ = np.linalg.lstsq(design, dewp, rcond=None)
    print(json.dumps({"rows": int(temp.size), "slope": slope, "intercept": intercept}))


def main(argv: list[str] | None = None) -> int:
    """Generate (or take --dir), run every phase in a child process, print a table and ratios."""
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--scale", type=int, default=1, help="years of GSOD-sized data (1, 4, 16)")
    parser.add_argument("--dir", type=Path, help="existing GSOD files instead of generated ones")
    parser.add_argument(
        "--work", type=Path, help="where to generate and write (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--repeat", type=int, default=3, help="runs of pyarrow and fetch (median)")
    parser.add_argument(
        "--archive", action="store_true", help="also time fetch from one .tar.gz of the files"
    )
    parser.add_argument("--phase", choices=["pyarrow", "train"], help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase == "pyarrow":
        phase_pyarrow(args.input)
        return 0
    if args.phase == "train":
        phase_train(args.input)
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-", dir=args.work))
    try:
        if args.dir:
            data = args.dir
        else:
            data = work / "gsod"
            start = time.perf_counter()
            generated = generate(data, args.scale)
            print(f"generated {generated:,} rows, scale {args.scale}, "
                  f"in {time.perf_counter() - start:.1f}s under {data}", flush=True)  # fmt: skip
        py = sys.executable
        dataset, validated = work / "dataset.parquet", work / "validated.parquet"
        pyarrow_read = [py, __file__, "--phase", "pyarrow", "--input", str(data)]

        def cli(*args: str | Path) -> list[str]:
            return [py, "-m", "steps", *map(str, args)]

        fetch = cli("fetch", "--source", "gsod", "--path", data, "--output", dataset)
        report = work / "validation.json"
        validate = cli("validate", "--input", dataset, "--output", validated, "--report", report)
        train = [py, __file__, "--phase", "train", "--input", str(validated)]
        measure(pyarrow_read)  # warm the page cache so neither reader pays for the disk
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
              f"pyarrow and fetch alternate {args.repeat} times", flush=True)  # fmt: skip
        floor_runs, fetch_runs = [], []
        for _ in range(args.repeat):
            floor_runs.append(measure(pyarrow_read))
            fetch_runs.append(measure(fetch))
        results = {
            "pyarrow.csv read": summarise("pyarrow.csv read", floor_runs),
            "fetch": summarise("fetch", fetch_runs),
            "validate": summarise("validate", [measure(validate)]),
            "train (lstsq)": summarise("train (lstsq)", [measure(train)]),
        }
        if args.archive:
            archive = work / "gsod.tar.gz"
            with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
                tar.add(data, arcname=".")
            from_archive = cli("fetch", "--path", archive, "--output", work / "from-tar.parquet")
            results["fetch (.tar.gz)"] = summarise("fetch (.tar.gz)", [measure(from_archive)])
        floor, ours = results["pyarrow.csv read"], results["fetch"]
        print(
            f"ratio fetch / pyarrow.csv read: {ours['seconds'] / floor['seconds']:.2f}x wall, "
            f"{ours['cpu_seconds'] / floor['cpu_seconds']:.2f}x CPU (goal <= 2.0x)"
        )
        pipeline = sum(results[n]["seconds"] for n in ("fetch", "validate", "train (lstsq)"))
        print(
            f"fetch + validate + train: {pipeline:.1f} s wall; max peak RSS "
            f"{max(r['peak_rss_mib'] for r in results.values()):.0f} MiB "
            "(goal < 1536 MiB at scale 1)"
        )
        print(json.dumps({"scale": args.scale, "results": results}))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
