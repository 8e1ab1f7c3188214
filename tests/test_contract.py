"""The stage declarations (steps/stages.py) and the CLIs, checks and docs generated from them.

The bad-value tests are generated from the declarations: every flag of every stage, read from the
command line and from its environment variable, against empty, NaN, infinite, negative, huge and
non-ASCII-digit values. A value a flag refuses must end the step with exit 2 and one `error:`
line naming the flag, before anything is read or written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import io
import json
import math
import os
import re
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steps.cli import EXIT_BAD_INPUT, EXIT_FAILED, BadInput
from steps.contract import (
    Boolean,
    Choice,
    CommaList,
    DirectoryPath,
    ExistingPath,
    FilePath,
    Flag,
    Integer,
    Number,
    Pairs,
    Stage,
    Switch,
    Text,
    check_workflow_parameters,
    fill_generated,
    generated_blocks,
    render_value,
)
from steps.stages import CHECK_PARAMETERS, DOCUMENTED, STAGES, WORKFLOW_PARAMETERS
from tests.conftest import assert_bad_input, assert_one_line_error

ROOT = Path(__file__).resolve().parent.parent

BAD_VALUES = {
    "empty": "",
    "blank": "   ",
    "nan": "nan",
    "NaN": "NaN",
    "inf": "inf",
    "-inf": "-Infinity",
    "negative": "-1",
    "negative-float": "-0.5",
    "huge-int": "9" * 40,
    "huge-float": "1e308",
    "overflow": "1e999",
    "arabic-indic-digits": "\u0661\u0662",  # int() reads it as 12
    "fullwidth-digits": "\uff11\uff12",  # and this one too
    "underscore": "1_000",
    "very-long": "7" * 5000,
    "nul": "a\x00b",  # cannot reach a C library, a file name or PostgreSQL
    "line-break": "a\nb",
}
# A valid value for each pattern-checked text flag that a stage requires.
PATTERN_SAMPLES = {r"[0-9a-f]{32}": "a" * 32, r"[0-9a-f]{64}": "b" * 64}
# An existing file for the paths a stage reads, outside the test's directory (which must stay
# empty): a stage that got past parsing by mistake would fail to read it as Parquet.
READ_FILE = Path(__file__)


def _value_flags(stage: Stage) -> list[Flag]:
    return [f for f in stage.all_flags if not isinstance(f.kind, Switch)]


def _valid(flag: Flag, tmp: Path) -> str:
    """A value the flag accepts, for the required flags around the one under test."""
    kind = flag.kind
    if flag.default is not None:
        return render_value(flag.default)
    if isinstance(kind, Choice):
        return kind.options[0]
    if isinstance(kind, ExistingPath) or (isinstance(kind, FilePath) and not kind.writes):
        return str(READ_FILE)
    if isinstance(kind, FilePath | DirectoryPath):
        return str(tmp / flag.name)
    if isinstance(kind, Integer):
        return str(kind.minimum)
    if isinstance(kind, Text) and kind.pattern:
        return PATTERN_SAMPLES[kind.pattern]
    return "x"


def _argv(stage: Stage, tmp: Path, flag: Flag, value: str) -> list[str]:
    argv = []
    for other in _value_flags(stage):
        if other.required and other is not flag:
            argv += [other.option, _valid(other, tmp)]
    return [*argv, "--outputs-dir", str(tmp / "outputs"), f"{flag.option}={value}"]


def _main(stage: Stage, argv: list[str]) -> tuple[int, str, str]:
    """Run a stage's real `main` in this process; (exit code, stdout, stderr)."""
    module = importlib.import_module(f"steps.{stage.name.replace('-', '_')}")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = module.main(argv)
    return code, out.getvalue(), err.getvalue()


def _isolate(stage: Stage, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No variable of the caller leaks in; a stage that got past parsing by mistake would write
    under `tmp` and reach only a closed port on 127.0.0.1, never the internet."""
    monkeypatch.chdir(tmp)
    for var in {f.env for f in stage.all_flags if f.env}:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GSOD_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("FETCH_HTTP_RETRIES", "0")


def _refuses(flag: Flag, value: str) -> bool:
    try:
        flag.convert(value)
    except BadInput:
        return True
    return False


def _not_read(stage: str, flag: Flag, value: str) -> bool:
    """Whether a value given alone would be refused because, with the other flags at their
    defaults, the stage does not read the flag (`Flag.read_with`: `--path` without source gsod)."""
    if flag.read_with is None or not value.strip():
        return False
    other, wanted = flag.read_with
    return render_value(STAGES[stage].flag(other).default) not in (
        (wanted,) if isinstance(wanted, str) else wanted
    )


CASES = [
    pytest.param(stage, flag, name, id=f"{stage.name}-{flag.name}-{name}")
    for stage in DOCUMENTED
    for flag in _value_flags(stage)
    if flag.name != "outputs-dir" or stage.name == "fetch"  # one stage is enough for the shared one
    for name in BAD_VALUES
]


@pytest.mark.parametrize(("stage", "flag", "name"), CASES)
def test_every_flag_refuses_bad_values_in_one_line(
    stage: Stage, flag: Flag, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What each kind must refuse is said here, independently of the kind's own code; a value the
    flag refuses goes through the stage's real main: exit 2, one line naming the flag, and
    nothing written."""
    value = BAD_VALUES[name]
    kind = flag.kind
    numeric = isinstance(kind, Integer | Number)
    must_refuse = (
        (numeric and name not in ("negative", "negative-float"))
        or (numeric and name.startswith("negative") and kind.minimum >= 0)
        or (isinstance(kind, Integer) and name == "negative-float")
        or isinstance(kind, Choice | Boolean)
        or (not kind.empty_ok and name in ("empty", "blank"))
        or (flag.required and name in ("empty", "blank"))
        or (isinstance(kind, Text) and name in ("nul", "line-break"))
    )
    refused = _refuses(flag, value)
    if must_refuse:
        assert refused, f"{stage.name} {flag.option} accepted {value[:20]!r}"
    if not refused:
        converted = flag.convert(value)
        if isinstance(converted, float):
            assert math.isfinite(converted)
        return
    _isolate(stage, tmp_path, monkeypatch)
    code, out, err = _main(stage, _argv(stage, tmp_path, flag, value))
    assert_bad_input(code, err, flag.option)
    assert out == ""
    assert list(tmp_path.iterdir()) == [], "a refused value must stop the step before any write"


DASHES_CASES = [
    pytest.param(stage, flag, id=f"{stage.name}-{flag.name}")
    for stage in [*DOCUMENTED, CHECK_PARAMETERS]
    for flag in _value_flags(stage)
]


@pytest.mark.parametrize(("stage", "flag"), DASHES_CASES)
def test_every_flag_refuses_dashes_as_its_value_in_one_line(
    stage: Stage, flag: Flag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--flag=--`: argparse (Python 3.11) drops the `--` and hands back a list, which was an
    AttributeError traceback (issue 11). One error line naming the flag, exit 2, nothing written."""
    _isolate(stage, tmp_path, monkeypatch)
    code, out, err = _main(stage, _argv(stage, tmp_path, flag, "--"))
    assert_bad_input(code, err, flag.option, "'--'")
    assert out == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["workflows/submit.py", "--fan-out-parallelism=--"],
        ["-m", "workflows.local_runner", "x.yaml", "--run-dir=--"],
        ["-m", "workflows.local_runner", "x.yaml", "--cache-dir=--"],
    ],
)
def test_the_other_command_lines_refuse_dashes_as_a_value(argv: list[str], tmp_path: Path) -> None:
    """submit.py and the local runner parse with the same OneLineParser: `--run-dir=--` was
    silently the default run directory."""
    run = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert_bad_input(run.returncode, run.stderr, argv[-1].partition("=")[0], "'--'")


# What each path kind takes, said here independently of the kinds' code.
PATH_THINGS = ("nothing", "file", "directory", "named pipe", "under a file")
TAKES = {
    "read file": {"file"},
    "read file or directory": {"file", "directory"},
    "written file": {"nothing", "file"},
    "written directory": {"nothing", "directory"},
}


def _path_role(kind: Any) -> str | None:
    if isinstance(kind, FilePath):
        return "written file" if kind.writes else "read file"
    if isinstance(kind, ExistingPath):
        return "read file or directory"
    return "written directory" if isinstance(kind, DirectoryPath) else None


def _things(tmp: Path) -> Path:
    """`tmp/things` holding a file, a directory and a named pipe, named as in PATH_THINGS."""
    things = tmp / "things"
    things.mkdir()
    (things / "file").write_text("")
    (things / "directory").mkdir()
    os.mkfifo(things / "named pipe")
    return things


PATH_CASES = [
    pytest.param(stage, flag, thing, id=f"{stage.name}-{flag.name}-{thing}")
    for stage in DOCUMENTED
    for flag in _value_flags(stage)
    if _path_role(flag.kind)
    for thing in PATH_THINGS
]


@pytest.mark.parametrize(("stage", "flag", "thing"), PATH_CASES)
def test_every_path_flag_names_what_is_there_when_it_refuses_it(
    stage: Stage, flag: Flag, thing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each path kind refuses what its flag cannot use at parse (exit 2, nothing written) and
    says what is there: a directory given for a file to read said "does not exist", inside the
    step (exit 1; issue 11). Only a path where nothing is (or can be) "does not exist". A path
    to write under a file is refused too: `promote --outputs-dir /etc/hostname/x` moved the
    champion, then failed to write its outputs."""
    role = _path_role(flag.kind)
    things = _things(tmp_path)
    path = things / ("file/x" if thing == "under a file" else thing)
    if thing in TAKES[str(role)]:
        flag.convert(str(path))
        return
    _isolate(stage, tmp_path, monkeypatch)
    argv = _argv(stage, tmp_path, flag, str(path))
    if flag.name == "outputs-dir":
        argv = [*argv[:-3], argv[-1]]  # only the --outputs-dir under test
    before = sorted(tmp_path.rglob("*"))
    code, out, err = _main(stage, argv)
    if thing in ("nothing", "under a file") and role.startswith("read"):
        words = ["does not exist where the step runs"]
        words += [f"({things / 'file'} is not a directory)"] if thing == "under a file" else []
    elif thing == "under a file":
        words = [f"cannot be written: {things / 'file'} is not a directory"]
    else:
        words = [f"is a {thing}"]
        assert "does not exist" not in err
    assert_bad_input(code, err, flag.option, *words)
    assert out == "" and sorted(tmp_path.rglob("*")) == before


SHARED_PATH_CASES = [
    pytest.param(stage, first, second, id=f"{stage.name}-{first.name}-{second.name}")
    for stage in DOCUMENTED
    for i, first in enumerate(_value_flags(stage))
    for second in _value_flags(stage)[i + 1 :]
    if _path_role(first.kind) and _path_role(second.kind)
    and "written" in f"{_path_role(first.kind)} {_path_role(second.kind)}"
    # a path both would take alone (a read file and a directory never are one path)
    and TAKES[str(_path_role(first.kind))] & TAKES[str(_path_role(second.kind))]
]  # fmt: skip


@pytest.mark.parametrize(("stage", "first", "second"), SHARED_PATH_CASES)
def test_a_path_a_stage_writes_is_refused_when_another_path_flag_names_it_too(
    stage: Stage, first: Flag, second: Flag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every pair of path flags of a stage of which one writes, given one path that each flag
    would take alone: exit 2 naming both, nothing written. `validate --output X --report X`
    was accepted, and one file written over the other (issue 11); an output over an input
    loses the input."""
    takes = TAKES[str(_path_role(first.kind))] & TAKES[str(_path_role(second.kind))]
    path = str(_things(tmp_path) / sorted(takes)[0])
    _isolate(stage, tmp_path, monkeypatch)
    argv = _argv(stage, tmp_path, first, path)
    if "outputs-dir" in (first.name, second.name):
        del argv[argv.index("--outputs-dir") : argv.index("--outputs-dir") + 2]
    before = sorted(tmp_path.rglob("*"))
    code, out, err = _main(stage, [*argv, f"{second.option}={path}"])
    assert_bad_input(code, err, f"{first.option} and {second.option} name the same path")
    assert out == "" and sorted(tmp_path.rglob("*")) == before


OUTPUT_FILE_CASES = [
    pytest.param(stage, flag, id=f"{stage.name}-{flag.name}")
    for stage in DOCUMENTED
    if stage.outputs
    for flag in _value_flags(stage)
    if _path_role(flag.kind) == "written file"
]


@pytest.mark.parametrize(("stage", "flag"), OUTPUT_FILE_CASES)
def test_a_file_a_stage_writes_is_refused_where_its_output_parameters_go(
    stage: Stage, flag: Flag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--outputs-dir D` writes `D/<name>` for each declared output parameter: a written file
    at one of those, or an `--outputs-dir` under a written file, is refused."""
    _isolate(stage, tmp_path, monkeypatch)
    name = stage.outputs[-1].name
    code, out, err = _main(stage, _argv(stage, tmp_path, flag, str(tmp_path / "outputs" / name)))
    where = f"the output parameter file {name} of --outputs-dir"
    assert_bad_input(code, err, f"{flag.option} and {where} name the same path")
    assert out == "" and list(tmp_path.iterdir()) == []
    argv = _argv(stage, tmp_path, flag, str(tmp_path / "file"))
    argv[argv.index("--outputs-dir") + 1] = str(tmp_path / "file" / "outputs")
    code, out, err = _main(stage, argv)
    assert_bad_input(code, err, f"{flag.option} and --outputs-dir", "one is under the other")
    assert out == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage", [pytest.param(s, id=s.name) for s in DOCUMENTED if s.outputs])
@pytest.mark.parametrize("occupant", ["a directory", "a named pipe"])
def test_an_output_parameter_file_taken_by_what_a_file_cannot_replace_is_refused_before_work(
    stage: Stage, occupant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--outputs-dir D` where `D/<output>` is a directory or a named pipe: refused at parse
    (before: promote moved the champion, then failed writing its outputs; fetch wrote its
    dataset, then failed)."""
    _isolate(stage, tmp_path, monkeypatch)
    name = stage.outputs[0].name
    taken = tmp_path / "outputs" / name
    taken.parent.mkdir()
    taken.mkdir() if occupant == "a directory" else os.mkfifo(taken)
    argv = []
    for flag in _value_flags(stage):
        if flag.required:
            argv += [flag.option, _valid(flag, tmp_path)]
    before = sorted(tmp_path.rglob("*"))
    code, out, err = _main(stage, [*argv, "--outputs-dir", str(tmp_path / "outputs")])
    assert_bad_input(code, err, f"the file of output parameter {name} is {occupant}")
    assert out == "" and sorted(tmp_path.rglob("*")) == before


ENV_CASES = [
    pytest.param(stage, flag, name, id=f"{stage.name}-{flag.env}-{name}")
    for stage in DOCUMENTED
    for flag in _value_flags(stage)
    if flag.env
    for name in ("nan", "negative", "arabic-indic-digits", "very-long")
    if _refuses(flag, BAD_VALUES[name])
]


@pytest.mark.parametrize(("stage", "flag", "name"), ENV_CASES)
def test_a_bad_environment_variable_is_named_in_one_line(
    stage: Stage, flag: Flag, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _isolate(stage, tmp_path, monkeypatch)
    monkeypatch.setenv(flag.env, BAD_VALUES[name])
    argv = _argv(stage, tmp_path, flag, "x")[:-1]  # without the flag: its variable is read
    if flag.name == "outputs-dir":
        argv = argv[:-2]
    code, _, err = _main(stage, argv)
    assert_bad_input(code, err, flag.env, flag.option)


def test_the_instances_from_the_issue(tmp_path: Path) -> None:
    """Each of these was a traceback, a usage dump or silently accepted."""
    read = str(READ_FILE)  # an existing file: the case is about the other flag
    holdout = ["--input", read, "--holdout-out", "h.parquet", "--plot-out", "p.png"]
    cases = [
        ("fetch", ["--seed", "-1"], "--seed '-1'"),
        ("train", [*holdout, "--seed", "-1"], "--seed '-1'"),
        ("train", [*holdout, "--model-type", "elasticnet", "--alpha", "inf"], "--alpha 'inf'"),
        ("fetch", ["--http-timeout", "nan"], "--http-timeout 'nan'"),
        ("fetch", ["--http-timeout", "inf"], "--http-timeout 'inf'"),
        ("fetch", ["--output", str(tmp_path)], "is a directory"),
        ("validate", ["--input", read, "--output", "o", "--report", "r", "--dewp-tolerance", "nan"],
         "--dewp-tolerance 'nan'"),
        ("promote", ["--holdout", read, "--tolerance", ""], "--tolerance is empty"),
        ("promote", ["--holdout", read, "--tolerance", "abc"], "--tolerance 'abc'"),
        ("promote", ["--holdout", read, "--tolerance", "-1"], "--tolerance '-1'"),
        ("fetch", ["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        ("fetch", ["--rows"], "--rows: expected one argument"),
        ("deploy", [], "--target is required"),
    ]  # fmt: skip
    for stage, argv, needle in cases:
        result = subprocess.run(
            [sys.executable, "-m", "steps", stage, *argv],
            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert "Traceback" not in result.stderr and "usage:" not in result.stderr
        assert_bad_input(result.returncode, result.stderr, needle)


def test_unknown_stage_is_bad_input() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "steps", "fetchh"], capture_output=True, text=True, timeout=120
    )
    assert_bad_input(result.returncode, result.stderr, "unknown stage 'fetchh'", "fetch")


@pytest.mark.parametrize(
    ("argv", "code", "stdout", "stderr"),
    [([], EXIT_BAD_INPUT, "", "error: no stage given; usage: python -m steps {"),
     (["--help"], 0, "usage: python -m steps {", ""),
     (["-h"], 0, "usage: python -m steps {", "")],
)  # fmt: skip
def test_no_stage_is_one_error_line_and_help_is_usage_on_stdout(
    argv: list[str], code: int, stdout: str, stderr: str
) -> None:
    """No stage is bad input (issue 11): one `error:` line on stderr, exit 2, nothing on stdout;
    asking for help is the usage on stdout, exit 0."""
    result = subprocess.run(
        [sys.executable, "-m", "steps", *argv], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == code
    assert result.stdout.startswith(stdout) and (stdout or result.stdout == "")
    assert result.stderr.startswith(stderr) and (stderr or result.stderr == "")
    if stderr:
        assert_bad_input(result.returncode, result.stderr, *STAGES)


@pytest.mark.parametrize("stage", list(STAGES.values()), ids=list(STAGES))
def test_help_lists_exactly_the_declared_flags(stage: Stage) -> None:
    """`--help` of the real CLI: the declaration is the one source of its flags."""
    result = subprocess.run(
        [sys.executable, "-m", "steps", stage.name, "--help"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    # Option lines are indented two spaces; wrapped help lines (which may name a flag) further.
    shown = set(re.findall(r"^  (--[a-z0-9-]+)", result.stdout, flags=re.MULTILINE))
    assert shown == {f.option for f in stage.all_flags}
    for flag in stage.all_flags:
        if flag.env:
            assert f"env {flag.env}" in " ".join(result.stdout.split())


# ---- the declarations themselves ---------------------------------------------------------------


@pytest.mark.parametrize(
    "flag",
    [pytest.param(f, id=f"{s.name}-{f.name}") for s in STAGES.values() for f in s.all_flags],
)
def test_defaults_and_bounds_are_sound(flag: Flag) -> None:
    if flag.default is not None and not isinstance(flag.kind, Switch):
        assert flag.convert(render_value(flag.default)) == flag.default
    if isinstance(flag.kind, Integer | Number):
        # Finite bounds well below float's range: "huge" values are refused, never overflow.
        assert math.isfinite(flag.kind.minimum) and abs(flag.kind.maximum) < 1e300
    assert flag.help and not flag.help.endswith(".")
    if flag.by_env:
        assert flag.env, f"{flag.name} is passed by environment in a pod but has no variable"


def test_every_stage_has_its_module_and_unique_env_variables() -> None:
    for stage in STAGES.values():
        module = importlib.import_module(f"steps.{stage.name.replace('-', '_')}")
        assert callable(module.main)
        envs = [f.env for f in stage.all_flags if f.env]
        assert len(envs) == len(set(envs)), stage.name


def test_enumerations_come_from_the_lists_in_steps() -> None:
    from steps.deploy import _DEPLOY
    from steps.deploy_targets import TARGETS
    from steps.model import MODEL_TYPES
    from steps.sources import SOURCES

    enums = {p.name: p.choices for p in WORKFLOW_PARAMETERS}
    assert enums["source"] == SOURCES
    assert enums["model-type"] == MODEL_TYPES
    assert enums["deploy-target"] == TARGETS
    assert set(_DEPLOY) == set(TARGETS), "every deploy target needs its call in steps/deploy.py"
    for name in SOURCES:
        assert callable(importlib.import_module(f"steps.sources.{name}").fetch)


def test_a_source_added_in_steps_becomes_a_choice_everywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Declarations read the list when they are built: rebuild them with one more source."""
    import steps
    import steps.sources
    import steps.stages as original

    monkeypatch.setattr(steps.sources, "SOURCES", (*steps.sources.SOURCES, "ftp"))
    # Both are put back after the test: the import below rebinds them to the fresh module.
    monkeypatch.setattr(steps, "stages", original)
    monkeypatch.delitem(sys.modules, "steps.stages")
    fresh = importlib.import_module("steps.stages")
    assert fresh is not original
    assert "ftp" in fresh.FETCH.flag("source").kind.options
    (source,) = [p for p in fresh.WORKFLOW_PARAMETERS if p.name == "source"]
    assert source.choices[-1] == "ftp"
    check_workflow_parameters({"source": "ftp"}, fresh.WORKFLOW_PARAMETERS)
    with pytest.raises(BadInput):
        check_workflow_parameters({"source": "ftp"}, WORKFLOW_PARAMETERS)


def test_workflow_parameters_take_every_flag_that_names_them() -> None:
    by_name = {p.name: p for p in WORKFLOW_PARAMETERS}
    assert [(s, f.option) for s, f in by_name["source"].flags] == [
        ("fetch", "--source"),
        ("train", "--data-source"),
        ("register", "--data-source"),
    ]
    assert [s for s, _ in by_name["model-name"].flags] == ["register", "promote", "deploy"]
    assert by_name["synthetic-rows"].default == "1000"  # the pipeline's own default
    assert by_name["deploy-target"].default == "kubernetes"
    assert by_name["gate-tolerance"].help == "how much worse in RMSE the new model may be (deg F)"
    assert by_name["mlflow-tracking-uri"].by_env
    for parameter in WORKFLOW_PARAMETERS:
        if parameter.default:
            parameter.check(parameter.default)


@pytest.mark.parametrize("value", ["", "abc", "-1", "nan", "inf", "1e999", "\u0661"])
def test_gate_tolerance_found_instances_are_refused_by_the_parameter_check(value: str) -> None:
    expected = r"workflow parameter gate-tolerance \(promote --tolerance\)"
    with pytest.raises(BadInput, match=expected):
        check_workflow_parameters({"gate-tolerance": value}, WORKFLOW_PARAMETERS)


PARAMETER_CASES = [
    pytest.param(p, name, id=f"{p.name}-{name}") for p in WORKFLOW_PARAMETERS for name in BAD_VALUES
]


@pytest.mark.parametrize(("parameter", "name"), PARAMETER_CASES)
def test_check_parameters_refuses_what_any_stage_would_refuse(
    parameter: Any, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first task of the workflow, through its real main: exit 2 exactly when some stage that
    takes the parameter would refuse the value."""
    value = BAD_VALUES[name]
    for flag in CHECK_PARAMETERS.flags:
        if flag.env:
            monkeypatch.delenv(flag.env, raising=False)
    refused_by = [
        (s, f) for s, f in parameter.flags if _refuses(f, value) or _not_read(s, f, value)
    ]
    code, out, err = _main(CHECK_PARAMETERS, [f"--{parameter.name}={value}"])
    if refused_by:
        stage, flag = refused_by[0]
        assert_bad_input(code, err, f"workflow parameter {parameter.name} ({stage} {flag.option})")
    else:
        assert (code, err) == (0, ""), err
        (line,) = out.splitlines()  # one JSON line, the outputs, as every step prints
        assert "data-key" in json.loads(line)


# A value each flag read only with another flag's value takes (`Flag.read_with`).
READ_WITH_SAMPLES = {"path": str(READ_FILE), "table-uri": str(READ_FILE), "column-map": "temp=T",
                     "stations": "72530094846"}  # fmt: skip
READ_WITH = [
    pytest.param(stage, flag, value, id=f"{stage.name}-{flag.name}-{value}")
    for stage in DOCUMENTED
    for flag in _value_flags(stage)
    if flag.read_with
    for value in STAGES[stage.name].flag(flag.read_with[0]).kind.options
    if value not in ((w,) if isinstance(w := flag.read_with[1], str) else w)
]


def _parameter_taking(stage: Stage, name: str) -> str:
    """The workflow parameter that `stage` takes for its flag `name`."""
    (taken,) = [p.name for p in WORKFLOW_PARAMETERS if (stage.name, stage.flag(name)) in p.flags]
    return taken


def test_every_flag_read_only_with_another_has_a_sample() -> None:
    names = {f.name for s in DOCUMENTED for f in _value_flags(s) if f.read_with}
    assert names == set(READ_WITH_SAMPLES)


@pytest.mark.parametrize(("stage", "flag", "other_value"), READ_WITH)
def test_a_flag_its_stage_would_ignore_is_refused_at_every_door(
    stage: Stage, flag: Flag, other_value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value given for a flag the stage does not read with the other flag's value is refused,
    never silently ignored: `--stations` with `--source synthetic` was (issue 11)."""
    other = flag.read_with[0] if flag.read_with else ""
    value = READ_WITH_SAMPLES[flag.name]
    _isolate(stage, tmp_path, monkeypatch)
    argv = [*_argv(stage, tmp_path, flag, value), f"--{other}={other_value}"]
    code, out, err = _main(stage, argv)
    assert_bad_input(code, err, f"{flag.option} is read only with --{other} ")
    assert out == "" and list(tmp_path.iterdir()) == []
    if flag.parameter:
        taken = _parameter_taking(stage, other)
        code, out, err = _main(CHECK_PARAMETERS, [f"--{taken}={other_value}",
                                                  f"--{flag.parameter}={value}"])  # fmt: skip
        where = f"workflow parameter {flag.parameter} ({stage.name} {flag.option})"
        assert_bad_input(code, err, f"{where} is read only with {taken}=")


REQUIRED_WITH = [
    pytest.param(stage, flag, given, id=f"{stage.name}-{flag.name}-{given}")
    for stage in DOCUMENTED
    for flag in _value_flags(stage)
    if flag.required_with
    for given in ("absent", "empty", "blank")
]


@pytest.mark.parametrize(("stage", "flag", "given"), REQUIRED_WITH)
def test_a_flag_required_with_another_flags_value_is_refused_up_front_without_it(
    stage: Stage, flag: Flag, given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Flag.required_with` (`--table-uri` with `--source table`): the stage's CLI and
    check-parameters refuse its absence, exit 2, before any work; it was exit 1 inside fetch,
    after every earlier task of the workflow had run (issue 11)."""
    other, wanted = flag.required_with or ("", "")
    value = {"absent": None, "empty": "", "blank": "  "}[given]
    _isolate(stage, tmp_path, monkeypatch)
    argv = [*_argv(stage, tmp_path, flag, "")[:-1], f"--{other}={wanted}"]
    argv += [] if value is None else [f"{flag.option}={value}"]
    code, out, err = _main(stage, argv)
    assert_bad_input(code, err, f"{flag.option} is required with --{other} {wanted}: give ")
    assert out == "" and list(tmp_path.iterdir()) == []
    if flag.parameter:
        taken = _parameter_taking(stage, other)
        values = [f"--{taken}={wanted}"]
        values += [] if value is None else [f"--{flag.parameter}={value}"]
        code, out, err = _main(CHECK_PARAMETERS, values)
        where = f"workflow parameter {flag.parameter} ({stage.name} {flag.option})"
        assert_bad_input(code, err, f"{where} is required with {taken}={wanted}")
        assert out == ""


def test_check_parameters_reads_the_tracking_uri_from_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    code, _, err = _main(CHECK_PARAMETERS, [])
    assert_bad_input(code, err, "mlflow-tracking-uri")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert _main(CHECK_PARAMETERS, [])[0] == 0


# ---- write errors: a full disk -----------------------------------------------------------------


def _limited(limit_bytes: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def test_a_full_disk_while_fetch_writes_is_one_line_and_keeps_the_old_dataset(
    tmp_path: Path,
) -> None:
    """RLIMIT_FSIZE makes a write past 4 kB fail with EFBIG, as a full disk fails with ENOSPC
    (Python ignores SIGXFSZ, so the write returns the error): the dataset cannot be written."""
    output, outputs = tmp_path / "dataset.parquet", tmp_path / "outputs"
    output.write_bytes(b"previous dataset")
    argv = [sys.executable, "-m", "steps", "fetch", "--source", "synthetic", "--rows", "3000"]
    argv += ["--output", str(output), "--outputs-dir", str(outputs)]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, preexec_fn=_limited(4096), check=False
    )
    assert "Traceback" not in result.stderr
    assert_one_line_error(result.returncode, result.stderr, "cannot write", str(output))
    assert output.read_bytes() == b"previous dataset"
    assert not outputs.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.parquet"]  # no scratch left


def test_a_full_disk_while_writing_output_parameters_is_one_line(tmp_path: Path) -> None:
    code = "from steps.cli import run, write_outputs; from pathlib import Path; import sys\n"
    code += "sys.exit(run(lambda: write_outputs(Path(sys.argv[1]), {'reason': 'x' * 100})))"
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120, preexec_fn=_limited(10), check=False,
    )  # fmt: skip
    assert_one_line_error(
        result.returncode, result.stderr, "cannot write", str(tmp_path / "o" / "reason")
    )
    assert result.returncode == EXIT_FAILED


def test_an_unwritable_output_directory_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "steps", "fetch", "--source", "synthetic",
         "--output", str(blocker / "dataset.parquet")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert_bad_input(result.returncode, result.stderr, "is not a directory")


# ---- docs/steps.md -----------------------------------------------------------------------------


def test_docs_tables_are_generated_from_the_declarations() -> None:
    path = ROOT / "docs" / "steps.md"
    text = path.read_text()
    expected = fill_generated(text, generated_blocks(DOCUMENTED, WORKFLOW_PARAMETERS))
    assert text == expected, "docs/steps.md is stale: run `make docs` and commit the result"


def test_kinds_describe_what_they_refuse() -> None:
    assert Integer(0, 10).describe() == "an integer from 0 to 10"
    assert Integer(1, 10).parse("02") == 2  # leading zeros are the same number, one spelling
    with pytest.raises(ValueError, match="must be an integer"):
        Integer(1, 10).parse("+2")  # int() reads it; a version written so is refused
    assert Number(0, 1, open_minimum=True).describe() == "a number > 0 and <= 1"
    assert CommaList(Integer(1901, 2100)).parse("2023, ,2024") == (2023, 2024)
    assert Pairs(("temp", "dewp")).parse("temp=T, dewp = D") == {"temp": "T", "dewp": "D"}
    assert Boolean().parse("YES") is True
    with pytest.raises(ValueError, match="is a directory"):
        FilePath(writes=True).parse("/")
    with pytest.raises(ValueError, match="non-empty"):
        Text(empty_ok=False).parse("x" * 5000)
    assert EXIT_BAD_INPUT == 2


def test_a_stage_writes_exactly_its_declared_outputs(tmp_path: Path) -> None:
    """The Argo template reads every declared output parameter: a missing or extra one is a bug
    that fails the step loudly rather than a `valueFrom` that Argo cannot find."""
    fetch = STAGES["fetch"]
    with pytest.raises(ValueError, match=r"wrote outputs \['row-count'\]"):
        fetch.write_outputs(tmp_path, {"row-count": 1})
    with pytest.raises(ValueError, match="declared"):
        fetch.write_outputs(tmp_path, {"row-count": 1, "data-hash": "x", "extra": 2})
    assert not any(tmp_path.iterdir())
    fetch.write_outputs(tmp_path, {"row-count": 1, "data-hash": "x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data-hash", "row-count"]


@given(
    st.text(
        alphabet=st.sampled_from(["a", "Z", "7", ".", "/", ":", " ", "-", "_", "'", '"', "\u00e9"]),
        min_size=1,
        max_size=8,
    )
)
@settings(max_examples=300, deadline=None)
def test_model_name_accepts_exactly_the_names_mlflow_registers(name: str) -> None:
    """`--model-name` / workflow parameter model-name against MLflow 3.17.2's own check of a
    registered model name (mlflow/utils/validation.py, _validate_model_name): a name MLflow
    refuses must be refused up front, before train logs a run."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    text = name.strip()
    try:
        _validate_model_name(text)
        mlflow_accepts = True
    except MlflowException:
        mlflow_accepts = False
    flag = STAGES["register"].flag("model-name")
    assert (not _refuses(flag, name)) == mlflow_accepts, (name, mlflow_accepts)


@pytest.mark.parametrize(
    ("uri", "needle"),
    [(uri, "must be a CSV or Parquet file (read) or http(s) URL")
     for uri in ("http://", "https://", "s3://bucket/t.csv", "ftp://h/t.csv", "gs://b/t.parquet",
                 "file:///t.csv")]
    + [("{tmp}/absent.csv", "does not exist where the step runs"),
       ("{tmp}", "is a directory, not a file")],
)  # fmt: skip
def test_a_table_uri_the_table_source_cannot_read_is_refused_up_front(
    uri: str, needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table source reads an http(s) URL or a file (steps/sources/table.py); these passed
    check-parameters and failed in fetch (a local path where no file is: issue 11)."""
    argv = ["--source", "table", "--table-uri", uri.format(tmp=tmp_path)]
    code, out, err = _main(CHECK_PARAMETERS, argv)
    assert_bad_input(code, err, "table-uri", needle)
    assert out == ""
    _isolate(STAGES["fetch"], tmp_path, monkeypatch)
    code, out, err = _main(STAGES["fetch"], [*argv, "--output", str(tmp_path / "d.parquet")])
    assert_bad_input(code, err, "--table-uri", needle)
    (tmp_path / "t.csv").write_text("")
    for good in ("https://example.org/t.csv?X-Amz-Signature=x", str(tmp_path / "t.csv"), "t.csv"):
        assert _main(CHECK_PARAMETERS, ["--source", "table", "--table-uri", good])[0] == 0


@pytest.mark.parametrize(
    "column_map", ["humidity=H", "temp=T,temp=U", "Temp=T", "temp", "temp=T,dewp=T"]
)
def test_a_column_map_fetch_cannot_use_is_refused_by_check_parameters(column_map: str) -> None:
    """Its names of ours are the dataset's columns, each once: a bad one failed inside fetch
    (exit 1) after every earlier task had run (issue 11)."""
    argv = ["--source", "table", "--table-uri", str(READ_FILE), "--column-map", column_map]
    code, out, err = _main(CHECK_PARAMETERS, argv)
    assert_bad_input(code, err, "workflow parameter column-map (fetch --column-map)")
    assert out == ""
    good = ["--source", "table", "--table-uri", str(READ_FILE), "--column-map", "temp=T,dewp=D"]
    assert _main(CHECK_PARAMETERS, good)[0] == 0


def test_the_column_map_names_the_dataset_columns() -> None:
    """steps.sources.COLUMNS (light, read by the declarations) are the names of the dataset's
    schema (steps/dataset.py, which needs pyarrow), in order."""
    from steps.dataset import SCHEMA
    from steps.sources import COLUMNS

    assert tuple(SCHEMA.names) == COLUMNS
    assert STAGES["fetch"].flag("column-map").kind.keys == COLUMNS


@pytest.mark.parametrize("door", ["fetch --years", "fetch GSOD_YEARS", "check-parameters"])
def test_a_year_after_this_one_is_refused_at_every_door_naming_it_and_this_year(
    door: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Years are read against today's date, so this test holds in any year: next year was
    accepted (issue 11) and fetched on every run; this year still is."""
    this_year = dt.date.today().year
    stage = CHECK_PARAMETERS if door == "check-parameters" else STAGES["fetch"]
    _isolate(stage, tmp_path, monkeypatch)
    for year, refused in ((this_year + 1, True), (this_year, False)):
        argv = ["--source", "synthetic", "--rows", "10", "--output", str(tmp_path / "d.parquet")]
        if door == "check-parameters":
            argv = ["--source", "synthetic", f"--years=2020,{year}"]
        elif door == "fetch GSOD_YEARS":
            monkeypatch.setenv("GSOD_YEARS", f"2020,{year}")
        else:
            argv.append(f"--years=2020,{year}")
        code, out, err = _main(stage, argv)
        if refused:
            assert_bad_input(code, err, f"item '{year}' is after this year, {this_year}")
            assert out == "" and list(tmp_path.iterdir()) == []
        else:
            assert (code, err) == (0, "")
