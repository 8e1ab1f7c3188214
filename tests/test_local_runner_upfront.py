"""A template the local runner cannot run is refused before any task runs (issue 11): one
`error: ...` line on stderr naming the problem, exit 2, no run directory. What Argo itself
refuses (workflow/validate/validate.go and what its controller fails at run time) the offline
validator refuses in the same words; what only this runner cannot do, the runner alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import assert_bad_input, assert_one_line_error
from tests.test_local_runner import container, workflow
from workflows.local_runner.__main__ import main as runner_main
from workflows.validate_resources import validate_resources

# The first task leaves a mark: a refusal up front must come before it runs.
MARK = "import pathlib, sys; pathlib.Path(sys.argv[1]).touch()"

Change = Callable[[dict, dict, dict], object]


def two_tasks(change: Change) -> dict:
    """`first` (leaves the mark) then `second`; `change(template of second, task second, whole)`
    breaks the second."""
    output = {"name": "o", "valueFrom": {"path": "/work/o", "default": "x"}}
    first = container(
        "first", MARK, ["{{workflow.parameters.mark}}"], outputs={"parameters": [output]}
    )
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


def _artifact(tpl: dict, kind: str = "outputs", **fields: object) -> None:
    """One artifact `a` of `kind` (inputs, outputs): path /work/a, key k, unless `fields` say."""
    tpl[kind] = {"artifacts": [{"name": "a", "path": "/work/a", "s3": {"key": "k"}, **fields}]}


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
        lambda tpl, task, wf: _artifact(tpl, s3={"key": "k/{{x"}),
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
        lambda tpl, task, wf: _artifact(tpl, name="a b"),
        "output artifact name 'a b' must match [-a-zA-Z0-9_]+",
    ),
    # validateLeaf: "container.image may not be empty", "... already mounted in ..."
    "no image": (
        lambda tpl, task, wf: tpl["container"].pop("image"),
        "container.image may not be empty",
    ),
    "an artifact where a volume is mounted": (
        lambda tpl, task, wf: _artifact(tpl, "inputs", path="/work"),
        "path '/work' already mounted in container.volumeMounts.work",
    ),
    # Artifact.CleanPath: "Directory traversal is not permitted"
    "an artifact path leaving its directory": (
        lambda tpl, task, wf: _artifact(tpl, path="/work/a/../b"),
        "contains '..' leaving '/work/a'",
    ),
    # validateTemplate: "has invalid duration format in timeout"
    "a timeout without a unit": (lambda tpl, task, wf: tpl.update(timeout="30"), "has no unit"),
    # validateOutputs / validateOutputParameter
    "an output parameter with value and valueFrom": (
        lambda tpl, task, wf: tpl.update(
            outputs={"parameters": [{"name": "p", "value": "1", "valueFrom": {"path": "/w"}}]}
        ),
        "has both valueFrom and value specified",
    ),
    # validateArgumentsValues: "value or valueFrom is required", "... or key is required"
    "an argument without a value": (
        lambda tpl, task, wf: (
            _input(tpl, default="d"),
            task.update(arguments={"parameters": [{"name": "p"}]}),
        ),
        "'p': value or valueFrom is required",
    ),
    "an argument artifact from nowhere": (
        lambda tpl, task, wf: (
            tpl.update(inputs={"artifacts": [{"name": "a", "path": "/work/a"}]}),
            task.update(arguments={"artifacts": [{"name": "a"}]}),
        ),
        "'a': from, artifact location, or key is required",
    ),
    "an empty enum": (
        lambda tpl, task, wf: wf["spec"]["arguments"]["parameters"].append(
            {"name": "e", "value": "x", "enum": []}
        ),
        "'e': enum holds no value",
    ),
    # addItemsToScope: "only one of withItems, withParam, withSequence can be specified"; an
    # item without the key a task names fails that item when it runs
    "two loops": (
        lambda tpl, task, wf: task.update(withItems=["a"], withParam='["b"]'),
        "only one of withItems, withParam, withSequence",
    ),
    "an item without the key": (
        lambda tpl, task, wf: task.update(withItems=[{"a": 1}, {"b": 2}], when="{{item.a}} == 1"),
        "{{item.a}}: item 1 of withItems lacks it",
    ),
    # validateTemplateHolder: "... is not a valid RetryPolicy"; processNodeRetries, when the
    # task first fails: "no base duration specified", "cannot be resolved to an int",
    # "unable to parse ... as a duration"
    "an unknown retry policy": (
        lambda tpl, task, wf: tpl.update(retryStrategy={"limit": 1, "retryPolicy": "Never"}),
        "'Never' is not a valid RetryPolicy",
    ),
    "a backoff without a duration": (
        lambda tpl, task, wf: tpl.update(retryStrategy={"limit": 1, "backoff": {"factor": 2}}),
        "no base duration specified for retryStrategy",
    ),
    "a backoff factor that is not an integer": (
        lambda tpl, task, wf: tpl.update(
            retryStrategy={"limit": 1, "backoff": {"duration": "1s", "factor": "1.5"}}
        ),
        "value '1.5' cannot be resolved to an int",
    ),
    "a backoff maxDuration that is no duration": (
        lambda tpl, task, wf: tpl.update(
            retryStrategy={"limit": 1, "backoff": {"duration": "1s", "maxDuration": "1d"}}
        ),
        "unable to parse '1d' as a duration",
    ),
    # validateLeaf: "activeDeadlineSeconds must be a positive integer > 0 or an argo variable"
    "a negative deadline": (
        lambda tpl, task, wf: tpl.update(activeDeadlineSeconds=-5),
        "activeDeadlineSeconds -5 must be a positive integer",
    ),
    "a retry limit that is no integer": (
        lambda tpl, task, wf: tpl.update(retryStrategy={"limit": "three"}),
        "value 'three' cannot be resolved to an int",
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


def _parameter(wf: dict, name: str, value: str) -> None:
    wf["spec"]["arguments"]["parameters"].append({"name": name, "value": value})


def _memoize(tpl: dict, key: str, max_age: str) -> None:
    tpl["memoize"] = {"key": key, "maxAge": max_age, "cache": {"configMap": {"name": "c"}}}


# Argo runs these, but this runner would find out only while running (after `first` ran) that
# it cannot: the values the template and the parameters fix already, the program, the directory.
RUNNER_REFUSES: dict[str, tuple[Change, str]] = {
    "an s3 key leaving the repository": (
        lambda tpl, task, wf: _artifact(tpl, s3={"key": "../../x"}),
        "artifact key '../../x' is not a relative key in the repository",
    ),
    "an absolute s3 key": (
        lambda tpl, task, wf: _artifact(tpl, "inputs", s3={"key": "/etc/x"}),
        "artifact key '/etc/x' is not a relative key",
    ),
    "an s3 key whose '..' leaves it whatever its value": (
        lambda tpl, task, wf: (
            _input(tpl),
            _argument(task, "{{tasks.first.outputs.parameters.o}}"),
            _artifact(tpl, s3={"key": "{{inputs.parameters.p}}/../../x"}),
        ),
        "artifact key 'x/../../x' is not a relative key in the repository (no '/' first, no "
        "'..' leaving it), whatever '{{inputs.parameters.p}}/../../x' holds",
    ),
    "an argument s3 key from a workflow parameter": (
        lambda tpl, task, wf: (
            _parameter(wf, "k", "a/../../b"),
            _artifact(tpl, "inputs", s3=None),
            tpl["inputs"]["artifacts"][0].pop("s3"),
            task.update(
                arguments={"artifacts": [{"name": "a", "s3": {"key": "{{workflow.parameters.k}}"}}]}
            ),
        ),
        "artifact key 'a/../../b' is not a relative key",
    ),
    "an artifact path with a variable (it was used as written)": (
        lambda tpl, task, wf: (
            _input(tpl, default="d"),
            _artifact(tpl, path="/work/{{inputs.parameters.p}}"),
        ),
        "unsupported variable {{inputs.parameters.p}} in template second artifact a path",
    ),
    "an environment variable the caller does not have": (
        lambda tpl, task, wf: tpl["container"].update(
            env=[{"name": "I11_NOT_SET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
        ),
        "set I11_NOT_SET in the environment to run locally",
    ),
    "an empty command and no args": (
        lambda tpl, task, wf: tpl["container"].update(command=[], args=[]),
        "the container has no command and no args",
    ),
    "an empty program": (
        lambda tpl, task, wf: tpl["container"].update(command=[""]),
        "the program to start (command[0], else args[0]) is empty",
    ),
    "a program that is nowhere": (
        lambda tpl, task, wf: tpl["container"].update(command=["no-such-program-i11"]),
        "program 'no-such-program-i11' is on no directory of the step's PATH",
    ),
    "a working directory of this machine": (
        lambda tpl, task, wf: tpl["container"].update(workingDir="/etc"),
        "workingDir '/etc' is not under /work",
    ),
    "a withParam that is no JSON list": (
        lambda tpl, task, wf: task.update(withParam="{{workflow.parameters.mark}}"),
        "withParam value could not be parsed as a JSON list",
    ),
    "a when a parameter makes unreadable": (
        lambda tpl, task, wf: (
            _parameter(wf, "k", "abc"),
            task.update(when="{{workflow.parameters.k}} < 3"),
        ),
        "< needs two numbers or two strings",
    ),
    "a memoization key a parameter makes invalid": (
        lambda tpl, task, wf: (
            _parameter(wf, "k", "a b"),
            _memoize(tpl, "{{workflow.parameters.k}}", "1h"),
        ),
        "memoize: invalid cache key: 'a b'",
    ),
    "a memoization age a parameter makes invalid": (
        lambda tpl, task, wf: (
            _parameter(wf, "age", "1d"),
            _memoize(tpl, "k", "{{workflow.parameters.age}}"),
        ),
        "invalid maxAge: time: invalid duration '1d'",
    ),
    "an input outside its enum from a parameter": (
        lambda tpl, task, wf: (
            _parameter(wf, "k", "z"),
            _input(tpl, enum=["a", "b"]),
            _argument(task, "{{workflow.parameters.k}}"),
        ),
        "task second: input parameter p='z' not in ['a', 'b']",
    ),
    "an item outside the input's enum": (
        lambda tpl, task, wf: (
            _input(tpl, enum=["a", "b"]),
            _argument(task, "{{item}}"),
            task.update(withItems=["a", "c"]),
        ),
        "task second(1:c): input parameter p='c' not in ['a', 'b']",
    ),
}


@pytest.mark.parametrize(("change", "words"), RUNNER_REFUSES.values(), ids=RUNNER_REFUSES.keys())
def test_what_only_this_runner_cannot_run_is_refused_before_any_task(
    change: Change, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = two_tasks(change)
    assert validate_resources([template]) == []  # Argo would take it
    refused_up_front(template, words, tmp_path, capsys)


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("{not json", "is not JSON"),
        ("[]", "is not a JSON object"),
        ("null", "is not a JSON object"),
    ],
)
def test_a_memoization_cache_that_is_not_json_is_refused_before_any_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, said: str
) -> None:
    """It was read when the memoized task started, after the tasks before it had run; JSON that
    is not an object of entries was a traceback."""
    template = two_tasks(lambda tpl, task, wf: _memoize(tpl, "k", "1h"))
    (tmp_path / "cache" / "memoize").mkdir(parents=True)
    (tmp_path / "cache" / "memoize" / "c.json").write_text(content)
    path, mark = tmp_path / "t.yaml", tmp_path / "mark"
    path.write_text(yaml.safe_dump(template))
    code = runner_main(
        [str(path), "-p", f"mark={mark}", "--run-dir", str(tmp_path / "run"),
         "--cache-dir", str(tmp_path / "cache")]
    )  # fmt: skip
    assert_one_line_error(code, capsys.readouterr().err, "memoization cache", said)
    assert not mark.exists()


def _dirs_refused(tmp_path: Path, capsys, run_dir: Path, cache_dir: Path, *said: str) -> None:
    template = two_tasks(lambda tpl, task, wf: None)
    path, mark = tmp_path / "t.yaml", tmp_path / "mark"
    path.write_text(yaml.safe_dump(template))
    code = runner_main(
        [str(path), "-p", f"mark={mark}", "--run-dir", str(run_dir), "--cache-dir", str(cache_dir)]
    )
    assert_bad_input(code, capsys.readouterr().err, *said)
    assert not mark.exists()


def test_a_run_dir_that_is_not_empty_a_file_or_under_a_file_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """issue 11: exit 1 before; an argument that cannot work is exit 2, nothing run."""
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    (tmp_path / "file").write_text("")
    cache = tmp_path / "cache"
    _dirs_refused(tmp_path, capsys, tmp_path / "full", cache, "is not empty")
    _dirs_refused(tmp_path, capsys, tmp_path / "file", cache, "run dir", "is a file")
    _dirs_refused(tmp_path, capsys, tmp_path / "file" / "run", cache, "run dir", "not a directory")


def test_a_cache_dir_that_is_a_file_or_under_one_is_bad_input_before_any_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """issue 11: it failed mid-run, with no run.json."""
    (tmp_path / "file").write_text("")
    run_dir = tmp_path / "run"
    _dirs_refused(tmp_path, capsys, run_dir, tmp_path / "file", "cache dir", "is a file")
    _dirs_refused(tmp_path, capsys, run_dir, tmp_path / "file" / "c", "cache dir", "not a dir")
    (tmp_path / "c" / "memoize").mkdir(parents=True)
    (tmp_path / "c" / "artifacts").write_text("")
    _dirs_refused(tmp_path, capsys, run_dir, tmp_path / "c", "cache dir", "artifacts")
    assert not run_dir.exists()
