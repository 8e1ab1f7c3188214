"""Render, apply, run and follow the pipeline's Argo resources, or run the same template locally.

`python workflows/submit.py [--render DIR | --local | --run-now [--wait]] [-p name=value ...]`,
or `python -m workflows.submit ...`: the same, with the project installed (`make setup`). Run as a
script, this file's folder comes first on `sys.path`; no module in workflows/ shares its name
with a top-level module (tests/test_pipeline_render.py checks it), so nothing is shadowed.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import requests
import yaml
from hera.exceptions import HeraException
from hera.workflows import models as m
from hera.workflows.service import WorkflowsService

from steps.cli import BadInput, StepError, TransientError, one_line, run
from steps.contract import (
    Number,
    OneLineParser,
    argparse_type,
    non_empty_path,
)
from steps.files import write_text_atomically
from steps.stages import check_pipeline_parameters
from workflows.argo_rules import ArgoRuleError, unknown_parameters, workflow_parameter_values
from workflows.pipeline import (
    CRON_NAME,
    TEMPLATE_NAME,
    build_run_workflow,
    render,
    workflow_parameters,
)
from workflows.settings import (
    DEFAULT_MLFLOW_PORT,
    FAN_OUT_PARALLELISM,
    ArgoSettings,
    PipelineSettings,
    SettingsError,
    parameter_overrides,
    pipeline_settings,
    resolve_namespace,
)
from workflows.validate_resources import check_resources

RENDER_FILES = {
    "workflow-template": "workflow-template.yaml",
    "cron-workflow": "cron-workflow.yaml",
}
FINISHED_PHASES = {"Succeeded", "Failed", "Error"}
POLL_SECONDS = 5.0
WAIT_TIMEOUT_S = 6 * 3600.0
# What --poll-seconds and --timeout accept: finite, positive, and within an hour / a week.
POLL_SECONDS_KIND = Number(0, 3600, open_minimum=True)
WAIT_TIMEOUT_KIND = Number(0, 7 * 24 * 3600, open_minimum=True)
# Nodes that only group others; their failure is always explained by a child.
_GROUP_NODE_TYPES = {"DAG", "Steps", "StepGroup", "TaskGroup", "Retry"}
_RETRY_SUFFIX = re.compile(r"\(\d+\)$")
T = TypeVar("T")


# --- render ------------------------------------------------------------------------------------


def render_yaml(settings: PipelineSettings) -> dict[str, str]:
    """Render and validate both resources; return file name -> YAML text.

    Raises:
        BadInput: the rendered resources fail the strict validator (a bad PIPELINE_* setting).
    """
    resources = render(settings)
    _validate(resources)
    return {
        RENDER_FILES[key]: yaml.safe_dump(resource, sort_keys=False, default_flow_style=False)
        for key, resource in resources.items()
    }


def write_rendered(settings: PipelineSettings, directory: Path) -> list[Path]:
    """Write `workflow-template.yaml` and `cron-workflow.yaml` into `directory` (made if needed).

    Raises:
        BadInput: `directory` names a file (exit 2); nothing is written then.
        StepError: `directory` cannot be written; nothing is written then.
    """
    if directory.exists() and not directory.is_dir():
        raise BadInput(
            f"--render takes a directory, and {directory} is a file; name a directory to hold "
            f"{' and '.join(RENDER_FILES.values())}"
        )
    texts = render_yaml(settings)
    return [write_text_atomically(directory / name, text) for name, text in texts.items()]


def _validate(resources: Mapping[str, dict]) -> None:
    """Check the rendered resources strictly. The builders render valid resources from the
    defaults (tests/test_pipeline_render.py), so what fails here came in through the user's
    settings (PIPELINE_* variables, --namespace, -p): bad input, exit 2.

    Raises:
        BadInput: naming each problem and its path.
    """
    try:
        check_resources(resources.values())
    except ValueError as exc:
        raise BadInput(
            f"rendered resources are invalid (check the PIPELINE_* variables and -p values): {exc}"
        ) from exc


def _check_values(template: Mapping[str, Any], parameters: Mapping[str, str]) -> None:
    """Check every workflow parameter's value of a run with the stage declarations, as the local
    runner does (`steps.stages.check_pipeline_parameters`) and as the run's first task would:
    an empty or negative `gate-tolerance`, `synthetic-rows=0`, `model-name=a/b` is refused
    before anything is sent. A path looked up where the step runs (`gsod-path`, a `table-uri`
    file) is inside the pod on a cluster: check-parameters checks it there.

    Raises:
        BadInput: the first value a stage's flag refuses, naming the parameter and the flag.
    """
    declared = ((template.get("spec") or {}).get("arguments") or {}).get("parameters") or []
    try:
        values = workflow_parameter_values(declared, parameters)
    except ArgoRuleError as exc:
        raise BadInput(str(exc)) from exc
    check_pipeline_parameters(values, paths_here=False)


# --- talking to the Argo server ----------------------------------------------------------------


class _TimeoutSession(requests.Session):
    """Hera's service passes no timeout; without one a silent server hangs the CLI forever."""

    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Send the request with this session's default timeout."""
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)


class ArgoClient:
    """Create-or-update, submit and watch through Hera's WorkflowsService, with one-line errors."""

    def __init__(
        self,
        settings: ArgoSettings,
        timeout: float = 30.0,
        template_sync_seconds: float = 60.0,
        sleep: Callable[[float], None] | None = None,
    ):
        self.settings = settings
        self.service = WorkflowsService(
            host=settings.base_url,
            token=settings.authorization,
            verify_ssl=settings.verify_tls,
            namespace=settings.namespace,
            session=_TimeoutSession(timeout),
        )
        self.template_sync_seconds = template_sync_seconds
        self.sleep = sleep or _pause

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one API call; turn transport and HTTP failures into a StepError naming `what`."""
        url = self.settings.base_url
        ns = self.settings.namespace
        try:
            return fn()
        except requests.exceptions.SSLError as exc:
            raise StepError(
                f"TLS verification of the Argo server at {url} failed; for a self-signed "
                "development server set ARGO_INSECURE_SKIP_VERIFY=true or --insecure-skip-verify"
            ) from exc
        except requests.ConnectionError as exc:  # after SSLError, one of its kind
            # Transient (exit 75): a server down or restarting, a port-forward not up yet.
            raise TransientError(f"cannot reach the Argo server at {url} ({_reason(exc)})") from exc
        except requests.Timeout as exc:
            raise TransientError(
                f"the Argo server at {url} did not answer in time ({what})"
            ) from exc
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise StepError(
                f"unexpected answer from the Argo server at {url} while trying to {what}: "
                f"{where}: {first['msg']} (is it Argo Workflows v4?)"
            ) from exc
        except requests.JSONDecodeError as exc:
            raise StepError(
                f"the answer from {url} while trying to {what} is not JSON; is that the Argo "
                "server, with its base path (e.g. http://localhost/argo/)?"
            ) from exc
        except HeraException as exc:
            status = getattr(exc, "status_code", None)
            detail = _server_message(exc)
            if status == 401:
                raise StepError(
                    f"the Argo server at {url} rejected the credentials (401) while trying to "
                    f"{what}: set ARGO_TOKEN or --token to a valid token"
                ) from exc
            if status == 403:
                raise StepError(
                    f"not allowed (403) to {what} in namespace {ns!r}: {detail}; check the "
                    "token's service account RBAC"
                ) from exc
            if status == 404:
                raise StepError(
                    f"not found (404) while trying to {what} in namespace {ns!r}: {detail}; "
                    f"check that the namespace exists and that {url} includes the server's base "
                    "path"
                ) from exc
            if status == 409:
                raise TransientError(
                    f"conflict (409) while trying to {what}: {detail}; someone else changed it, "
                    "run again"
                ) from exc
            # A 5xx (the server, or an ingress in front of it, failing for now) may pass later.
            error = TransientError if status is not None and 500 <= status <= 599 else StepError
            raise error(f"Argo server error ({status}) while trying to {what}: {detail}") from exc

    def apply_workflow_template(self, resource: dict) -> str:
        """Create or update the WorkflowTemplate; return `created`, `updated` or `unchanged`."""
        desired = m.WorkflowTemplate.model_validate(resource)
        name = desired.metadata.name
        return self._apply(
            desired,
            kind="workflowtemplate",
            get=lambda: self.service.get_workflow_template(name),
            create=lambda: self.service.create_workflow_template(
                m.WorkflowTemplateCreateRequest(template=desired)
            ),
            update=lambda: self.service.update_workflow_template(
                name, m.WorkflowTemplateUpdateRequest(template=desired)
            ),
        )

    def apply_cron_workflow(self, resource: dict) -> str:
        """Create or update the CronWorkflow; return `created`, `updated`, `unchanged` or
        `re-created (was Stopped ...)`.

        A cron the controller marked Stopped (a stopStrategy fired, e.g. one an earlier version
        of this pipeline set) never schedules again, whatever its spec says: the controller's
        informer drops it by its `completed` label, and `argo cron resume` only unsuspends
        (workflow/cron/controller.go, operator.go at v4.1.2). Re-creating it is the one way back.
        """
        desired = m.CronWorkflow.model_validate(resource)
        name = desired.metadata.name
        get = lambda: self.service.get_cron_workflow(name)  # noqa: E731
        create = lambda: self._create_after_template(  # noqa: E731
            f"create cronworkflow {name}",
            lambda: self.service.create_cron_workflow(
                m.CreateCronWorkflowRequest(cron_workflow=desired)
            ),
        )
        current = self._get_or_none(f"read cronworkflow {name}", get)
        stopped = _stopped_reason(current) if current is not None else None
        if stopped:
            self._delete_stopped_cron(name, stopped)
            desired.metadata.namespace = self.settings.namespace
            create()
            return f"re-created (was Stopped: {stopped})"
        return self._apply(
            desired,
            kind="cronworkflow",
            get=get,
            create=create,
            update=lambda: self.service.update_cron_workflow(
                name, m.UpdateCronWorkflowRequest(cron_workflow=desired)
            ),
        )

    def _delete_stopped_cron(self, name: str, stopped: str) -> None:
        """Delete the Stopped cron but not its runs: the cron owns the runs it keeps
        (ownerReferences, workflow/common/convert.go at v4.1.2), and the default propagation
        would delete the failed runs that stopped it with it. `Orphan` keeps them (Kubernetes
        garbage collection, "propagationPolicy"; argo-server passes deleteOptions through,
        server/cronworkflow/cron_workflow_server.go); their TTL still removes them."""
        try:
            self.call(
                f"delete the Stopped cronworkflow {name}",
                lambda: self.service.delete_cron_workflow(name, propagation_policy="Orphan"),
            )
        except StepError as exc:
            cause = exc.__cause__
            if isinstance(cause, HeraException) and cause.status_code == 403:
                raise StepError(
                    f"cronworkflow/{name} is Stopped ({stopped}) and schedules nothing until it "
                    "is re-created, which this token may not do: delete it (kubectl -n "
                    f"{self.settings.namespace} delete cronworkflow {name} --cascade=orphan, "
                    "which keeps its runs) and run submit.py "
                    "again"
                ) from exc
            raise

    def _create_after_template(self, what: str, create: Callable[[], T]) -> T:
        """Create something that references the WorkflowTemplate, waiting out argo-server's
        template cache: argo-server validates `workflowTemplateRef` against an informer, so
        right after the template is created it can answer 400 (cron) or 404 (workflow)
        `workflowtemplate.argoproj.io "<name>" not found` (server/cronworkflow/
        cron_workflow_server.go, server/workflowtemplate/informer.go, workflow/validate/
        validate.go at v4.1.2; the controller side: argoproj/argo-workflows#14615). Retried
        with backoff for `template_sync_seconds`, then reported as it came.
        """
        deadline = time.monotonic() + self.template_sync_seconds
        pause = 0.5
        while True:
            try:
                return self.call(what, create)
            except StepError as exc:
                if not _template_not_cached(exc) or time.monotonic() + pause > deadline:
                    raise
            self.sleep(pause)
            pause = min(pause * 2, 8.0)

    def _apply(
        self,
        desired: Any,
        *,
        kind: str,
        get: Callable[[], Any],
        create: Callable[[], Any],
        update: Callable[[], Any],
    ) -> str:
        name = desired.metadata.name
        desired.metadata.namespace = self.settings.namespace
        current = self._get_or_none(f"read {kind} {name}", get)
        if current is None:
            try:
                self.call(f"create {kind} {name}", create)
                return "created"
            except StepError as exc:
                # Created by someone else between our GET and POST: fall through to an update.
                if not isinstance(exc.__cause__, HeraException) or exc.__cause__.status_code != 409:
                    raise
                current = self.call(f"read {kind} {name}", get)
        if _same(current, desired):
            return "unchanged"
        # Argo rejects a PUT without the resourceVersion it holds (optimistic concurrency).
        desired.metadata.resource_version = current.metadata.resource_version
        self.call(f"update {kind} {name}", update)
        return "updated"

    def _get_or_none(self, what: str, get: Callable[[], T]) -> T | None:
        try:
            return self.call(what, get)
        except StepError as exc:
            cause = exc.__cause__
            if isinstance(cause, HeraException) and cause.status_code == 404:
                return None  # not there yet; a missing namespace shows up on create
            raise

    def submit(self, workflow: m.Workflow) -> str:
        """Create a Workflow (from the template via workflowTemplateRef); return its name."""
        created = self._create_after_template(
            f"submit a workflow from workflowtemplate {TEMPLATE_NAME}",
            lambda: self.service.create_workflow(m.WorkflowCreateRequest(workflow=workflow)),
        )
        return created.metadata.name

    def get_workflow(self, name: str) -> m.Workflow:
        """Fetch a Workflow with its status."""
        return self.call(f"read workflow {name}", lambda: self.service.get_workflow(name))


def _pause(seconds: float) -> None:
    """Wait between retries (a seam for tests)."""
    time.sleep(seconds)


def _template_not_cached(exc: StepError) -> bool:
    """Whether argo-server refused because its cache does not hold the WorkflowTemplate yet."""
    cause = exc.__cause__
    if not isinstance(cause, HeraException) or cause.status_code not in (400, 404):
        return False
    return f'workflowtemplate.argoproj.io "{TEMPLATE_NAME}" not found' in str(cause)


# The label the controller puts on a cron whose stopStrategy fired (LabelKeyCronWorkflowCompleted,
# workflow/common/common.go and pkg/apis/workflow/register.go at v4.1.2).
CRON_COMPLETED_LABEL = "cronworkflows.argoproj.io/completed"


def _stopped_reason(cron: Any) -> str | None:
    """Why a CronWorkflow is Stopped (phase Stopped or the completed label), or None."""
    status = cron.status
    labels = cron.metadata.labels or {}
    if (status is None or status.phase != "Stopped") and labels.get(CRON_COMPLETED_LABEL) != "true":
        return None
    failed = status.failed if status is not None else None
    return f"its stop strategy fired after {failed} failed runs" if failed else "stop strategy"


def _reason(exc: Exception) -> str:
    text = str(exc)
    match = re.search(r"\] ([^'\")]+)", text) or re.search(
        r"(Connection refused|Name or service not known)", text
    )
    return match.group(1).strip() if match else exc.__class__.__name__


def _server_message(exc: Exception) -> str:
    text = one_line(exc, limit=None)
    match = re.search(r"message: `(.*)`$", text)
    # An ingress or proxy may answer with a whole HTML page; one line must stay readable.
    return one_line(match.group(1) if match else text)


def _comparable(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _same(current: Any, desired: Any) -> bool:
    """Same spec and our labels present: the server adds its own labels (creator) we ignore."""
    current_labels = current.metadata.labels or {}
    wanted_labels = desired.metadata.labels or {}
    if any(current_labels.get(k) != v for k, v in wanted_labels.items()):
        return False
    return _comparable(current.spec) == _comparable(desired.spec)


# --- following a run ---------------------------------------------------------------------------


def wait_for(
    client: ArgoClient,
    name: str,
    *,
    poll_seconds: float = POLL_SECONDS,
    timeout_seconds: float = WAIT_TIMEOUT_S,
    out: Any = None,
) -> int:
    """Follow workflow `name`, printing each node's phase as it changes.

    Returns:
        0 when the workflow Succeeded.

    Raises:
        StepError: the workflow Failed or Errored (naming the failed node and its message), or
            did not finish within `timeout_seconds`.
    """
    out = out or sys.stdout
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout_seconds
    while True:
        workflow = client.get_workflow(name)
        status = workflow.status
        for node in sorted((status.nodes or {}).values() if status else [], key=_node_order):
            label = node.display_name or node.name or node.id
            if node.type in ("DAG", "Steps") and label == name:
                continue  # the root node is the workflow itself; its phase is printed below
            if seen.get(node.id) != node.phase and node.phase:
                seen[node.id] = node.phase
                message = f" ({node.message})" if node.message and node.phase != "Succeeded" else ""
                print(f"  {label}: {node.phase}{message}", file=out, flush=True)
        phase = status.phase if status else None
        if phase in FINISHED_PHASES:
            break
        if time.monotonic() > deadline:
            raise StepError(
                f"workflow {name} still {phase or 'Pending'} after {timeout_seconds:.0f}s"
            )
        time.sleep(poll_seconds)
    print(f"workflow {name}: {phase}", file=out, flush=True)
    if phase == "Succeeded":
        return 0
    node, message = _failed_node(workflow)
    where = f" at node {node}" if node else ""
    raise StepError(f"workflow {name} {phase}{where}: {message}")


def _node_order(node: Any) -> tuple[str, str]:
    started = node.started_at.root.isoformat() if node.started_at else "~"
    return (started, node.id or "")


def _failed_node(workflow: m.Workflow) -> tuple[str | None, str]:
    """The most specific failed node (a pod, not a group) and its message."""
    status = workflow.status
    nodes = list((status.nodes or {}).values()) if status else []
    failed = [
        n for n in nodes if n.phase in ("Failed", "Error") and n.type not in _GROUP_NODE_TYPES
    ]
    if not failed:
        failed = [n for n in nodes if n.phase in ("Failed", "Error") and n.type != "DAG"]
    if failed:
        last = sorted(failed, key=_node_order)[-1]
        label = _RETRY_SUFFIX.sub("", last.display_name or last.name or last.id)
        return label, last.message or (status.message if status else None) or "no message"
    return None, (status.message if status else None) or "no message"


# --- CLI ---------------------------------------------------------------------------------------


def parse_parameters(pairs: list[str], known: set[str]) -> dict[str, str]:
    """Parse `-p name=value` pairs, rejecting bad syntax, a name given twice and names the
    template does not define."""
    split = [pair.partition("=") for pair in pairs]
    for pair, (name, sep, _) in zip(pairs, split, strict=True):
        if not sep or not name:
            raise BadInput(f"-p {pair!r}: expected name=value")
    parameters = parameter_overrides((name, value) for name, _, value in split)
    reason = unknown_parameters(known, parameters)
    if reason:
        raise BadInput(f"-p: {reason}")
    return parameters


# The flags that only mean something to some actions, and those actions: any other combination
# is an error, never a flag silently ignored. `apply` is the default action (no --render/--local).
_FLAG_ACTIONS: dict[str, tuple[str, frozenset[str]]] = {
    "run_now": ("--run-now", frozenset({"apply"})),
    "wait": ("--wait", frozenset({"apply"})),
    "parameter": ("-p", frozenset({"apply", "local"})),
    "poll_seconds": ("--poll-seconds", frozenset({"apply"})),
    "timeout": ("--timeout", frozenset({"apply"})),
    "run_dir": ("--run-dir", frozenset({"local"})),
    "cache_dir": ("--cache-dir", frozenset({"local"})),
    "backend": ("--backend", frozenset({"local"})),
    "argo_server": ("--argo-server", frozenset({"apply"})),
    "token": ("--token", frozenset({"apply"})),
    "insecure_skip_verify": ("--insecure-skip-verify", frozenset({"apply"})),
}
_ACTION_WORDS = {
    "render": "--render only writes the YAML files",
    "local": "--local runs the template on this machine, without Argo",
    "apply": "without --render or --local, submit.py applies the resources to Argo",
}


def check_flag_combination(args: argparse.Namespace) -> None:
    """Refuse flags the chosen action would ignore (e.g. `--render DIR --run-now`).

    Raises:
        StepError: naming the first such flag and what the action does instead.
    """
    action = "render" if args.render is not None else "local" if args.local else "apply"
    for dest, (flag, actions) in _FLAG_ACTIONS.items():
        value = getattr(args, dest)
        if value is None or value is False or value == [] or action in actions:
            continue
        if dest in ("wait", "parameter", "poll_seconds", "timeout") and action == "apply":
            continue  # checked below: they need --run-now (and --wait)
        raise BadInput(f"{flag} does not apply here: {_ACTION_WORDS[action]}")
    if action != "apply":
        return
    if args.wait and not args.run_now:
        raise BadInput("--wait follows a run: add --run-now")
    if args.parameter and not args.run_now:
        raise BadInput("-p sets parameters of a run: add --run-now (or use --local)")
    for dest in ("poll_seconds", "timeout"):
        if getattr(args, dest) is not None and not args.wait:
            raise BadInput(f"{_FLAG_ACTIONS[dest][0]} is for following a run: add --run-now --wait")


def build_parser() -> argparse.ArgumentParser:
    """The submit CLI: actions, connection flags and parameter overrides."""
    parser = OneLineParser(
        prog="python workflows/submit.py",
        description="Create or update the dewpoint-pipeline WorkflowTemplate and CronWorkflow "
        "(default), render them, run the template now on Argo, or run it locally.",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--render",
        type=non_empty_path,  # `''` would be the current directory
        metavar="DIR",
        help="write the YAML to DIR and exit",
    )
    action.add_argument(
        "--local",
        action="store_true",
        help="run the template on this machine with make demo's parameters (source=synthetic, "
        "or gsod with -p gsod-path=DIR|FILE.tar.gz; deploy-target=local, "
        f"mlflow-tracking-uri=http://127.0.0.1:$MLFLOW_PORT, default {DEFAULT_MLFLOW_PORT}; "
        "that MLflow server is "
        "started if nothing answers there); -p overrides them",
    )
    parser.add_argument(
        "--run-now", action="store_true", help="after applying, submit a Workflow from the template"
    )
    parser.add_argument("--wait", action="store_true", help="follow the run until it finishes")
    parser.add_argument(
        "-p",
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="workflow parameter override (repeatable); --run-now and --local",
    )
    parser.add_argument(
        "--poll-seconds",
        type=argparse_type(POLL_SECONDS_KIND),
        help=f"--wait poll interval, seconds (default {POLL_SECONDS:g})",
    )
    parser.add_argument(
        "--timeout",
        type=argparse_type(WAIT_TIMEOUT_KIND),
        help=f"--wait limit, seconds (default {WAIT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--run-dir",
        type=non_empty_path,
        help="--local: run directory (default .demo/runs/<time>)",
    )
    parser.add_argument(
        "--cache-dir",
        type=non_empty_path,
        help="--local: artifact repository and memoization caches kept between runs "
        "(default .demo/cache)",
    )
    parser.add_argument(
        "--backend", choices=("process", "docker"), help="--local backend (default process)"
    )
    parser.add_argument(
        "--fan-out-parallelism",
        type=argparse_type(FAN_OUT_PARALLELISM),
        metavar="N",
        help="per-year fetch/validate pods at once, rendered into the template (the DAG's "
        "`parallelism`; Argo cannot take it from a -p parameter: argoproj/argo-workflows#1780); "
        "default $PIPELINE_FAN_OUT_PARALLELISM, else 4",
    )
    ArgoSettings.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse flags, then render, run locally, or apply (and optionally run)."""

    def body() -> int:
        args = build_parser().parse_args(argv)  # inside `run`: a bad flag is one error line
        pipeline = pipeline_settings()
        try:
            namespace = resolve_namespace(args, default=pipeline.namespace)
        except SettingsError as exc:
            raise BadInput(str(exc)) from exc
        pipeline = replace(pipeline, namespace=namespace)
        if args.fan_out_parallelism is not None:
            pipeline = replace(pipeline, fan_out_parallelism=args.fan_out_parallelism)
        check_flag_combination(args)
        known = {p.name for p in workflow_parameters(pipeline)}
        parameters = parse_parameters(args.parameter, known)

        if args.render is not None:
            for path in write_rendered(pipeline, args.render):
                print(f"wrote {path}")
            return 0

        resources = render(pipeline)
        _validate(resources)
        if args.local:
            return _run_local(resources["workflow-template"], parameters, args)

        try:
            argo = ArgoSettings.from_args(args, default_namespace=pipeline.namespace)
        except SettingsError as exc:
            raise BadInput(str(exc)) from exc
        run_dict: dict | None = None
        if args.run_now:
            # Checked against the template offline, before anything is sent: a bad enum value
            # fails here, not on the server, and leaves the installed resources as they were.
            _check_values(resources["workflow-template"], parameters)
            run_dict = build_run_workflow(pipeline, parameters).to_dict()
            _validate({"workflow-template": resources["workflow-template"], "run": run_dict})
        client = ArgoClient(argo)
        result = client.apply_workflow_template(resources["workflow-template"])
        print(f"workflowtemplate/{TEMPLATE_NAME} {result}")
        result = client.apply_cron_workflow(resources["cron-workflow"])
        print(f"cronworkflow/{CRON_NAME} {result}")
        if run_dict is None:
            return 0
        workflow = m.Workflow.model_validate(run_dict)
        name = client.submit(workflow)
        print(f"workflow/{name} submitted")
        if args.wait:
            return wait_for(
                client,
                name,
                poll_seconds=POLL_SECONDS if args.poll_seconds is None else args.poll_seconds,
                timeout_seconds=WAIT_TIMEOUT_S if args.timeout is None else args.timeout,
            )
        return 0

    return run(body)


def _run_local(template: dict, parameters: dict[str, str], args: argparse.Namespace) -> int:
    """The local door: `make demo`'s parameters (offline data, local deploy target, the demo's
    MLflow server, started if needed) under the user's `-p` overrides, then the local runner."""
    # Imported here: only --local needs the runner (and its process/docker machinery).
    from workflows.demo import (
        DEFAULT_ROOT,
        DEFAULT_SERVE_PORT,
        SERVE_PORT_ENV,
        check_ports_apart,
        local_parameters,
        port_from_env,
        tracking_server_for,
    )
    from workflows.local_runner import DEFAULT_CACHE_DIR, check_rendered, run_rendered
    from workflows.local_runner.runner import caller_deploy_env

    mlflow_port = port_from_env("MLFLOW_PORT", DEFAULT_MLFLOW_PORT)
    # deploy reads it from the environment at the end of the run: checked before anything starts.
    serve_port = port_from_env(SERVE_PORT_ENV, DEFAULT_SERVE_PORT)
    check_ports_apart((mlflow_port, "MLFLOW_PORT"), (serve_port, SERVE_PORT_ENV))
    values = local_parameters(mlflow_port, parameters)
    backend = args.backend or "process"
    run_dir = args.run_dir or DEFAULT_ROOT / "runs" / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    cache_dir = args.cache_dir or DEFAULT_CACHE_DIR
    env = caller_deploy_env()  # SERVE_PORT, DEPLOY_STATE_DIR; no other stage variable
    # A bad -p, run dir, cache dir, serve port or state directory fails before any server starts.
    check_rendered(template, values, backend, env, run_dir=run_dir, cache_dir=cache_dir)
    tracking_server_for(values, DEFAULT_ROOT, mlflow_port)
    code = run_rendered(
        template, values, run_dir=run_dir, backend=backend, cache_dir=cache_dir, env=env
    )
    if values["deploy-target"] == "local":
        # Said where the servers' records are: `make demo-down` reads the checkout's .demo/ only.
        root = DEFAULT_ROOT.resolve()
        down = (
            "`make demo-down`"
            if root == (Path(__file__).resolve().parents[1] / DEFAULT_ROOT)
            else f"`python -m workflows.demo down --root {root}` (from the checkout)"
        )
        print(f"the MLflow server and any model served keep running; {down} stops them")
    return code


if __name__ == "__main__":
    sys.exit(main())
