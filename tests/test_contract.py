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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steps.cli import EXIT_BAD_INPUT, EXIT_FAILED, BadInput
from steps.contract import (
    END_OF_OPTIONS,
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
# An existing file named as the table and gsod sources read (a GSOD access CSV).
READ_CSV = ROOT / "tests" / "fixtures" / "gsod" / "01234599999.csv"


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


def _last_given(argv: list[str]) -> list[str]:
    """`argv` with each option at its last place only: a test's later `--target=kubernetes`
    stands for the `--target` `_argv` gave (a stage refuses an option given twice)."""
    groups: list[tuple[str | None, list[str]]] = []
    position = 0
    while position < len(argv):
        arg = argv[position]
        takes_next = position + 1 < len(argv) and not argv[position + 1].startswith("--")
        if arg.startswith("--") and "=" not in arg and takes_next:
            groups.append((arg, argv[position : position + 2]))
            position += 2
            continue
        groups.append((arg.partition("=")[0] if arg.startswith("--") else None, [arg]))
        position += 1
    last = {name: index for index, (name, _) in enumerate(groups) if name}
    return [a for i, (name, group) in enumerate(groups) if name is None or last[name] == i
            for a in group]  # fmt: skip


def _main(stage: Stage, argv: list[str]) -> tuple[int, str, str]:
    """Run a stage's real `main` in this process (`_last_given`); (exit code, stdout, stderr)."""
    module = importlib.import_module(f"steps.{stage.name.replace('-', '_')}")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = module.main(_last_given(argv))
    return code, out.getvalue(), err.getvalue()


def _no_network(*_: Any, **__: Any) -> Any:
    raise AssertionError("a stage got past parsing and tried to download")


def _isolate(stage: Stage, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No variable of the caller leaks in; a stage that got past parsing by mistake would write
    under `tmp` and fail the test at its first download, never reaching the internet. (Not by
    GSOD_BASE_URL: a variable a source does not read is refused, `Flag.read_with`.)"""
    import httpx

    monkeypatch.chdir(tmp)
    for var in {f.env for f in stage.all_flags if f.env}:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(httpx.Client, "send", _no_network)


def _refuses(flag: Flag, value: str) -> bool:
    try:
        flag.convert(value)
    except BadInput:
        return True
    return False


def _not_read(stage: str, flag: Flag, value: str) -> bool:
    """Whether a value given alone would be refused because, with the other flags at their
    defaults, the stage does not read the flag (`Flag.read_with`: `--path` without source gsod)."""
    if flag.read_with is None or not flag.sets(flag.convert(value)):
        return False
    other, wanted = flag.read_with
    condition = STAGES[stage].flag(other)  # at its workflow parameter's default
    return (condition.parameter_default or render_value(condition.default)) not in (
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


@pytest.mark.parametrize("parameter", [p.name for p in WORKFLOW_PARAMETERS])
def test_every_workflow_parameter_refuses_dashes_up_front(parameter: str) -> None:
    """`-p model-name=--` passed submit.py and the local runner's up-front check, then the
    pipeline's first task refused it (the step renders `--model-name=--`): every door refuses
    it alike, before anything runs."""
    with pytest.raises(BadInput, match=f"workflow parameter {parameter} .*'--' is no value"):
        check_workflow_parameters({parameter: "--"}, WORKFLOW_PARAMETERS)


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


# The file is named as every read path kind takes a file's name (ExistingPath.file_ends).
FILE_NAME = "file.csv"


def _thing(things: Path, thing: str) -> Path:
    """The path of `thing` (one of PATH_THINGS) in `things`."""
    return things / {"file": FILE_NAME, "under a file": f"{FILE_NAME}/x"}.get(thing, thing)


def _things(tmp: Path) -> Path:
    """`tmp/things` holding a file, a directory and a named pipe, named as in PATH_THINGS."""
    things = tmp / "things"
    things.mkdir()
    (things / FILE_NAME).write_text("")
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
    path = _thing(things, thing)
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
        words += [f"({things / FILE_NAME} is not a directory)"] if thing == "under a file" else []
    elif thing == "under a file":
        words = [f"cannot be written: {things / FILE_NAME} is not a directory"]
    else:
        words = [f"is a {thing}"]
        assert "does not exist" not in err
    assert_bad_input(code, err, flag.option, *words)
    assert out == "" and sorted(tmp_path.rglob("*")) == before


def _written_here(flag: Flag) -> bool:
    """Whether the stage's parse must find its flag's path writable: a file it writes, or a
    directory it writes in (deploy's `--state-dir` is checked by deploy: `--stop` only reads)."""
    kind = flag.kind
    return (isinstance(kind, FilePath) and kind.writes) or (
        isinstance(kind, DirectoryPath) and kind.writable
    )


# Where no file can be made, even by root (the tests run as root, whom permission bits do not
# stop): /proc/self, a directory that exists, and a path under it, which does not.
UNWRITABLE = {"existing directory": "/proc/self", "path under it": "/proc/self/new/x"}
UNWRITABLE_CASES = [
    pytest.param(stage, flag, where, id=f"{stage.name}-{flag.name}-{where}")
    for stage in DOCUMENTED
    for flag in _value_flags(stage)
    if _written_here(flag) and (flag.name != "outputs-dir" or stage.outputs)
    for where in UNWRITABLE
    if not (isinstance(flag.kind, FilePath) and where == "existing directory")
]


@pytest.mark.parametrize(("stage", "flag", "where"), UNWRITABLE_CASES)
def test_a_path_the_stage_cannot_write_is_refused_at_parse(
    stage: Stage, flag: Flag, where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every path a stage writes, `--outputs-dir` of every stage with outputs included, is
    refused at parse when no file can be made there: `promote --outputs-dir /proc/self` moved
    the champion and `deploy` served a new version, then both failed writing their outputs."""
    _isolate(stage, tmp_path, monkeypatch)
    argv = _argv(stage, tmp_path, flag, UNWRITABLE[where])
    if flag.name == "outputs-dir":
        argv = [*argv[:-3], argv[-1]]  # only the --outputs-dir under test
    before = sorted(tmp_path.rglob("*"))
    code, out, err = _main(stage, argv)
    assert_bad_input(code, err, flag.option, "cannot be written", "no file can be made there")
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
    path = str(_thing(_things(tmp_path), sorted(takes)[0]))
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


# (stage, a directory it manages, a path flag it writes): every pair the stages declare.
MANAGED_CASES = [
    pytest.param(stage, managed, written, id=f"{stage.name}-{managed.name}-{written.name}")
    for stage in DOCUMENTED
    for managed in _value_flags(stage)
    if getattr(managed.kind, "managed", False)
    for written in _value_flags(stage)
    if written is not managed and _path_role(written.kind) in ("written file", "written directory")
]


def test_deploy_manages_its_state_directory() -> None:
    assert [p.id for p in MANAGED_CASES] == ["deploy-state-dir-outputs-dir"]


@pytest.mark.parametrize(("stage", "managed", "written"), MANAGED_CASES)
@pytest.mark.parametrize("under", ["models", "models/x", "logs"])
def test_a_path_a_stage_writes_is_refused_inside_a_directory_the_stage_manages(
    stage: Stage, managed: Flag, written: Flag, under: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`deploy --outputs-dir <state-dir>/models`: deploy served the model, then pruned its
    copies there, the reserved output files with them, and failed (exit 1). Refused at parse,
    naming both flags, before anything is served."""
    _isolate(stage, tmp_path, monkeypatch)
    state = tmp_path / "state"
    argv = _argv(stage, tmp_path, written, str(state / under))
    if managed.read_with:  # the value with which the stage reads it
        name, values = managed.read_with
        argv.append(f"--{name}={values if isinstance(values, str) else values[0]}")
    argv.append(f"{managed.option}={state}")
    code, out, err = _main(stage, argv)
    assert_bad_input(code, err, f"{written.option} ", f"is inside {managed.option} ",
                     "a directory the stage manages")  # fmt: skip
    assert out == "" and not state.exists()


def _given_by(
    door: str, flag: Flag, value: str, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], str]:
    """`argv` giving `flag` the value `value` by `door` (`flag`, or `env`: its variable, the
    flag left out of `argv`), and how an error line names it then."""
    if door == "flag":
        return [*argv, f"{flag.option}={value}"], flag.option
    monkeypatch.setenv(str(flag.env), value)
    kept = [a for a in argv if not a.startswith(f"{flag.option}=")]
    if flag.option in kept:
        del kept[kept.index(flag.option) : kept.index(flag.option) + 2]
    return kept, f"{flag.env} (for {flag.option})"


MANAGED_DOOR_CASES = [
    pytest.param(*case.values, by_managed, by_written,
                 id=f"{case.id}-{by_managed}-{by_written}")
    for case in MANAGED_CASES
    for by_managed in ("flag", "env") if by_managed == "flag" or case.values[1].env
    for by_written in ("flag", "env") if by_written == "flag" or case.values[2].env
]  # fmt: skip


@pytest.mark.parametrize(("stage", "managed", "written", "by_managed", "by_written"),
                         MANAGED_DOOR_CASES)  # fmt: skip
def test_a_path_refused_inside_a_managed_directory_is_named_by_where_it_came_from(
    stage: Stage, managed: Flag, written: Flag, by_managed: str, by_written: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`DEPLOY_STATE_DIR=S deploy --outputs-dir S/o` was refused naming `--state-dir`, which
    the user never gave (and `STEP_OUTPUTS_DIR` was named `--outputs-dir`): the line names the
    variable the value came from, as every other refusal of a value does."""
    _isolate(stage, tmp_path, monkeypatch)
    state = tmp_path / "state"
    argv = [a for f in _value_flags(stage) if f.required and f not in (managed, written)
            for a in (f.option, _valid(f, tmp_path))]  # fmt: skip
    if managed.read_with:  # the value with which the stage reads it
        name, values = managed.read_with
        argv.append(f"--{name}={values if isinstance(values, str) else values[0]}")
    argv, written_named = _given_by(by_written, written, str(state / "o"), argv, monkeypatch)
    argv, managed_named = _given_by(by_managed, managed, str(state), argv, monkeypatch)
    code, out, err = _main(stage, argv)
    assert_bad_input(code, err, f"error: {written_named} '", f"is inside {managed_named} '",
                     "a directory the stage manages")  # fmt: skip
    assert out == "" and not state.exists()


@pytest.mark.parametrize(
    "stage", [pytest.param(s, id=s.name) for s in (CHECK_PARAMETERS, *DOCUMENTED) if s.outputs]
)
@pytest.mark.parametrize("occupant", ["a directory", "a named pipe"])
@pytest.mark.parametrize("door", ["flag", "env"])
def test_an_output_parameter_file_taken_by_what_a_file_cannot_replace_is_refused_before_work(
    stage: Stage, occupant: str, door: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--outputs-dir D` where `D/<output>` is a directory or a named pipe: refused at parse
    (before: promote moved the champion, then failed writing its outputs; fetch wrote its
    dataset, then failed), naming where D came from (`STEP_OUTPUTS_DIR`: it was named
    `--outputs-dir`)."""
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
    flag = stage.flag("outputs-dir")
    argv, named = _given_by(door, flag, str(tmp_path / "outputs"), argv, monkeypatch)
    code, out, err = _main(stage, argv)
    assert_bad_input(code, err, f"error: {named} '",
                     f"the file of output parameter {name} is {occupant}")  # fmt: skip
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
        ("fetch", ["--no-such-flag"], "unrecognized arguments: '--no-such-flag'"),
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
    # Only fetch: train tags its run with the source its data names, and register's version
    # takes the run's tag (a workflow parameter `source` is fetch's choice, not a description).
    assert [(s, f.option) for s, f in by_name["source"].flags] == [("fetch", "--source")]
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
READ_WITH_SAMPLES = {"path": str(READ_CSV), "table-uri": str(READ_CSV), "column-map": "temp=T",
                     "stations": "72530094846", "base-url": "http://127.0.0.1:9", "rows": "7",
                     "seed": "7", "http-retries": "7", "http-timeout": "7", "host": "0.0.0.0",
                     "port": "5999", "state-dir": "state", "namespace": "other",
                     "deployment": "other", "service-url": "http://127.0.0.1:9",
                     "kube-api": "http://127.0.0.1:9"}  # fmt: skip
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
    code = "from steps.cli import run; from steps.files import ReservedOutputs\n"
    code += "from pathlib import Path; import sys\n"
    code += "def main():\n"
    code += "    with ReservedOutputs(Path(sys.argv[1]), ['reason']) as outputs:\n"
    code += "        outputs.write({'reason': 'x' * 100})\n"
    code += "sys.exit(run(main))"
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
    assert CommaList(Integer(1901, 2100)).parse("2023,,2024") == (2023, 2024)  # no item
    with pytest.raises(ValueError, match=r"item ' ' must be .*, without white space at either"):
        CommaList(Integer(1901, 2100)).parse("2023, ,2024")  # an item, as given: not a year
    assert Pairs(("temp", "dewp")).parse("temp=T,dewp=D D") == {"temp": "T", "dewp": "D D"}
    with pytest.raises(ValueError, match="without white space at either end, got ' dewp = D'"):
        Pairs(("temp", "dewp")).parse("temp=T, dewp = D")
    assert Boolean().parse("true") is True and Boolean().parse("false") is False
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
    # The next stage takes a value as given, and Argo drops one trailing newline, not two.
    for padded in ("x\n", "x\n\n", " x"):
        with pytest.raises(ValueError, match=r"\['data-hash'\] have white space"):
            fetch.write_outputs(tmp_path, {"row-count": 1, "data-hash": padded})
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

    try:
        _validate_model_name(name)
        mlflow_accepts = True
    except MlflowException:
        mlflow_accepts = False
    # Stricter than MLflow on purpose: white space at either end is refused (Text.visible),
    # as the Argo mutex named after the model would not be the mutex of the stripped name;
    # and '--', which the step's command line reads as the end of its options.
    flag = STAGES["register"].flag("model-name")
    takes = mlflow_accepts and name == name.strip() and name != END_OF_OPTIONS
    assert (not _refuses(flag, name)) == takes, (name, mlflow_accepts)


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
    argv = ["--source", "table", "--table-uri", str(READ_CSV), "--column-map", column_map]
    code, out, err = _main(CHECK_PARAMETERS, argv)
    assert_bad_input(code, err, "workflow parameter column-map (fetch --column-map)")
    assert out == ""
    good = ["--source", "table", "--table-uri", str(READ_CSV), "--column-map", "temp=T,dewp=D"]
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


# ---- issue 11, second round: huge inputs, URLs, doors that disagree, flags a case ignores -------


def _doors(stage: Stage, flag: Flag) -> list[str]:
    """Where a flag's value comes in: the stage's command line, its variable, and the workflow
    parameter it takes (check-parameters)."""
    return ["flag"] + (["env"] if flag.env else []) + (["parameter"] if flag.parameter else [])


def _door_cases(keep: Callable[[Flag], bool]) -> list[Any]:
    """(stage, flag, door) for every flag `keep` selects and every door its value comes in by."""
    return [
        pytest.param(stage, flag, door, id=f"{stage.name}-{flag.name}-{door}")
        for stage in DOCUMENTED
        for flag in _value_flags(stage)
        if keep(flag)
        for door in _doors(stage, flag)
    ]


def _through(
    door: str,
    stage: Stage,
    flag: Flag,
    value: str,
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    *extra: str,
    parse_only: bool = False,
) -> tuple[int, str, str]:
    """Run `stage` (or check-parameters, for `parameter`) with `value` for `flag` through
    `door`, `extra` arguments given as `--flag=value` of the stage (or its parameters);
    `parse_only`: only the stage's parse (a value it takes would else run the stage)."""
    _isolate(CHECK_PARAMETERS if door == "parameter" else stage, tmp, monkeypatch)
    if door == "parameter":
        names = {f.name: f.parameter for f in stage.all_flags if f.parameter}
        argv = [f"--{names[a[2:].partition('=')[0]]}={a.partition('=')[2]}" for a in extra]
        return _main(CHECK_PARAMETERS, [*argv, f"--{flag.parameter}={value}"])
    argv = [*_argv(stage, tmp, flag, value), *extra]
    if door == "env":
        monkeypatch.setenv(str(flag.env), value)
        argv = argv[: -1 - len(extra)] + list(extra)  # without the flag itself
    if not parse_only:
        return _main(stage, argv)
    try:
        stage.parse(_last_given(argv))
    except BadInput as exc:
        return EXIT_BAD_INPUT, "", f"error: {exc}\n"
    return 0, "", ""


def test_synthetic_rows_are_bounded_by_what_fits_in_the_fetch_pod() -> None:
    """`--rows` took 50,000,000 (about 21 GB at the measured 420 bytes a row) while the fetch
    pod may use 1 GiB: the bound, times the bytes a row costs at peak, plus the libraries, fits
    in the memory limit the rendered fetch template declares; the help says the arithmetic."""
    from workflows.pipeline import build_workflow_template
    from workflows.settings import PipelineSettings

    rendered = build_workflow_template(PipelineSettings()).to_dict()
    (fetch,) = [t for t in rendered["spec"]["templates"] if t["name"] == "fetch"]
    limit = fetch["container"]["resources"]["limits"]["memory"]
    assert limit == "1Gi"
    flag = STAGES["fetch"].flag("rows")
    assert 170e6 + 420 * flag.kind.maximum < 2**30 * 0.75  # a quarter of it to spare
    assert f"{flag.kind.maximum:,}" in flag.help and "1 GiB" in flag.help
    assert _refuses(flag, "50000000")


def test_synthetic_rows_times_years_are_bounded_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--rows` rows in each of `--years` are generated by one fetch: their product is bounded
    by the same figure, refused before anything is written."""
    from steps.stages import SYNTHETIC_MAX_ROWS as maximum  # `--rows`'s own bound

    assert STAGES["fetch"].flag("rows").kind.maximum == maximum
    _isolate(STAGES["fetch"], tmp_path, monkeypatch)
    argv = ["--source", "synthetic", f"--rows={maximum // 2 + 1}", "--years=2020,2021",
            "--output", str(tmp_path / "out" / "d.parquet")]  # fmt: skip
    code, out, err = _main(STAGES["fetch"], argv)
    assert_bad_input(code, err, "--rows", "--years", f"{maximum:,}")
    assert out == "" and list(tmp_path.iterdir()) == []


# URLs no server can be reached at, by the flags' kinds: each refused at parse (exit 2) at
# every door; a port out of range was exit 75 (retried as transient), no host exit 1.
BAD_URLS = {
    "port-too-big": "http://h:99999/x.csv",
    "port-zero": "http://h:0/x.csv",
    "port-empty": "http://h:/x.csv",
    "no-host": "http:///x.csv",
    "ftp": "ftp://h/x.csv",
    "not-a-url": "abc",
}
URL_CASES = _door_cases(
    lambda flag: type(flag.kind).__name__ in ("HttpUrl", "UrlOrFile", "TrackingUri")
)


@pytest.mark.parametrize(("stage", "flag", "door"), URL_CASES)
@pytest.mark.parametrize("name", BAD_URLS)
def test_every_url_flag_refuses_a_url_no_server_is_at_in_every_door(
    stage: Stage, flag: Flag, door: str, name: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    value = BAD_URLS[name]
    extra = [f"--{c[0]}={c[1] if isinstance(c[1], str) else c[1][0]}"
             for c in (flag.read_with,) if c]  # fmt: skip
    code, out, err = _through(door, stage, flag, value, tmp_path, monkeypatch, *extra)
    assert_bad_input(code, err, flag.parameter if door == "parameter" else flag.option)
    assert out == ""


@pytest.mark.parametrize("door", ["flag", "env", "parameter"])
@pytest.mark.parametrize(
    "uri", ["{tmp}/t.txt", "http://h/t.txt", "https://h/t?x=.csv", "http://h/"]
)
def test_a_table_in_no_format_the_source_reads_is_refused_at_parse_in_every_door(
    door: str, uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The format comes from the name's end (of a URL, its path): an unknown one was found only
    when fetch ran (exit 1), after every earlier task."""
    (tmp_path / "t.txt").write_text("a,b\n")
    fetch = STAGES["fetch"]
    value = uri.format(tmp=tmp_path)
    (tmp_path / "run").mkdir()
    code, out, err = _through(door, fetch, fetch.flag("table-uri"), value, tmp_path / "run",
                              monkeypatch, "--source=table")  # fmt: skip
    assert_bad_input(code, err, "ends in none of .csv, .csv.gz, .parquet, .pq")
    assert out == ""


COMMA_LIST_CASES = _door_cases(lambda flag: isinstance(flag.kind, CommaList))


def _item(flag: Flag, second: bool = False) -> str:
    """A valid item of a comma list flag (`second`: another one)."""
    items = {"years": ("2020", "2021"), "stations": ("72530094846", "72530094847")}
    return items.get(flag.name, ("a", "b"))[second]


def _named(door: str, flag: Flag) -> str:
    """How an error line names `flag` when its value came in by `door` (`_doors`)."""
    return {"flag": f"{flag.option} ", "env": f"{flag.env} (for {flag.option})",
            "parameter": f"workflow parameter {flag.parameter} "}[door]  # fmt: skip


@pytest.mark.parametrize(("stage", "flag", "door"), COMMA_LIST_CASES)
def test_a_comma_list_item_given_twice_is_refused_at_every_door(
    stage: Stage, flag: Flag, door: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--years 2020,2020` fetched 2020 twice through fetch's CLI while check-parameters folded
    it into one year: every door now refuses it alike."""
    item = _item(flag)
    code, out, err = _through(door, stage, flag, f"{item},{item}", tmp_path, monkeypatch)
    assert_bad_input(code, err, f"item '{item}' is given twice")
    assert out == ""


# Values hiding something in a part of them, by kind (the value as a whole has no white space at
# either end: that is `parse_as_given`'s). A comma list: `{}` stands for the bad item's valid
# text, `{other}` for another valid item; (value, the bad item).
HIDDEN_IN_AN_ITEM = {
    "line-break": ("{}\n,{other}", "{}\n"),
    "space-after-comma": ("{other}, {}", " {}"),
    "space-before-comma": ("{} ,{other}", "{} "),
    "tab": ("{other},\t{}", "\t{}"),
    "U+2028": ("{}\u2028,{other}", "{}\u2028"),
    "U+2029": ("{other},\u2029{}", "\u2029{}"),
    "NEL": ("{}\x85,{other}", "{}\x85"),
    "ESC": ("{}\x1b,{other}", "{}\x1b"),
    "zero-width-space": ("{other},\u200b{}", "\u200b{}"),
    "BOM": ("{}\ufeff,{other}", "{}\ufeff"),
}
# Pairs: (value, its bad entry): white space around a name, or a hidden character.
HIDDEN_IN_A_PAIR = [
    ("temp= TEMP,dewp=DEWP", "temp= TEMP"),
    ("temp =TEMP,dewp=DEWP", "temp =TEMP"),
    ("temp=TEMP, dewp=DEWP", " dewp=DEWP"),
    ("temp=TEMP\n,dewp=DEWP", "temp=TEMP\n"),
    ("temp=TEMP\u2028,dewp=DEWP", "temp=TEMP\u2028"),
    ("temp=TEMP,dewp=DE\u2029WP", "dewp=DE\u2029WP"),
    ("temp=TE\u200bMP,dewp=DEWP", "temp=TE\u200bMP"),
    ("temp=TE\x1bMP,dewp=DEWP", "temp=TE\x1bMP"),
    ("temp=TEMP,\ufeffdewp=DEWP", "\ufeffdewp=DEWP"),
]
# Text: characters that show as nothing (Unicode category Cf, line and paragraph separators)
# and a C1 control, put inside a value the flag takes (`steps.contract._unseen`).
UNSEEN = {
    "U+200B": "\u200b", "U+200C": "\u200c", "U+200D": "\u200d", "U+2060": "\u2060",
    "U+FEFF": "\ufeff", "U+00AD": "\u00ad", "U+202E": "\u202e", "U+2028": "\u2028",
    "U+2029": "\u2029", "U+0085": "\x85",
}  # fmt: skip


def _hidden_values(flag: Flag) -> list[tuple[str, str, tuple[str, ...]]]:
    """(id, a value of `flag` hiding something in a part, what its error line must say)."""
    if isinstance(flag.kind, CommaList):
        one, other = _item(flag), _item(flag, True)
        made = {k: (v.format(one, other=other), b.format(one, other=other))
                for k, (v, b) in HIDDEN_IN_AN_ITEM.items()}  # fmt: skip
        return [(k, v, (f"item {b!r} must be ", "without ")) for k, (v, b) in made.items()]
    if isinstance(flag.kind, Pairs):
        return [(repr(v), v, (f"got {b!r}", "without ")) for v, b in HIDDEN_IN_A_PAIR]
    pattern = getattr(flag.kind, "pattern", None)
    valid = render_value(flag.default) or PATTERN_SAMPLES.get(str(pattern), "xy")
    said = {"U+0085": "without control characters"}
    return [(name, value, (repr(value), said.get(name, "without invisible characters")))
            for name, c in UNSEEN.items() for value in [valid[:1] + c + valid[1:]]]  # fmt: skip


HIDDEN_CASES = [
    pytest.param(*case.values, value, needles, id=f"{case.id}-{name}")
    for case in _door_cases(lambda flag: isinstance(flag.kind, CommaList | Pairs | Text))
    for name, value, needles in _hidden_values(case.values[1])
]


@pytest.mark.parametrize(("stage", "flag", "door", "value", "needles"), HIDDEN_CASES)
def test_a_value_hiding_something_in_a_part_is_refused_at_every_door_quoting_that_part(
    stage: Stage, flag: Flag, door: str, value: str, needles: tuple[str, ...], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Comma lists stripped each item: `--years $'2023\\n,2024'`, `2023, 2024` and
    `--column-map 'temp= TEMP'` were read as if clean, while a whole value is taken as given
    (8655e05); a U+2028 or a zero-width space inside a column name passed. Text flags other
    than the model name took a zero-width space (`--workflow-uid`, the experiment), and two
    names that differ only there look alike in MLflow, Argo and every error line. Every item,
    name of a pair and Text value is taken as given, by one rule at every door: one line naming
    the flag (or variable, or parameter) and quoting the part so what hides in it shows."""
    code, out, err = _through(door, stage, flag, value, tmp_path, monkeypatch)
    assert_bad_input(code, err, _named(door, flag), *needles)
    assert out == ""


@pytest.mark.parametrize(
    ("stage", "flag", "door"),
    _door_cases(lambda flag: isinstance(flag.kind, CommaList) and bool(flag.read_with)),
)
def test_a_comma_list_of_empty_items_is_not_given_at_every_door(
    stage: Stage, flag: Flag, door: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stations=,` with a source that reads no stations: fetch read it as no stations and ran;
    check-parameters refused it as given. `,` is no item at every door, so it is not given."""
    _, extra = _in_a_case_that_does_not_read(stage, flag, door)
    for value in (",", ",,"):
        _, _, err = _through(door, stage, flag, value, tmp_path, monkeypatch, *extra,
                             parse_only=True)  # fmt: skip
        assert "is read only with" not in err, err


def _wanted_values(flag: Flag) -> tuple[str, ...]:
    wanted = flag.read_with[1] if flag.read_with else ()
    return (wanted,) if isinstance(wanted, str) else tuple(wanted)


def _in_a_case_that_does_not_read(stage: Stage, flag: Flag, door: str) -> tuple[str, list[str]]:
    """A value of the flag `flag.read_with` names for which the stage does not read `flag`, and
    the arguments that choose it (with what that case requires, through the stage's door)."""
    other = stage.flag(flag.read_with[0]) if flag.read_with else None
    assert other is not None and isinstance(other.kind, Choice)
    unread = next(o for o in other.kind.options if o not in _wanted_values(flag))
    extra = [f"--{other.name}={unread}"]
    if door != "parameter":
        extra += [f"--{f.name}={READ_WITH_SAMPLES[f.name]}" for f in stage.all_flags
                  if f.required_with and f.required_with[1] == unread]  # fmt: skip
    return unread, extra


WRITTEN_UNDER_READ_DIRECTORY = [
    pytest.param(stage, read, written, id=f"{stage.name}-{read.name}-{written.name}")
    for stage in DOCUMENTED
    for read in _value_flags(stage)
    if _path_role(read.kind) == "read file or directory"
    for written in _value_flags(stage)
    if str(_path_role(written.kind)).startswith("written")
]


@pytest.mark.parametrize(("stage", "read", "written"), WRITTEN_UNDER_READ_DIRECTORY)
def test_a_path_a_stage_writes_inside_a_directory_it_reads_is_refused(
    stage: Stage, read: Flag, written: Flag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`train --input D --holdout-out D/holdout.parquet` was accepted: the next run read the
    holdout as a part of its input."""
    folder = tmp_path / "in"
    folder.mkdir()
    _isolate(stage, tmp_path, monkeypatch)
    argv = _argv(stage, tmp_path, read, str(folder))
    if written.name == "outputs-dir":
        del argv[argv.index("--outputs-dir") : argv.index("--outputs-dir") + 2]
    before = sorted(tmp_path.rglob("*"))
    code, out, err = _main(stage, [*argv, f"{written.option}={folder / 'x.parquet'}"])
    assert_bad_input(code, err, f"{written.option} ", f"is inside {read.option} ")
    assert out == "" and sorted(tmp_path.rglob("*")) == before


READ_WITH_DOORS = _door_cases(lambda flag: bool(flag.read_with))


@pytest.mark.parametrize(("stage", "flag", "door"), READ_WITH_DOORS)
def test_a_flag_read_in_one_case_is_refused_in_another_only_when_the_user_set_it(
    stage: Stage, flag: Flag, door: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gsod-only flag given with `--source table`, a local-only deploy flag with `--target
    kubernetes`: silently ignored before. Set by the user (command line, variable, workflow
    parameter): one line naming it and the case; its default (or the parameter's, which the
    pipeline passes to every task) is not set by the user, so it is no error."""
    unread, extra = _in_a_case_that_does_not_read(stage, flag, door)
    value = READ_WITH_SAMPLES[flag.name]
    (tmp_path / "a").mkdir()
    pods_own = flag.env_from_pod and door == "env"  # the pod's own variable, not the user's
    code, out, err = _through(door, stage, flag, value, tmp_path / "a", monkeypatch, *extra,
                              parse_only=pods_own)  # fmt: skip
    named = {"flag": flag.option, "env": f"{flag.env} (for {flag.option})",
             "parameter": f"workflow parameter {flag.parameter}"}[door]  # fmt: skip
    if pods_own:
        assert (code, out, err) == (0, "", "")
    else:
        assert_bad_input(code, err, named, "is read only with", unread)
        assert out == ""
    for default in {flag.default_text(), flag.parameter_default} - {None, ""}:
        monkeypatch.undo()
        (tmp_path / "b").mkdir(exist_ok=True)
        _, _, err = _through(door, stage, flag, str(default), tmp_path / "b", monkeypatch,
                             *extra, parse_only=True)  # fmt: skip
        assert "is read only with" not in err, err


def test_the_flags_a_source_or_target_reads_come_from_the_declarations() -> None:
    """Each source-specific SourceRequest field has a fetch flag read only with its sources, and
    deploy's per-target flags are grouped in --help by the same declaration (`read_with`)."""
    fetch, deploy = STAGES["fetch"], STAGES["deploy"]
    for name in ("path", "base-url", "table-uri", "column-map", "rows", "seed"):
        assert fetch.flag(name).read_with, name
    for flag in deploy.all_flags:
        if flag.group:
            assert flag.group == f"target {flag.read_with[1]}" if flag.read_with else False
    assert {f.name for f in deploy.all_flags if f.group == "target local"} == {
        "host", "port", "state-dir", "stop"}  # fmt: skip


@pytest.mark.parametrize("stage", [pytest.param(s, id=s.name) for s in DOCUMENTED])
def test_unknown_arguments_are_quoted_escaped_and_cut_short(
    stage: Stage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """argparse echoed unknown arguments whole: an ESC reached the terminal, a pasted URL its
    password, a long one the whole line."""
    _isolate(stage, tmp_path, monkeypatch)
    unknown = ["--\x1b[31mred", "https://alice:s3cret@h/x", "y" * 500, "4th", "5th"]
    code, out, err = _main(stage, unknown)
    assert_bad_input(code, err, "unrecognized arguments: '--\\x1b[31mred'", "(and 2 more)")
    assert out == ""
    assert "\x1b" not in err and "s3cret" not in err and "y" * 61 not in err


ENV_BLANK_CASES = [
    pytest.param(stage, flag, id=f"{stage.name}-{flag.env}")
    for stage in DOCUMENTED
    for flag in _value_flags(stage)
    if flag.env and (not flag.kind.empty_ok or flag.required)
]


@pytest.mark.parametrize(("stage", "flag"), ENV_BLANK_CASES)
def test_a_variable_of_only_white_space_is_called_blank_not_empty(
    stage: Stage, flag: Flag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _isolate(stage, tmp_path, monkeypatch)
    monkeypatch.setenv(str(flag.env), "  \t ")
    argv = _argv(stage, tmp_path, flag, "x")[:-1]
    if flag.name == "outputs-dir":
        argv = argv[:-2]
    code, _, err = _main(stage, argv)
    assert_bad_input(code, err, f"{flag.env} (for {flag.option}) is blank")
    assert "is empty" not in err


MODEL_NAME_DOORS = _door_cases(lambda flag: flag.name == "model-name")


@pytest.mark.parametrize(("stage", "flag", "door"), MODEL_NAME_DOORS)
@pytest.mark.parametrize(
    "name", ["\u200b", "\u200b\u200c\ufeff", "\u3164", "m ", " m", "m\u200b", "\u00a0m"]
)
def test_a_model_name_one_cannot_see_whole_is_refused_at_every_door(
    stage: Stage, flag: Flag, door: str, name: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Zero-width or filler characters only, or white space at an end: MLflow registers such a
    name, which no one can tell apart, and the pipeline's release mutex is named after the value
    as given (workflows/pipeline.py MUTEX_NAME: `m ` is another mutex than `m`), while the steps
    stripped it: two runs of one model did not exclude each other."""
    code, out, err = _through(door, stage, flag, name, tmp_path, monkeypatch)
    assert_bad_input(code, err, "white space at either end" if name.strip() != name
                     else "invisible characters")  # fmt: skip
    assert out == ""


@pytest.mark.parametrize("door", ["flag", "env", "parameter"])
def test_a_gsod_path_file_fetch_cannot_read_is_refused_at_parse_naming_what_the_user_gave(
    door: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`GSOD_PATH=notes.txt` passed the parse and failed in fetch naming `--path`, which the user
    never gave, and check-parameters let it through: the file's format is checked at parse now,
    and the line names the variable (or the parameter) it came from."""
    notes = tmp_path / "notes.txt"
    notes.write_text("")
    fetch = STAGES["fetch"]
    (tmp_path / "run").mkdir()
    code, out, err = _through(door, fetch, fetch.flag("path"), str(notes), tmp_path / "run",
                              monkeypatch)  # fmt: skip
    named = {"flag": "--path ", "env": "GSOD_PATH (for --path)", "parameter": "gsod-path"}[door]
    assert_bad_input(code, err, named, "ends in none of .csv, .op, .op.gz, .tar.gz, .tgz")
    assert out == ""


# One spelling a value, the same at a stage's flag, its variable and its workflow parameter
# (check-parameters): (stage, flag, value, taken). Argo's enum for rain-only is true/false, and
# submit.py and the runner held to it while the rest took `1`, `yes`, `True` (issue 11).
SPELLINGS = [
    *(("validate", "rain-only", v, v in ("true", "false"))
      for v in ("true", "false", "1", "0", "yes", "YES", "True", "no", "FALSE")),
    # bounds are checked on the decimal as given: this one is a float of 600.0
    ("promote", "claim-lease", "599.9999999999999999999", False),
    ("promote", "claim-lease", "600", True),
    ("promote", "claim-lease", "604800.0000000000000001", False),
    # and on the float too: this one is a float of 0.0
    ("fetch", "http-timeout", "1e-400", False),
    # RFC 3986 section 3.1: schemes are case-insensitive
    ("fetch", "base-url", "HTTP://127.0.0.1:9/gsod", True),
    ("fetch", "base-url", "hTTpS://127.0.0.1:9/gsod", True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("stage", "flag", "value", "taken", "door"),
    [
        pytest.param(STAGES[s], STAGES[s].flag(f), v, t, door, id=f"{s}-{f}-{v}-{door}")
        for s, f, v, t in SPELLINGS
        for door in _doors(STAGES[s], STAGES[s].flag(f))
    ],
)
def test_each_door_of_a_flag_takes_the_same_spellings(
    stage: Stage, flag: Flag, value: str, taken: bool, door: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    code, _, err = _through(door, stage, flag, value, tmp_path, monkeypatch, parse_only=True)
    if taken:
        assert (code, err) == (0, ""), err
    else:
        assert_bad_input(code, err, repr(value), "must be ")


def test_an_upper_case_scheme_is_read_in_lower_case_and_quoted_as_given() -> None:
    """`HTTP://host` was refused, and its error line quoted it as `http://` (urlsplit lower-cases
    the scheme), so the user did not see what they had typed."""
    from steps.redaction import redact_value

    base_url = STAGES["fetch"].flag("base-url")
    assert base_url.convert("HTTP://Host:9/X") == "http://Host:9/X"
    assert redact_value("HTTPS://u:pw@h/t.csv?token=s") == "HTTPS://***@h/t.csv?token=***"
    with pytest.raises(BadInput, match=re.escape("'HTTP://***@h st/x'")):
        base_url.convert("HTTP://u:pw@h st/x")


@pytest.mark.parametrize("stage", DOCUMENTED, ids=lambda stage: stage.name)
def test_a_flag_given_twice_is_refused_not_the_last_one_taken(stage: Stage) -> None:
    """argparse keeps the last of `--x=1 --x=2` silently; every door refuses it (issue 11)."""
    flag = next(f for f in _value_flags(stage) if not f.required)
    with pytest.raises(BadInput, match=f"argument {flag.option}: given twice; give it once"):
        stage.parse([f"{flag.option}=a", f"{flag.option}", "b"])
