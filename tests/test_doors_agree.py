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
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from steps import check_parameters
from steps.cli import EXIT_BAD_INPUT, BadInput
from steps.contract import Flag, choices_of
from steps.stages import CHECK_PARAMETERS, STAGES, VALIDATE
from tests.conftest import assert_bad_input
from tests.fake_argo import FakeArgo
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


# Every flag of a fixed list (a boolean, a choice) of every stage, with one of its values padded.
FIXED_LIST_FLAGS = [
    (stage.name, flag) for stage in STAGES.values() for flag in stage.flags if choices_of(flag.kind)
]


@pytest.mark.parametrize("pad", ["{} ", " {}", "\t{}\t"])
@pytest.mark.parametrize(
    ("stage", "flag"), FIXED_LIST_FLAGS, ids=[f"{s} {f.option}" for s, f in FIXED_LIST_FLAGS]
)
def test_a_value_of_a_fixed_list_is_taken_as_given_by_its_stage_as_by_check_parameters(
    stage: str, flag: Flag, pad: str
) -> None:
    """`promote --trust-units 'true '` was taken as true, while check-parameters (and Argo's
    enum check) refuse `trust-units=true `: the step's own command line and its environment
    variable refuse it too."""
    value = pad.format(choices_of(flag.kind)[0])
    # What the stage's parse does with each flag: read it (command line, else environment)
    # and convert it; its required flags are not given here, so one flag at a time.
    for argv, env in (([flag.option, value], {}), ([], {flag.env: value} if flag.env else None)):
        if env is None:
            continue
        namespace = STAGES[stage].parser().parse_args(argv)
        raw, source = flag.given(namespace, env)
        source = source or flag.option
        with pytest.raises(BadInput, match=rf"{re.escape(source)} .*without white space at"):
            flag.convert(raw, source)
    if flag.parameter:
        code, err = _outcome(lambda: check_parameters.main([f"--{flag.parameter}={value}"]))
        assert_bad_input(code, err, f"workflow parameter {flag.parameter}", "white space")
