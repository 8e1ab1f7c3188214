"""What an exact synthetic-rows door would cost: generating one year of synthetic rows and running
validate's rules on it (steps.sources.synthetic.year_problem, validate_problem's exact branch),
per row count; the pipeline's default is 1,000 rows in each of 2 years.

Each count runs in its own process (its own peak RSS). The door generates each year below
`rows_sure_to_pass` (2,061 rows with rain-only at the pipeline's min-rows); from it on it relies on
`failure_chance` instead, since `synthetic-rows` goes up to 1,000,000 rows in each of up to a
hundred years. `python benchmarks/bench_synthetic_door.py [--rows 1000,2061,1000000]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# One year generated with fetch's seed and checked with rain-only validate: seconds, peak MiB.
_ONE_YEAR = """
import json, resource, sys, time
from steps.sources import synthetic
from steps.validate import ValidationPolicy
synthetic.year_problem(10, 42, 2022, ValidationPolicy(10, True))  # imports and caches first
rows = int(sys.argv[1])
start = time.perf_counter()
problem = synthetic.year_problem(rows, 42, 2023, ValidationPolicy(min(100, rows), True))
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mib": peak, "passed": problem is None}))
"""


def measure(rows: int) -> dict[str, float]:
    """Seconds and peak RSS (MiB, the whole process) to generate and check one year of `rows`."""
    done = subprocess.run(
        [sys.executable, "-c", _ONE_YEAR, str(rows)],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    """Print one line per row count: seconds and peak MiB for one year."""
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--rows", default="1000,2061,1000000", help="comma list of row counts")
    args = parser.parse_args(argv)
    baseline = measure(10)
    print(f"python + libraries (10 rows): peak {baseline['peak_mib']:.0f} MiB")
    for rows in (int(r) for r in args.rows.split(",")):
        result = measure(rows)
        print(
            f"{rows:>9,} rows, one year: {result['seconds']:.2f} s, peak {result['peak_mib']:.0f}"
            f" MiB, validate passes: {result['passed']}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
