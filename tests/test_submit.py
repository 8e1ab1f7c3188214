"""submit.py against a fake Argo server on 127.0.0.1: apply, idempotency, run, wait, errors."""

from __future__ import annotations

import argparse
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from steps.tracking import TrackingUri
from tests.conftest import assert_bad_input, free_port
from tests.fake_argo import CREATOR_LABEL, FakeArgo
from workflows import submit
from workflows.settings import SETTING_KINDS, ArgoSettings, PipelineSettings, SettingsError

TEMPLATES = "workflow-templates"
CRONS = "cron-workflows"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests set ARGO_* / PIPELINE_* themselves; the developer's shell must not leak in."""
    for name in (
        "ARGO_SERVER_URL",
        "ARGO_TOKEN",
        "ARGO_NAMESPACE",
        "ARGO_INSECURE_SKIP_VERIFY",
        "PIPELINE_NAMESPACE",
        "PIPELINE_IMAGE",
        "PIPELINE_SCHEDULE",
        "PIPELINE_TIMEZONE",
        "PIPELINE_SUSPEND",
        *(variable for variable, _ in SETTING_KINDS.values()),
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def argo() -> Iterator[FakeArgo]:
    fake = FakeArgo(token="s3cret").start()
    yield fake
    fake.stop()


def run_submit(argo: FakeArgo, *args: str, token: str | None = "s3cret") -> int:
    argv = ["--argo-server", argo.url, *args]
    if token is not None:
        argv += ["--token", token]
    return submit.main(argv)


def _node(name: str, phase: str, second: int, message: str | None = None, kind: str = "Pod"):
    node = {
        "id": f"wf-{name}",
        "name": f"wf.{name}",
        "displayName": name,
        "type": kind,
        "phase": phase,
        "startedAt": f"2026-11-26T07:00:{second:02d}Z",
    }
    if message:
        node["message"] = message
    return node


def _status(phase: str, *nodes: dict, message: str | None = None) -> dict:
    root = _node("dewpoint-pipeline-00003", phase, 0, kind="DAG")
    root["id"] = "wf-root"
    status = {"phase": phase, "nodes": {n["id"]: n for n in (root, *nodes)}}
    if message:
        status["message"] = message
    return status


def test_apply_creates_template_then_cron_under_the_base_path(argo, capsys):
    assert run_submit(argo) == 0
    assert capsys.readouterr().out.splitlines() == [
        "workflowtemplate/dewpoint-pipeline created",
        "cronworkflow/dewpoint-pipeline-weekly created",
    ]
    template = argo.get(TEMPLATES, "mlops", "dewpoint-pipeline")
    cron = argo.get(CRONS, "mlops", "dewpoint-pipeline-weekly")
    assert template["spec"]["entrypoint"] == "pipeline"
    assert cron["spec"]["workflowSpec"]["workflowTemplateRef"] == {"name": "dewpoint-pipeline"}
    writes = [(r.method, r.path) for r in argo.writes()]
    assert writes == [
        ("POST", "/argo/api/v1/workflow-templates/mlops"),
        ("POST", "/argo/api/v1/cron-workflows/mlops"),
    ]
    assert all(r.path.startswith("/argo/api/v1/") for r in argo.requests)
    assert {r.authorization for r in argo.requests} == {"Bearer s3cret"}


def test_second_apply_changes_nothing(argo, capsys):
    assert run_submit(argo) == 0
    before = len(argo.writes())
    capsys.readouterr()
    assert run_submit(argo) == 0
    assert capsys.readouterr().out.splitlines() == [
        "workflowtemplate/dewpoint-pipeline unchanged",
        "cronworkflow/dewpoint-pipeline-weekly unchanged",
    ]
    assert len(argo.writes()) == before
    # the server's own label did not count as a difference
    assert CREATOR_LABEL in argo.get(TEMPLATES, "mlops", "dewpoint-pipeline")["metadata"]["labels"]


def test_apply_after_a_change_updates_with_the_current_resource_version(argo, capsys, monkeypatch):
    assert run_submit(argo) == 0
    old_version = argo.get(TEMPLATES, "mlops", "dewpoint-pipeline")["metadata"]["resourceVersion"]
    capsys.readouterr()
    monkeypatch.setenv("PIPELINE_IMAGE", "dewpoint-pipeline/step:next")
    assert run_submit(argo) == 0
    assert capsys.readouterr().out.splitlines() == [
        "workflowtemplate/dewpoint-pipeline updated",
        "cronworkflow/dewpoint-pipeline-weekly unchanged",
    ]
    (put,) = [r for r in argo.writes() if r.method == "PUT"]
    assert put.path == "/argo/api/v1/workflow-templates/mlops/dewpoint-pipeline"
    assert put.body["template"]["metadata"]["resourceVersion"] == old_version
    stored = argo.get(TEMPLATES, "mlops", "dewpoint-pipeline")
    images = {t["container"]["image"] for t in stored["spec"]["templates"] if "container" in t}
    assert images == {"dewpoint-pipeline/step:next"}


def test_suspending_the_cron_updates_only_the_cron(argo, capsys, monkeypatch):
    assert run_submit(argo) == 0
    capsys.readouterr()
    monkeypatch.setenv("PIPELINE_SUSPEND", "true")
    assert run_submit(argo) == 0
    assert (
        capsys.readouterr().out.splitlines()[1] == "cronworkflow/dewpoint-pipeline-weekly updated"
    )
    assert argo.get(CRONS, "mlops", "dewpoint-pipeline-weekly")["spec"]["suspend"] is True


def test_create_that_loses_a_race_falls_back_to_update(argo, capsys):
    assert run_submit(argo) == 0
    capsys.readouterr()
    argo.hide_on_first_get = {"dewpoint-pipeline"}
    argo._gets.clear()
    assert run_submit(argo) == 0
    out = capsys.readouterr().out
    assert "workflowtemplate/dewpoint-pipeline unchanged" in out
    conflicts = [r for r in argo.writes() if r.path.endswith("/workflow-templates/mlops")]
    assert len(conflicts) == 2  # the first create, then the one answered with 409


def test_stale_update_is_a_one_line_conflict_error(argo, capsys, monkeypatch):
    assert run_submit(argo) == 0
    capsys.readouterr()
    argo.stale_puts = True
    monkeypatch.setenv("PIPELINE_IMAGE", "dewpoint-pipeline/step:next")
    assert run_submit(argo) == 75  # changed meanwhile: running again may pass
    err = capsys.readouterr().err
    assert err.startswith("error: conflict (409) while trying to update workflowtemplate")
    assert "the object has been modified" in err
    assert err.count("\n") == 1


def test_run_now_submits_from_the_template_with_overrides(argo, capsys):
    assert run_submit(argo, "--run-now", "-p", "source=synthetic", "-p", "rain-only=true") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("workflow/dewpoint-pipeline-") and out[-1].endswith(" submitted")
    (create,) = [r for r in argo.writes() if r.path == "/argo/api/v1/workflows/mlops"]
    spec = create.body["workflow"]["spec"]
    assert spec["workflowTemplateRef"] == {"name": "dewpoint-pipeline"}
    assert spec["arguments"]["parameters"] == [
        {"name": "rain-only", "value": "true"},
        {"name": "source", "value": "synthetic"},
    ]
    assert create.body["workflow"]["metadata"]["generateName"] == "dewpoint-pipeline-"


def test_run_now_refuses_a_value_outside_the_enum_before_submitting(argo, capsys):
    assert run_submit(argo, "--run-now", "-p", "deploy-target=laptop") == 2
    err = capsys.readouterr().err
    assert (
        err == "error: workflow parameter deploy-target='laptop' not in ['local', 'kubernetes']\n"
    )
    assert not argo.writes()  # not the template or the cron either: refused before any write


# Values Argo would not pass on as written (workflows.argo_rules.given_value_problem): a `{{`
# is substituted again or, unclosed, refused; white space around one is kept by Argo (the release
# mutex's name) and dropped by the steps.
NOT_AS_WRITTEN = [
    ("model-name", "a{{b", "holds '{{'"),
    ("model-name", "{{workflow.name}}", "holds '{{'"),
    ("model-name", "{{=sprig.upper('x')}}", "holds '{{'"),
    ("stations", "x{{workflow.uid}}", "holds '{{'"),
    ("model-name", "foo ", "white space around it"),
    ("model-name", " foo", "white space around it"),
    ("years", "2024\n", "white space around it"),
]


@pytest.mark.parametrize(("name", "value", "why"), NOT_AS_WRITTEN)
def test_run_now_refuses_a_value_argo_would_not_pass_on_as_written(argo, capsys, name, value, why):
    assert run_submit(argo, "--run-now", "-p", f"{name}={value}") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: workflow parameter {name}=") and why in err, err
    assert err.count("\n") == 1 and not argo.writes()


@pytest.mark.parametrize(("name", "value", "why"), NOT_AS_WRITTEN)
def test_local_refuses_a_value_argo_would_not_pass_on_as_written(
    tmp_path, monkeypatch, capsys, name, value, why
):
    monkeypatch.chdir(tmp_path)
    calls = _record_local_runs(monkeypatch)
    assert submit.main(["--local", "-p", f"{name}={value}"]) == 2
    err = capsys.readouterr().err
    assert why in err and err.count("\n") == 1, err
    assert calls == [] and not (tmp_path / ".demo").exists()


@pytest.mark.parametrize(("name", "value", "why"), NOT_AS_WRITTEN)
def test_the_offline_validator_refuses_such_a_value_in_a_workflows_arguments(name, value, why):
    """The same rule for a Workflow written by hand (`argo submit --from`, the UI's own form is
    Argo's): `make render`'s validator reads run arguments with it."""
    from workflows.pipeline import build_run_workflow

    settings = PipelineSettings()
    resources = {
        "workflow-template": submit.render(settings)["workflow-template"],
        "run": build_run_workflow(settings, {name: value}).to_dict(),
    }
    with pytest.raises(submit.BadInput, match=re.escape(why)):
        submit._validate(resources)


def test_a_lone_closing_brace_pair_is_text_to_argo_and_to_us():
    from workflows.argo_rules import given_value_problem

    assert given_value_problem("model-name", "x }} y") is None
    # White space inside a value is its flag's to judge (`years`: `2024, 2025` is refused there).
    assert given_value_problem("years", "2024, 2025") is None


def test_wait_prints_node_phases_and_succeeds(argo, capsys):
    argo.phases = [
        _status("Running", _node("fetch", "Running", 1)),
        _status("Running", _node("fetch", "Running", 1)),
        _status("Running", _node("fetch", "Succeeded", 1), _node("validate", "Running", 2)),
        _status(
            "Succeeded",
            _node("fetch", "Succeeded", 1),
            _node("validate", "Succeeded", 2),
            _node("deploy", "Skipped", 3, "when 'false == true' evaluated false", "Skipped"),
        ),
    ]
    assert run_submit(argo, "--run-now", "--wait", "--poll-seconds", "0.01") == 0
    lines = capsys.readouterr().out.splitlines()
    name = lines[2].split("/")[1].split()[0]
    assert lines[3:] == [
        "  fetch: Running",
        "  fetch: Succeeded",
        "  validate: Running",
        "  validate: Succeeded",
        "  deploy: Skipped (when 'false == true' evaluated false)",
        f"workflow {name}: Succeeded",
    ]
    assert all(r.path.startswith("/argo/api/v1/") for r in argo.requests)


def test_wait_on_failure_names_the_failed_node(argo, capsys):
    argo.phases = [
        _status("Running", _node("fetch", "Succeeded", 1), _node("train", "Running", 2)),
        _status(
            "Failed",
            _node("fetch", "Succeeded", 1),
            _node("train", "Failed", 2, "Error (exit code 1): no rows left after validation"),
            message="child 'wf-train' failed",
        ),
    ]
    assert run_submit(argo, "--run-now", "--wait", "--poll-seconds", "0.01") == 1
    captured = capsys.readouterr()
    assert "  train: Failed (Error (exit code 1): no rows left after validation)" in captured.out
    assert captured.err.startswith("error: workflow dewpoint-pipeline-")
    assert (
        "Failed at node train: Error (exit code 1): no rows left after validation" in captured.err
    )
    assert captured.err.count("\n") == 1


def test_wait_names_the_pod_not_the_retry_group(argo, capsys):
    argo.phases = [
        _status(
            "Failed",
            _node("fetch", "Failed", 1, "No more retries left", "Retry"),
            _node("fetch(0)", "Failed", 2, "Error (exit code 1)"),
            _node("fetch(1)", "Failed", 3, "Error (exit code 1): 503 from NOAA"),
        )
    ]
    assert run_submit(argo, "--run-now", "--wait", "--poll-seconds", "0.01") == 1
    assert "Failed at node fetch: Error (exit code 1): 503 from NOAA" in capsys.readouterr().err


def test_unreachable_server_is_a_one_line_error(capsys):
    port = free_port()  # nothing listens there
    # Transient (75): the server may be up on the next try (docs/steps.md#exit-codes).
    assert submit.main(["--argo-server", f"http://127.0.0.1:{port}/argo/"]) == 75
    err = capsys.readouterr().err
    url = f"http://127.0.0.1:{port}/argo/"
    assert err == f"error: cannot reach the Argo server at {url} (Connection refused)\n"


def test_a_non_argo_answer_is_a_one_line_error(argo, capsys):
    argo.phases = [{"phase": "Running", "nodes": {"n": {"phase": "Running"}}}]  # no id/name/type
    assert run_submit(argo, "--run-now", "--wait", "--poll-seconds", "0.01") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: unexpected answer from the Argo server at {argo.url}")
    assert "while trying to read workflow dewpoint-pipeline-" in err
    assert err.count("\n") == 1


def test_silent_server_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts connections, never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/argo/"
        client = submit.ArgoClient(ArgoSettings(server_url=url), timeout=0.5)
        with pytest.raises(submit.TransientError, match="did not answer in time"):
            client.get_workflow("x")


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, 75), (502, 75), (503, 75), (504, 75), (409, 75), (400, 1), (401, 1), (403, 1),
     (404, 1), (422, 1)],
)  # fmt: skip
def test_an_argo_answer_is_transient_exactly_when_a_retry_may_pass(status: int, code: int):
    """A 5xx (the server or its ingress failing now) and a 409 (changed meanwhile: run again)
    are exit 75; the answers a retry cannot change are exit 1."""
    from hera.exceptions import HeraException

    def answer() -> None:
        exc = HeraException(f"status {status}")
        exc.status_code = status
        raise exc

    client = submit.ArgoClient(ArgoSettings(server_url="http://127.0.0.1:9/argo/"))
    with pytest.raises(submit.StepError) as raised:
        client.call("read workflow x", answer)
    assert raised.value.exit_code == code


def test_wrong_token_is_401(argo, capsys):
    assert run_submit(argo, token="wrong") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: the Argo server at {argo.url} rejected the credentials (401)")
    assert "ARGO_TOKEN" in err
    assert argo.writes() == []


@pytest.mark.parametrize(
    "token",
    ["s3cret\r\nX-Injected: 1", "s3\ncret", "Bearer s3cr\u00e9t", "s3cret\u2603", "s3 cret",
     "s3\tcret", "s3cret\x7f", "Bearer s3cret\x00"],
)  # fmt: skip
@pytest.mark.parametrize("where", ["--token", "ARGO_TOKEN"])
def test_a_token_no_header_can_carry_is_refused_before_any_request_without_showing_it(
    argo, capsys, monkeypatch, token, where
):
    """Found by a breaker: a token with CR/LF was quoted whole in requests' error line (exit 1),
    a non-latin-1 one was a UnicodeEncodeError traceback."""
    if where == "ARGO_TOKEN":
        if "\x00" in token:
            pytest.skip("no environment variable holds a NUL byte")
        monkeypatch.setenv("ARGO_TOKEN", token)
        code = run_submit(argo, token=None)
    else:
        code = run_submit(argo, token=token)
    err = capsys.readouterr().err
    assert_bad_input(code, err, "the Argo token (--token or ARGO_TOKEN) holds a")
    assert "s3" not in err and "cret" not in err
    assert argo.requests == []


def test_missing_token_is_401(argo, capsys):
    assert run_submit(argo, token=None) == 1
    assert "rejected the credentials (401)" in capsys.readouterr().err
    assert {r.authorization for r in argo.requests} == {None}


def test_forbidden_is_403(argo, capsys):
    argo.token = None
    argo.forbidden_tokens = {"viewer"}
    assert run_submit(argo, token="viewer") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: not allowed (403) to read workflowtemplate dewpoint-pipeline")
    assert "RBAC" in err


def test_unknown_namespace_is_404(argo, capsys):
    assert run_submit(argo, "--namespace", "nope") == 1
    err = capsys.readouterr().err
    assert "not found (404) while trying to create workflowtemplate dewpoint-pipeline" in err
    assert "namespace 'nope'" in err and 'namespaces \\"nope\\" not found' not in err
    assert 'namespaces "nope" not found' in err


def test_url_without_the_base_path_is_explained(argo, capsys):
    url = argo.url.removesuffix("argo/")  # the ingress answers 404 outside /argo/
    assert submit.main(["--argo-server", url, "--token", "s3cret"]) == 1
    err = capsys.readouterr().err
    assert "not found (404)" in err and f"that {url} includes the server's base path" in err


def test_an_html_answer_is_a_one_line_error(argo, capsys):
    argo.html_only = True
    assert run_submit(argo) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: the answer from {argo.url} while trying to read workflowtemplate"
    )
    assert "is not JSON; is that the Argo server, with its base path" in err


def test_namespace_flag_reaches_urls_and_resources(argo, capsys):
    argo.namespaces.add("ml-staging")
    assert run_submit(argo, "--namespace", "ml-staging") == 0
    stored = argo.get(TEMPLATES, "ml-staging", "dewpoint-pipeline")
    assert stored["metadata"]["namespace"] == "ml-staging"
    assert argo.get(TEMPLATES, "mlops", "dewpoint-pipeline") is None


def test_env_configures_the_connection(argo, capsys, monkeypatch):
    monkeypatch.setenv("ARGO_SERVER_URL", argo.url.rstrip("/"))  # base path without the slash
    monkeypatch.setenv("ARGO_TOKEN", "Bearer s3cret")  # prefix given: not doubled
    assert submit.main([]) == 0
    assert all(r.path.startswith("/argo/api/v1/") for r in argo.requests)
    assert {r.authorization for r in argo.requests} == {"Bearer s3cret"}


def test_server_auth_mode_sends_no_authorization_header(capsys):
    fake = FakeArgo(token=None).start()
    try:
        assert submit.main(["--argo-server", fake.url]) == 0
        assert {r.authorization for r in fake.requests} == {None}
    finally:
        fake.stop()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--wait"], "--wait follows a run: add --run-now"),
        (["--run-now", "-p", "source"], "-p 'source': expected name=value"),
        (["--local", "-p", "sorce=gsod"], "-p: unknown workflow parameter(s) 'sorce'; known: "),
        (["--argo-server", "localhost:2746"], "must start with http:// or https://"),
        # A server URL no request could go to is bad input, named before anything is sent.
        (["--argo-server", "http://[::1"], "Argo server URL 'http://[::1' is not a URL"),
        (["--argo-server", "http://"], "Argo server URL 'http://' names no host"),
        (["--argo-server", "http:///argo/"], "names no host"),
        (["--argo-server", "http://localhost:99999/"], "is not a URL: its port is not from 1"),
        (["--argo-server", "http://local host/"], "has a bad port or a space in it"),
        (["--argo-server", "http://x/", "--token", "Bearer "], "the Argo token"),
        (["--argo-server", "http://x/", "--namespace", "Bad_NS"], "--namespace='Bad_NS' is not"),
        (["--render", "out", "--namespace=x-"], "--namespace='x-' is not a Kubernetes"),
        # Flags the chosen action would ignore are refused, never silently dropped.
        (["--render", "out", "--run-now"], "--run-now does not apply here: --render only writes"),
        (["--render", "out", "--wait"], "--wait does not apply here: --render only writes"),
        (["--render", "out", "-p", "source=gsod"], "-p does not apply here: --render only"),
        (["--render", "out", "--backend", "docker"], "--backend does not apply here"),
        (["--render", "out", "--argo-server", "http://x/"], "--argo-server does not apply here"),
        (["--local", "--run-now"], "--run-now does not apply here: --local runs the template"),
        (["--local", "--token", "t"], "--token does not apply here: --local runs"),
        (["--local", "--timeout", "5"], "--timeout does not apply here: --local"),
        (["--run-dir", "x"], "--run-dir does not apply here: without --render or --local"),
        (["--backend", "docker"], "--backend does not apply here: without --render or --local"),
        (["-p", "source=gsod"], "-p sets parameters of a run: add --run-now (or use --local)"),
        (["--run-now", "--poll-seconds", "1"], "--poll-seconds is for following a run"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    assert submit.main(argv) == 2  # bad input: never retried
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_bad_run_parameters_are_refused_before_the_server_is_contacted(capsys):
    """A bad -p value of a run is bad input found offline: nothing is applied or sent first
    (here nothing listens on the server's port, so any request would fail differently)."""
    url = f"http://127.0.0.1:{free_port()}/argo/"
    assert submit.main(["--argo-server", url, "--run-now", "-p", "source=bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "source" in err and "bogus" in err and "cannot reach" not in err, err


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PIPELINE_SCHEDULE", "bad cron", "bad cron expression"),
        ("PIPELINE_TIMEZONE", "Mars/Base", "unknown IANA time zone"),
        ("ARGO_NAMESPACE", "UPPER", "ARGO_NAMESPACE='UPPER' is not a Kubernetes namespace"),
        ("ARGO_TOKEN", "bearer", "the Argo token"),
    ],
)
def test_bad_settings_from_the_environment_are_bad_input(
    monkeypatch, capsys, variable, value, message
):
    monkeypatch.setenv(variable, value)
    url = f"http://127.0.0.1:{free_port()}/argo/"
    assert submit.main(["--argo-server", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


# Values no setting's kind takes, and the instances found (issue 11), which rendered.
BAD_SETTINGS = {"blank": " ", "two words": "x y", "control character": "x\ty"}
FOUND = [
    ("PIPELINE_MLFLOW_TRACKING_URI", "htp://x", "no tracking store for the scheme 'htp'"),
    ("PIPELINE_MLFLOW_TRACKING_URI", "http://", "http:// needs a host"),
    ("PIPELINE_MLFLOW_TRACKING_URI", "mlruns", "a file store"),
    ("PIPELINE_IMAGE", "has space", "a container image reference"),
    ("PIPELINE_IMAGE", "Step:1", "a container image reference"),
    ("PIPELINE_TIMEZONE", "America", "unknown IANA time zone 'America'"),  # was a traceback
    ("PIPELINE_NAMESPACE", "Bad_NS", "a Kubernetes namespace"),
    ("PIPELINE_SCHEDULE", "0 0 * * 9", "day of week field: 9"),
]


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [pytest.param(variable, value, "", id=f"{variable}-{name}")
     for variable, _ in SETTING_KINDS.values() for name, value in BAD_SETTINGS.items()]
    + [pytest.param(*case, id=f"{case[0]}-{case[1]}") for case in FOUND],
)  # fmt: skip
def test_render_refuses_a_setting_its_kind_refuses_in_one_line_naming_it(
    variable: str, value: str, needle: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Every PIPELINE_* setting is read with its kind (workflows/settings.py SETTING_KINDS),
    before anything is rendered: `PIPELINE_MLFLOW_TRACKING_URI=htp://x make render` rendered
    the template, to fail in train (issue 11)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.setenv(variable, value)
    assert submit.main(["--render", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert_bad_input(2, err, variable, needle)
    assert out == "" and not (tmp_path / "out").exists()


def test_the_tracking_uri_setting_is_read_as_the_steps_read_it() -> None:
    """One reading of a tracking URI: the steps' own kind, whose refusals the pipeline's
    check-parameters would make anyway, only later; but for what only a pod can tell (a SQLite
    file, a database driver), which check-parameters looks up where it runs."""
    variable, kind = SETTING_KINDS["mlflow_tracking_uri"]
    assert (variable, kind) == ("PIPELINE_MLFLOW_TRACKING_URI", TrackingUri(here=False))
    settings = PipelineSettings.from_env({variable: "sqlite:////data/mlflow.db", "X": "y"})
    assert settings.mlflow_tracking_uri == "sqlite:////data/mlflow.db"
    uri = "postgresql+psycopg://mlflow@db/mlflow"  # its driver is in the image, maybe not here
    assert PipelineSettings.from_env({variable: uri}).mlflow_tracking_uri == uri
    assert PipelineSettings.from_env({variable: ""}) == PipelineSettings()  # empty: unset


def _args(**kwargs) -> argparse.Namespace:
    defaults = dict(argo_server=None, token=None, insecure_skip_verify=None, namespace=None)
    return argparse.Namespace(**{**defaults, **kwargs})


def test_argo_settings_flags_win_over_env():
    env = {
        "ARGO_SERVER_URL": "https://argo.example/",
        "ARGO_TOKEN": "from-env",
        "ARGO_INSECURE_SKIP_VERIFY": "true",
        "ARGO_NAMESPACE": "env-ns",
    }
    from_env = ArgoSettings.from_args(_args(), env)
    assert from_env == ArgoSettings("https://argo.example/", "from-env", False, "env-ns")
    flags = ArgoSettings.from_args(
        _args(argo_server="http://localhost/argo", token="t", namespace="flag-ns"), env
    )
    assert (flags.base_url, flags.authorization, flags.namespace) == (
        "http://localhost/argo/",
        "Bearer t",
        "flag-ns",
    )
    assert ArgoSettings.from_args(_args(argo_server="http://x"), {}).verify_tls is True


def test_argo_settings_reject_a_bad_tls_switch():
    with pytest.raises(SettingsError, match="ARGO_INSECURE_SKIP_VERIFY='sometimes'"):
        ArgoSettings.from_args(
            _args(argo_server="http://x"), {"ARGO_INSECURE_SKIP_VERIFY": "sometimes"}
        )


def _record_local_runs(monkeypatch) -> list[tuple]:
    calls: list[tuple] = []
    import workflows.local_runner as local

    real = local.run_rendered

    def recording(template, parameters, **kwargs):
        calls.append((template["metadata"]["name"], parameters, kwargs))
        return real(template, parameters, **kwargs)

    monkeypatch.setattr(local, "run_rendered", recording)
    return calls


@pytest.mark.parametrize(
    ("parameter", "shown"),
    [
        ("source=carrier-pigeon", "carrier-pigeon"),
        # MLflow 3.17.2 refuses these names at register, after train has logged a run.
        ("model-name=team/dewpoint", "model-name"),
        ("model-name=dewpoint:v2", "model-name"),
        ("model-name=..dewpoint", "model-name"),
        ("model-name=dew\x00point", "model-name"),
        ("mlflow-tracking-uri=http://127.0.0.1:5050\nX-Evil: 1", "mlflow-tracking-uri"),
    ],
)
def test_local_refuses_a_bad_parameter_before_starting_anything(
    tmp_path, monkeypatch, capsys, parameter: str, shown: str
):
    monkeypatch.chdir(tmp_path)
    calls = _record_local_runs(monkeypatch)
    code = submit.main(["--local", "-p", parameter])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and shown in err, err  # bad input
    assert err.startswith("error: ")
    assert calls == [] and not (tmp_path / ".demo").exists()  # no MLflow started, no run


def test_local_with_an_unreachable_tracking_uri_names_the_parameter(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    calls = _record_local_runs(monkeypatch)
    closed = f"http://127.0.0.1:{free_port()}"
    code = submit.main(["--local", "-p", f"mlflow-tracking-uri={closed}"])
    err = capsys.readouterr().err
    assert code == 75 and err.count("\n") == 1, err  # transient: it may answer later
    assert f"no MLflow server answers at {closed}/health" in err
    assert (
        "workflow parameter mlflow-tracking-uri" in err
        and "leave -p mlflow-tracking-uri out" in err
    )
    assert calls == [] and not (tmp_path / ".demo").exists()


def test_demo_with_an_unreachable_tracking_uri_is_transient_before_anything_starts(
    tmp_path, monkeypatch, capsys
):
    """`make demo PARAMS=mlflow-tracking-uri=...` with nothing answering there: exit 75 in one
    line, as `submit.py --local` does, before any MLflow server or task starts."""
    from workflows import demo

    monkeypatch.chdir(tmp_path)
    calls = _record_local_runs(monkeypatch)
    monkeypatch.setattr(demo, "run_rendered", lambda *a, **k: calls.append(a) or 0)
    closed = f"http://127.0.0.1:{free_port()}"
    code = demo.main(["up", "-p", f"mlflow-tracking-uri={closed}"])
    err = capsys.readouterr().err
    assert code == 75 and err.count("\n") == 1, err
    assert f"no MLflow server answers at {closed}/health" in err
    assert calls == [] and not (tmp_path / ".demo" / "mlflow").exists()


def test_local_a_failed_task_is_one_error_line_on_stderr(tmp_path, monkeypatch, capsys):
    """The runner printed its failure line to stdout, among the progress lines (issue 11). The
    first task refuses a parameter the up-front check is told to let through."""
    from workflows.local_runner import planning

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(planning, "check_pipeline_parameters", lambda values, **_: None)
    monkeypatch.setattr("workflows.demo.tracking_server_for", lambda *args: "")
    code = submit.main(["--local", "-p", "gate-tolerance=abc", "--run-dir", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: task 'check-parameters' failed"), err
    assert "check-parameters  Failed" in out and "error: task" not in out


@pytest.mark.slow
def test_local_by_default_does_what_make_demo_does(tmp_path, monkeypatch, capsys, demo_ports):
    """No -p at all: offline data, the local deploy target, the demo's MLflow server (started,
    nothing answers on MLFLOW_PORT), and the champion served on SERVE_PORT."""
    from steps.deploy_targets.local import running_server, stop_local
    from workflows.demo import mlflow_down

    mlflow_port, serve_port = demo_ports
    calls = _record_local_runs(monkeypatch)
    try:
        code = submit.main(["--local", "--run-dir", str(tmp_path / "run")])
        out = capsys.readouterr().out
        assert code == 0, out[-3000:]
        ((name, parameters, kwargs),) = calls
        assert name == "dewpoint-pipeline"
        assert parameters == {
            "source": "synthetic",
            "deploy-target": "local",
            "mlflow-tracking-uri": f"http://127.0.0.1:{mlflow_port}",
        }
        assert kwargs == {
            "run_dir": tmp_path / "run",
            "backend": "process",
            "cache_dir": Path(".demo/cache"),  # kept between runs: memoized years are reused
            # where deploy serves, from the caller; no other variable a stage reads (issue 11)
            "env": {"SERVE_PORT": str(serve_port)},
        }
        assert f"==> MLflow tracking server on 127.0.0.1:{mlflow_port}" in out
        # Run outside the checkout: `make demo-down` would not find these servers' records.
        down = f"`python -m workflows.demo down --root {tmp_path.resolve() / '.demo'}`"
        assert f"{down} (from the checkout) stops them" in out
        served = running_server(tmp_path / ".demo" / "serve")
        assert served is not None and served.port == serve_port
        assert served.model_uri == "models:/dewpoint-lr/1"
    finally:
        stop_local(tmp_path / ".demo" / "serve")
        mlflow_down(tmp_path / ".demo")


def test_render_onto_an_existing_file_is_a_one_line_error(tmp_path: Path, capsys):
    target = tmp_path / "workflow-template.yaml"
    target.write_text("mine\n")
    assert submit.main(["--render", str(target)]) == 2  # bad input: a file named for a directory
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --render takes a directory"), err
    assert f"{target} is a file" in err
    assert target.read_text() == "mine\n"


def _rendered_parallelism(directory: Path) -> int:
    spec = yaml.safe_load((directory / "workflow-template.yaml").read_text())["spec"]
    (entry,) = [t for t in spec["templates"] if t["name"] == spec["entrypoint"]]
    return entry["parallelism"]


def test_the_fan_out_parallelism_is_one_flag_or_one_variable(tmp_path: Path, capsys, monkeypatch):
    """The bound on per-year pods is set in one place at render time: --fan-out-parallelism wins
    over PIPELINE_FAN_OUT_PARALLELISM, which wins over the default 4; a bad value is exit 2."""
    monkeypatch.delenv("PIPELINE_FAN_OUT_PARALLELISM", raising=False)
    assert submit.main(["--render", str(tmp_path / "default")]) == 0
    assert _rendered_parallelism(tmp_path / "default") == 4
    monkeypatch.setenv("PIPELINE_FAN_OUT_PARALLELISM", "6")
    assert submit.main(["--render", str(tmp_path / "env")]) == 0
    assert _rendered_parallelism(tmp_path / "env") == 6
    assert submit.main(["--render", str(tmp_path / "flag"), "--fan-out-parallelism", "9"]) == 0
    assert _rendered_parallelism(tmp_path / "flag") == 9
    capsys.readouterr()
    for bad in (["--fan-out-parallelism", "0"], ["--fan-out-parallelism", "x"]):
        assert submit.main(["--render", str(tmp_path / "bad"), *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--fan-out-parallelism" in err, err
        assert "from 1 to 1000" in err
    monkeypatch.setenv("PIPELINE_FAN_OUT_PARALLELISM", "1001")
    assert submit.main(["--render", str(tmp_path / "bad")]) == 2
    assert "PIPELINE_FAN_OUT_PARALLELISM" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_render_into_an_unwritable_place_is_a_one_line_error(tmp_path: Path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert submit.main(["--render", str(blocker / "sub")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: cannot write {blocker}"), err


# --- argo-server's template cache and Stopped crons ---------------------------------------------


def test_first_install_waits_out_argo_servers_template_cache(argo, capsys, monkeypatch):
    """Right after the template is created, argo-server's informer may not have it yet: the cron
    create answers 400 and the run's create 404 "not found". A first install still succeeds."""
    pauses: list[float] = []
    monkeypatch.setattr(submit, "_pause", pauses.append)
    argo.template_cache_lag = 3
    assert run_submit(argo, "--run-now") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [
        "workflowtemplate/dewpoint-pipeline created",
        "cronworkflow/dewpoint-pipeline-weekly created",
    ]
    assert out[2].startswith("workflow/dewpoint-pipeline-") and out[2].endswith(" submitted")
    posts = [r.path.rsplit("/", 2)[-2] for r in argo.writes() if r.method == "POST"]
    assert posts == ["workflow-templates"] + ["cron-workflows"] * 4 + ["workflows"]
    assert pauses == [0.5, 1.0, 2.0]
    assert argo.get(CRONS, "mlops", "dewpoint-pipeline-weekly") is not None


def test_a_template_that_never_shows_up_is_reported_after_the_sync_window(argo):
    argo.template_cache_lag = 10**6
    client = submit.ArgoClient(
        ArgoSettings(server_url=argo.url, token="s3cret"),
        template_sync_seconds=3.0,
        sleep=lambda _: None,
    )
    client.apply_workflow_template(submit.render(submit.PipelineSettings())["workflow-template"])
    with pytest.raises(submit.StepError) as caught:
        client.apply_cron_workflow(submit.render(submit.PipelineSettings())["cron-workflow"])
    assert 'workflowtemplate.argoproj.io "dewpoint-pipeline" not found' in str(caught.value)


def _stop(argo: FakeArgo) -> None:
    """What the controller does when a stopStrategy fires (workflow/cron/operator.go)."""
    cron = argo.get(CRONS, "mlops", "dewpoint-pipeline-weekly")
    cron["status"] = {"phase": "Stopped", "failed": 4, "succeeded": 30}
    cron["metadata"]["labels"]["cronworkflows.argoproj.io/completed"] = "true"


def test_a_stopped_cron_is_re_created_by_the_next_submit(argo, capsys):
    assert run_submit(argo) == 0
    _stop(argo)
    capsys.readouterr()
    assert run_submit(argo) == 0
    assert capsys.readouterr().out.splitlines() == [
        "workflowtemplate/dewpoint-pipeline unchanged",
        "cronworkflow/dewpoint-pipeline-weekly re-created "
        "(was Stopped: its stop strategy fired after 4 failed runs)",
    ]
    cron = argo.get(CRONS, "mlops", "dewpoint-pipeline-weekly")
    assert "status" not in cron
    assert "cronworkflows.argoproj.io/completed" not in cron["metadata"]["labels"]
    # The cron owns its kept runs (ownerReferences, workflow/common/convert.go at v4.1.2): deleted
    # with the default propagation, the failed runs that stopped it would go with it. Orphan
    # keeps them (their TTL still removes them).
    deletes = [r.path for r in argo.requests if r.method == "DELETE"]
    assert deletes == [
        "/argo/api/v1/cron-workflows/mlops/dewpoint-pipeline-weekly"
        "?deleteOptions.propagationPolicy=Orphan"
    ]


def test_a_stopped_cron_the_token_may_not_delete_is_one_actionable_line(argo, capsys):
    assert run_submit(argo) == 0
    _stop(argo)
    argo.forbid_deletes = True
    capsys.readouterr()
    assert run_submit(argo) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "error: cronworkflow/dewpoint-pipeline-weekly is "
    ), err
    assert "Stopped" in err[0]
    assert (
        "kubectl -n mlops delete cronworkflow dewpoint-pipeline-weekly --cascade=orphan" in err[0]
    )
    assert argo.get(CRONS, "mlops", "dewpoint-pipeline-weekly")["status"]["phase"] == "Stopped"


def test_without_an_argo_server_the_error_names_the_local_door(tmp_path, monkeypatch, capsys):
    """A newcomer's first `python workflows/submit.py` has no cluster: the one line says how to
    run it here instead."""
    monkeypatch.delenv("ARGO_SERVER_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert submit.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no Argo server"), err
    assert "--local" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("pair", "said"),
    [
        ("gate-tolerance=", "workflow parameter gate-tolerance"),
        ("gate-tolerance=abc", "workflow parameter gate-tolerance"),
        ("gate-tolerance=-1", "workflow parameter gate-tolerance"),
        ("synthetic-rows=0", "workflow parameter synthetic-rows"),
        ("model-name=a/b", "workflow parameter model-name"),
        ("mlflow-tracking-uri=htp://x", "workflow parameter mlflow-tracking-uri"),
        ("years=2099", "workflow parameter years"),
    ],
)
def test_run_now_checks_each_value_with_the_stage_declarations_before_sending(
    argo, capsys, pair, said
):
    # issue 11: the Argo door sent what `--local` refuses; nothing may reach the server.
    assert run_submit(argo, "--run-now", "-p", pair) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {said}")
    assert err.count("\n") == 1
    assert not argo.writes()


def test_run_now_leaves_a_path_where_the_step_runs_to_the_pod(argo, tmp_path):
    # gsod-path names a path inside the pod on a cluster: not looked up on this machine.
    missing = str(tmp_path / "in-the-pod")
    assert run_submit(argo, "--run-now", "-p", "source=gsod", "-p", f"gsod-path={missing}") == 0
    # the conditions between parameters still hold: gsod-path without source=gsod is refused
    assert run_submit(argo, "--run-now", "-p", "source=synthetic", "-p", "gsod-path=/x") == 2


@pytest.mark.parametrize("which", ["full run dir", "run dir a file", "cache dir a file"])
def test_local_refuses_an_unusable_run_or_cache_dir_before_mlflow_starts(
    tmp_path, monkeypatch, capsys, which: str
):
    """issue 11: MLflow was started, then the run dir refused (exit 1), MLflow left running."""
    monkeypatch.chdir(tmp_path)
    started: list[object] = []
    monkeypatch.setattr("workflows.demo.tracking_server_for", lambda *args: started.append(args))
    calls = _record_local_runs(monkeypatch)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    (tmp_path / "file").write_text("")
    run_dir, cache_dir = {
        "full run dir": ("full", "cache"),
        "run dir a file": ("file", "cache"),
        "cache dir a file": ("run", "file"),
    }[which]
    code = submit.main(["--local", "--run-dir", run_dir, "--cache-dir", cache_dir])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert ("cache dir" if which == "cache dir a file" else "run dir") in err
    assert started == [] and calls == []


@pytest.mark.parametrize(
    "which", ["serve port is MLflow's", "serve port busy", "state dir a file", "state dir in /proc"]
)
def test_local_refuses_where_deploy_cannot_serve_before_mlflow_starts(
    demo_ports: tuple[int, int], held_port: int, tmp_path, monkeypatch, capsys, which: str
):
    """issue 11: SERVE_PORT equal to MLFLOW_PORT (which the demo refused), a busy SERVE_PORT, or
    a DEPLOY_STATE_DIR deploy cannot use was found by the deploy task, at the end of the run."""
    mlflow_port, _ = demo_ports
    started: list[object] = []
    monkeypatch.setattr("workflows.demo.tracking_server_for", lambda *args: started.append(args))
    calls = _record_local_runs(monkeypatch)
    (tmp_path / "file").write_text("")
    name, value, words = {
        "serve port is MLflow's": ("SERVE_PORT", str(mlflow_port), "are both"),
        "serve port busy": ("SERVE_PORT", str(held_port), "in use"),
        "state dir a file": ("DEPLOY_STATE_DIR", "file", "is a file, not a directory"),
        "state dir in /proc": ("DEPLOY_STATE_DIR", "/proc/self/serve", "cannot be written"),
    }[which]
    monkeypatch.setenv(name, value)
    code = submit.main(["--local"])
    err = capsys.readouterr().err
    assert_bad_input(code, err, words)
    assert started == [] and calls == []


@pytest.mark.parametrize("which", ["serve port is MLflow's", "serve port busy"])
def test_the_demo_refuses_a_serve_port_deploy_cannot_use_before_mlflow_starts(
    demo_ports: tuple[int, int], held_port: int, monkeypatch, capsys, which: str
):
    """The demo door, by the same checks as `submit.py --local` (its state directory is its
    own, `<root>/serve`): a busy SERVE_PORT was found by the deploy task, at the end of the run."""
    from workflows import demo

    mlflow_port, _ = demo_ports
    started: list[object] = []
    monkeypatch.setattr(demo, "mlflow_up", lambda *args: started.append(args))
    monkeypatch.setattr(demo, "tracking_server_for", lambda *args: started.append(args))
    monkeypatch.setattr(demo, "run_rendered", lambda *args, **kwargs: started.append(args))
    port, words = {
        "serve port is MLflow's": (mlflow_port, "are both"),
        "serve port busy": (held_port, "in use"),
    }[which]
    code = demo.main(["up", "--serve-port", str(port)])
    err = capsys.readouterr().err
    assert_bad_input(code, err, words)
    assert started == []


# ---- every door renders with the same PIPELINE_* reading (workflows.settings.pipeline_settings) --


class _Stop(Exception):
    """Raised where a door would start something: the template it rendered has been seen."""


def _rendered_by_door(door: str, tmp_path: Path, monkeypatch) -> tuple[int, dict | None]:
    """(exit code, the WorkflowTemplate the door renders) for `door`, stopped before it starts
    MLflow or a task."""
    from steps.cli import BadInput
    from workflows import demo

    seen: list[dict] = []

    def stop(template, *args, **kwargs):
        seen.append(template)
        raise BadInput("stopped by the test")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "check_rendered", stop)
    monkeypatch.setattr("workflows.local_runner.check_rendered", stop)
    if door == "render":
        code = submit.main(["--render", "out"])
        if code == 0:
            seen.append(yaml.safe_load((tmp_path / "out" / "workflow-template.yaml").read_text()))
    elif door == "local":
        code = submit.main(["--local"])
    else:
        code = demo.main(["up", "--root", str(tmp_path / ".demo")])
    return code, (seen[0] if seen else None)


DOORS = ["render", "local", "demo"]


@pytest.mark.parametrize("door", DOORS)
def test_every_door_renders_with_the_pipeline_variables(door, tmp_path, monkeypatch, capsys):
    """`make render`, `submit.py --local` and `make demo` read PIPELINE_* alike (the demo
    rendered with the defaults whatever they said)."""
    monkeypatch.setenv("PIPELINE_FAN_OUT_PARALLELISM", "7")
    monkeypatch.setenv("PIPELINE_IMAGE", "registry.example/step:tested")
    _, template = _rendered_by_door(door, tmp_path, monkeypatch)
    assert template is not None, capsys.readouterr().err
    spec = template["spec"]
    (entry,) = [t for t in spec["templates"] if t["name"] == spec["entrypoint"]]
    assert entry["parallelism"] == 7
    images = {t["container"]["image"] for t in spec["templates"] if "container" in t}
    assert images == {"registry.example/step:tested"}


@pytest.mark.parametrize("door", DOORS)
def test_every_door_refuses_a_bad_pipeline_variable_alike(door, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_FAN_OUT_PARALLELISM", "0")
    code, template = _rendered_by_door(door, tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and template is None, err
    assert err.count("\n") == 1 and err.startswith("error: PIPELINE_FAN_OUT_PARALLELISM"), err
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing started
