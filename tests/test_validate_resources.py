"""The strict offline validator: the rendered resources pass, and each kind of mistake is caught."""

from __future__ import annotations

import copy

import pytest

from workflows.pipeline import build_run_workflow, render
from workflows.settings import PipelineSettings
from workflows.validate_resources import (
    ResourceValidationError,
    check_resources,
    parse_cron,
    validate_resources,
)


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    return render(PipelineSettings())


def _template(rendered: dict[str, dict]) -> dict:
    return copy.deepcopy(rendered["workflow-template"])


def _cron(rendered: dict[str, dict]) -> dict:
    return copy.deepcopy(rendered["cron-workflow"])


def _dag_tasks(template: dict, dag: str = "pipeline") -> dict[str, dict]:
    """The tasks of dag template `dag` (the entrypoint's by default) by name."""
    return {task["name"]: task for task in _stage(template, dag)["dag"]["tasks"]}


def _stage(template: dict, name: str) -> dict:
    (found,) = [t for t in template["spec"]["templates"] if t["name"] == name]
    return found


def _only_problem(resources: list[dict]) -> str:
    problems = validate_resources(resources)
    assert len(problems) == 1, problems
    return problems[0]


def test_rendered_resources_are_valid(rendered):
    assert validate_resources(rendered.values()) == []
    check_resources(rendered.values())  # does not raise


def test_one_off_run_with_overrides_is_valid(rendered):
    run = build_run_workflow(PipelineSettings(), {"source": "synthetic"}).to_dict()
    assert validate_resources([rendered["workflow-template"], run]) == []


def test_unknown_field_is_rejected_with_its_json_path(rendered):
    template = _template(rendered)
    _stage(template, "train")["container"]["imagePullPolicyy"] = "Always"
    problem = _only_problem([template])
    index = [t["name"] for t in template["spec"]["templates"]].index("train")
    assert f"$.spec.templates[{index}].container.imagePullPolicyy" in problem
    assert "unknown field" in problem


def test_unknown_field_deep_in_a_list_is_rejected(rendered):
    template = _template(rendered)
    _dag_tasks(template)["promote"]["arguments"]["parameters"][0]["valeu"] = "x"
    problem = _only_problem([template])
    index = list(_dag_tasks(template)).index("promote")
    assert f"dag.tasks[{index}].arguments.parameters[0].valeu: unknown field" in problem


def test_unknown_top_level_spec_field_is_rejected(rendered):
    cron = _cron(rendered)
    cron["spec"]["schedule"] = "0 0 * * 0"  # removed in Argo v4; `schedules` replaces it
    assert "$.spec.schedule: unknown field" in _only_problem([rendered["workflow-template"], cron])


def test_wrong_type_is_rejected(rendered):
    template = _template(rendered)
    template["spec"]["activeDeadlineSeconds"] = "four hours"
    problem = _only_problem([template])
    assert "$.spec.activeDeadlineSeconds" in problem and "integer" in problem


def test_dangling_task_reference_is_rejected(rendered):
    template = _template(rendered)
    _dag_tasks(template)["deploy"]["when"] = "{{tasks.nope.outputs.parameters.promoted}} == true"
    problem = _only_problem([template])
    assert "{{tasks.nope.outputs.parameters.promoted}}: no task named 'nope'" in problem
    assert f"dag.tasks[{list(_dag_tasks(template)).index('deploy')}].when" in problem


def test_reference_to_a_task_that_is_not_upstream_is_rejected(rendered):
    template = _template(rendered)
    params = _dag_tasks(template)["past-years"]["arguments"]["parameters"]
    params[0]["value"] = "{{tasks.train.outputs.parameters.run-id}}"
    assert "'train' is not an upstream dependency of 'past-years'" in _only_problem([template])
    # In a year's dag, only that dag's tasks exist.
    template = _template(rendered)
    params = _dag_tasks(template, "past-year")["validate"]["arguments"]["parameters"]
    params[0]["value"] = "{{tasks.train.outputs.parameters.run-id}}"
    assert "{{tasks.train.outputs.parameters.run-id}}: no task named 'train' in this DAG" in (
        _only_problem([template])
    )


def test_reference_to_an_undeclared_output_is_rejected(rendered):
    template = _template(rendered)
    _dag_tasks(template)["deploy"]["when"] = "{{tasks.promote.outputs.parameters.promotd}} == true"
    assert "has no output parameter 'promotd'" in _only_problem([template])


def test_undefined_workflow_and_input_parameters_are_rejected(rendered):
    template = _template(rendered)
    _dag_tasks(template, "past-year")["fetch"]["arguments"]["parameters"][0]["value"] = (
        "{{workflow.parameters.sauce}}"
    )
    _stage(template, "validate")["container"]["args"].append("{{inputs.parameters.rain}}")
    problems = validate_resources([template])
    assert len(problems) == 2, problems
    assert "workflow parameter 'sauce' is not defined" in problems[0] + problems[1]
    assert "template has no input parameter 'rain'" in problems[0] + problems[1]


def test_missing_task_argument_is_rejected(rendered):
    template = _template(rendered)
    del _dag_tasks(template)["register"]["arguments"]["parameters"][0]
    assert "input 'model-uri' of template 'register' is not supplied" in _only_problem([template])


def test_dependency_on_missing_task_is_rejected(rendered):
    template = _template(rendered)
    _dag_tasks(template)["train"]["depends"] = "past-years && ghost"
    assert "depends on 'ghost'" in _only_problem([template])


def test_volume_mount_without_volume_is_rejected(rendered):
    template = _template(rendered)
    _stage(template, "fetch")["container"]["volumeMounts"][0]["name"] = "scratch"
    assert "volume 'scratch' is not defined" in _only_problem([template])


def test_bad_cron_schedule_is_rejected(rendered):
    cron = _cron(rendered)
    cron["spec"]["schedules"] = ["0 0 * * 8"]
    problem = _only_problem([rendered["workflow-template"], cron])
    assert (
        "$.spec.schedules[0]: bad cron expression: day of week field: 8 is outside 0-6" in problem
    )


def test_sixty_character_cron_name_is_rejected(rendered):
    cron = _cron(rendered)
    cron["metadata"]["name"] = "dewpoint-pipeline-weekly-" + "x" * 35
    assert len(cron["metadata"]["name"]) == 60
    problem = _only_problem([rendered["workflow-template"], cron])
    assert "is 60 characters; CronWorkflow allows 52" in problem


def test_unknown_time_zone_is_rejected(rendered):
    cron = _cron(rendered)
    cron["spec"]["timezone"] = "Europe/Atlantis"
    assert "unknown IANA time zone" in _only_problem([rendered["workflow-template"], cron])


def test_cron_argument_the_template_lacks_is_rejected(rendered):
    cron = _cron(rendered)
    cron["spec"]["workflowSpec"]["arguments"] = {"parameters": [{"name": "sorce", "value": "x"}]}
    problem = _only_problem([rendered["workflow-template"], cron])
    assert "parameters[0]: unknown workflow parameter(s) 'sorce'; known: " in problem
    assert "(WorkflowTemplate 'dewpoint-pipeline')" in problem


def test_run_argument_outside_the_template_enum_is_rejected(rendered):
    run = build_run_workflow(PipelineSettings(), {"source": "carrier-pigeon"}).to_dict()
    problem = _only_problem([rendered["workflow-template"], run])
    assert (
        "$.spec.arguments.parameters[0].value: workflow parameter source='carrier-pigeon' not in"
        in problem
    )


def test_default_outside_enum_is_rejected(rendered):
    template = _template(rendered)
    template["spec"]["arguments"]["parameters"][0]["value"] = "ftp"
    assert "parameters[0].value: workflow parameter source='ftp' not in [" in _only_problem(
        [template]
    )


def test_check_resources_raises_with_every_problem(rendered):
    template = _template(rendered)
    template["metadata"]["name"] = "Dewpoint_Pipeline"
    template["spec"]["entrypoint"] = "main"
    with pytest.raises(ResourceValidationError) as info:
        check_resources([template])
    assert len(info.value.problems) == 2
    assert "2 problem(s)" in str(info.value)


@pytest.mark.parametrize(
    "name",
    ["dewpoint-pipeline", "a", "a.b-c", "x" * 52],
)
def test_valid_cron_names(rendered, name):
    cron = _cron(rendered)
    cron["metadata"]["name"] = name
    assert validate_resources([rendered["workflow-template"], cron]) == []


@pytest.mark.parametrize(
    "name",
    ["Dewpoint", "-lead", "trail-", "under_score", "sp ace", "x" * 53, ""],
)
def test_invalid_cron_names(rendered, name):
    cron = _cron(rendered)
    cron["metadata"]["name"] = name
    assert validate_resources([rendered["workflow-template"], cron]) != []


@pytest.mark.parametrize(
    ("expression", "weekday_values"),
    [
        ("0 0 * * 0", {0}),
        ("*/15 9-17 * * mon-fri", {1, 2, 3, 4, 5}),
        ("5 4 1,15 jan,jul *", set(range(7))),
        ("0 0 * * 1/2", {1, 3, 5}),
    ],
)
def test_cron_parser_accepts_standard_fields(expression, weekday_values):
    fields = parse_cron(expression)
    assert fields is not None
    assert fields[4] == weekday_values


def test_cron_parser_expands_steps_and_ranges():
    minutes, hours, days, months, _ = parse_cron("*/20 9-11 1-31/10 */6 *")
    assert minutes == {0, 20, 40}
    assert hours == {9, 10, 11}
    assert days == {1, 11, 21, 31}
    assert months == {1, 7}


# `@every` takes what Go's time.ParseDuration reads (robfig/cron v3 parseDescriptor).
@pytest.mark.parametrize(
    "expression", ["@weekly", "@daily", "@every 1h30m", "@every .5h", "@every 1.h", "@every 0"]
)
def test_cron_parser_accepts_descriptors(expression):
    assert parse_cron(expression) is None


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 0 * *", "has 4 fields"),
        ("60 * * * *", "minute field: 60 is outside 0-59"),
        ("0 24 * * *", "hour field: 24"),
        ("0 0 0 * *", "day of month field: 0"),
        ("0 0 * 13 *", "month field: 13"),
        ("0 0 * * 5-1", "runs backwards"),
        ("*/0 * * * *", "step '0'"),
        ("0 0 * * funday", "'funday' is not a number"),
        ("@fortnightly", "unknown cron descriptor"),
        ("@every soon", "unknown cron descriptor"),
        ("@every 1 h", "invalid @every duration: time: invalid duration '1 h'"),
        ("@every 1d", "invalid duration '1d'"),
    ],
)
def test_cron_parser_rejects_bad_expressions(expression, message):
    with pytest.raises(ValueError, match=message):
        parse_cron(expression)


def test_run_workflow_rejects_unknown_parameter():
    with pytest.raises(ValueError, match="unknown workflow parameter"):
        build_run_workflow(PipelineSettings(), {"sauce": "gsod"})
