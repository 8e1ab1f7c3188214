"""A template the local runner cannot run is refused before any task runs (issue 11): one
`error: ...` line on stderr naming the problem, exit 2, no run directory. What Argo itself
refuses (workflow/validate/validate.go and what its controller fails at run time) the offline
validator refuses in the same words; what only this runner cannot do, the runner alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import assert_bad_input
from tests.test_local_runner import container, workflow
from workflows.local_runner.__main__ import main as runner_main
from workflows.validate_resources import validate_resources

# The first task leaves a mark: a refusal up front must come before it runs.
MARK = "import pathlib, sys; pathlib.Path(sys.argv[1]).touch()"

Change = Callable[[dict, dict, dict], object]


def two_tasks(change: Change) -> dict:
    """`first` (leaves the mark) then `second`; `change(template of second, task second, whole)`
    breaks the second."""
    first = container("first", MARK, ["{{workflow.parameters.mark}}"])
    tasks = [
        {"name": "first", "template": "first"},
        {"name": "second", "template": "second", "depends": "first"},
    ]
    template = workflow(tasks, [first, container("second", "pass")], {"mark": ""})
    change(template["spec"]["templates"][2], tasks[1], template)
    return template


def refused_up_front(
    template: dict,
    words: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    *options: str,
) -> None:
    """Run `template` through the command line: exit 2, one error line holding `words` on
    stderr, nothing on stdout, no task run and no run directory."""
    path, mark, run_dir = tmp_path / "t.yaml", tmp_path / "mark", tmp_path / "run"
    path.write_text(yaml.safe_dump(template))
    argv = [str(path), "-p", f"mark={mark}", "--run-dir", str(run_dir), *options]
    code = runner_main([*argv, "--cache-dir", str(tmp_path / "cache")])
    out, err = capsys.readouterr()
    assert_bad_input(code, err, words)
    assert out == ""
    assert not mark.exists() and not run_dir.exists()


def _input(tpl: dict, **param: object) -> None:
    tpl["inputs"] = {"parameters": [{"name": "p", **param}]}


def _argument(task: dict, value: str) -> None:
    task["arguments"] = {"parameters": [{"name": "p", "value": value}]}


# Argo refuses these (the validator says so; `argo submit` would): (change, words).
ARGO_REFUSES: dict[str, tuple[Change, str]] = {
    # fasttemplate (util/template/validate.go): "Cannot find end tag"
    "unclosed {{ in args": (
        lambda tpl, task, wf: tpl["container"].update(args=["{{workflow.name"]),
        "'{{' at '{{workflow.name' has no '}}' after it",
    ),
    "unclosed {{ in env": (
        lambda tpl, task, wf: tpl["container"].update(env=[{"name": "X", "value": "a {{ b"}]),
        "'{{' at '{{ b' has no '}}' after it",
    ),
    "unclosed {{ in when": (
        lambda tpl, task, wf: task.update(when="{{workflow.parameters.mark == x"),
        "has no '}}' after it",
    ),
    "unclosed {{ in an s3 key": (
        lambda tpl, task, wf: tpl.update(
            outputs={"artifacts": [{"name": "o", "path": "/work/o", "s3": {"key": "k/{{x"}}]}
        ),
        "'{{' at '{{x' has no '}}' after it",
    ),
    # validateWorkflowFieldNames: "[%d].name '%s' is not unique"
    "duplicate input parameter": (
        lambda tpl, task, wf: tpl.update(
            inputs={"parameters": [{"name": "p", "default": "1"}, {"name": "p", "default": "2"}]}
        ),
        "input parameter name 'p' is not unique",
    ),
    "duplicate output parameter": (
        lambda tpl, task, wf: tpl.update(
            outputs={
                "parameters": [
                    {"name": "p", "valueFrom": {"path": "/work/p"}},
                    {"name": "p", "valueFrom": {"path": "/work/q"}},
                ]
            }
        ),
        "output parameter name 'p' is not unique",
    ),
    "duplicate input artifact": (
        lambda tpl, task, wf: tpl.update(
            inputs={
                "artifacts": [
                    {"name": "a", "path": "/work/a", "s3": {"key": "k"}},
                    {"name": "a", "path": "/work/b", "s3": {"key": "k"}},
                ]
            }
        ),
        "input artifact name 'a' is not unique",
    ),
    "duplicate argument": (
        lambda tpl, task, wf: (
            _input(tpl),
            task.update(
                arguments={"parameters": [{"name": "p", "value": "1"}, {"name": "p", "value": "2"}]}
            ),
        ),
        "argument parameter name 'p' is not unique",
    ),
    "duplicate workflow parameter": (
        lambda tpl, task, wf: wf["spec"]["arguments"]["parameters"].append(
            {"name": "mark", "value": "x"}
        ),
        "workflow parameter name 'mark' is not unique",
    ),
    "artifact name Argo cannot read": (
        lambda tpl, task, wf: tpl.update(
            outputs={"artifacts": [{"name": "a b", "path": "/work/o", "s3": {"key": "k"}}]}
        ),
        "output artifact name 'a b' must match [-a-zA-Z0-9_]+",
    ),
}


@pytest.mark.parametrize(("change", "words"), ARGO_REFUSES.values(), ids=ARGO_REFUSES.keys())
def test_what_argo_refuses_is_refused_by_validator_and_runner_before_any_task(
    change: Change, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = two_tasks(change)
    problems = validate_resources([template])
    assert any(words in p for p in problems), problems
    refused_up_front(template, words, tmp_path, capsys)
