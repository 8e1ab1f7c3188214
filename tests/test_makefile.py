"""The Makefile's doors: make variables reach the programs as given, never read by the shell,
and what `make` does with a program's exit code.

README section: "Exit codes through make".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="no make")

# A stand-in for the venv's python: records its argv and the variables the demo reads, then
# exits with FAKE_EXIT (and one error line, as the programs do).
FAKE = """\
import json, os, sys
names = ("MLFLOW_PORT", "SERVE_PORT")
record = {"argv": sys.argv[1:], "env": {n: os.environ.get(n) for n in names}}
with open(os.environ["FAKE_RECORD"], "a") as out:
    out.write(json.dumps(record) + "\\n")
code = int(os.environ.get("FAKE_EXIT", "0"))
if code:
    print(f"error: fake failure {code}", file=sys.stderr)
sys.exit(code)
"""

# Each character the shell would read: quotes, `$`, spaces, a glob, a command separator.
AWKWARD = ["it's", 'say "x"', "$HOME", "$(id)", "a  b", "*", "x;echo y", "`id`", "back\\slash"]


def _make(tmp_path: Path, target: str, *variables: str, exit_code: int = 0, env=None):
    """`make TARGET VARIABLES...` in the checkout, with the fake program as PY and a fresh stamp
    (so the venv is never rebuilt); returns (completed process, the fake's records)."""
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!{sys.executable}\n{FAKE}")
    fake.chmod(0o755)
    stamp = tmp_path / "stamp"
    stamp.touch()
    record = tmp_path / "record.jsonl"
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    run_env.pop("MLFLOW_PORT", None)
    run_env.pop("SERVE_PORT", None)
    run_env |= {"FAKE_RECORD": str(record), "FAKE_EXIT": str(exit_code), **(env or {})}
    proc = subprocess.run(
        [MAKE, "-C", str(ROOT), target, f"PY={fake}", f"STAMP={stamp}", *variables],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = record.read_text().splitlines() if record.exists() else []
    return proc, [json.loads(line) for line in lines]


@pytest.mark.parametrize("value", AWKWARD)
def test_demo_hands_each_make_variable_to_the_program_as_given(tmp_path, value):
    proc, records = _make(
        tmp_path,
        "demo",
        f"SOURCE={value}",
        f"PARAMS=model-name={value.replace(' ', '')} years=2024",
        f"MLFLOW_PORT={value}",
        f"SERVE_PORT={value}",
    )
    assert proc.returncode == 0, proc.stderr
    (record,) = records
    assert record["argv"] == [
        "-m", "workflows.demo", "up", "--source", value,
        "-p", f"model-name={value.replace(' ', '')}", "-p", "years=2024",
    ]  # fmt: skip
    assert record["env"] == {"MLFLOW_PORT": value, "SERVE_PORT": value}


@pytest.mark.parametrize("value", AWKWARD)
def test_bench_scale_hands_each_make_variable_to_the_program_as_given(tmp_path, value):
    proc, records = _make(
        tmp_path, "bench-scale", f"SCALES={value}", f"BENCH_ROUNDS={value}", f"BENCH_CACHE={value}"
    )
    assert proc.returncode == 0, proc.stderr
    assert records[0]["argv"] == [
        "benchmarks/bench_scale.py", "--scales", value, "--rounds", value, "--cache-dir", value,
    ]  # fmt: skip


@pytest.mark.parametrize("separator", ["\n", "\t", " \n\n "])
def test_demo_reads_every_line_of_params(tmp_path, separator):
    """`read -ra` read only the first line of PARAMS: the rest was dropped silently."""
    proc, records = _make(tmp_path, "demo", f"PARAMS=years=2024{separator}model-name=m")
    assert proc.returncode == 0, proc.stderr
    (record,) = records
    assert record["argv"][3:] == ["-p", "years=2024", "-p", "model-name=m"]


@pytest.mark.parametrize("target", ["bench-serving", "bench-fetch"])
def test_bench_arguments_are_read_on_every_line(tmp_path, target):
    variable = {"bench-serving": "BENCH_ARGS", "bench-fetch": "BENCH_FETCH_ARGS"}[target]
    proc, records = _make(tmp_path, target, f"{variable}=--a\n--b x")
    assert proc.returncode == 0, proc.stderr
    assert records[0]["argv"][1:] == ["--a", "--b", "x"]


def test_demo_without_variables_passes_nothing_and_variables_from_the_environment_count(tmp_path):
    proc, records = _make(tmp_path, "demo")
    assert proc.returncode == 0, proc.stderr
    assert records[0]["argv"] == ["-m", "workflows.demo", "up"]
    assert records[0]["env"] == {"MLFLOW_PORT": "", "SERVE_PORT": ""}  # empty: the default
    proc, records = _make(tmp_path, "mlflow-up", env={"MLFLOW_PORT": "5$x"})
    assert proc.returncode == 0, proc.stderr
    assert records[-1]["argv"] == ["-m", "workflows.demo", "mlflow-up"]
    assert records[-1]["env"]["MLFLOW_PORT"] == "5$x"


@pytest.mark.parametrize("code", [1, 2, 75])
def test_make_exits_2_for_any_failure_and_names_the_programs_code(tmp_path, code):
    """GNU make's rule, which README "Exit codes through make" states: the program's code is
    only in make's last line; the program itself is what gives it."""
    proc, _ = _make(tmp_path, "demo", exit_code=code)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[0] == f"error: fake failure {code}"
    assert lines[-1].startswith("make: *** [Makefile:") and lines[-1].endswith(f"Error {code}")


def test_render_with_a_bad_pipeline_variable_is_one_line_and_the_program_says_2(tmp_path):
    """The real `make render` and the command README gives for its exit code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    env["PIPELINE_NAMESPACE"] = "Not A Namespace"
    stamp = tmp_path / "stamp"
    stamp.touch()
    made = subprocess.run(
        [MAKE, "-C", str(ROOT), "render", f"STAMP={stamp}", f"PY={sys.executable}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 2
    errors = [line for line in made.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "PIPELINE_NAMESPACE" in errors[0], made.stderr
    assert made.stderr.splitlines()[-1].endswith("Error 2")
    direct = subprocess.run(
        [sys.executable, "workflows/submit.py", "--render", str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert direct.returncode == 2 and direct.stderr == errors[0] + "\n"
    assert not (tmp_path / "out").exists()


def test_readme_names_the_program_behind_each_target():
    text = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for command in ("-m workflows.demo up", "workflows/submit.py --render out"):
        assert f".venv/bin/python {command}" in text
        assert f"$(PY) {command}" in makefile
