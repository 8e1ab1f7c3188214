"""The local runner on small hand-written WorkflowTemplates with Python one-liners as containers."""

from __future__ import annotations

import copy
import fcntl
import io
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from workflows.local_runner import LocalRunError, docker_command, run_rendered
from workflows.local_runner.__main__ import main as runner_main
from workflows.local_runner.runner import release_lock_file


def container(name: str, code: str, args: list[str] | None = None, **extra: object) -> dict:
    """A container template running `python -c code args...`, the way Hera renders one."""
    return {
        "name": name,
        "container": {
            "image": "dewpoint-pipeline/step:test",
            "command": ["python", "-c", code],
            "args": args or [],
            "volumeMounts": [{"name": "work", "mountPath": "/work"}],
            "securityContext": {"readOnlyRootFilesystem": True},
        },
        "volumes": [{"name": "work", "emptyDir": {}}],
        "activeDeadlineSeconds": 60,
        **extra,
    }


def workflow(tasks: list[dict], templates: list[dict], params: dict[str, str] | None = None):
    """A WorkflowTemplate dict with one DAG entrypoint."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "dewpoint-pipeline", "labels": {"app": "x"}},
        "spec": {
            "entrypoint": "main",
            "serviceAccountName": "dewpoint-pipeline",
            "podGC": {"strategy": "OnPodSuccess"},
            "arguments": {
                "parameters": [{"name": k, "value": v} for k, v in (params or {}).items()]
            },
            "templates": [{"name": "main", "dag": {"tasks": tasks}}, *templates],
        },
    }


def run(template: dict, tmp_path: Path, params: dict[str, str] | None = None, **kw):
    """Run `template` in a fresh run dir; return (exit code, progress text, run.json)."""
    out = io.StringIO()
    run_dir = tmp_path / f"run-{uuid.uuid4().hex[:6]}"
    kw.setdefault("lock_file", tmp_path / "runner.lock")
    code = run_rendered(template, params or {}, run_dir=run_dir, out=out, **kw)
    summary = json.loads((run_dir / "run.json").read_text())
    return code, out.getvalue(), summary


APPEND = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"


def append_task(name: str, **extra: object) -> dict:
    """A DAG task appending its name to the file given by workflow parameter `log`."""
    return {
        "name": name,
        "template": "append",
        "arguments": {"parameters": [{"name": "who", "value": name}]},
        **extra,
    }


APPEND_TEMPLATE = container(
    "append",
    APPEND,
    ["{{workflow.parameters.log}}", "{{inputs.parameters.who}}"],
    inputs={"parameters": [{"name": "who"}]},
)


def test_tasks_run_in_dependency_order_not_listing_order(tmp_path: Path) -> None:
    log = tmp_path / "order.txt"
    tasks = [
        append_task("d", depends="c"),  # Argo refuses depends and dependencies in one DAG
        append_task("c", depends="a && b.Succeeded"),
        append_task("b", depends="a"),
        append_task("a"),
    ]
    code, text, summary = run(
        workflow(tasks, [APPEND_TEMPLATE], {"log": ""}), tmp_path, {"log": str(log)}
    )
    assert code == 0, text
    assert log.read_text().split() == ["a", "b", "c", "d"]
    assert summary["phase"] == "Succeeded"
    assert {t["phase"] for t in summary["tasks"].values()} == {"Succeeded"}
    assert re.fullmatch(r"dewpoint-pipeline-[a-z0-9]{5}", summary["name"])
    assert str(uuid.UUID(summary["uid"])) == summary["uid"]
    # progress names each task as it starts and ends, with phase and duration
    assert re.search(r"^  a\s+Running$", text, re.M)
    assert re.search(r"^  d\s+Succeeded\s+\d+\.\ds", text, re.M)


def test_false_when_skips_task_and_strict_dependents_but_not_bare_ones(tmp_path: Path) -> None:
    log = tmp_path / "order.txt"
    decide = container(
        "decide",
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]); p.parent.mkdir(parents=True); "
        "p.write_text(sys.argv[2])",
        ["/work/outputs/promoted", "{{workflow.parameters.promote}}"],
        outputs={
            "parameters": [{"name": "promoted", "valueFrom": {"path": "/work/outputs/promoted"}}]
        },
    )
    when = "{{tasks.decide.outputs.parameters.promoted}} == true"
    tasks = [
        {"name": "decide", "template": "decide"},
        append_task("deploy", depends="decide", when=when),
        append_task("after-strict", depends="deploy.Succeeded"),
        # Argo expands a bare name to Succeeded || Skipped: this one still runs.
        append_task("after-bare", depends="deploy"),
        append_task("not-equal", depends="decide", when=when.replace("==", "!=")),
    ]
    template = workflow(tasks, [APPEND_TEMPLATE, decide], {"log": "", "promote": "true"})
    code, text, summary = run(template, tmp_path, {"log": str(log), "promote": "false"})
    assert code == 0, text
    phases = {name: t["phase"] for name, t in summary["tasks"].items()}
    assert phases == {
        "decide": "Succeeded",
        "deploy": "Skipped",
        "after-strict": "Omitted",
        "after-bare": "Succeeded",
        "not-equal": "Succeeded",
    }
    assert log.read_text().split() == ["after-bare", "not-equal"]
    assert "when 'false == true' is false" in text

    log.unlink()
    code, text, summary = run(template, tmp_path, {"log": str(log)})  # default promote=true
    assert code == 0, text
    assert log.read_text().split() == ["deploy", "after-strict", "after-bare"]
    assert summary["tasks"]["not-equal"]["phase"] == "Skipped"


def test_parameters_and_artifacts_flow_between_tasks(tmp_path: Path) -> None:
    produce = container(
        "produce",
        "import pathlib, sys\n"
        "out, outputs, msg = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]\n"
        "out.parent.mkdir(parents=True); out.write_text(msg)\n"
        "(out.parent / 'dir').mkdir(); (out.parent / 'dir' / 'f.txt').write_text('in a dir')\n"
        "outputs.mkdir(parents=True); (outputs / 'size').write_text(str(len(msg)) + '\\n')",
        ["/work/out/data.txt", "/work/outputs", "{{workflow.parameters.message}}"],
        outputs={
            "parameters": [{"name": "size", "valueFrom": {"path": "/work/outputs/size"}}],
            "artifacts": [
                {"name": "data", "path": "/work/out/data.txt", "archive": {"none": {}}},
                {"name": "folder", "path": "/work/out/dir"},
            ],
        },
    )
    consume = container(
        "consume",
        "import os, pathlib, sys\n"
        "data = pathlib.Path(sys.argv[1]).read_text()\n"
        "extra = (pathlib.Path(sys.argv[2]) / 'f.txt').read_text()\n"
        "pathlib.Path('/work/outputs'.replace('/work', os.environ['WORK'])).mkdir(parents=True)\n"
        'line = f\'{data}|{extra}|{sys.argv[3]}|{os.environ["SIZE"]}|{os.environ["WF"]}\'\n'
        "pathlib.Path(os.environ['WORK'], 'outputs', 'line').write_text(line)",
        ["{{inputs.artifacts.data.path}}", "/work/in/dir", "{{inputs.parameters.size}}"],
        inputs={
            "parameters": [{"name": "size"}, {"name": "unused", "default": "d"}],
            "artifacts": [
                {"name": "data", "path": "/work/in/data.txt"},
                {"name": "folder", "path": "/work/in/dir"},
            ],
        },
        outputs={"parameters": [{"name": "line", "valueFrom": {"path": "/work/outputs/line"}}]},
    )
    consume["container"]["env"] = [
        {"name": "WORK", "value": "/work"},
        {"name": "SIZE", "value": "{{inputs.parameters.size}}"},
        {"name": "WF", "value": "{{workflow.name}}"},
    ]
    tasks = [
        {"name": "produce", "template": "produce"},
        {
            "name": "consume",
            "template": "consume",
            "depends": "produce",
            "arguments": {
                "parameters": [
                    {"name": "size", "value": "{{tasks.produce.outputs.parameters.size}}"}
                ],
                "artifacts": [
                    {"name": "data", "from": "{{tasks.produce.outputs.artifacts.data}}"},
                    {"name": "folder", "from": "{{tasks.produce.outputs.artifacts.folder}}"},
                ],
            },
        },
    ]
    template = workflow(tasks, [produce, consume], {"message": "hello dew point"})
    code, text, summary = run(template, tmp_path)
    assert code == 0, text
    consumed = summary["tasks"]["consume"]["outputs"]["parameters"]["line"]
    assert consumed == f"hello dew point|in a dir|15|15|{summary['name']}"
    assert summary["tasks"]["produce"]["outputs"]["parameters"] == {"size": "15"}
    data = Path(summary["tasks"]["produce"]["outputs"]["artifacts"]["data"])
    assert data.read_text() == "hello dew point"
    assert data.is_relative_to(tmp_path)
    assert summary["parameters"] == {"message": "hello dew point"}


COUNTER = (
    "import pathlib, sys; p = pathlib.Path(sys.argv[1]); n = int(p.read_text()) if p.exists() "
    "else 0; p.write_text(str(n + 1)); sys.exit(0 if n + 1 >= int(sys.argv[2]) else 3)"
)


@pytest.mark.parametrize(
    ("limit", "succeed_on", "phase", "attempts"), [(1, 2, "Succeeded", 2), (2, 4, "Failed", 3)]
)
def test_retry_strategy_limit(
    tmp_path: Path, limit: int, succeed_on: int, phase: str, attempts: int
) -> None:
    counter = tmp_path / "count"
    flaky = container(
        "flaky",
        COUNTER,
        [str(counter), str(succeed_on)],
        retryStrategy={
            "limit": str(limit),
            "retryPolicy": "Always",
            "backoff": {"duration": "30s", "factor": 2},
        },
    )
    code, text, summary = run(workflow([{"name": "flaky", "template": "flaky"}], [flaky]), tmp_path)
    assert (code == 0) == (phase == "Succeeded"), text
    assert summary["tasks"]["flaky"]["phase"] == phase
    assert summary["tasks"]["flaky"]["attempts"] == attempts
    assert int(counter.read_text()) == attempts
    assert f"retry 1/{limit} in 1s (template backoff 30s) after exit 3" in text


@pytest.mark.parametrize(
    ("backoff", "attempts", "said"),
    [
        ({"duration": "10s", "factor": 2, "cap": "15s"}, 4, "template backoff 15s"),
        # Argo does not retry when the wait would end past maxDuration from the first start:
        # 10 s, then 20 s more would pass 25 s (operator.go, processNodeRetries).
        ({"duration": "10s", "factor": 2, "maxDuration": "25s"}, 2, "backoff.maxDuration of 25s"),
    ],
)
def test_retry_waits_are_argos_cap_and_max_duration_included(
    tmp_path: Path, backoff: dict, attempts: int, said: str
) -> None:
    counter = tmp_path / "count"
    step = container(
        "step", EXIT_WITH, [str(counter), "3"], retryStrategy={"limit": 3, "backoff": backoff}
    )
    _, text, summary = run(workflow([{"name": "step", "template": "step"}], [step]), tmp_path)
    assert summary["tasks"]["step"]["attempts"] == attempts == int(counter.read_text()), text
    assert said in text


def test_failing_task_is_named_with_its_stderr_and_stops_the_run(tmp_path: Path) -> None:
    bad = container(
        "bad", "import sys; print('error: no rows for station 123', file=sys.stderr); sys.exit(1)"
    )
    log = tmp_path / "order.txt"
    tasks = [
        {"name": "train", "template": "bad"},
        append_task("register", depends="train"),
    ]
    err = io.StringIO()
    template = workflow(tasks, [bad, APPEND_TEMPLATE], {"log": str(log)})
    code, text, summary = run(template, tmp_path, err=err)
    assert code == 1
    # The failure is one line on stderr (it was on stdout, among the progress lines).
    assert err.getvalue().startswith("error: task 'train' failed: exit code 1 after 1 attempt(s)")
    assert err.getvalue().count("\n") == 1 and "error: task" not in text
    assert "| error: no rows for station 123" in text
    assert summary["phase"] == "Failed"
    assert summary["tasks"]["train"]["exit_code"] == 1
    assert summary["tasks"]["register"]["phase"] == "Pending"
    assert not log.exists()


def test_missing_output_parameter_fails_the_task(tmp_path: Path) -> None:
    quiet = container(
        "quiet",
        "pass",
        outputs={
            "parameters": [{"name": "version", "valueFrom": {"path": "/work/outputs/version"}}]
        },
    )
    code, text, _ = run(workflow([{"name": "register", "template": "quiet"}], [quiet]), tmp_path)
    assert code == 1
    assert "output parameter version: /work/outputs/version not written" in text


def test_an_output_parameter_that_is_not_utf8_becomes_replacement_characters(
    tmp_path: Path,
) -> None:
    """Bytes that are not UTF-8 in an output parameter's file: U+FFFD for each, as Go's
    encoding/json stores such a string in the node's outputs (before: a UnicodeDecodeError
    traceback from the runner)."""
    writes = container(
        "writes",
        "import os; os.makedirs('/work/outputs'); "
        "open('/work/outputs/v', 'wb').write(b'a\\xffb\\n')",
        outputs={"parameters": [{"name": "v", "valueFrom": {"path": "/work/outputs/v"}}]},
    )
    code, text, summary = run(workflow([{"name": "w", "template": "writes"}], [writes]), tmp_path)
    assert code == 0, text
    assert summary["tasks"]["w"]["outputs"]["parameters"]["v"] == "a\ufffdb"


@pytest.mark.parametrize(("written", "read"), [("v", "v"), ("v\n", "v"), ("v\n\n", "v\n")])
def test_an_output_parameter_loses_one_trailing_newline_as_on_argo(
    tmp_path: Path, written: str, read: str
) -> None:
    """Argo drops one trailing newline from an output parameter's file (v4.1.2
    workflow/executor/executor.go SaveParameters, `strings.TrimSuffix`); the runner dropped all
    of them, so a value the next stage refuses on Argo (`v\\n`) passed locally."""
    writes = container(
        "writes",
        f"import os; os.makedirs('/work/outputs'); open('/work/outputs/v', 'w').write({written!r})",
        outputs={"parameters": [{"name": "v", "valueFrom": {"path": "/work/outputs/v"}}]},
    )
    code, text, summary = run(workflow([{"name": "w", "template": "writes"}], [writes]), tmp_path)
    assert code == 0, text
    assert summary["tasks"]["w"]["outputs"]["parameters"]["v"] == read


def _minimal() -> dict:
    return workflow([{"name": "a", "template": "one"}], [container("one", "pass")])


def _with(change) -> dict:
    template = copy.deepcopy(_minimal())
    change(template)
    return template


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            lambda t: t["spec"]["templates"][1].update(script={"source": "print(1)"}),
            "script template",
        ),
        (lambda t: t["spec"]["templates"][1].update(podSpecPatch="{}"), "podSpecPatch"),
        (lambda t: t["spec"]["templates"][0]["dag"].update(failFast=False), "failFast False"),
        *(
            (
                lambda t, v=v: t["spec"]["templates"][1].update(retryStrategy={"limit": v}),
                "retryStrategy.limit",
            )
            for v in ("abc", "1e3", "-1", "99999999999999999999")
        ),
        (
            lambda t: t["spec"]["templates"][1].update(
                synchronization={"semaphores": [{"configMapKeyRef": {"name": "s", "key": "k"}}]}
            ),
            "synchronization",
        ),
        (
            lambda t: t["spec"]["templates"][0].update(
                synchronization={"mutexes": [{"name": "m"}]}
            ),
            "synchronization",
        ),
        (lambda t: t["spec"]["templates"][1]["container"].update(envFrom=[]), "envFrom"),
        (lambda t: t["spec"]["templates"][1].update(sidecars=[{"name": "s"}]), "sidecars"),
        (lambda t: t["spec"]["templates"][1].update(suspend={}), "suspend template"),
        (
            lambda t: t["spec"]["templates"][0]["dag"]["tasks"][0].update(
                withSequence={"count": "2"}
            ),
            "withSequence",
        ),
        (
            lambda t: t["spec"]["templates"][0]["dag"]["tasks"][0].update(withItems=[[1, 2]]),
            "holds a list or map",
        ),
        (
            lambda t: t["spec"]["templates"][1].update(
                memoize={"key": "k", "maxAge": "1d", "cache": {"configMap": {"name": "c"}}}
            ),
            "invalid maxAge",
        ),
        (  # a cache name is a file name under --cache-dir locally: no way out of it
            lambda t: t["spec"]["templates"][1].update(
                memoize={
                    "key": "k",
                    "maxAge": "1h",
                    "cache": {"configMap": {"name": "../../../tmp/escape"}},
                }
            ),
            "is not a ConfigMap name",
        ),
        (
            lambda t: t["spec"]["templates"][1].update(
                retryStrategy={"limit": "1", "backoff": {"duration": "1.5"}}
            ),
            "invalid retryStrategy.backoff.duration",
        ),
        (
            lambda t: t["spec"]["templates"][1].update(
                outputs={
                    "artifacts": [
                        {"name": "o", "path": "/work/o", "s3": {"key": "k", "bucket": "b"}}
                    ]
                }
            ),
            "only key-only artifacts",
        ),
        (
            lambda t: t["spec"]["templates"][0]["dag"]["tasks"][0].update(template="missing"),
            "'missing' is not a template",
        ),
        (lambda t: t["spec"].update(onExit="cleanup"), "onExit"),
        (
            lambda t: (
                t["spec"]["templates"][0].update(steps=[]) or t["spec"]["templates"][0].pop("dag")
            ),
            "'main' is steps; it must be a dag",
        ),
        (
            lambda t: t["spec"]["templates"][1]["container"].update(
                args=["{{steps.x.outputs.result}}"]
            ),
            "{{steps.x.outputs.result}}",
        ),
        (
            lambda t: t["spec"]["templates"][1]["container"].update(args=["{{=sprig.upper('x')}}"]),
            "expression tag",
        ),
        (
            lambda t: (
                t["spec"]["templates"][1]["volumes"].append({"name": "d", "emptyDir": {}})
                or t["spec"]["templates"][1]["container"]["volumeMounts"].append(
                    {"name": "d", "mountPath": "/data"}
                )
            ),
            "volume mount at /data",
        ),
        (
            lambda t: t["spec"]["templates"][1].update(
                retryStrategy={"limit": 1, "retryPolicy": "OnError"}
            ),
            "retryPolicy OnError",
        ),
        (
            lambda t: t["spec"]["templates"][0]["dag"]["tasks"].append(
                {"name": "b", "template": "one", "depends": "a || a"}
            ),
            "depends expression 'a || a'",
        ),
        (
            lambda t: t["spec"]["templates"][0]["dag"]["tasks"].append(
                {"name": "b", "template": "one", "depends": "a.Errored"}
            ),
            "depends term 'a.Errored'",
        ),
        (
            lambda t: t["spec"]["templates"][0]["dag"]["tasks"].append(
                {"name": "b", "template": "one", "depends": "a.Failed"}
            ),
            "depends term 'a.Failed'",
        ),
        (
            lambda t: t["spec"]["templates"][1].update(
                outputs={"parameters": [{"name": "p", "valueFrom": {"jsonPath": "{.x}"}}]}
            ),
            "valueFrom.path must be specified",  # Argo's rule for a container's outputs
        ),
        (lambda t: t.update(kind="CronWorkflow"), "cannot run a CronWorkflow"),
    ],
)
def test_unsupported_features_are_errors_naming_them(tmp_path: Path, change, named: str) -> None:
    with pytest.raises(LocalRunError, match=re.escape(named)):
        run_rendered(_with(change), {}, run_dir=tmp_path / "run", lock_file=tmp_path / "lock")
    assert not (tmp_path / "run").exists(), "nothing may run before the whole template is checked"


def test_outputs_of_tasks_that_do_not_run_first_are_rejected_up_front(tmp_path: Path) -> None:
    out = container(
        "out", "pass", outputs={"parameters": [{"name": "v", "valueFrom": {"path": "/work/v"}}]}
    )
    tasks = [
        append_task("a", when="{{tasks.b.outputs.parameters.v}} == 1"),
        {"name": "b", "template": "out"},  # no dependency between a and b
    ]
    template = workflow(tasks, [APPEND_TEMPLATE, out], {"log": "x"})
    with pytest.raises(
        LocalRunError,
        match=r"\{\{tasks.b.outputs.parameters.v\}\}: task 'b' is not an upstream dependency",
    ):
        run_rendered(template, {}, run_dir=tmp_path / "run", lock_file=tmp_path / "lock")


def test_artifact_of_a_skipped_task_fails_the_consumer_by_name(tmp_path: Path) -> None:
    make = container(
        "make",
        "import pathlib; pathlib.Path('/work/out').mkdir(); pathlib.Path('/work/out/f').touch()",
        outputs={"artifacts": [{"name": "f", "path": "/work/out/f"}]},
    )
    use = container("use", "pass", inputs={"artifacts": [{"name": "f", "path": "/work/in/f"}]})
    tasks = [
        {"name": "make", "template": "make", "when": "{{workflow.parameters.go}} == yes"},
        {
            "name": "use",
            "template": "use",
            "depends": "make",  # bare: runs although make is Skipped, as in Argo
            "arguments": {
                "artifacts": [{"name": "f", "from": "{{tasks.make.outputs.artifacts.f}}"}]
            },
        },
    ]
    err = io.StringIO()
    code, _, summary = run(workflow(tasks, [make, use], {"go": "no"}), tmp_path, err=err)
    assert code == 1
    assert summary["tasks"]["make"]["phase"] == "Skipped"
    assert summary["tasks"]["use"]["phase"] == "Failed"
    assert (
        "error: task 'use' failed: task use: artifact f was not produced by make" in err.getvalue()
    )


def test_unsupported_when_expression_fails_before_the_task_runs(tmp_path: Path) -> None:
    template = _with(
        lambda t: t["spec"]["templates"][0]["dag"]["tasks"][0].update(when="true && false")
    )
    with pytest.raises(LocalRunError, match=r"task a: unsupported when expression 'true && false'"):
        run_rendered(template, {}, run_dir=tmp_path / "run", lock_file=tmp_path / "lock")


def test_bad_workflow_parameters_are_one_line_errors(tmp_path: Path) -> None:
    template = workflow(
        [{"name": "a", "template": "one"}], [container("one", "pass")], {"source": "gsod"}
    )
    template["spec"]["arguments"]["parameters"][0]["enum"] = ["gsod", "synthetic"]
    with pytest.raises(LocalRunError, match=r"unknown workflow parameter\(s\) 'sauce'"):
        run_rendered(template, {"sauce": "x"}, run_dir=tmp_path / "r1")
    with pytest.raises(LocalRunError, match=r"source='nope' not in \['gsod', 'synthetic'\]"):
        run_rendered(template, {"source": "nope"}, run_dir=tmp_path / "r2")


@pytest.mark.parametrize("value", ["", "abc", "-1"])
def test_bad_gate_tolerance_is_refused_before_anything_runs(tmp_path: Path, value: str) -> None:
    """The found instances: Argo passes an empty UI field as ''; each was accepted up front, then
    fetch, train and register ran and a version was registered before promote refused it."""
    from workflows.local_runner import check_rendered
    from workflows.pipeline import render
    from workflows.settings import PipelineSettings

    template = render(PipelineSettings())["workflow-template"]
    expected = r"workflow parameter gate-tolerance \(promote --tolerance\)"
    with pytest.raises(LocalRunError, match=expected):
        check_rendered(template, {"gate-tolerance": value})
    with pytest.raises(LocalRunError, match=expected):
        run_rendered(
            template, {"gate-tolerance": value}, run_dir=tmp_path / "run", lock_file=tmp_path / "l"
        )
    assert not (tmp_path / "run").exists()


def test_the_workflow_refuses_a_bad_parameter_in_its_first_task_and_does_not_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on Argo, where no up-front check runs: the real rendered template's first task
    (`check-parameters`) exits 2 and no stage starts, so no stage writes state."""
    from workflows.local_runner import planning
    from workflows.pipeline import render
    from workflows.settings import PipelineSettings

    template = render(PipelineSettings())["workflow-template"]
    monkeypatch.setattr(planning, "check_pipeline_parameters", lambda values, **_: None)
    code, text, summary = run(template, tmp_path, {"gate-tolerance": "abc", "source": "synthetic"})
    assert code == 1
    check = summary["tasks"]["check-parameters"]
    assert (check["phase"], check["exit_code"], check["attempts"]) == ("Failed", 2, 1)
    assert "error: workflow parameter gate-tolerance (promote --tolerance) 'abc'" in text
    assert {name for name, t in summary["tasks"].items() if t["attempts"]} == {"check-parameters"}


EXIT_WITH = (
    "import pathlib, sys; p = pathlib.Path(sys.argv[1]); n = int(p.read_text()) if p.exists() "
    "else 0; p.write_text(str(n + 1)); codes = sys.argv[2].split(','); "
    "sys.exit(int(codes[min(n, len(codes) - 1)]))"
)
RETRY_ON_75 = 'asInt(lastRetry.exitCode) == 75 || lastRetry.status == "Error"'


@pytest.mark.parametrize(
    ("codes", "loop", "runner_code"),
    [
        ("75", False, 75),  # transient: the run may pass when run again
        ("75,75,75", False, 75),  # retries used up on transient failures
        ("75,2", False, 1),  # the last attempt decides: bad input is no reason to rerun
        ("2", False, 1),
        ("3", False, 1),
        ("75", True, 75),  # a failed item of a loop, as the per-year fan-out
    ],
)
def test_the_runners_exit_code_carries_a_failed_tasks_transient_exit(
    tmp_path: Path, codes: str, loop: bool, runner_code: int
) -> None:
    """A run that failed on exit 75 (steps.cli.EXIT_TRANSIENT) exits 75, so `make demo`, a
    cron job or a user can tell a rerun may pass; every other failure is 1 (it was always 1)."""
    counter = tmp_path / "count"
    step = container(
        "step",
        EXIT_WITH,
        [str(counter), codes],
        retryStrategy={"limit": 2, "expression": RETRY_ON_75},
    )
    task: dict = {"name": "step", "template": "step"}
    if loop:
        task["withItems"] = ["a"]
    code, text, summary = run(workflow([task], [step]), tmp_path)
    assert code == runner_code, text
    assert summary["phase"] == "Failed"


@pytest.mark.parametrize(
    ("codes", "phase", "attempts"),
    [
        ("75,75,0", "Succeeded", 3),  # transient twice, then done
        ("2", "Failed", 1),  # bad input: never retried
        ("1", "Failed", 1),  # failed for good: never retried
        ("75,2", "Failed", 2),  # transient, then bad input: stops there
        ("75", "Failed", 4),  # transient every time: the limit ends it
    ],
)
def test_retry_expression_retries_transient_exit_codes_only(
    tmp_path: Path, codes: str, phase: str, attempts: int
) -> None:
    counter = tmp_path / "count"
    step = container(
        "step",
        EXIT_WITH,
        [str(counter), codes],
        retryStrategy={"limit": 3, "retryPolicy": "Always", "expression": RETRY_ON_75},
    )
    _, text, summary = run(workflow([{"name": "step", "template": "step"}], [step]), tmp_path)
    assert summary["tasks"]["step"]["phase"] == phase, text
    assert summary["tasks"]["step"]["attempts"] == attempts == int(counter.read_text())
    if phase == "Failed" and attempts < 4:
        assert "no retry: retryStrategy.expression is false" in text


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        ("lastRetry.exitCode in ['75']", "'in' is not supported"),
        ("sprig.trim(lastRetry.message) == ''", "'sprig.trim' is not supported"),
        ("retries < 2", "'retries' is not supported"),
        ("asInt(lastRetry.exitCode) ==", "expected more"),
    ],
)
def test_an_expression_outside_the_supported_subset_is_refused_by_name(
    tmp_path: Path, expression: str, named: str
) -> None:
    step = container("step", "pass", retryStrategy={"limit": 1, "expression": expression})
    template = workflow([{"name": "step", "template": "step"}], [step])
    with pytest.raises(LocalRunError, match=r"retryStrategy\.expression") as raised:
        run_rendered(template, {}, run_dir=tmp_path / "run", lock_file=tmp_path / "lock")
    assert named in str(raised.value)
    assert not (tmp_path / "run").exists()


def test_run_dir_must_be_fresh(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "old.txt").write_text("x")
    with pytest.raises(LocalRunError, match="is not empty"):
        run_rendered(_minimal(), {}, run_dir=tmp_path / "run", lock_file=tmp_path / "lock")


def test_second_run_waits_bounded_then_refuses_while_another_holds_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "state" / "local-runner.lock"
    lock.parent.mkdir()
    with lock.open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242")
        held.flush()
        out = io.StringIO()
        with pytest.raises(
            LocalRunError, match=r"another local run \(pid 4242\) holds .*waited 0s"
        ):
            run_rendered(_minimal(), {}, run_dir=tmp_path / "run", lock_timeout=0.3, out=out,
                         env={"DEPLOY_STATE_DIR": str(lock.parent)})  # fmt: skip
        assert "waiting up to 0s for local run pid 4242" in out.getvalue()
    # released: the same call now runs, and the lock lives under DEPLOY_STATE_DIR
    state_env = {"DEPLOY_STATE_DIR": str(lock.parent)}
    code = run_rendered(_minimal(), {}, run_dir=tmp_path / "run2", env=state_env, out=io.StringIO())
    assert code == 0


@pytest.mark.parametrize(
    ("other_uri", "other_model", "waits"),
    [
        ("http://127.0.0.1:5050", "dewpoint-lr", True),
        ("http://LOCALHOST:5050/", "dewpoint-lr", True),  # the same server, spelled otherwise
        ("http://127.0.0.1:5051", "dewpoint-lr", False),
        ("http://127.0.0.1:5050", "other-model", False),
    ],
)
def test_runs_of_one_release_wait_for_each_other_whatever_their_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, other_uri: str, other_model: str, waits: bool
) -> None:
    """The lock is per MLflow tracking server and model, not per DEPLOY_STATE_DIR: a run in
    another checkout (own state dir) against the same MLflow and model must wait."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "runtime"))
    release = {"mlflow-tracking-uri": "http://127.0.0.1:5050", "model-name": "dewpoint-lr"}
    template = workflow([{"name": "a", "template": "one"}], [container("one", "pass")], release)
    held_path = release_lock_file(release, tmp_path / "first-state")
    held_path.parent.mkdir(parents=True, exist_ok=True)
    with held_path.open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242")
        held.flush()
        other = {"mlflow-tracking-uri": other_uri, "model-name": other_model}
        call = lambda: run_rendered(  # noqa: E731
            template, other, run_dir=tmp_path / "run", lock_timeout=0.3, out=io.StringIO(),
            env={"DEPLOY_STATE_DIR": str(tmp_path / "second-state")},
        )  # fmt: skip
        if waits:
            with pytest.raises(LocalRunError, match=r"another local run \(pid 4242\)"):
                call()
        else:
            assert call() == 0


def test_caller_env_reaches_steps_and_template_env_wins(tmp_path: Path) -> None:
    show = container(
        "show",
        "import os, pathlib; pathlib.Path(os.environ['OUT']).mkdir(parents=True); "
        "pathlib.Path(os.environ['OUT'], 'v').write_text("
        "os.environ['SERVE_PORT'] + ',' + os.environ['HOME'] + ',' + os.environ['POD_NAMESPACE'])",
        outputs={"parameters": [{"name": "v", "valueFrom": {"path": "/work/outputs/v"}}]},
    )
    show["container"]["env"] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "OUT", "value": "/work/outputs"},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    template = workflow([{"name": "show", "template": "show"}], [show])
    template["metadata"]["namespace"] = "mlops"
    env = {"SERVE_PORT": "5123", "HOME": "/root-should-lose"}
    code, text, summary = run(template, tmp_path, env=env)
    assert code == 0, text
    assert summary["tasks"]["show"]["outputs"]["parameters"]["v"] == "5123,/tmp,mlops"


def test_secret_env_must_come_from_the_caller(tmp_path: Path) -> None:
    one = container("one", "pass")
    one["container"]["env"] = [
        {"name": "AWS_SECRET", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "k"}}}
    ]
    template = workflow([{"name": "a", "template": "one"}], [one])
    with pytest.raises(
        LocalRunError, match=r"env AWS_SECRET comes from .*secretKeyRef.*set AWS_SECRET"
    ):
        run(template, tmp_path)


def test_docker_backend_command_line(tmp_path: Path) -> None:
    argv = docker_command(
        "dewpoint-pipeline/step:0.1.0",
        ["python", "-m", "steps", "train"],
        ["--input", "/work/in/validated.parquet"],
        {"HOME": "/tmp", "MLFLOW_TRACKING_URI": "http://127.0.0.1:5050"},
        tmp_path / "train" / "work",
    )
    assert argv == [
        "docker", "run", "--rm", "--network", "host", "--user", "10001:10001", "--read-only",
        "--tmpfs", "/tmp", "-v", f"{tmp_path}/train/work:/work",
        "-e", "HOME=/tmp", "-e", "MLFLOW_TRACKING_URI=http://127.0.0.1:5050",
        "--entrypoint", "python", "dewpoint-pipeline/step:0.1.0",
        "-m", "steps", "train", "--input", "/work/in/validated.parquet",
    ]  # fmt: skip
    # no command: args replace the image's CMD and the ENTRYPOINT stays
    assert docker_command("img", [], ["a"], {}, tmp_path, working_dir="/work")[-4:] == [
        "--workdir", "/work", "img", "a"
    ]  # fmt: skip


def test_rendered_pipeline_is_accepted_and_runs_as_a_chain(tmp_path: Path) -> None:
    """The real template passes the runner's checks; a bad parameter stops it before any step."""
    from workflows.local_runner import check_rendered
    from workflows.local_runner.planning import plan
    from workflows.pipeline import render
    from workflows.settings import PipelineSettings

    template = render(PipelineSettings())["workflow-template"]
    order = [(task.name, task.dag and [t.name for t in task.dag]) for task in plan(template)]
    year = ["fetch", "validate"]  # each year: one dag node running fetch, then validate
    assert order == [
        ("check-parameters", None), ("past-years", year), ("current-years", year),
        ("train", None), ("register", None), ("promote", None), ("deploy", None),
    ]  # fmt: skip
    check_rendered(template, {"source": "synthetic", "deploy-target": "local"})
    with pytest.raises(LocalRunError, match="deploy-target='laptop' not in"):
        check_rendered(template, {"deploy-target": "laptop"})
    with pytest.raises(LocalRunError, match="deploy-target='laptop' not in"):
        run_rendered(template, {"deploy-target": "laptop"}, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_python_command_is_this_interpreter(tmp_path: Path) -> None:
    who = container(
        "who",
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]); p.parent.mkdir(parents=True); "
        "p.write_text(sys.executable)",
        ["/work/outputs/exe"],
        outputs={"parameters": [{"name": "exe", "valueFrom": {"path": "/work/outputs/exe"}}]},
    )
    code, text, summary = run(workflow([{"name": "who", "template": "who"}], [who]), tmp_path)
    assert code == 0, text
    assert summary["tasks"]["who"]["outputs"]["parameters"]["exe"] == sys.executable


def test_working_dir_and_image_are_substituted_as_argo_substitutes_them(tmp_path: Path) -> None:
    """Both were used as written, `{{...}}` and all; a working directory that did not exist yet
    crashed the run (a container runtime creates it)."""
    where = container(
        "where",
        "import os, pathlib, sys; pathlib.Path(sys.argv[1]).write_text(os.getcwd())",
        ["{{workflow.parameters.out}}"],
        inputs={"parameters": [{"name": "d", "default": "sub"}]},
    )
    where["container"]["workingDir"] = "/work/{{inputs.parameters.d}}/x"
    template = workflow([{"name": "where", "template": "where"}], [where], {"out": ""})
    code, text, _ = run(template, tmp_path, {"out": str(tmp_path / "cwd")})
    assert code == 0, text
    assert (tmp_path / "cwd").read_text().endswith("/where/work/sub/x")

    # The docker backend: a stand-in `docker` records the argv it is given.
    fake = tmp_path / "docker"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "argv"}\n')
    fake.chmod(0o755)
    image = container("image", "pass")
    image["container"]["image"] = "step:{{workflow.parameters.tag}}"
    template = workflow([{"name": "image", "template": "image"}], [image], {"tag": "t1"})
    code, text, _ = run(template, tmp_path, backend="docker", docker=str(fake))
    assert code == 0, text
    assert " step:t1 " in (tmp_path / "argv").read_text()


def test_a_program_gone_when_its_task_starts_fails_the_task_not_the_run(tmp_path: Path) -> None:
    """A program under /work is a step's to write, so nothing checks it up front; missing when
    the task starts, it was an OSError out of the runner, with no run.json."""
    gone = container("gone", "pass")
    gone["container"].update(command=["/work/bin/tool"], args=[])
    code, _, summary = run(workflow([{"name": "gone", "template": "gone"}], [gone]), tmp_path)
    assert code == 1
    assert summary["tasks"]["gone"]["phase"] == "Failed"
    assert "cannot start" in summary["tasks"]["gone"]["message"]


@pytest.mark.docker
def test_docker_backend_runs_steps_in_the_step_image_as_the_pod_would(tmp_path: Path) -> None:
    """Real `docker run` of the step image: UID 10001, read-only root, artifacts handed over."""
    from workflows.settings import default_image

    probe = (
        "import os, pathlib\n"
        "out = pathlib.Path('/work/out'); out.mkdir(parents=True); (out / 'x').write_text('42')\n"
        "try:\n    pathlib.Path('/etc/probe').write_text('x'); root = 'writable'\n"
        "except OSError:\n    root = 'read-only'\n"
        "o = pathlib.Path('/work/outputs'); o.mkdir()\n"
        "(o / 'who').write_text(f'{os.getuid()}:{os.getgid()} {root} {os.environ[\"MARK\"]}')"
    )
    produce = container(
        "produce",
        probe,
        outputs={
            "parameters": [{"name": "who", "valueFrom": {"path": "/work/outputs/who"}}],
            "artifacts": [{"name": "x", "path": "/work/out/x"}],
        },
    )
    produce["container"]["image"] = default_image()
    produce["container"]["env"] = [{"name": "MARK", "value": "{{workflow.parameters.mark}}"}]
    consume = container(
        "consume",
        "import pathlib, sys; o = pathlib.Path('/work/outputs'); o.mkdir(); "
        "(o / 'got').write_text(pathlib.Path(sys.argv[1]).read_text())",
        ["{{inputs.artifacts.x.path}}"],
        inputs={"artifacts": [{"name": "x", "path": "/work/in/x"}]},
        outputs={"parameters": [{"name": "got", "valueFrom": {"path": "/work/outputs/got"}}]},
    )
    consume["container"]["image"] = default_image()
    tasks = [
        {"name": "produce", "template": "produce"},
        {
            "name": "consume",
            "template": "consume",
            "depends": "produce",
            "arguments": {
                "artifacts": [{"name": "x", "from": "{{tasks.produce.outputs.artifacts.x}}"}]
            },
        },
    ]
    template = workflow(tasks, [produce, consume], {"mark": "m"})
    code, text, summary = run(template, tmp_path, {"mark": "docker"}, backend="docker")
    assert code == 0, text
    outputs = {name: t["outputs"]["parameters"] for name, t in summary["tasks"].items()}
    assert outputs == {"produce": {"who": "10001:10001 read-only docker"}, "consume": {"got": "42"}}


# --- the command line: python -m workflows.local_runner -------------------------------------------


def test_command_line_help_says_what_it_runs_and_points_at_the_pipeline_door() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "workflows.local_runner", "--help"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m workflows.local_runner")
    assert "rendered WorkflowTemplate" in done.stdout and "submit.py --local" in done.stdout


def test_command_line_runs_a_rendered_yaml_file_with_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the default lock lives under ./.demo/serve
    log = tmp_path / "order.txt"
    path = tmp_path / "workflow-template.yaml"
    path.write_text(yaml.safe_dump(workflow([append_task("a")], [APPEND_TEMPLATE], {"log": ""})))
    run_dir = tmp_path / "run"
    assert runner_main([str(path), "-p", f"log={log}", "--run-dir", str(run_dir)]) == 0
    assert log.read_text().split() == ["a"]
    assert json.loads((run_dir / "run.json").read_text())["parameters"] == {"log": str(log)}
    assert "Succeeded" in capsys.readouterr().out


def test_command_line_a_failed_task_is_one_error_line_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was printed to stdout, among the progress lines (issue 11)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "workflow-template.yaml"
    bad = container("bad", "import sys; sys.exit(3)")
    path.write_text(yaml.safe_dump(workflow([{"name": "bad", "template": "bad"}], [bad])))
    assert runner_main([str(path), "--run-dir", str(tmp_path / "run")]) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: task 'bad' failed: exit code 3"), err
    assert "bad  Failed" in out and "error:" not in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("a: [", "is not YAML"),
        ("a: 1\n---\nb: 2\n", "must hold exactly one resource"),
        ("kind: Pod\n", "cannot run a Pod"),
        (b"kind: \xff\n", "is not UTF-8 text"),
    ],
)
def test_command_line_bad_files_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes | None, message: str
) -> None:
    path = tmp_path / "template.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert runner_main([str(path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_a_template_nested_too_deeply_is_one_line_of_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """5,000 '[' drove PyYAML into a RecursionError traceback of thousands of lines."""
    path = tmp_path / "template.yaml"
    path.write_text("[" * 5000)
    assert runner_main([str(path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nested too deeply" in err, err[:300]


def test_a_stage_variable_left_in_the_callers_shell_does_not_reach_a_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 11: PROMOTE_CLAIM_LEASE=0 (or VALIDATE_MIN_ROWS, SYNTHETIC_SEED, ...) in the shell
    changed a step on the process backend after earlier steps had done their work; a pod gets
    only the env its template sets. A variable no stage flag reads still passes (PATH, HOME,
    the user's own), as do the template's env and the caller's `env=`."""
    from workflows.local_runner.backends import STAGE_FLAG_ENV

    names = ["PROMOTE_CLAIM_LEASE", "VALIDATE_MIN_ROWS", "SYNTHETIC_SEED", "FETCH_HTTP_RETRIES",
             "MLFLOW_EXPERIMENT_NAME", "CODE_VERSION", "WORKFLOW_NAME", "SERVE_PORT",
             "DEPLOY_STATE_DIR", "NOT_A_STAGE_VARIABLE", "HOME"]  # fmt: skip
    assert set(names[:-2]) <= STAGE_FLAG_ENV
    for name in names:
        monkeypatch.setenv(name, "from-the-shell")
    seen = tmp_path / "seen.json"
    code = (
        "import json, os, sys\n"
        "names = sys.argv[2:]\n"
        "json.dump({n: os.environ.get(n) for n in names}, open(sys.argv[1], 'w'))\n"
    )
    step = container("env", code, [str(seen), *names])
    step["container"]["env"] = [{"name": "SYNTHETIC_SEED", "value": "7"}]
    template = workflow([{"name": "env", "template": "env"}], [step])
    result, text, _ = run(template, tmp_path, env={"SERVE_PORT": "5099"})
    assert result == 0, text
    assert json.loads(seen.read_text()) == {
        "PROMOTE_CLAIM_LEASE": None,
        "VALIDATE_MIN_ROWS": None,
        "SYNTHETIC_SEED": "7",  # the template's
        "FETCH_HTTP_RETRIES": None,
        "MLFLOW_EXPERIMENT_NAME": None,
        "CODE_VERSION": None,
        "WORKFLOW_NAME": None,
        "SERVE_PORT": "5099",  # the caller's env=
        "DEPLOY_STATE_DIR": None,
        "NOT_A_STAGE_VARIABLE": "from-the-shell",
        "HOME": "from-the-shell",
    }
