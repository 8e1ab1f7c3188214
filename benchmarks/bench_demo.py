"""Wall time of `make demo` against its one-minute goal: a cold run (MLflow start-up included) and
a warm rerun, per step, in a private directory on free ports. `python benchmarks/bench_demo.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from steps.deploy_targets.local import stop_local
from steps.processes import free_port
from workflows.demo import mlflow_down, run_demo

GOAL_S = 60.0


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(root: Path, runs: int) -> list[dict[str, float]]:
    """Run the demo `runs` times in `root`; per run: total, MLflow start-up and each task of the
    workflow (s), the tasks being the same in every run."""
    mlflow_port, serve_port = free_port(), free_port()
    rows = []
    try:
        for _ in range(runs):
            started = time.monotonic()
            cpu_before = _children_cpu_s()
            facts = run_demo(root, mlflow_port, serve_port, {"source": "synthetic"})
            total = time.monotonic() - started
            tasks = json.loads((Path(facts["run_dir"]) / "run.json").read_text())["tasks"]
            row = {"total": total, "mlflow": float(facts["mlflow_s"])}
            # Every task of the run, as the runner recorded it (it runs them one at a time, the
            # items of a loop in parallel): past-years and current-years (each year's fetch,
            # then validate), then train, and so on.
            steps = {name: float(task["duration_s"]) for name, task in tasks.items()}
            row |= steps
            row["runner+demo overhead"] = total - row["mlflow"] - sum(steps.values())
            # CPU the finished step processes used: what the wall time shrinks to on idle cores.
            row["step CPU (user+sys)"] = _children_cpu_s() - cpu_before
            rows.append(row)
    finally:
        stop_local(root / "serve")
        mlflow_down(root)
    return rows


def main() -> None:
    """Print the per-phase table and the ratio of each run to the goal."""
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--runs", type=int, default=2, help="demo runs (first is cold)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        rows = measure(Path(tmp), args.runs)
    load_after = os.getloadavg()[0]
    names = ["cold", *(f"warm {i}" for i in range(1, len(rows)))]
    print(f"\ncpus {os.cpu_count()}, 1-min load average {load_before:.1f} -> {load_after:.1f}")
    print(f"{'phase':<22}" + "".join(f"{n:>10}" for n in names))
    for phase in rows[0]:
        print(f"{phase:<22}" + "".join(f"{row[phase]:>9.1f}s" for row in rows))
    ratios = "".join(f"{row['total'] / GOAL_S:>10.2f}" for row in rows)
    print(f"{'total / 60 s goal':<22}{ratios}")


if __name__ == "__main__":
    main()
