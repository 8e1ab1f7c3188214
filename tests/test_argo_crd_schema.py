"""The rendered Argo resources against the CRDs of the real Argo v4.1.2 release manifest: what
the API server checks on `kubectl apply` / argo-server create (unknown fields, types, enums,
patterns, required fields). Skips without the manifest (tests/upstream.py says how to get it)."""

from __future__ import annotations

import copy

import pytest

from tests.crd_schema import cel_errors, cel_rule_count, crd_errors
from tests.upstream import argo_crd_schema
from workflows.pipeline import build_run_workflow, render
from workflows.settings import PipelineSettings


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    return render(PipelineSettings())


@pytest.mark.parametrize(
    ("key", "kind"), [("workflow-template", "WorkflowTemplate"), ("cron-workflow", "CronWorkflow")]
)
def test_rendered_resources_pass_the_release_crd_schema(rendered, key, kind):
    schema = argo_crd_schema(kind)
    assert crd_errors(schema, rendered[key]) == []
    # The CRDs' CEL rules too (one template type, deadlines only on leaf templates, depends ...).
    assert cel_rule_count(schema) > 0
    assert cel_errors(schema, rendered[key]) == []


@pytest.mark.parametrize(
    "parameters",
    [{"source": "synthetic"}, {"source": "gsod", "years": ",".join(map(str, range(2000, 2025)))}],
)
def test_a_one_off_run_passes_the_workflow_crd_schema(parameters):
    run = build_run_workflow(PipelineSettings(), parameters).to_dict()
    assert crd_errors(argo_crd_schema("Workflow"), run) == []
    assert cel_errors(argo_crd_schema("Workflow"), run) == []


def test_the_crd_check_rejects_what_the_api_server_would(rendered):
    template = copy.deepcopy(rendered["workflow-template"])
    stage = template["spec"]["templates"][1]
    stage["container"]["imagePullPolicyy"] = "Always"
    stage["activeDeadlineSeconds"] = 1.5
    errors = crd_errors(argo_crd_schema("WorkflowTemplate"), template)
    assert any("imagePullPolicyy" in e and "templates[1].container" in e for e in errors), errors
    assert any("activeDeadlineSeconds" in e for e in errors), errors
    cron = copy.deepcopy(rendered["cron-workflow"])
    cron["spec"]["schedule"] = "0 0 * * 0"  # removed in Argo v4; `schedules` replaced it
    del cron["spec"]["schedules"]
    errors = crd_errors(argo_crd_schema("CronWorkflow"), cron)
    assert any("schedule" in e and "unexpected" in e for e in errors), errors
    assert any("'schedules' is a required property" in e for e in errors), errors


def test_the_crd_cel_rules_reject_what_the_api_server_would(rendered):
    """Rules the openAPI types cannot say: the API server refuses these on apply."""
    schema = argo_crd_schema("WorkflowTemplate")
    template = copy.deepcopy(rendered["workflow-template"])
    templates = template["spec"]["templates"]
    dag = next(t for t in templates if t["name"] == template["spec"]["entrypoint"])
    dag["activeDeadlineSeconds"] = 60  # only leaf templates may have a deadline
    templates[0]["script"] = {"image": "x", "source": "true"}  # a second template type
    dag["dag"]["tasks"][1]["dependencies"] = ["check-parameters"]  # next to `depends`
    errors = "\n".join(cel_errors(schema, template))
    assert "activeDeadlineSeconds is only valid for leaf templates" in errors, errors
    assert "template must have at most one template type" in errors, errors
    assert "cannot use both 'depends' and 'dependencies'" in errors, errors
    assert cel_errors(schema, rendered["workflow-template"]) == []
