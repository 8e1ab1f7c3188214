"""Every command line outside the stages (submit.py, the demo, the local runner, steps.docs)
refuses a bad flag or value with one `error:` line and exit 2, never argparse's usage dump, and
changes nothing.

The stages' own flags are swept in tests/test_contract.py from their declarations; these doors
parse with the same OneLineParser and the same kinds (steps/contract.py)."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from steps.cli import BadInput

ROOT = Path(__file__).resolve().parents[1]

# Each door as a user starts it, and a harmless action that reaches argument parsing.
PROGRAMS = {
    "submit": [sys.executable, str(ROOT / "workflows" / "submit.py")],
    "demo": [sys.executable, "-m", "workflows.demo"],
    "local runner": [sys.executable, "-m", "workflows.local_runner"],
    "docs": [sys.executable, "-m", "steps.docs"],
}
ACTIONS = {
    "submit": ["--render", "out"],
    "demo": ["down"],
    "local runner": ["template.yaml"],
    "docs": ["--check", "steps.md"],
}

BAD = [
    ("submit", ["--bogus"], "unrecognized arguments: '--bogus'"),
    ("demo", ["--bogus"], "unrecognized arguments: '--bogus'"),
    ("local runner", ["--bogus"], "unrecognized arguments: '--bogus'"),
    ("docs", ["--bogus"], "unrecognized arguments: '--bogus'"),
    ("submit", ["--render"], "expected one argument"),
    ("local runner", ["--backend", "kubernetes"], "invalid choice: 'kubernetes'"),
    ("demo", ["-p", "novalue"], "'novalue' is not name=value"),
]
# --poll-seconds and --timeout follow a run; checked as numbers before the flag combination.
for flag in ("--poll-seconds", "--timeout"):
    for value in ("", "abc", "nan", "inf", "-1", "0", "1e9", "\u0661\u0662"):
        BAD.append(("submit", [flag, value], f"argument {flag}: {value!r}"))
for flag in ("--mlflow-port", "--serve-port"):
    for value in ("", "0", "65536", "-5", "5.5", "nan", "\u0665\u0660\u0660\u0661"):
        BAD.append(("demo", [flag, value], f"argument {flag}: {value!r}"))
# An option that takes one value, given twice: argparse kept the last one silently.
BAD += [
    ("submit", ["--render", "other"], "argument --render: given twice; give it once"),
    ("demo", ["--root", "a", "--root", "b"], "argument --root: given twice; give it once"),
    ("local runner", ["--backend", "process", "--backend", "docker"], "argument --backend: given"),
]
# A switch given twice, as an option with a value: `--local --local` was taken as one.
BAD += [
    ("submit", ["--wait", "--wait"], "argument --wait: given twice; give it once"),
    ("docs", ["--check"], "argument --check: given twice; give it once"),
    ("submit", ["--insecure-skip-verify"] * 2, "argument --insecure-skip-verify: given twice"),
]
# An abbreviation is no option (`--ren` was read as `--render`).
BAD += [
    ("submit", ["--pol", "5"], "unrecognized arguments: '--pol'"),
    ("docs", ["--che"], "unrecognized arguments: '--che'"),
    ("local runner", ["--back", "docker"], "unrecognized arguments: '--back'"),
    ("demo", ["--ro", "x"], "unrecognized arguments: '--ro'"),
]


# A path given empty (or blank) is refused: Path('') is the current directory, which
# `submit.py --render ''` wrote into.
EMPTY_PATHS = [
    ("submit", ["--render", ""], "--render"),
    ("submit", ["--local", "--run-dir", ""], "--run-dir"),
    ("submit", ["--local", "--cache-dir", " "], "--cache-dir"),
    ("local runner", [""], "template"),
    ("local runner", ["t.yaml", "--run-dir", ""], "--run-dir"),
    ("local runner", ["t.yaml", "--cache-dir", ""], "--cache-dir"),
    ("demo", ["down", "--root", ""], "--root"),
]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`argv` in `cwd` with a bare environment: this checkout on PYTHONPATH, no user settings."""
    return subprocess.run(
        argv,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(("door", "extra", "message"), BAD)
def test_a_bad_flag_is_one_error_line_and_exit_2(door, extra, message, tmp_path):
    proc = _run([*PROGRAMS[door], *ACTIONS[door], *extra], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr and "usage:" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written: no out/, no .demo/


@pytest.mark.parametrize(("door", "argv", "flag"), EMPTY_PATHS)
def test_an_empty_path_is_refused_not_read_as_the_current_directory(door, argv, flag, tmp_path):
    proc = _run([*PROGRAMS[door], *argv], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: argument {flag}: ") and proc.stderr.count("\n") == 1
    assert "is empty: give a path" in proc.stderr or "is blank" in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_demo_refuses_one_port_for_mlflow_and_the_model_server(tmp_path):
    """Before: the run trained, registered and promoted, then deploy found the port taken by
    MLflow, and the new champion was not served."""
    proc = _run([*PROGRAMS["demo"], "up", "--mlflow-port", "5077", "--serve-port", "5077"],
                tmp_path)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "--mlflow-port and --serve-port are both 5077" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("door", sorted(PROGRAMS))
def test_help_still_prints_usage_and_exits_0(door, tmp_path):
    proc = _run([*PROGRAMS[door], "--help"], tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: "), proc.stderr


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "5.5", "0", "abc"])
@pytest.mark.parametrize("variable", ["MLFLOW_PORT", "SERVE_PORT"])
@pytest.mark.parametrize("door", [["submit", "--local"], ["demo", "up"], ["demo", "mlflow-up"]])
def test_a_bad_port_in_the_environment_is_one_error_line_and_exit_2(
    door, variable, value, tmp_path
):
    """`MLFLOW_PORT=²` was a ValueError traceback (str.isdigit takes it); `٣` was port 3. The
    demo named a bad variable as its flag (`argument --mlflow-port`), which no one gave."""
    proc = subprocess.run(
        [*PROGRAMS[door[0]], *door[1:]],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), variable: value},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {variable}=") and proc.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """The parser of every command line: each stage's, submit.py's, the demo's, the local
    runner's and steps.docs'."""
    from steps.docs import build_parser as docs_parser
    from steps.stages import STAGES
    from workflows import demo, submit
    from workflows.local_runner.__main__ import build_parser as runner_parser

    parsers = {f"steps {name}": stage.parser() for name, stage in STAGES.items()}
    parsers |= {"submit": submit.build_parser(), "demo": demo.build_parser()}
    return parsers | {"local runner": runner_parser(), "docs": docs_parser()}


PARSERS = _parsers()


def _long_options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions for o in a.option_strings if o.startswith("--")]


@pytest.mark.parametrize("door", sorted(PARSERS))
def test_no_command_line_takes_an_abbreviated_option(door: str) -> None:
    """`submit.py --ren out` rendered: an abbreviation changes meaning the day another flag
    starts with the same letters. Each long option cut by one letter is no option."""
    parser = PARSERS[door]
    assert parser.allow_abbrev is False
    options = _long_options(parser)
    for option in options:
        cut = option[:-1]
        if len(cut) > 2 and cut not in options:
            assert parser._parse_optional(cut) == (None, cut, None), (door, cut)


@pytest.mark.parametrize("door", sorted(PARSERS))
def test_no_command_line_takes_a_switch_twice(door: str) -> None:
    """`deploy --stop --stop` and `submit.py --local --local` were taken as one switch; every
    switch (and every option with a value) is refused when given twice."""
    parser = PARSERS[door]
    for action in parser._actions:
        if not action.option_strings or action.nargs != 0 or "--help" in action.option_strings:
            continue
        option = action.option_strings[-1]
        with pytest.raises(BadInput, match=f"argument .*{option}: given twice; give it once"):
            parser.parse_known_args([option, option])


def test_every_argument_parser_of_the_repository_takes_no_abbreviation() -> None:
    """Outside OneLineParser (which always sets it), every argparse parser says
    allow_abbrev=False: the benchmarks' command lines too."""
    missing = []
    for path in ROOT.rglob("*.py"):
        if {".venv", "tests", ".git"} & set(path.relative_to(ROOT).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name != "ArgumentParser":
                continue
            said = {k.arg: k.value for k in node.keywords}
            value = said.get("allow_abbrev")
            if not (isinstance(value, ast.Constant) and value.value is False):
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert missing == []
