"""A template the local runner cannot run is refused before any task runs (issue 11): one
`error: ...` line on stderr naming the problem, exit 2, no run directory. What Argo itself
refuses (workflow/validate/validate.go and what its controller fails at run time) the offline
validator refuses in the same words; what only this runner cannot do, the runner alone."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steps.cli import EXIT_BAD_INPUT
from tests.conftest import assert_bad_input, assert_one_line_error, free_port
from tests.test_local_runner import container, workflow
from workflows.argo_rules import MAX_MANIFEST_BYTES
from workflows.local_runner import LocalRunError, run_rendered
from workflows.local_runner.__main__ import main as runner_main
from workflows.local_runner.cache import CACHE_FILE_MAX_BYTES
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
    # expr-lang compiles a literal `matches` pattern with Go's regexp when it compiles the
    # expression (v1.17.8 checker/checker.go), and every lastRetry variable is a string: these
    # fail whenever Argo evaluates them, i.e. at the first failure (a re.error traceback here)
    "a retry expression whose pattern does not compile": (
        lambda tpl, task, wf: _retry(tpl, 'lastRetry.message matches "("'),
        "template second: 'lastRetry.message matches \"(\"': matches '(': missing )",
    ),
    "a retry expression whose pattern Go's regexp lacks": (
        lambda tpl, task, wf: _retry(tpl, "lastRetry.message matches '(?=x)'"),
        "Go's regexp has no assert",
    ),
    "a retry expression comparing a string with a number": (
        lambda tpl, task, wf: _retry(tpl, "lastRetry.exitCode < 2"),
        "< cannot compare string with int",
    ),
    "a retry expression that is no condition": (
        lambda tpl, task, wf: _retry(tpl, "asInt(lastRetry.exitCode)"),
        "gives int, not true or false",
    ),
    # a NUL byte cannot reach execve (Go's syscall.BytePtrFromString: EINVAL): the pod never
    # starts (a ValueError traceback here, after `first` had run)
    "a NUL byte in args": (
        lambda tpl, task, wf: tpl["container"].update(args=["a\0b"]),
        "container.args[0]: template second: 'a\\x00b' holds a NUL byte",
    ),
    "a NUL byte in command": (
        lambda tpl, task, wf: tpl["container"]["command"].append("a\0b"),
        "container.command[3]: template second: 'a\\x00b' holds a NUL byte",
    ),
    "a NUL byte in an env value": (
        lambda tpl, task, wf: tpl["container"].update(env=[{"name": "X", "value": "\0"}]),
        "container.env[0].value: template second: '\\x00' holds a NUL byte",
    ),
    "a NUL byte in workingDir": (
        lambda tpl, task, wf: tpl["container"].update(workingDir="/work/\0"),
        "container.workingDir: template second:",
    ),
    # Kubernetes IsEnvVarName (apimachinery pkg/util/validation): the pod is refused
    "an env name holding '='": (
        lambda tpl, task, wf: tpl["container"].update(env=[{"name": "A=B", "value": "x"}]),
        "container.env[0].name: template second: env name 'A=B' is not an environment variable",
    ),
    "an empty env name": (
        lambda tpl, task, wf: tpl["container"].update(env=[{"name": "", "value": "x"}]),
        "env name '' is not an environment variable name",
    ),
    "an env name starting with a digit": (
        lambda tpl, task, wf: tpl["container"].update(env=[{"name": "1X", "value": "x"}]),
        "env name '1X' is not an environment variable name",
    ),
    # a manifest travels as JSON: YAML's .inf and .nan have no JSON form (json: unsupported value)
    "an infinite item": (
        lambda tpl, task, wf: task.update(withItems=[1, float("inf")]),
        "$.spec.templates[0].dag.tasks[1].withItems[1]: inf is not a JSON number",
    ),
    "a NaN item": (
        lambda tpl, task, wf: task.update(withItems=[{"a": float("nan")}]),
        "withItems[0].a: nan is not a JSON number",
    ),
    "a NaN parameter": (
        lambda tpl, task, wf: _parameter(wf, "k", float("nan")),
        "$.spec.arguments.parameters[1].value: nan is not a JSON number",
    ),
    # parallelism is a Go *int64 (v4.1.2 workflow_types.go, WorkflowSpec and Template)
    "a workflow parallelism past int64": (
        lambda tpl, task, wf: wf["spec"].update(parallelism=10**20),
        "$.spec.parallelism: 100000000000000000000 does not fit an int64",
    ),
    "a dag parallelism past int64": (
        lambda tpl, task, wf: wf["spec"]["templates"][0].update(parallelism=-(2**63) - 1),
        "$.spec.templates[0].parallelism: -9223372036854775809 does not fit an int64",
    ),
    "a parallelism written as a string": (
        lambda tpl, task, wf: wf["spec"].update(parallelism="3"),
        "$.spec.parallelism: '3' is not an integer",
    ),
    "a parallelism of true": (
        lambda tpl, task, wf: wf["spec"].update(parallelism=True),
        "$.spec.parallelism: True is not an integer",
    ),
}


def _retry(tpl: dict, expression: str) -> None:
    tpl["retryStrategy"] = {"limit": 1, "expression": expression}


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


def _memoize(tpl: dict, key: str, max_age: str, cache: str = "c") -> None:
    tpl["memoize"] = {"key": key, "maxAge": max_age, "cache": {"configMap": {"name": cache}}}


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
    "a NUL byte a workflow parameter brings": (
        lambda tpl, task, wf: (
            _parameter(wf, "k", "a\0b"),
            tpl["container"].update(env=[{"name": "X", "value": "{{workflow.parameters.k}}"}]),
        ),
        "task second: template second container.env[0].value: 'a\\x00b' holds a NUL byte",
    ),
    "a NUL byte an item brings": (
        lambda tpl, task, wf: (
            _input(tpl),
            _argument(task, "{{item}}"),
            tpl["container"].update(args=["{{inputs.parameters.p}}"]),
            task.update(withItems=["ok", "a\0b"]),
        ),
        "task second(1:a\\x00b): template second container.args[0]",  # escaped in the line
    ),
    "an env name a parameter would fill": (
        lambda tpl, task, wf: tpl["container"].update(
            env=[{"name": "{{workflow.parameters.mark}}", "value": "x"}]
        ),
        "unsupported feature in template second: env name '{{workflow.parameters.mark}}'",
    ),
    # Argo starts no pod while its active pods are at least spec.parallelism (operator.go
    # checkParallelism): it would wait for ever
    # a file here is named by at most NAME_MAX (255) bytes; an S3 key or a ConfigMap name may be
    # longer: an OSError after `first` had run (a ValueError for the NUL byte)
    "an artifact key holding a NUL byte": (
        lambda tpl, task, wf: _stored(tpl, "a\0b"),
        "artifact key 'a\\x00b' holds a NUL byte, which no file name here can",
    ),
    "an artifact key segment longer than a file name": (
        lambda tpl, task, wf: _stored(tpl, "a/" + "x" * 245),
        "is 245 bytes; a file here holds at most 244",
    ),
    "a ConfigMap name longer than a cache file's": (
        lambda tpl, task, wf: _memoize(tpl, "k", "1h", "c" * 237),
        "is 237 characters; a cache file here can be named for at most 236",
    ),
    "a workflow parallelism of 0": (
        lambda tpl, task, wf: wf["spec"].update(parallelism=0),
        "spec.parallelism 0 must be at least 1: Argo would start no pod and wait for ever",
    ),
    "a negative workflow parallelism": (
        lambda tpl, task, wf: wf["spec"].update(parallelism=-1),
        "spec.parallelism -1 must be at least 1",
    ),
    # a container running `python -m steps <stage>`: its literal values are checked with the
    # stage's declarations (steps/stages.py), as the stage checks them when it starts
    "a literal stage flag value its kind refuses": (
        lambda tpl, task, wf: _stage(tpl, ["--min-rows", "abc", "--report", "/work/r.json"]),
        "template second: --min-rows 'abc': must be an integer from 1",
    ),
    "a literal stage flag value written with '='": (
        lambda tpl, task, wf: _stage(tpl, ["--dewp-tolerance=200"]),
        "template second: --dewp-tolerance '200': ",
    ),
    "a flag the stage does not have": (
        lambda tpl, task, wf: _stage(tpl, ["--min-rows", "5", "--no-such-flag", "x"]),
        "unrecognized arguments: '--no-such-flag', 'x' (see template second: python -m steps",
    ),
    "a stage variable's literal value its flag refuses": (
        lambda tpl, task, wf: _stage(tpl, [], env=[{"name": "VALIDATE_MIN_ROWS", "value": "-3"}]),
        "template second: env VALIDATE_MIN_ROWS (for --min-rows) '-3': must be an integer",
    ),
    # a stage variable beside an argument filled in later that can only set another flag
    # (breaker 58: checked only when every argument was fixed, so validate failed after fetch)
    "a stage variable's literal value beside another flag filled in later": (
        lambda tpl, task, wf: _stage(
            tpl,
            ["--rain-only={{workflow.parameters.mark}}"],
            env=[{"name": "VALIDATE_MIN_ROWS", "value": " 5"}],
        ),
        "template second: env VALIDATE_MIN_ROWS (for --min-rows) ' 5': must be an integer",
    ),
    "a stage variable's literal value beside a flag and its value filled in later": (
        lambda tpl, task, wf: _stage(
            tpl,
            ["--input", "{{workflow.parameters.mark}}"],
            env=[{"name": "VALIDATE_MIN_ROWS", "value": "abc"}],
        ),
        "template second: env VALIDATE_MIN_ROWS (for --min-rows) 'abc': must be an integer",
    ),
    # beside a value filled in later, each literal one is still checked on its own: a single
    # `{{...}}` skipped the whole check (issue 11)
    "a literal flag value beside one filled in later": (
        lambda tpl, task, wf: _stage(
            tpl, ["--input={{workflow.parameters.mark}}", "--min-rows=abc"]
        ),
        "template second: --min-rows 'abc': must be an integer from 1",
    ),
    "a literal flag and value pair beside one filled in later": (
        lambda tpl, task, wf: _stage(
            tpl, ["--input", "{{workflow.parameters.mark}}", "--dewp-tolerance", "200"]
        ),
        "template second: --dewp-tolerance '200': ",
    ),
    "a literal flag the stage does not have beside one filled in later": (
        lambda tpl, task, wf: _stage(
            tpl, ["--no-such-flag=x", "--input={{workflow.parameters.mark}}"]
        ),
        "unrecognized arguments: '--no-such-flag=x' (see template second: python -m steps",
    ),
    "a literal flag given twice (argparse kept the last one)": (
        lambda tpl, task, wf: _stage(
            tpl, ["--input={{workflow.parameters.mark}}", "--min-rows=5", "--min-rows=6"]
        ),
        "argument --min-rows: given twice; give it once (see template second: python -m steps",
    ),
    "a flag given twice, once filled in later": (
        lambda tpl, task, wf: _stage(
            tpl, ["--min-rows={{workflow.parameters.mark}}", "--min-rows=5"]
        ),
        "argument --min-rows: given twice; give it once (see template second: python -m steps",
    ),
    "a stage that does not exist": (
        lambda tpl, task, wf: _stage(tpl, [], stage="nope"),
        "template second: no stage 'nope' to run; choose one of check-parameters, fetch",
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


def _stage(tpl: dict, args: list[str], env: list[dict] | None = None, stage: str = "validate"):
    """`second` runs `python -m steps <stage> args...` (with `env`)."""
    tpl["container"].update(command=["python", "-m", "steps", stage], args=args, env=env or [])


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
        # a ConfigMap's duplicate field is refused by Kubernetes; json.loads kept the last
        ('{"k": {}, "k": {}}', "is not JSON: key 'k' is given twice in one object"),
        # a named pipe hung the run (after `first` had run), /dev/zero was a MemoryError
        (os.mkfifo, "is a named pipe, not a file"),
        (Path("/dev/zero"), "is a device, not a file"),
        ("{" + " " * CACHE_FILE_MAX_BYTES + "}", f"holds over {CACHE_FILE_MAX_BYTES:,} bytes"),
    ],
)
def test_a_memoization_cache_that_is_not_json_is_refused_before_any_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object, said: str
) -> None:
    """It was read when the memoized task started, after the tasks before it had run; JSON that
    is not an object of entries was a traceback."""
    template = two_tasks(lambda tpl, task, wf: _memoize(tpl, "k", "1h"))
    (tmp_path / "cache" / "memoize").mkdir(parents=True)
    cache_file = tmp_path / "cache" / "memoize" / "c.json"
    signal.signal(signal.SIGALRM, _took_too_long)
    signal.alarm(60)  # a named pipe blocked the read for ever: fail instead
    if isinstance(content, str):
        cache_file.write_text(content)
    elif isinstance(content, Path):
        cache_file.symlink_to(content)
    else:
        content(cache_file)
    path, mark = tmp_path / "t.yaml", tmp_path / "mark"
    path.write_text(yaml.safe_dump(template))
    code = runner_main(
        [str(path), "-p", f"mark={mark}", "--run-dir", str(tmp_path / "run"),
         "--cache-dir", str(tmp_path / "cache")]
    )  # fmt: skip
    signal.alarm(0)
    assert_one_line_error(code, capsys.readouterr().err, "memoization cache", said)
    assert not mark.exists()


def _place(tmp_path: Path, what: str) -> str:
    """A DEPLOY_STATE_DIR that is `what`: a named pipe, a file, a path under /proc."""
    path = tmp_path / "state"
    if what == "a named pipe":
        os.mkfifo(path)
    elif what == "a file":
        path.write_text("")
    else:
        return "/proc/self/serve"
    return str(path)


# Where a local deploy would serve (the caller's SERVE_PORT and DEPLOY_STATE_DIR, which the
# command lines pass on as `env`), and what the run says when it cannot.
SERVING_CASES = {
    "busy serve port": ("SERVE_PORT", None, "the port is in use by another process"),
    "state dir a named pipe": ("DEPLOY_STATE_DIR", "a named pipe", "is a named pipe"),
    "state dir a file": ("DEPLOY_STATE_DIR", "a file", "is a file, not a directory"),
    "state dir under /proc": ("DEPLOY_STATE_DIR", "under /proc", "cannot be written"),
}


@pytest.mark.parametrize("case", SERVING_CASES)
def test_where_a_local_deploy_cannot_serve_is_refused_before_any_task(
    case: str,
    held_port: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A busy serve port or a state directory deploy cannot use was found by the deploy task,
    after fetch, train and register; the run checks them first, with deploy's own check
    (`serving_problem`), for a `--target` a workflow parameter fills in too."""
    variable, what, words = SERVING_CASES[case]
    env = {"SERVE_PORT": str(free_port()), "DEPLOY_STATE_DIR": str(tmp_path / "serve")}
    env[variable] = str(held_port) if what is None else _place(tmp_path, what)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def deploy(tpl: dict, task: dict, wf: dict) -> None:
        _stage(tpl, ["--target={{workflow.parameters.target}}", "--version=1"], stage="deploy")
        _parameter(wf, "target", "local")

    refused_up_front(two_tasks(deploy), words, tmp_path, capsys)


def _took_too_long(signum: int, frame: object) -> None:
    raise TimeoutError("the runner blocked reading a file")


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


def _runner_on(path: Path, tmp_path: Path) -> tuple[int, str]:
    """`python -m workflows.local_runner path` in its own process (a file that blocks the read
    would block the test otherwise): (exit code, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "workflows.local_runner", str(path),
         "--run-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert not (tmp_path / "run").exists()
    return proc.returncode, proc.stderr


def test_a_template_file_that_is_no_regular_file_is_refused_without_reading_it(
    tmp_path: Path,
) -> None:
    """A named pipe hung the runner (waiting for a writer); /dev/zero was a MemoryError."""
    fifo = tmp_path / "t.yaml"
    os.mkfifo(fifo)
    code, err = _runner_on(fifo, tmp_path)
    assert_bad_input(code, err, f"{fifo} is a named pipe, not a file")
    code, err = _runner_on(Path("/dev/zero"), tmp_path)
    assert_bad_input(code, err, "/dev/zero is a device, not a file")


def test_a_template_file_larger_than_the_apiserver_reads_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No manifest over the apiserver's 3 MiB request body (MaxRequestBodyBytes) can exist."""
    path = tmp_path / "t.yaml"
    path.write_text("# " + "x" * MAX_MANIFEST_BYTES + "\n")
    code = runner_main([str(path), "--run-dir", str(tmp_path / "run")])
    assert_bad_input(code, capsys.readouterr().err, f"holds over {MAX_MANIFEST_BYTES:,} bytes")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        # the apiserver's strict field validation: "json: duplicate field"; the last one won
        ("kind: WorkflowTemplate\nspec: {}\nkind: Workflow\n",
         "mapping key 'kind' is given twice (line 3, column 1)"),
        ("spec:\n  entrypoint: a\n  templates: []\n  entrypoint: b\n",
         "mapping key 'entrypoint' is given twice (line 4, column 3)"),
        # a billion laughs: each alias is a reference, but everything that walks it is not
        ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n"
            for i in range(7)), "its aliases expand to more than 1572864 values"),
        ("a: &a [*a]\n", "an alias refers to its own anchor"),
        ("a: [\n", "is not YAML Kubernetes reads: expected the node content"),
    ],
)  # fmt: skip
def test_a_template_kubernetes_would_not_read_is_refused_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, words: str
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    code = runner_main([str(path), "--run-dir", str(tmp_path / "run")])
    assert_bad_input(code, capsys.readouterr().err, words)
    assert not (tmp_path / "run").exists()


def test_a_timestamp_item_is_the_string_it_is_written_as(tmp_path: Path) -> None:
    """kubectl's YAML reading keeps `2024-01-01` a string; PyYAML's made it a date, which the
    runner could not write as an item (a TypeError traceback before)."""
    template = two_tasks(
        lambda tpl, task, wf: (
            _input(tpl),
            _argument(task, "{{item}}"),
            tpl["container"].update(command=["python", "-c", APPEND_ARG], args=[
                "{{workflow.parameters.mark}}", "{{inputs.parameters.p}}"]),
            task.update(withItems=["ITEM"]),
        )
    )  # fmt: skip
    path, mark = tmp_path / "t.yaml", tmp_path / "mark"
    path.write_text(yaml.safe_dump(template).replace("- ITEM", "- 2024-01-01"))
    code = runner_main([str(path), "-p", f"mark={mark}", "--run-dir", str(tmp_path / "run")])
    assert code == 0
    assert mark.read_text() == "2024-01-01\n"


APPEND_ARG = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"


def test_a_nul_byte_from_a_tasks_output_fails_that_task_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Known only once `first` has run: the task fails by name (a ValueError traceback before)."""
    template = two_tasks(
        lambda tpl, task, wf: (
            _input(tpl),
            _argument(task, "{{tasks.first.outputs.parameters.o}}"),
            tpl["container"].update(args=["{{inputs.parameters.p}}"]),
        )
    )
    write = f"{MARK}; open('/work/o', 'w').write('a\\0b')"
    template["spec"]["templates"][1]["container"]["command"][2] = write
    path, mark = tmp_path / "t.yaml", tmp_path / "mark"
    path.write_text(yaml.safe_dump(template))
    code = runner_main([str(path), "-p", f"mark={mark}", "--run-dir", str(tmp_path / "run")])
    assert_one_line_error(code, capsys.readouterr().err, "task 'second' failed: cannot start",
                          "null byte")  # fmt: skip
    assert (tmp_path / "run" / "run.json").exists()


# --- any value in any of these fields: refused up front in one line, or the run succeeds -------

# Text with what broke the runner before: NUL, '=', braces, regex and expression characters.
_TEXT = st.text(alphabet=st.sampled_from("a1 -_.=/\0{}()[]|*+?'\"<!&$:\n"), max_size=12)
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    _TEXT,
    st.lists(_TEXT, max_size=3),
    st.dictionaries(_TEXT, st.integers(), max_size=2),
)


def _set_parameter(wf: dict, value: object) -> None:
    _parameter(wf, "k", value)  # type: ignore[arg-type]
    wf["spec"]["templates"][2]["container"]["args"] = ["{{workflow.parameters.k}}"]


def _stored(tpl: dict, key: object) -> None:
    """`second` writes its output artifact `a` to `key` in the artifact repository."""
    _artifact(tpl, s3={"key": key})
    tpl["container"]["command"][2] = "open('/work/a', 'w').write('a')"


# Where a value goes: (the template of `second`, task `second`, the whole template, the value).
MUTATIONS: dict[str, Callable[[dict, dict, dict, object], object]] = {
    "spec.parallelism": lambda tpl, task, wf, v: wf["spec"].update(parallelism=v),
    "dag parallelism": lambda tpl, task, wf, v: wf["spec"]["templates"][0].update(parallelism=v),
    "args": lambda tpl, task, wf, v: tpl["container"].update(args=[v]),
    "args list": lambda tpl, task, wf, v: tpl["container"].update(args=v),
    "env name": lambda tpl, task, wf, v: tpl["container"].update(env=[{"name": v, "value": "x"}]),
    "env value": lambda tpl, task, wf, v: tpl["container"].update(env=[{"name": "X", "value": v}]),
    "workingDir": lambda tpl, task, wf, v: tpl["container"].update(workingDir=v),
    "withItems": lambda tpl, task, wf, v: task.update(withItems=v),
    "an item": lambda tpl, task, wf, v: task.update(withItems=[v]),
    "when": lambda tpl, task, wf, v: task.update(when=v),
    "retry limit": lambda tpl, task, wf, v: tpl.update(retryStrategy={"limit": v}),
    "retry expression": lambda tpl, task, wf, v: _retry(tpl, v),  # type: ignore[arg-type]
    "backoff": lambda tpl, task, wf, v: tpl.update(
        retryStrategy={"limit": 1, "backoff": {"duration": v}}
    ),
    "memoize key": lambda tpl, task, wf, v: _memoize(tpl, v, "1h"),  # type: ignore[arg-type]
    "memoize age": lambda tpl, task, wf, v: _memoize(tpl, "k", v),  # type: ignore[arg-type]
    "deadline": lambda tpl, task, wf, v: tpl.update(activeDeadlineSeconds=v),
    "a workflow parameter": lambda tpl, task, wf, v: _set_parameter(wf, v),
    "an input default": lambda tpl, task, wf, v: _input(tpl, default=v),
    "an argument": lambda tpl, task, wf, v: (_input(tpl), _argument(task, v)),  # type: ignore[arg-type]
    "withParam": lambda tpl, task, wf, v: task.update(withParam=v),
    "an s3 key": lambda tpl, task, wf, v: _stored(tpl, v),
    "an output path": lambda tpl, task, wf, v: tpl.update(
        outputs={"parameters": [{"name": "o", "valueFrom": {"path": v}}]}
    ),
    "an output default": lambda tpl, task, wf, v: tpl.update(
        outputs={"parameters": [{"name": "o", "valueFrom": {"path": "/work/o", "default": v}}]}
    ),
    "timeout": lambda tpl, task, wf, v: tpl.update(timeout=v),
    "image": lambda tpl, task, wf, v: tpl["container"].update(image=v),
}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(where=st.sampled_from(sorted(MUTATIONS)), value=_VALUES)
def test_any_value_anywhere_is_refused_in_one_line_or_runs(
    where: str, value: object, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The runner's promise, over generated values: exit 2 with one error line before anything
    runs, or a run that succeeds; never a traceback, a hang, or a failure after a task ran."""
    tmp_path = tmp_path_factory.mktemp("fuzz")
    template = two_tasks(lambda tpl, task, wf: MUTATIONS[where](tpl, task, wf, value))
    mark, run_dir = tmp_path / "mark", tmp_path / "run"
    out, err = io.StringIO(), io.StringIO()
    try:
        code = run_rendered(
            template, {"mark": str(mark)}, run_dir=run_dir, out=out, err=err,
            lock_file=tmp_path / "lock", cache_dir=tmp_path / "cache",
        )  # fmt: skip
    except LocalRunError as exc:
        assert exc.exit_code == EXIT_BAD_INPUT, exc
        assert not mark.exists() and not run_dir.exists()
        return
    assert code == 0, (out.getvalue(), err.getvalue())


def test_an_output_parameter_larger_than_the_apiserver_takes_fails_its_task_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Argo stores an output through the apiserver (at most 3 MiB a request); the runner read
    the whole file into memory, whatever its size."""
    write = f"{MARK}; open('/work/o', 'w').write('x' * {MAX_MANIFEST_BYTES + 1})"
    template = two_tasks(lambda tpl, task, wf: None)
    template["spec"]["templates"][1]["container"]["command"][2] = write
    path, mark = tmp_path / "t.yaml", tmp_path / "mark"
    path.write_text(yaml.safe_dump(template))
    code = runner_main([str(path), "-p", f"mark={mark}", "--run-dir", str(tmp_path / "run")])
    assert_one_line_error(
        code, capsys.readouterr().err, "task 'first' failed: output parameter o: /work/o: holds"
    )


@pytest.mark.parametrize("name", ["synthetic-rows", "model-name", "rain-only"])
def test_a_workflow_parameter_written_null_has_no_value_never_the_text_none(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`value: null` was read as the text 'None' and refused as one (`'None': must be an
    integer`); Argo reads it as no value (its Parameter.Value is a pointer, nil for null)."""
    from workflows.pipeline import build_workflow_template
    from workflows.settings import PipelineSettings

    template = build_workflow_template(PipelineSettings()).to_dict()
    for parameter in template["spec"]["arguments"]["parameters"]:
        if parameter["name"] == name:
            parameter["value"] = None
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(template))
    code = runner_main([str(path), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert_bad_input(code, err, f"workflow parameter '{name}' has no value; pass it")
    assert "None" not in err and not (tmp_path / "run").exists()
