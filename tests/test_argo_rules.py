"""One reading of Argo's rules: `depends`, order and cycles, references, workflow parameters,
loops and their aggregated outputs, memoization keys and ages; the offline validator and the local
runner refuse the same broken templates with the same words."""

from __future__ import annotations

import contextlib
import copy
import re
from pathlib import Path

import pytest

from steps.cli import StepError
from workflows import submit
from workflows.argo_rules import (
    ArgoRuleError,
    DependsTerm,
    MissingValue,
    aggregate_outputs,
    dependency_order,
    duration_seconds,
    expanded_node_name,
    go_duration_seconds,
    item_scope,
    loop_items,
    memo_key_problem,
    parse_depends,
    read_when,
    substitute,
    workflow_parameter_values,
)
from workflows.local_runner import LocalRunError, check_rendered, run_rendered
from workflows.pipeline import build_run_workflow, render
from workflows.settings import PipelineSettings
from workflows.validate_resources import validate_resources


@pytest.fixture(scope="module")
def template() -> dict:
    return render(PipelineSettings())["workflow-template"]


def _tasks(template: dict) -> dict[str, dict]:
    """The entrypoint DAG's tasks by name."""
    spec = template["spec"]
    (dag,) = [t for t in spec["templates"] if t["name"] == spec["entrypoint"]]
    return {task["name"]: task for task in dag["dag"]["tasks"]}


def test_depends_reads_operands_results_and_operators():
    read = parse_depends({"depends": "(a.Succeeded || b.Skipped) && !c-1.Failed && d"})
    assert read.terms == (
        DependsTerm("a", "Succeeded"),
        DependsTerm("b", "Skipped"),
        DependsTerm("c-1", "Failed"),
        DependsTerm("d"),
    )
    assert read.operators == {"&&", "||", "!"}
    # A bare name is Succeeded || Skipped || Daemoned (docs/enhanced-depends-logic.md).
    assert read.terms[3].results == {"Succeeded", "Skipped", "Daemoned"}
    legacy = parse_depends({"dependencies": ["a", "b"]})
    assert legacy.terms == (DependsTerm("a"), DependsTerm("b")) and legacy.operators == {"&&"}


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"depends": "a.Finished"}, "a.Finished is not a task result"),
        ({"depends": "a + b"}, "cannot read depends 'a + b' at '+ b'"),
        ({"depends": "&&"}, "names no task"),
        ({"depends": "a", "dependencies": ["a"]}, "either depends or dependencies"),
    ],
)
def test_unreadable_depends_is_refused(task, message):
    with pytest.raises(ArgoRuleError, match=re.escape(message)):
        parse_depends(task)


def test_dependency_order_keeps_listing_order_between_ready_tasks():
    parents = {"d": {"c"}, "b": {"a"}, "c": {"a", "b"}, "a": set(), "e": set()}
    assert dependency_order(parents) == ["a", "b", "c", "d", "e"]


def test_dependency_cycle_is_named_in_run_order():
    with pytest.raises(ArgoRuleError, match=r"dependency cycle: (\w) -> (\w) -> (\w) -> \1"):
        dependency_order({"a": {"c"}, "b": {"a"}, "c": {"b"}, "d": set()})


def test_substitute_names_the_missing_value():
    assert substitute("{{ a }}-{{b}}", {"a": "1", "b": "2"}) == "1-2"
    with pytest.raises(MissingValue) as info:
        substitute("{{a}} {{tasks.x.outputs.parameters.y}}", {"a": "1"})
    assert info.value.name == "tasks.x.outputs.parameters.y"


def test_workflow_parameter_values_default_override_enum_and_missing():
    declared = [
        {"name": "source", "value": "gsod", "enum": ["gsod", "synthetic"]},
        {"name": "flag", "value": True},
        {"name": "years"},
    ]
    values = workflow_parameter_values(declared, {"years": "2024"})
    assert values == {"source": "gsod", "flag": "true", "years": "2024"}
    with pytest.raises(ArgoRuleError, match=r"workflow parameter 'years' has no value"):
        workflow_parameter_values(declared, {})
    with pytest.raises(ArgoRuleError, match=r"source='ftp' not in \['gsod', 'synthetic'\]"):
        workflow_parameter_values(declared, {"source": "ftp", "years": "1"})


def test_unknown_workflow_parameter_has_one_wording_everywhere(template, tmp_path: Path):
    """Runner, submit -p, one-off runs and CronWorkflow arguments all say it the same way."""
    wording = re.compile(r"unknown workflow parameter\(s\) 'sauce'; known: [a-z-]+(, [a-z-]+)+")
    said: list[str] = []
    with pytest.raises(LocalRunError) as runner:
        run_rendered(template, {"sauce": "x"}, run_dir=tmp_path / "run")
    said.append(str(runner.value))
    with pytest.raises(StepError) as cli:
        submit.parse_parameters(["sauce=x"], {"source", "years"})
    said.append(str(cli.value))
    with pytest.raises(ValueError) as one_off:
        build_run_workflow(PipelineSettings(), {"sauce": "x"})
    said.append(str(one_off.value))
    cron = copy.deepcopy(render(PipelineSettings())["cron-workflow"])
    cron["spec"]["workflowSpec"]["arguments"] = {"parameters": [{"name": "sauce", "value": "x"}]}
    said += validate_resources([template, cron])
    assert len(said) == 4
    assert all(wording.search(text) for text in said), said
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("break_it", "words"),
    [
        (
            lambda tasks: tasks["check-parameters"].update(depends="deploy"),
            r"dependency cycle: [\w-]+( -> [\w-]+)+",
        ),
        (lambda tasks: tasks["train"].update(depends="past-years && ghost"), "depends on 'ghost'"),
        (
            lambda tasks: tasks["past-years"]["arguments"]["parameters"][0].update(
                value="{{tasks.train.outputs.parameters.run-id}}"
            ),
            "task 'train' is not an upstream dependency of 'past-years'",
        ),
        (
            lambda tasks: tasks["deploy"].update(
                when="{{tasks.promote.outputs.parameters.promotd}} == true"
            ),
            "has no output parameter 'promotd'",
        ),
        (
            lambda tasks: tasks["register"]["arguments"]["parameters"].pop(0),
            "input 'model-uri' of template 'register' is not supplied",
        ),
        (
            lambda tasks: tasks["past-years"]["arguments"]["parameters"][0].update(
                value="{{workflow.parameters.sauce}}"
            ),
            "workflow parameter 'sauce' is not defined",
        ),
        (lambda tasks: tasks["train"].update(depends="past-years.Finished"), "not a task result"),
    ],
)
def test_validator_and_runner_refuse_the_same_template_in_the_same_words(
    template, tmp_path: Path, break_it, words: str
):
    broken = copy.deepcopy(template)
    break_it(_tasks(broken))
    problems = validate_resources([broken])
    assert len(problems) == 1 and re.search(words, problems[0]), problems
    with pytest.raises(LocalRunError, match=words) as info:
        check_rendered(broken, {})
    assert problems[0] in str(info.value)
    with pytest.raises(LocalRunError, match=words):
        run_rendered(broken, {}, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("path", ["/work/../etc/passwd", "/work/../..", "/workshop/x", "work/x"])
def test_artifact_paths_must_stay_under_work_after_resolving_dots(template, path: str):
    broken = copy.deepcopy(template)
    (fetch,) = [t for t in broken["spec"]["templates"] if t["name"] == "fetch"]
    fetch["outputs"]["artifacts"][0]["path"] = path
    # `..` leaving its directory Argo refuses itself (Artifact.CleanPath); the rest the runner.
    words = r"directory traversal is not permitted|artifact dataset path must be under /work"
    with pytest.raises(LocalRunError, match=words):
        check_rendered(broken, {})


def _paths(data, path=()):
    """Every key and index path in `data`, parents first."""
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in items:
        yield (*path, key)
        if isinstance(value, dict | list):
            yield from _paths(value, (*path, key))


MUTATIONS = ("delete", None, 7, ["x"], {"a": 1}, "{{x}}")


def test_every_malformed_template_is_a_local_run_error_never_a_traceback(template):
    """Each field of the real template, in turn, deleted or replaced by a value of the wrong type:
    the runner's up-front check refuses with LocalRunError (or accepts), never KeyError & co."""
    checked = 0
    for i, path in enumerate(_paths(template)):
        broken = copy.deepcopy(template)
        parent = broken
        for key in path[:-1]:
            parent = parent[key]
        mutation = MUTATIONS[i % len(MUTATIONS)]
        if mutation == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = mutation
        with contextlib.suppress(LocalRunError):
            check_rendered(broken, {})
        checked += 1
    assert checked > 500


# --- loops, aggregation, memoization (Argo v4.1.2, cited in workflows/argo_rules.py) -----------


@pytest.mark.parametrize(
    ("values", "aggregated"),
    [
        (["7"], '["7"]'),  # numbers stay strings: only lists and objects are embedded
        (["a", "b"], '["a","b"]'),
        (['["x"]', "y"], '["[\\"x\\"]","y"]'),  # one value is not JSON list/object: all strings
        (['{"k":"1"}', "2"], '["{\\"k\\":\\"1\\"}","2"]'),
        ([' ["x"] ', '\t["y"]\n'], '[["x"],["y"]]'),
        (['{"b":1,"a":2}', '{"a":3}'], '[{"a":2,"b":1},{"a":3}]'),  # keys sorted, as Go's maps
        (["<a&b>"], '["\\u003ca\\u0026b\\u003e"]'),  # Go's json.Marshal escapes HTML characters
    ],
)
def test_a_loops_output_is_aggregated_as_argo_does(values: list[str], aggregated: str) -> None:
    outputs = aggregate_outputs([{"v": value} for value in values])
    assert outputs["parameters.v"] == aggregated


def test_aggregation_keeps_loop_order_and_leaves_out_items_that_did_not_succeed() -> None:
    outputs = aggregate_outputs([{"v": "0", "w": "a"}, None, {"v": "2", "w": "c"}])
    assert outputs == {
        "parameters": '[{"v":"0","w":"a"},{"v":"2","w":"c"}]',
        "parameters.v": '["0","2"]',
        "parameters.w": '["a","c"]',
    }


@pytest.mark.parametrize(
    ("item", "scope", "node"),
    [
        ("2024", {"item": "2024"}, "t(0:2024)"),
        (2024, {"item": "2024"}, "t(0:2024)"),
        (True, {"item": "true"}, "t(0:true)"),
        ({"year": "2024", "key": "a(b)"}, {"item": '{"key":"a(b)","year":"2024"}',
         "item.year": "2024", "item.key": "a(b)"}, "t(0:key:ab,year:2024)"),
    ],
)  # fmt: skip
def test_items_become_values_and_node_names_as_in_argo(item, scope: dict, node: str) -> None:
    assert item_scope(item) == scope
    assert expanded_node_name("t", 0, item) == node


@pytest.mark.parametrize("text", ['"2024"', "{}", "not json", ""])
def test_with_param_must_be_a_json_list(text: str) -> None:
    with pytest.raises(ArgoRuleError, match="could not be parsed as a JSON list"):
        loop_items({"withParam": "x"}, text)


def test_with_items_and_with_param_give_their_items() -> None:
    assert loop_items({"withItems": [1, "a"]}) == [1, "a"]
    assert loop_items({"withParam": "x"}, '[{"year": "2024"}]') == [{"year": "2024"}]
    assert loop_items({"withParam": "x"}, "[]") == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("180s", 180), ("24h", 86400), ("2160h", 7_776_000), ("1h30m", 5400), ("500ms", 0.5),
     ("0", 0), ("1.5h", 5400)],
)  # fmt: skip
def test_max_age_is_read_as_a_go_duration(text: str, seconds: float) -> None:
    assert go_duration_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "10", "1d", "h", "24 h", "1w", " 1h", "1h\n", "+-1h", "\u0661h"]
)
def test_max_age_that_go_cannot_read_is_refused(text: str) -> None:
    with pytest.raises(ArgoRuleError, match="invalid maxAge"):
        go_duration_seconds(text)


# Go's time.ParseDuration (time/format.go) counts in int64 nanoseconds and refuses overflow with
# "invalid duration"; each case was checked with go1.19 `time.ParseDuration`.
@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [("2562047h", 9_223_369_200_000_000_000),
     ("9223372036854775807ns", 2**63 - 1),
     ("2562047h47m16.854775807s", 2**63 - 1),
     ("-9223372036854775808ns", -(2**63)),
     ("0.99999999999999999999999h", 3_600_000_000_000)],
)  # fmt: skip
def test_a_go_duration_up_to_the_int64_limit_is_read(text: str, nanoseconds: int) -> None:
    assert go_duration_seconds(text) == pytest.approx(nanoseconds / 1e9)


@pytest.mark.parametrize(
    "text",
    ["2562048h", "99999999999999h", "9223372036854775808ns", "2562047h47m16.854775808s",
     "2562047.8h", "99999999999999999999s"],
)  # fmt: skip
def test_a_go_duration_past_the_int64_limit_is_refused_as_go_does(text: str) -> None:
    # issue 11: `maxAge: 2562048h` passed here while Argo's Go refuses it.
    with pytest.raises(ArgoRuleError, match="invalid maxAge: time: invalid duration"):
        go_duration_seconds(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30), ("30s", 30), ("1h30m", 5400), ("500ms", 0.5), ("0", 0), ("+2", 2)],
)
def test_backoff_duration_is_an_integer_of_seconds_or_a_go_duration(
    text: str, seconds: float
) -> None:
    assert duration_seconds(text, "retryStrategy.backoff.duration") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["1.5", "", "1d", "30 s"])
def test_backoff_duration_argo_cannot_read_is_refused(text: str) -> None:
    with pytest.raises(ArgoRuleError, match=r"invalid retryStrategy\.backoff\.duration"):
        duration_seconds(text, "retryStrategy.backoff.duration")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("false", False),
        ("7 != none", True),  # a bare word is a string (steps.go shouldExecute)
        ("none != none", False),
        ("7 == '7'", False),  # a number is not a string: govaluate's reflect.DeepEqual
        ("2024 == 2024.0", True),
        ("10 > 9", True),  # numbers in order, not their text
        ("-1 < 0", True),
        ("'b' > 'a'", True),  # two strings in order
        ("yes == 'yes'", True),
    ],
)
def test_when_is_read_as_argo_reads_it(text: str, value: bool) -> None:
    assert read_when(text).holds() is value


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("true && false", "true, false or one comparison"),
        ("a b == c", "true, false or one comparison"),
        ("!true", "at '!true'"),
        ("(a == b)", "'(a' is not a number"),
        ("x.y == 1", "'x.y' is not a number"),
        ("models:/m/1 == x", "(quote it)"),
        ("1.2.3 == 1", "'1.2.3' is not a number"),
        ("1 < a", "< needs two numbers or two strings"),
        ("yes", "is not true or false"),
    ],
)
def test_a_when_argo_would_not_read_is_refused_by_name(text: str, words: str) -> None:
    with pytest.raises(ArgoRuleError, match=re.escape(words)):
        read_when(text).holds()


@pytest.mark.parametrize(
    ("key", "ok"),
    [("abc-123", True), ("A1", True), ("-a", False), ("a_b", False), ("a.b", False),
     ("", False), ("gsod-2024-" + "f" * 64, True)],
)  # fmt: skip
def test_memoization_keys_are_those_argo_accepts(key: str, ok: bool) -> None:
    assert (memo_key_problem(key) is None) == ok


# --- DAG rules Argo v4.1.2 applies (workflow/validate/validate.go validateDAG, workflow/common/
# ancestry.go, workflow/controller/dag.go evaluateDependsLogic): the validator and the runner
# refuse what Argo refuses, and accept what it runs.

_CONTAINER = {"name": "c", "container": {"image": "x", "command": ["true"]}}


def _dag_template(tasks: list[dict], templates: tuple[dict, ...] = ()) -> dict:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "t"},
        "spec": {
            "entrypoint": "main",
            "templates": [{"name": "main", "dag": {"tasks": tasks}}, _CONTAINER, *templates],
        },
    }


def _task(name: str, **fields) -> dict:
    return {"name": name, "template": "c", **fields}


@pytest.mark.parametrize(
    ("tasks", "templates", "words"),
    [
        # validateDAG: "cannot use both 'depends' and 'dependencies' in the same DAG template"
        ([_task("a"), _task("b", depends="a"), _task("d", dependencies=["a"])], (),
         "cannot use both 'depends' and 'dependencies' in the same DAG"),
        # "... name cannot begin with a digit when using either 'depends' or 'dependencies'"
        ([_task("1a"), _task("b", depends="1a")], (), "cannot begin with a digit"),
        ([_task("1a"), _task("a"), _task("b", depends="a")], (), "cannot begin with a digit"),
        # "cannot use 'continueOn' when using 'depends'"
        ([_task("a", continueOn={"failed": True}), _task("b", depends="a")], (),
         "cannot use 'continueOn'"),
        # "... uses an items-based condition such as .AnySucceeded or .AllFailed but does not
        # contain any items"
        ([_task("a"), _task("b", depends="a.AnySucceeded")], (), "items-based result"),
        ([_task("a"), _task("b", depends="a.AllFailed")], (), "items-based result"),
        # "templates.%s must have at least one task"
        ([], (), "at least one task"),
        # validateWorkflowFieldNames: "[%d].name '%s' is not unique" (tasks and templates)
        ([_task("a"), _task("a")], (), "task name 'a' is not unique"),
        ([_task("a")], (dict(_CONTAINER),), "template name 'c' is not unique"),
        # argo lint passes these (it only collects names); expr-lang cannot compile them, so the
        # DAG fails when the task's dependencies finish.
        ([_task("a"), _task("d"), _task("b", depends="a d")], (), "two tasks without"),
        ([_task("a"), _task("b", depends="a &&")], (), "ends where a task was expected"),
        ([_task("a"), _task("b", depends="(a")], (), "'(' is not closed"),
        ([_task("a"), _task("b", depends="a)")], (), "unmatched ')'"),
        ([_task("a"), _task("b", depends="a && || a")], (), "'||' stands where a task"),
        ([_task("a"), _task("b", depends="a !")], (), "two tasks without"),
    ],
)  # fmt: skip
def test_dag_rules_argo_refuses_are_refused_by_validator_and_runner(
    tasks: list[dict], templates: tuple[dict, ...], words: str, tmp_path: Path
) -> None:
    broken = _dag_template(copy.deepcopy(tasks), templates)
    problems = validate_resources([broken])
    assert any(words in p for p in problems), problems
    with pytest.raises(LocalRunError, match=re.escape(words)):
        run_rendered(broken, {}, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "depends",
    ["a", "a && d", "(a && d)", "((a)) && d.Succeeded", "!a.Failed && d", "a.Succeeded || !(d)",
     "(a.Succeeded || a.Skipped) && !d.Failed", "a&&d"],
)  # fmt: skip
def test_depends_expressions_argo_evaluates_are_accepted(depends: str) -> None:
    tasks = [_task("a"), _task("d"), _task("b", depends=depends)]
    assert validate_resources([_dag_template(tasks)]) == []
    assert parse_depends({"depends": depends}).tasks == ({"a"} if depends == "a" else {"a", "d"})


def test_a_looping_task_may_be_depended_on_by_its_group_results() -> None:
    tasks = [_task("a", withItems=["x", "y"]), _task("b", depends="a.AnySucceeded || a.AllFailed")]
    assert validate_resources([_dag_template(tasks)]) == []


def _skip_then_consume(value: str, input_default: str | None, output_default: str | None) -> dict:
    """Task `a` skipped by its `when`; task `b` passes `value` (naming a's output) to input v."""
    output = {"name": "x", "valueFrom": {"path": "/work/x"}}
    if output_default is not None:
        output["valueFrom"]["default"] = output_default
    v = {"name": "v"} | ({"default": input_default} if input_default is not None else {})
    producer = {
        "name": "pa",
        "container": {"image": "x", "command": ["sh", "-c", "echo 1 >/work/x"]},
        "outputs": {"parameters": [output]},
    }
    consumer = {"name": "pb", "inputs": {"parameters": [v]},
                "container": {"image": "x", "command": ["sh", "-c", "echo got:$0",
                                                        "{{inputs.parameters.v}}"]}}  # fmt: skip
    tasks = [
        {"name": "a", "template": "pa", "when": "1 == 2"},
        {"name": "b", "template": "pb", "depends": "a",
         "arguments": {"parameters": [{"name": "v", "value": value}]}},
    ]  # fmt: skip
    template = _dag_template(tasks, (producer, consumer))
    template["spec"]["templates"].remove(_CONTAINER)
    return template


REF = "{{tasks.a.outputs.parameters.x}}"


@pytest.mark.parametrize(
    ("value", "input_default", "output_default", "got"),
    [
        (REF, "dflt", None, "got:dflt"),  # not supplied: the input's own default
        (REF, "dflt", "from-a", "got:from-a"),  # the producer's declared default
        ("pre-" + REF, None, "from-a", "got:pre-from-a"),
    ],
)
def test_outputs_of_a_skipped_task_resolve_as_argo_resolves_them(
    value, input_default, output_default, got, tmp_path: Path
) -> None:
    """Argo v4.1.2 (workflow/controller/scope.go addSkippedNodeOutputsToScope and
    markAbsentOptionalArgs; dag.go resolveDependencyReferences): a skipped task's output is its
    valueFrom.default; without one, an argument that only references it is not supplied, so the
    consumer's input default applies. The runner failed every such task."""
    template = _skip_then_consume(value, input_default, output_default)
    assert validate_resources([template]) == []
    assert run_rendered(template, {}, run_dir=tmp_path / "run", lock_file=tmp_path / "l") == 0
    assert (tmp_path / "run" / "b" / "stdout.log").read_text().strip() == got


@pytest.mark.parametrize("value", [REF, "pre-" + REF])
def test_a_skipped_tasks_output_without_any_default_fails_the_consumer(value, tmp_path: Path):
    """Argo fails these terminally: no default anywhere, or a composite value."""
    template = _skip_then_consume(value, None, None)
    assert run_rendered(template, {}, run_dir=tmp_path / "run", lock_file=tmp_path / "l") == 1
