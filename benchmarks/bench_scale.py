"""Pipeline scale benchmark: fetch + validate + train at 1x, 4x and 16x a GSOD year, vs a floor.

Ours: the real steps on a local folder of GSOD-format files (`python -m steps fetch --source gsod
--path`, `python -m steps validate`), then train's own functions (find_parts, read_batches,
summarize, fit_line, holdout_metrics; MLflow logging and the plot left out). Baseline: a plain
pyarrow.csv read of STATION, TEMP, DEWP from the same files + numpy least squares.
Every phase runs in its own process (its own peak RSS). Ours and the baseline alternate, several
rounds, medians. `python benchmarks/bench_scale.py --scales 1,4,16`.

Files come from benchmarks/bench_pipeline.py's generator (one folder per year, ~12,300 station
files, ~4M rows, ~0.9 GiB each) and are cached under --cache-dir: year folders are generated once
and each scale's input folder is hard links to the first N years.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import ROOT, generate_years, measure, read_floor

FIRST_YEAR = 2000
LINEAR_TOLERANCE = 0.25  # growth within +-25% of the scale factor reads as linear
OURS = ("fetch", "validate", "train")
FAN_OUT = ("fetch", "validate")  # the stages that run once per year
TRAIN_GROWTH_TARGET = 1.2  # issue 13: train's peak RSS at 16 years within 1.2x of 1 year's
TARGET_SCALE = 16
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9}


def ensure_years(cache: Path, years: range) -> None:
    """Generate missing year folders under `cache/years`; `{year}.done` marks a whole one."""
    root = cache / "years"
    root.mkdir(parents=True, exist_ok=True)
    for year in years:
        done = root / f"{year}.done"
        if done.exists():
            continue
        shutil.rmtree(root / str(year), ignore_errors=True)  # a half-written year from a crash
        start = time.perf_counter()
        rows = generate_years(root, [year])
        done.write_text(json.dumps({"rows": rows}))
        print(
            f"  generated {year}: {rows:,} rows in {time.perf_counter() - start:.0f} s", flush=True
        )


def scale_folder(cache: Path, scale: int) -> tuple[Path, int]:
    """`cache/scale-N`: hard links to the first N year folders; returns (folder, bytes of files)."""
    years = range(FIRST_YEAR, FIRST_YEAR + scale)
    ensure_years(cache, years)
    folder, done = cache / f"scale-{scale}", cache / f"scale-{scale}.done"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        for year in years:
            shutil.copytree(cache / "years" / str(year), folder / str(year), copy_function=os.link)
        size = sum(f.stat().st_size for f in folder.rglob("*.csv"))
        done.write_text(json.dumps({"bytes": size}))
    return folder, json.loads(done.read_text())["bytes"]


def phase_baseline(folder: Path) -> None:
    """The floor: pyarrow.csv read of STATION, TEMP, DEWP; drop 9999.9; numpy least squares."""
    import numpy as np
    import pyarrow.compute as pc

    table = read_floor(folder)
    usable = pc.and_(pc.not_equal(table["TEMP"], 9999.9), pc.not_equal(table["DEWP"], 9999.9))
    temp = table["TEMP"].filter(usable).to_numpy()
    dewp = table["DEWP"].filter(usable).to_numpy()
    design = np.column_stack([temp, np.ones_like(temp)])
    (slope, _), *_ = np.linalg.lstsq(design, dewp, rcond=None)
    print(json.dumps({"rows": table.num_rows, "fit_rows": int(temp.size), "slope": slope}))


def phase_train(validated: Path, holdout_out: Path) -> None:
    """train without MLflow: the step's own streamed read and split, fit, holdout score and
    holdout sample write (`validated` is one file or a folder of them, one per year)."""
    from steps.train import TrainConfig, fit_line, holdout_metrics
    from steps.training_data import check_split, find_parts, read_batches, summarize

    config = TrainConfig()
    summary = summarize(read_batches(find_parts(validated)), config.test_size, config.seed)
    check_split(summary, config.test_size)
    metrics = holdout_metrics(summary, fit_line(summary, config))
    summary.sample.to_parquet(holdout_out, index=False)
    print(json.dumps({"rows": summary.rows, "rmse": metrics.rmse}))


def phase_nbytes(dataset: Path) -> None:
    """In-memory (Arrow) size of a dataset file: what one copy of the data costs."""
    import pyarrow.parquet as pq

    table = pq.read_table(dataset)
    print(json.dumps({"rows": table.num_rows, "nbytes": table.nbytes}))


def phase_idle() -> None:
    """Python with the steps' libraries imported and nothing loaded: the floor under every RSS."""
    import pyarrow.csv
    import pyarrow.parquet  # noqa: F401

    import steps.train
    import steps.validate  # noqa: F401
    from steps.sources import gsod  # noqa: F401

    print(json.dumps({"rows": 0}))


def rendered_spec() -> dict[str, Any]:
    """The WorkflowTemplate's spec as `make render` writes it (default settings)."""
    from workflows.pipeline import render
    from workflows.settings import PipelineSettings

    return render(PipelineSettings.from_env({}))["workflow-template"]["spec"]


def quantity_bytes(text: str) -> int:
    """A Kubernetes memory quantity (`1Gi`, `512Mi`, `1000M`, `2048`) in bytes.

    Raises:
        ValueError: a suffix this benchmark does not know.
    """
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * _UNITS[suffix])
    return int(float(text))


def stage_templates(spec: dict[str, Any], stage: str) -> list[dict[str, Any]]:
    """The container templates that run `python -m steps <stage>` (one per task calling it)."""
    return [
        t
        for t in spec["templates"]
        if (t.get("container") or {}).get("command", [])[-1:] == [stage]
    ]


def memory_limits_mib(spec: dict[str, Any]) -> dict[str, float]:
    """Each stage's pod memory limit in MiB, from the rendered templates (the smallest, when
    several templates run the stage)."""
    limits: dict[str, float] = {}
    for stage in OURS:
        values = [
            quantity_bytes(t["container"]["resources"]["limits"]["memory"]) / 2**20
            for t in stage_templates(spec, stage)
        ]
        if not values:
            raise SystemExit(f"the rendered template has no {stage} template")
        limits[stage] = min(values)
    return limits


def template_argv(
    spec: dict[str, Any], stage: str, inputs: dict[str, str], work: Path
) -> list[str]:
    """The command line of `stage`'s template as the pod runs it: its command and args with
    `{{inputs.parameters.*}}` filled from `inputs` (the template's declared inputs only, each
    must be given), /work mapped to `work`, `python` this interpreter."""
    from workflows.argo_rules import parameter_text, substitute
    from workflows.local_runner.substitution import ContainerPaths

    template = stage_templates(spec, stage)[0]
    declared = [p["name"] for p in (template.get("inputs") or {}).get("parameters") or []]
    scope = {f"inputs.parameters.{name}": inputs[name] for name in declared}
    paths = ContainerPaths(work, mapped=True)
    container = template["container"]
    argv = [substitute(paths.local(parameter_text(a)), scope) for a in
            [*container["command"], *container.get("args", [])]]  # fmt: skip
    return [sys.executable, *argv[1:]] if argv[0] in ("python", "python3") else argv


def fan_out_commands(
    spec: dict[str, Any], folder: Path, work: Path
) -> list[tuple[str, str, list[str], Path]]:
    """(stage, year, argv, task work dir) of every per-year task, in the order Argo's DAG runs
    them (every fetch, then every validate), for the years check-parameters resolves."""
    from steps.check_parameters import fan_out_outputs

    years = ",".join(p.name for p in sorted(folder.iterdir()) if p.name.isdigit())
    values = {p["name"]: parameter_text_of(p) for p in spec["arguments"]["parameters"]}
    values.update({"source": "gsod", "gsod-path": str(folder), "years": years})
    outputs = fan_out_outputs(values)
    # Generated years are past years (the memoized templates); the current-year templates run
    # the same command line.
    items = [*json.loads(outputs["past-years"]), *json.loads(outputs["current-years"])]
    commands = []
    for stage in FAN_OUT:
        for item in items:
            inputs = {**values, **item, "years": item["year"], "data-key": outputs["data-key"],
                      # validate's memo key holds fetch's data-hash; no command line reads it,
                      # and nothing is memoized here.
                      "data-hash": "unused"}  # fmt: skip
            task_work = work / stage / item["part"]
            commands.append((stage, item["part"], template_argv(spec, stage, inputs, task_work),
                             task_work))  # fmt: skip
    return commands


def parameter_text_of(parameter: dict[str, Any]) -> str:
    from workflows.argo_rules import parameter_text

    return parameter_text(parameter.get("value", ""))


def run_fan_out(
    commands: list[tuple[str, str, list[str], Path]], repository: Path
) -> dict[str, list[dict[str, Any]]]:
    """Each per-year task in turn, its output kept under `repository` as the key-only artifact
    (fetched/<year>.parquet, validated/<year>.parquet) the next task reads."""
    runs: dict[str, list[dict[str, Any]]] = {stage: [] for stage in FAN_OUT}
    for stage, part, argv, task_work in commands:
        shutil.rmtree(task_work, ignore_errors=True)
        (task_work / "out").mkdir(parents=True)
        (task_work / "outputs").mkdir()
        if stage == "validate":
            (task_work / "in").mkdir()
            os.link(
                repository / "fetched" / f"{part}.parquet", task_work / "in" / "dataset.parquet"
            )
        runs[stage].append({**measure(argv), "year": part})
        kept, name = ("fetched", "dataset") if stage == "fetch" else ("validated", "validated")
        (repository / kept).mkdir(parents=True, exist_ok=True)
        os.replace(task_work / "out" / f"{name}.parquet", repository / kept / f"{part}.parquet")
        shutil.rmtree(task_work)
    return runs


def run_scale(scale: int, cache: Path, work: Path, rounds: int) -> dict[str, Any]:
    """Alternate ours (3 phases) and the baseline `rounds` times on one scale; medians, max RSS."""
    folder, size = scale_folder(cache, scale)
    py, me = sys.executable, __file__
    dataset, validated = work / "dataset.parquet", work / "validated.parquet"
    commands = {
        "fetch": [py, "-m", "steps", "fetch", "--source", "gsod", "--path", str(folder),
                  "--output", str(dataset)],
        "validate": [py, "-m", "steps", "validate", "--input", str(dataset), "--output",
                     str(validated), "--report", str(work / "validation.json")],
        "train": [py, me, "--phase", "train", "--input", str(validated),
                  "--output", str(work / "holdout.parquet")],
        "baseline": [py, me, "--phase", "baseline", "--input", str(folder)],
    }  # fmt: skip
    spec = rendered_spec()
    repository = work / "repository"
    fan_commands = fan_out_commands(spec, folder, work / "tasks")
    fan_train = [py, me, "--phase", "train", "--input", str(repository / "validated"),
                 "--output", str(work / "fan-holdout.parquet")]  # fmt: skip
    cached = size < 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(f"scale {scale}: {size / 2**30:.1f} GiB of files in {folder}; "
          f"{'warming the page cache' if cached else 'larger than half of RAM: read from disk'}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    if cached:
        measure(commands["baseline"])
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in (*OURS, "baseline")}
    fan: dict[str, list[dict[str, Any]]] = {"fetch": [], "validate": [], "train": []}
    fan_rounds: list[float] = []
    for index in range(rounds):
        # A B C, C B A, ...: no side always runs first on a warmer (or busier) machine.
        order = [OURS, ("fan-out",), ("baseline",)]
        for group in order if index % 2 == 0 else order[::-1]:
            if group == ("fan-out",):
                shutil.rmtree(repository, ignore_errors=True)
                per_year = run_fan_out(fan_commands, repository)
                fan["train"].append(measure(fan_train))
                for stage in FAN_OUT:
                    fan[stage] += per_year[stage]
                fan_rounds.append(
                    sum(r["seconds"] for s_ in FAN_OUT for r in per_year[s_])
                    + fan["train"][-1]["seconds"]
                )
                continue
            for name in group:
                runs[name].append(measure(commands[name]))
        ours_s = sum(runs[n][-1]["seconds"] for n in OURS)
        print(f"  round {index + 1}: ours {ours_s:.1f} s, fan-out {fan_rounds[-1]:.1f} s "
              f"(tasks one at a time), baseline {runs['baseline'][-1]['seconds']:.1f} s",
              flush=True)  # fmt: skip
    result: dict[str, Any] = {"scale": scale, "file_bytes": size, "rounds": rounds}
    result["rows"] = runs["fetch"][-1]["rows"]
    result["nbytes"] = _outputs([py, me, "--phase", "nbytes", "--input", str(dataset)])["nbytes"]
    result["validated_rows"] = runs["validate"][-1]["rows"]
    result["train_rows"] = runs["train"][-1]["rows"]
    for name, phase_runs in runs.items():
        result[name] = {
            "seconds": statistics.median(r["seconds"] for r in phase_runs),
            "cpu_seconds": statistics.median(r["cpu_seconds"] for r in phase_runs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in phase_runs),
        }
    result["ours_seconds"] = statistics.median(
        sum(runs[n][i]["seconds"] for n in OURS) for i in range(rounds)
    )
    result["ours_cpu_seconds"] = statistics.median(
        sum(runs[n][i]["cpu_seconds"] for n in OURS) for i in range(rounds)
    )
    result["fan_out"] = {
        stage: {
            "tasks": len(stage_runs) // rounds,
            "seconds": statistics.median(r["seconds"] for r in stage_runs),
            "max_seconds": max(r["seconds"] for r in stage_runs),
            "cpu_seconds": statistics.median(r["cpu_seconds"] for r in stage_runs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in stage_runs),
        }
        for stage, stage_runs in fan.items()
    }
    result["fan_out_seconds"] = statistics.median(fan_rounds)
    result["fan_out_rows"] = fan["train"][-1]["rows"]
    result["limits_mib"] = memory_limits_mib(spec)
    return result


def _outputs(argv: list[str]) -> dict[str, Any]:
    """The last (JSON) line a phase printed; for phases that are not timed."""
    out = subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def report_scale(r: dict[str, Any], idle_mib: float) -> None:
    """One scale: rows, time, rows/s, peak RSS and copies per phase, ours / baseline."""
    mib = r["nbytes"] / 2**20
    print(f"\nscale {r['scale']}: {r['rows']:,} rows ({r['validated_rows']:,} after "
          f"validate), files {r['file_bytes'] / 2**30:.1f} GiB, dataset in memory "
          f"{mib:,.0f} MiB; medians of {r['rounds']} alternating rounds, load average "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"  {'phase':10} {'wall s':>8} {'CPU s':>8} {'rows/s':>12} {'peak RSS':>12} "
          f"{'copies':>7} {'net':>6}")  # fmt: skip
    for name in (*OURS, "baseline"):
        p = r[name]
        rss = p["peak_rss_mib"]
        print(f"  {name:10} {p['seconds']:8.1f} {p['cpu_seconds']:8.1f} "
              f"{r['rows'] / p['seconds']:12,.0f} {rss:8,.0f} MiB {rss / mib:7.2f} "
              f"{(rss - idle_mib) / mib:6.2f}")  # fmt: skip
    ratio = r["ours_seconds"] / r["baseline"]["seconds"]
    cpu_ratio = r["ours_cpu_seconds"] / r["baseline"]["cpu_seconds"]
    print(
        f"  fan-out (the template's tasks, one at a time; per-year rows: median wall, largest "
        f"peak RSS over {r['fan_out']['fetch']['tasks']} years x {r['rounds']} rounds):"
    )
    for name in OURS:
        p, limit = r["fan_out"][name], r["limits_mib"][name]
        label = f"{name} per year" if name in FAN_OUT else name
        print(f"    {label:18} {p['seconds']:8.1f} s (max {p['max_seconds']:.1f}) "
              f"{p['cpu_seconds']:8.1f} s CPU  peak RSS {p['peak_rss_mib']:7,.0f} MiB of the pod's "
              f"{limit:,.0f} MiB limit ({p['peak_rss_mib'] / limit:.2f})")  # fmt: skip
    print(f"    {'all tasks in turn':18} {r['fan_out_seconds']:8.1f} s; "
          f"fan-out / ours {r['fan_out_seconds'] / r['ours_seconds']:.2f}x, fan-out / baseline "
          f"{r['fan_out_seconds'] / r['baseline']['seconds']:.2f}x; train read "
          f"{r['fan_out_rows']:,} rows (single-task train {r['train_rows']:,})")  # fmt: skip
    print(f"  ours (fetch+validate+train) {r['ours_seconds']:.1f} s, "
          f"{r['rows'] / r['ours_seconds']:,.0f} rows/s; ours / baseline: {ratio:.2f}x wall, "
          f"{cpu_ratio:.2f}x CPU; fetch alone / baseline: "
          f"{r['fetch']['seconds'] / r['baseline']['seconds']:.2f}x wall", flush=True)  # fmt: skip


def report_growth(results: list[dict[str, Any]], idle_mib: float) -> None:
    """Time and peak RSS of each scale over the smallest one's, with a linear/not verdict."""
    base = results[0]
    print(f"\ngrowth against scale {base['scale']} (linear = the scale factor "
          f"+-{LINEAR_TOLERANCE:.0%})")  # fmt: skip
    for r in results[1:]:
        factor = r["scale"] / base["scale"]
        print(f"  scale {r['scale']} / {base['scale']} (factor {factor:g}):")
        pairs = [("ours time", r["ours_seconds"], base["ours_seconds"])]
        pairs += [(f"{n} time", r[n]["seconds"], base[n]["seconds"]) for n in (*OURS, "baseline")]
        pairs += [
            (f"{n} RSS", r[n]["peak_rss_mib"], base[n]["peak_rss_mib"]) for n in (*OURS, "baseline")
        ]
        pairs += [
            (f"{n} net RSS", r[n]["peak_rss_mib"] - idle_mib, base[n]["peak_rss_mib"] - idle_mib)
            for n in (*OURS, "baseline")
        ]
        for label, value, reference in pairs:
            growth = value / reference
            print(f"    {label:18} x{growth:6.2f}  {verdict(growth, factor)}")


def report_targets(results: list[dict[str, Any]]) -> None:
    """Issue 13's targets for the fan-out, with a verdict each: every task's peak RSS at 16
    years under its pod's memory limit; train's peak RSS at 16 years within 1.2x of 1 year's."""
    by_scale = {r["scale"]: r for r in results}
    print("\ntargets (issue 13; limits read from the rendered WorkflowTemplate)")
    top = by_scale.get(TARGET_SCALE)
    for name in OURS:
        label = f"{name} per year" if name in FAN_OUT else name
        if top is None:
            print(f"  {label:16} peak RSS at {TARGET_SCALE} years < pod limit: not measured "
                  f"(run with --scales including {TARGET_SCALE})")  # fmt: skip
            continue
        rss, limit = top["fan_out"][name]["peak_rss_mib"], top["limits_mib"][name]
        print(f"  {label:16} peak RSS at {TARGET_SCALE} years {rss:,.0f} MiB < pod limit "
              f"{limit:,.0f} MiB: {'met' if rss < limit else 'NOT MET'}")  # fmt: skip
    if top is None or 1 not in by_scale:
        largest = results[-1]
        print(f"  train peak RSS at {TARGET_SCALE} years <= {TRAIN_GROWTH_TARGET}x at 1 year: "
              f"not measured (needs scales 1 and {TARGET_SCALE})")  # fmt: skip
        if 1 in by_scale and largest["scale"] > 1:
            growth = (largest["fan_out"]["train"]["peak_rss_mib"]
                      / by_scale[1]["fan_out"]["train"]["peak_rss_mib"])  # fmt: skip
            print(f"    (at {largest['scale']} years: x{growth:.2f} of 1 year's)")
        return
    growth = (
        top["fan_out"]["train"]["peak_rss_mib"] / by_scale[1]["fan_out"]["train"]["peak_rss_mib"]
    )
    print(
        f"  train peak RSS at {TARGET_SCALE} years x{growth:.2f} of 1 year's (target <= "
        f"{TRAIN_GROWTH_TARGET}x): {'met' if growth <= TRAIN_GROWTH_TARGET else 'NOT MET'}"
    )


def verdict(growth: float, factor: float) -> str:
    """'linear' within LINEAR_TOLERANCE of the scale factor, else 'sublinear' / 'SUPERLINEAR'."""
    if abs(growth / factor - 1) <= LINEAR_TOLERANCE:
        return "linear"
    return "sublinear" if growth < factor else "SUPERLINEAR"


def main(argv: list[str] | None = None) -> int:
    """Run every scale (generating or reusing cached files), print the tables and growth."""
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--scales", default="1,4,16", help="comma list of years (default 1,4,16)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per scale")
    parser.add_argument(
        "--rounds-16",
        type=int,
        help="rounds for scales >= 16 (default: --rounds); each 16x round is several minutes",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "dewpoint-bench-gsod",
        help="generated files are kept here for reruns (~0.9 GiB per year; 16x needs ~14 GiB)",
    )
    parser.add_argument("--work", type=Path, help="where datasets are written (default: temp)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--phase", choices=["baseline", "train", "nbytes", "idle"], help=argparse.SUPPRESS
    )
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        phases = {
            "baseline": lambda: phase_baseline(args.input),
            "train": lambda: phase_train(args.input, args.output),
            "nbytes": lambda: phase_nbytes(args.input),
            "idle": phase_idle,
        }
        phases[args.phase]()
        return 0

    scales = sorted({int(s) for s in args.scales.split(",") if s.strip()})
    free = shutil.disk_usage(
        args.cache_dir.parent if not args.cache_dir.exists() else args.cache_dir
    )
    print(f"scales {scales}, cache {args.cache_dir} ({free.free / 2**30:.0f} GiB free), "
          f"{os.cpu_count()} CPUs", flush=True)  # fmt: skip
    idle = measure([sys.executable, __file__, "--phase", "idle"])["peak_rss_mib"]
    print(f"python + the steps' libraries, nothing loaded: {idle:.0f} MiB RSS ('net' subtracts "
          "it); copies = peak RSS / Arrow size of the fetched dataset", flush=True)  # fmt: skip
    results = []
    for scale in scales:
        rounds = args.rounds_16 if (args.rounds_16 and scale >= 16) else args.rounds
        work = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.work))
        try:
            results.append(run_scale(scale, args.cache_dir, work, rounds))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        report_scale(results[-1], idle)
        if args.json:
            document = {"idle_rss_mib": idle, "results": results}
            args.json.write_text(json.dumps(document, indent=2) + "\n")
    report_growth(results, idle)
    report_targets(results)
    print(f"{os.cpu_count()} shared CPUs: wall times are noisy (CPU seconds less so); rerun "
          "before trusting a small difference", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
