"""Every door of the pipeline's parameters gives one verdict for one set of values (issue 11).

The doors: check-parameters (the workflow's first task), `submit.py --run-now` (Argo),
`submit.py --local`, the local runner on a rendered template (`python -m workflows.local_runner`)
and the demo (`make demo`). Each set of values below goes through every door; each door either
accepts it (it reaches the point where it would start work: submit to Argo, start MLflow, run
the first task) or refuses it with one `error:` line naming the parameter, exit 2.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from steps import check_parameters
from steps.cli import EXIT_BAD_INPUT, BadInput
from steps.contract import Flag, Stage, Switch, choices_of, render_value
from steps.stages import CHECK_PARAMETERS, STAGES, VALIDATE
from tests.conftest import assert_bad_input
from tests.fake_argo import FakeArgo
from tests.test_contract import PATTERN_SAMPLES, READ_CSV, READ_WITH_SAMPLES, _argv, _main
from workflows import demo, submit
from workflows.local_runner import __main__ as runner_cli
from workflows.local_runner import check_rendered

MIN_ROWS = VALIDATE.flag("min-rows").default

# (values, the parameter an error line names, or None: every door takes them). `source` is
# always given: the doors' defaults differ there (the cluster's gsod, the local doors' synthetic).
CASES = [
    *(({"source": "synthetic", "rain-only": v}, None) for v in ("true", "false")),
    # the Argo enum is true/false; check-parameters and the steps took these (and another data key)
    *(
        ({"source": "synthetic", "rain-only": v}, "rain-only")
        for v in ("1", "0", "YES", "yes", "True", "FALSE", "no")
    ),
    # Argo substitutes it again: refused by submit.py and the runner, taken by check-parameters
    ({"source": "synthetic", "model-name": "{{workflow.name}}"}, "model-name"),
    ({"source": "synthetic", "model-name": "m{{x"}, "model-name"),
    ({"source": "synthetic", "years": "2024 "}, "years"),
    # each year's validate fails under its min rows: refused before fetch, not after; the rows
    # with a missing value dropped, MIN_ROWS rows leave too few (tests/test_synthetic_rows_door.py)
    ({"source": "synthetic", "synthetic-rows": str(MIN_ROWS - 1)}, "synthetic-rows"),
    ({"source": "synthetic", "synthetic-rows": "1"}, "synthetic-rows"),
    ({"source": "synthetic", "synthetic-rows": str(MIN_ROWS), "years": "2023"}, "synthetic-rows"),
    (
        {"source": "synthetic", "synthetic-rows": "200", "years": "2023", "rain-only": "true"},
        "synthetic-rows",
    ),
    ({"source": "synthetic", "synthetic-rows": "1000"}, None),  # no generation: `SURE_MARGIN`
    # a float of 600.0 that is below the bound as written
    ({"source": "synthetic", "gate-claim-lease": "599.9999999999999999999"}, "gate-claim-lease"),
    ({"source": "synthetic", "gate-claim-lease": "600"}, None),
    ({"source": "synthetic", "gate-tolerance": "1e-400"}, None),
    # RFC 3986 section 3.1: a scheme is case-insensitive
    ({"source": "gsod", "gsod-base-url": "HTTP://127.0.0.1:9/gsod"}, None),
    ({"source": "gsod", "gsod-base-url": "Https://127.0.0.1:9/gsod"}, None),
]


class _Accepted(BaseException):
    """Raised where a door would start work: every check has passed."""


def _accept(*_: object, **__: object) -> None:
    raise _Accepted


def _outcome(call: Callable[[], int]) -> tuple[int, str]:
    """(exit code, stderr) of a door's main; 0 when it got as far as `_Accepted`."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = call()
        except _Accepted:
            code = 0
    return code, err.getvalue()


def _pairs(values: dict[str, str]) -> list[str]:
    return [arg for name, value in values.items() for arg in ("-p", f"{name}={value}")]


@pytest.fixture
def doors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Callable[[list[str]], tuple[int, str]]]]:
    """Door name -> run it with `-p name=value` arguments; (exit code, stderr)."""
    monkeypatch.chdir(tmp_path)
    for variable in ("MLFLOW_PORT", "SERVE_PORT", "PIPELINE_FAN_OUT_PARALLELISM"):
        monkeypatch.delenv(variable, raising=False)
    for flag in CHECK_PARAMETERS.flags:
        if flag.env:
            monkeypatch.delenv(flag.env, raising=False)
    # Where each door would start work (MLflow, the first task), after its checks.
    monkeypatch.setattr(demo, "mlflow_up", _accept)
    monkeypatch.setattr(demo, "tracking_server_for", _accept)

    def runner_checks_only(template: dict, parameters: dict, **kwargs: object) -> int:
        check_rendered(
            template,
            parameters,
            kwargs.get("backend", "process"),
            run_dir=kwargs["run_dir"],
            cache_dir=kwargs.get("cache_dir"),
        )
        raise _Accepted

    monkeypatch.setattr(runner_cli, "run_rendered", runner_checks_only)
    template = tmp_path / "rendered"
    assert submit.main(["--render", str(template)]) == 0
    argo = FakeArgo(token="t").start()

    def check_parameters_door(args: list[str]) -> tuple[int, str]:
        return _outcome(lambda: check_parameters.main([f"--{pair}" for pair in args[1::2]]))

    runs = iter(range(10**6))
    yield {
        "check-parameters": check_parameters_door,
        "submit --run-now": lambda args: _outcome(
            lambda: submit.main(["--argo-server", argo.url, "--token", "t", "--run-now", *args])
        ),
        "submit --local": lambda args: _outcome(
            lambda: submit.main(["--local", "--run-dir", f"run{next(runs)}", *args])
        ),
        "local runner": lambda args: _outcome(
            lambda: runner_cli.main(
                [str(template / "workflow-template.yaml"), "--run-dir", f"run{next(runs)}", *args]
            )
        ),
        "make demo": lambda args: _outcome(lambda: demo.main(["up", *args])),
    }
    argo.stop()


@pytest.mark.parametrize(("values", "refused"), CASES, ids=lambda v: repr(v) if v else "ok")
def test_every_door_gives_the_same_verdict(doors, values, refused) -> None:
    verdicts = {}
    for door, call in doors.items():
        code, err = call(_pairs(values))
        verdicts[door] = code
        if refused:
            assert_bad_input(code, err, f"workflow parameter {refused}")
        else:
            assert (code, err) == (0, ""), (door, err)
    assert set(verdicts.values()) == {EXIT_BAD_INPUT if refused else 0}, verdicts


@pytest.mark.parametrize(
    "door", ["check-parameters", "submit --run-now", "submit --local", "local runner", "make demo"]
)
def test_a_parameter_given_twice_is_refused_naming_it(doors, door) -> None:
    """`-p years=2024 -p years=2023` ran with the last one, silently (check-parameters: its
    `--years` twice)."""
    code, err = doors[door](["-p", "years=2024", "-p", "model-name=m", "-p", "years=2023"])
    assert_bad_input(code, err, "years", "given twice")


def test_the_demo_refuses_a_source_given_as_a_flag_and_a_parameter(doors) -> None:
    code, err = doors["make demo"](["--source", "synthetic", "-p", "source=gsod"])
    assert_bad_input(code, err, "--source and -p source=... both set the source: give one")


def test_a_data_key_has_one_spelling_per_value() -> None:
    """`synthetic-rows=0100` and `100`, `HTTP://` and `http://`: one dataset, one data key."""
    key = lambda **values: check_parameters.fan_out_outputs(values, "v")["data-key"]  # noqa: E731
    assert key(source="synthetic", **{"synthetic-rows": "0100"}) == key(
        source="synthetic", **{"synthetic-rows": "100"}
    )
    url = "https://127.0.0.1:9/gsod"
    assert key(**{"gsod-base-url": "HTTPS" + url[5:]}) == key(**{"gsod-base-url": url})
    assert key(**{"rain-only": "true"}) != key(**{"rain-only": "false"})


# Every flag of every stage that takes a value, each with a value it takes padded; the
# parameters check-parameters takes are checked with each stage flag that takes them.
VALUE_FLAGS = [
    (stage, flag)
    for stage in STAGES.values()
    for flag in stage.all_flags
    if not isinstance(flag.kind, Switch) and not (stage is CHECK_PARAMETERS and flag.parameter)
]
PADS = ["{} ", " {}", "{}\n", "\t{}"]


def _taken_value(flag: Flag, tmp: Path) -> str:
    """A value `flag` takes as given (`Flag.convert` accepts it), from candidates of each kind."""
    candidates = [
        render_value(flag.default),
        *(choices_of(flag.kind) or ()),
        READ_WITH_SAMPLES.get(flag.name, ""),
        *(str(getattr(flag.kind, a)) for a in ("minimum", "maximum") if hasattr(flag.kind, a)),
        *PATTERN_SAMPLES.values(),
        f"sqlite:///{tmp / 'mlflow.db'}",
        "http://127.0.0.1:5000",
        "2020",
        str(READ_CSV),
        str(tmp / flag.name),
        "x",
    ]
    for candidate in candidates:
        with contextlib.suppress(BadInput):
            if candidate.strip():
                flag.convert(candidate)
                return candidate
    raise AssertionError(f"no value {flag.option} takes among {candidates}")


@pytest.mark.parametrize("pad", PADS, ids=repr)
@pytest.mark.parametrize(
    ("stage", "flag"), VALUE_FLAGS, ids=[f"{s.name} {f.option}" for s, f in VALUE_FLAGS]
)
def test_a_value_with_white_space_at_an_end_is_refused_by_its_stage_as_by_check_parameters(
    stage: Stage, flag: Flag, pad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`promote --trust-units 'true '`, `promote --tolerance ' 1'`, `SERVE_PORT=' 5001'` were
    read without their white space by the stage, while check-parameters (and Argo, as given)
    refuse `trust-units=true `: the stage's command line and its environment variable refuse
    every such value too (`steps.contract.parse_as_given`), one `error:` line, exit 2."""
    monkeypatch.chdir(tmp_path)
    valid = _taken_value(flag, tmp_path)
    value = pad.format(valid)
    code, _, err = _main(stage, _argv(stage, tmp_path, flag, value))
    assert_bad_input(code, err, flag.option, "white space at either end")
    if flag.env:
        argv = _argv(stage, tmp_path, flag, valid)[:-1]  # not given on the command line
        if flag.option in argv:  # `--outputs-dir` is always given: the same, by its variable
            del argv[argv.index(flag.option) : argv.index(flag.option) + 2]
        monkeypatch.setenv(flag.env, value)
        code, _, err = _main(stage, argv)
        assert_bad_input(code, err, flag.env, "white space at either end")
        monkeypatch.delenv(flag.env)
    if flag.parameter:
        code, err = _outcome(lambda: check_parameters.main([f"--{flag.parameter}={value}"]))
        assert_bad_input(code, err, f"workflow parameter {flag.parameter}", "white space")


# The command lines outside the stages that take a number (`steps.contract.argparse_type`) or
# read a port's variable (`workflows.demo.port_from_env`): (command line, environment).
OUTSIDE = [
    (["demo", "up", "--serve-port", "{}"], {}),
    (["demo", "up", "--mlflow-port", "{}"], {}),
    (["demo", "up"], {"SERVE_PORT": "{}"}),
    (["demo", "up"], {"MLFLOW_PORT": "{}"}),
    (["submit", "--poll-seconds", "{}"], {}),
    (["submit", "--fan-out-parallelism", "{}"], {}),
]


@pytest.mark.parametrize("pad", PADS, ids=repr)
@pytest.mark.parametrize(("argv", "env"), OUTSIDE, ids=lambda v: " ".join(v) if v else "")
def test_a_command_line_outside_the_stages_refuses_white_space_at_an_end_of_a_value(
    argv: list[str], env: dict[str, str], pad: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`SERVE_PORT=' 5001' make demo` and `demo up --serve-port ' 5001'` were read as 5001,
    while the deploy stage refuses its `--port ' 5001'`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "mlflow_up", _accept)
    monkeypatch.setattr(demo, "tracking_server_for", _accept)
    for variable in ("MLFLOW_PORT", "SERVE_PORT"):
        monkeypatch.delenv(variable, raising=False)
    for name in env:
        monkeypatch.setenv(name, pad.format("5001"))
    program, *args = [a.replace("{}", pad.format("5")) if a == "{}" else a for a in argv]
    main = {"demo": demo.main, "submit": lambda a: submit.main(["--render", "r", *a])}[program]
    code, err = _outcome(lambda: main(args))
    assert_bad_input(code, err, "white space at either end")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", [" model-name", "model-name\t", "model\u200bname"], ids=repr)
@pytest.mark.parametrize(
    "door", ["submit --run-now", "submit --local", "local runner", "make demo"]
)
def test_an_unknown_parameter_name_is_quoted_so_what_hides_in_it_shows(doors, door, name) -> None:
    """`-p ' model-name=m'` was refused as `unknown workflow parameter(s) model-name`, the one
    name it knows, with its white space lost in the line: the name is quoted as given."""
    code, err = doors[door](["-p", f"{name}=m"])
    assert_bad_input(code, err, f"unknown workflow parameter(s) {name!r}; known: ")


@pytest.mark.parametrize("value", [" ", "\t", " \n "], ids=repr)
@pytest.mark.parametrize("variable", ["SERVE_PORT", "MLFLOW_PORT"])
def test_a_blank_port_variable_is_quoted_as_given(
    variable: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`SERVE_PORT=' ' make demo` said `SERVE_PORT='' must be an integer`: the value was
    stripped before it was shown. It is quoted as given and called blank, as `demo up
    --serve-port ' '` and the deploy stage's own SERVE_PORT say it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "mlflow_up", _accept)
    monkeypatch.setattr(demo, "tracking_server_for", _accept)
    for name in ("MLFLOW_PORT", "SERVE_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, value)
    code, err = _outcome(lambda: demo.main(["up"]))
    assert_bad_input(code, err, f"{variable}={value!r} is blank (only white space): give ")
