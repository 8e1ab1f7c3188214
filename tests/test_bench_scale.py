"""bench_scale's fan-out column reads the real rendered template: its per-year command lines and
its pod memory limits (cheap: nothing is generated or measured here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# Loaded by path: benchmarks/ is not a package (it imports its sibling bench_pipeline).
sys.path.insert(0, str(BENCHMARKS))
_spec = importlib.util.spec_from_file_location("bench_scale", BENCHMARKS / "bench_scale.py")
assert _spec and _spec.loader
bench_scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_scale)


def test_memory_limits_come_from_the_rendered_template() -> None:
    spec = bench_scale.rendered_spec()
    limits = bench_scale.memory_limits_mib(spec)
    for stage, limit in limits.items():
        templates = bench_scale.stage_templates(spec, stage)
        assert templates, stage
        assert limit == min(
            bench_scale.quantity_bytes(t["container"]["resources"]["limits"]["memory"]) / 2**20
            for t in templates
        )
    # A changed limit in the template changes the benchmark's target.
    bench_scale.stage_templates(spec, "train")[0]["container"]["resources"]["limits"]["memory"] = (
        "3Gi"
    )
    assert bench_scale.memory_limits_mib(spec)["train"] == 3 * 1024


@pytest.mark.parametrize(
    ("text", "expected"), [("1Gi", 2**30), ("512Mi", 2**29), ("1000M", 10**9), ("2048", 2048)]
)
def test_quantity_bytes(text: str, expected: int) -> None:
    assert bench_scale.quantity_bytes(text) == expected


def test_fan_out_runs_the_templates_fetch_and_validate_once_per_year(tmp_path: Path) -> None:
    folder = tmp_path / "scale-3"
    for year in ("2000", "2001", "2002"):
        (folder / year).mkdir(parents=True)
    spec = bench_scale.rendered_spec()
    commands = bench_scale.fan_out_commands(spec, folder, tmp_path / "tasks")
    assert [(stage, year) for stage, year, _, _ in commands] == [
        (stage, year) for stage in ("fetch", "validate") for year in ("2000", "2001", "2002")
    ]
    _, year, argv, work = commands[1]
    template = bench_scale.stage_templates(spec, "fetch")[0]["container"]
    assert argv[0] == sys.executable and argv[1:4] == template["command"][1:]
    flags = dict(a.partition("=")[::2] for a in argv[4:])  # each `--flag=value` (pipeline.py)
    assert year == flags["--years"] == "2001"
    assert flags["--path"] == str(folder)
    assert flags["--source"] == "gsod"
    assert flags["--output"] == str(work / "out" / "dataset.parquet")
    assert not any("{{" in a for _, _, argv, _ in commands for a in argv)
