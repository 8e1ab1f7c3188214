"""Run a rendered Argo WorkflowTemplate on this machine, no cluster: each DAG task's container runs
as a subprocess (backend `process`) or a `docker run` (backend `docker`), in dependency order.

What runs locally is the rendered dict Argo would get, so the runner supports exactly the subset our
templates use and rejects everything else by name (`LocalRunError`), never skipping it silently:

- `spec.entrypoint` names a `dag` template whose tasks each call a `container` template; tasks run
  one at a time in dependency order (ties keep template order). Argo would run independent tasks
  in parallel; our pipeline is a chain, so the result is the same.
- `depends`: task names joined by `&&`, each bare (`a`: Succeeded or Skipped, as in Argo) or with
  `.Succeeded` or `.Skipped`; or the legacy `dependencies` list (same as bare names).
  A task whose dependencies are not met is `Omitted` (Argo's word) and does not run.
- `when`: after substitution, `true`/`false` or one comparison `X op Y` with op in
  `== != < <= > >=` (numbers compare as numbers, otherwise `==`/`!=` compare strings; quotes
  around either side are stripped). A false `when` marks the task `Skipped`.
- Variables: `{{workflow.parameters.N}}`, `{{workflow.name}}`, `{{workflow.uid}}`,
  `{{workflow.namespace}}`, `{{tasks.T.outputs.parameters.N}}` (in DAG tasks),
  `{{inputs.parameters.N}}`, `{{inputs.artifacts.N.path}}`, `{{outputs.parameters.N.path}}` and
  `{{outputs.artifacts.N.path}}` (in containers). The workflow name is `<template name>-<5 chars>`.
- Artifacts: `arguments.artifacts[].from: "{{tasks.T.outputs.artifacts.N}}"` copies the producer's
  file or directory to the consumer's `inputs.artifacts[].path` before it starts. All step paths
  live under `/work`, which the runner maps to `<run_dir>/<task>/work`.
- Output parameters are read from `valueFrom.path` (or `valueFrom.default` if the file is missing).
- `retryStrategy.limit` N: up to N+1 attempts on a non-zero exit (`retryPolicy` OnFailure or
  Always); backoff is capped at `MAX_LOCAL_BACKOFF_S` locally so a local run stays short.
- Env: `value` entries are substituted; a `valueFrom` entry takes its value from the caller's
  environment, else (fieldRef only) the template's namespace or the pod name, else is an error.
- Volumes: emptyDir at /work and /tmp (provided by the runner); an optional Secret volume is
  treated as absent, as in a pod when the Secret does not exist.

Backend `process`: `python`/`python3` as command[0] becomes this interpreter; the step's env is the
template's env over `env` over this process's environment (so DEPLOY_STATE_DIR, SERVE_PORT... reach
the steps); the cwd is the caller's. Backend `docker`: `docker run --rm --network host --user
10001:10001 --read-only --tmpfs /tmp -v <task work dir>:/work` with the template's image; only
`env` and the template's env are passed in.

A run holds an exclusive lock (`<DEPLOY_STATE_DIR or .demo/serve>/local-runner.lock`) for its whole
duration, so two local runs never deploy interleaved; a second run waits up to `lock_timeout`
seconds, then refuses with a one-line error. Progress (task start, end, phase, duration) is printed
as it happens; the summary is written to `<run_dir>/run.json`. See docs/local-runner.md.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import string
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from steps.cli import StepError

BACKENDS = ("process", "docker")
CONTAINER_ROOT = "/work"
DOCKER_USER = "10001:10001"
MAX_LOCAL_BACKOFF_S = 1.0
DEFAULT_LOCK_TIMEOUT_S = 600.0
STDERR_TAIL_LINES = 20

# Accepted and ignored: they change scheduling, pod security, resources, clean-up, metadata or
# where Argo stores artifacts, not what a step runs or computes.
IGNORED_TOP_FIELDS = frozenset({"apiVersion", "kind", "metadata", "status"})
IGNORED_SPEC_FIELDS = frozenset(
    {
        "serviceAccountName", "automountServiceAccountToken", "securityContext", "podGC",
        "ttlStrategy", "synchronization", "activeDeadlineSeconds", "podMetadata",
        "workflowMetadata", "artifactRepositoryRef", "archiveLogs", "imagePullSecrets",
        "nodeSelector", "affinity", "tolerations", "priorityClassName", "podPriorityClassName",
        "podDisruptionBudget", "parallelism", "metrics", "volumes", "executor",
    }
)  # fmt: skip
IGNORED_TEMPLATE_FIELDS = frozenset(
    {
        "metadata", "securityContext", "activeDeadlineSeconds", "timeout", "serviceAccountName",
        "automountServiceAccountToken", "archiveLocation", "nodeSelector", "affinity",
        "tolerations", "priorityClassName", "schedulerName", "synchronization", "metrics",
        "parallelism", "failFast", "volumes",
    }
)  # fmt: skip
IGNORED_CONTAINER_FIELDS = frozenset(
    {"name", "securityContext", "resources", "imagePullPolicy", "volumeMounts",
     "terminationMessagePath", "terminationMessagePolicy"}
)  # fmt: skip
IGNORED_PARAMETER_FIELDS = frozenset({"description", "globalName"})
IGNORED_ARTIFACT_FIELDS = frozenset({"archive", "archiveLogs", "s3", "artifactGC", "globalName"})
# Mount points the runner provides itself: /work is the task's work dir, /tmp stays /tmp.
PROVIDED_MOUNTS = frozenset({CONTAINER_ROOT, "/tmp"})
WORKFLOW_VARIABLES = frozenset({"workflow.name", "workflow.uid", "workflow.namespace"})

_VAR = re.compile(r"\{\{(.*?)\}\}")
_WORK_PATH = re.compile(r"(?<![\w./-])/work(?![\w.-])")
_TASK_ARTIFACT = re.compile(r"^\{\{\s*tasks\.([\w-]+)\.outputs\.artifacts\.([\w-]+)\s*\}\}$")
# No `.Failed`: a failed task ends the run here (Argo's failFast), so it could never be met.
_DEPENDS_TERM = re.compile(r"^([\w-]+?)(?:\.(Succeeded|Skipped))?$")
_COMPARISON = re.compile(r"^\s*(\S+?)\s*(==|!=|<=|>=|<|>)\s*(\S+?)\s*$")


class LocalRunError(StepError):
    """The template uses something the local runner does not support, or a run cannot start."""


@dataclass
class TaskResult:
    """What happened to one DAG task."""

    phase: str = "Pending"  # Succeeded, Failed, Skipped, Omitted; Pending = never reached
    message: str = ""
    attempts: int = 0
    duration_s: float = 0.0
    exit_code: int | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> host path


@dataclass
class _Task:
    name: str
    template: dict[str, Any]  # the container template it calls
    spec: dict[str, Any]  # the DAG task itself
    needs: list[tuple[str, frozenset[str]]]  # (task, phases that satisfy the dependency)


@dataclass
class _Run:
    workflow: dict[str, str]  # workflow.* variables, parameters included
    run_dir: Path
    backend: str
    env: dict[str, str]
    docker: str
    say: Callable[[str], None]
    results: dict[str, TaskResult] = field(default_factory=dict)


def run_rendered(
    template: dict,
    parameters: dict[str, str],
    *,
    run_dir: Path,
    backend: str = "process",
    env: dict[str, str] | None = None,
    lock_file: Path | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
    docker: str = "docker",
    out: TextIO | None = None,
) -> int:
    """Run the rendered WorkflowTemplate `template` locally with workflow `parameters`.

    Args:
        template: the WorkflowTemplate (or Workflow) dict exactly as rendered for Argo.
        parameters: workflow parameters overriding the template's defaults.
        run_dir: new or empty directory for task work dirs, logs and `run.json`.
        backend: `process` (subprocesses of this interpreter) or `docker` (the template's images).
        env: extra environment for every step (the template's own env wins over it).
        lock_file: held for the whole run; default `local-runner.lock` in DEPLOY_STATE_DIR
            (or .demo/serve).
        lock_timeout: seconds to wait for another local run to finish before refusing.
        docker: the docker client program (docker backend only).
        out: where progress goes (default stdout).

    Returns:
        0 if every task succeeded or was skipped, 1 if a task failed.

    Raises:
        LocalRunError: unsupported template feature, bad parameter, busy lock, unusable run_dir.
    """
    if backend not in BACKENDS:
        raise LocalRunError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    values = _workflow_parameters(template, parameters)
    tasks = _plan(template)
    metadata = template.get("metadata", {})
    prefix = metadata.get("generateName") or metadata.get("name", "workflow") + "-"
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    workflow = {
        "workflow.name": prefix + suffix,
        "workflow.uid": str(uuid.uuid4()),
        "workflow.namespace": metadata.get("namespace") or "default",
        **{f"workflow.parameters.{k}": v for k, v in values.items()},
    }
    run_dir = Path(run_dir).resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise LocalRunError(f"run dir {run_dir} is not empty; give each run its own directory")
    extra_env = dict(env or {})
    if lock_file is None:
        state_dir = {**os.environ, **extra_env}.get("DEPLOY_STATE_DIR") or ".demo/serve"
        lock_file = Path(state_dir) / "local-runner.lock"
    stream = out or sys.stdout

    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    run = _Run(workflow, run_dir, backend, extra_env, docker, say)
    _check_env_sources(run, tasks)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(Path(lock_file), lock_timeout, say):
        return _execute(run, tasks)


def check_rendered(template: dict, parameters: dict[str, str]) -> None:
    """The checks `run_rendered` makes before running anything, without running anything.

    Raises:
        LocalRunError: an unsupported template feature or a bad workflow parameter.
    """
    _workflow_parameters(template, parameters)
    _plan(template)


def docker_command(
    image: str,
    command: list[str],
    args: list[str],
    env: Mapping[str, str],
    work_dir: Path,
    *,
    working_dir: str | None = None,
    docker: str = "docker",
) -> list[str]:
    """The `docker run` argv for one step: the pod's constraints (non-root, read-only root,
    writable /work and /tmp only) on the host network, so 127.0.0.1 services are reachable."""
    argv = [docker, "run", "--rm", "--network", "host", "--user", DOCKER_USER, "--read-only",
            "--tmpfs", "/tmp", "-v", f"{work_dir}:{CONTAINER_ROOT}"]  # fmt: skip
    for name, value in env.items():
        argv += ["-e", f"{name}={value}"]
    if working_dir:
        argv += ["--workdir", working_dir]
    # Kubernetes `command` replaces the image's ENTRYPOINT and `args` its CMD.
    if command:
        return [*argv, "--entrypoint", command[0], image, *command[1:], *args]
    return [*argv, image, *args]


# ---------------------------------------------------------------- checks before anything runs


def _workflow_parameters(template: dict, given: Mapping[str, str]) -> dict[str, str]:
    arguments = template.get("spec", {}).get("arguments", {})
    _check_fields(arguments, {"parameters"}, "spec.arguments")
    declared = arguments.get("parameters", [])
    for param in declared:
        _check_fields(param, {"name", "value", "enum"} | IGNORED_PARAMETER_FIELDS, "parameter")
    names = [p["name"] for p in declared]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise LocalRunError(f"unknown workflow parameter(s) {', '.join(unknown)}; known: {names}")
    values = {p["name"]: _as_str(p["value"]) for p in declared if "value" in p}
    values.update({k: _as_str(v) for k, v in given.items()})
    for param in declared:
        name, enum = param["name"], [_as_str(e) for e in param.get("enum", [])]
        if name not in values:
            raise LocalRunError(f"workflow parameter {name!r} has no value; pass it")
        if enum and values[name] not in enum:
            raise LocalRunError(f"workflow parameter {name}={values[name]!r} not in {enum}")
    return values


def _plan(template: dict) -> list[_Task]:
    """Check the whole template; return its tasks in the order they will run."""
    kind = template.get("kind", "WorkflowTemplate")
    if kind not in ("WorkflowTemplate", "Workflow", "ClusterWorkflowTemplate"):
        raise LocalRunError(f"cannot run a {kind}; pass the rendered WorkflowTemplate")
    _check_fields(template, IGNORED_TOP_FIELDS | {"spec"}, "the resource")
    spec = template.get("spec") or {}
    _check_fields(spec, IGNORED_SPEC_FIELDS | {"entrypoint", "arguments", "templates"}, "spec")
    for volume in spec.get("volumes", []):
        _check_volume(volume, "spec.volumes")
    by_name = {t["name"]: t for t in spec.get("templates", [])}
    entry = by_name.get(spec.get("entrypoint", ""))
    if entry is None:
        raise LocalRunError(f"entrypoint {spec.get('entrypoint')!r} is not a template")
    if "dag" not in entry:
        kinds = sorted(set(entry) & {"steps", "container", "script", "resource", "suspend"})
        raise LocalRunError(
            f"unsupported feature: entrypoint template {entry['name']!r} is {'/'.join(kinds)};"
            " it must be a dag"
        )
    _check_fields(entry, IGNORED_TEMPLATE_FIELDS | {"name", "dag"}, f"template {entry['name']}")
    _check_fields(entry["dag"], {"tasks", "failFast"}, f"dag of {entry['name']}")
    wf_vars = WORKFLOW_VARIABLES | {
        f"workflow.parameters.{p['name']}" for p in spec.get("arguments", {}).get("parameters", [])
    }

    raw_tasks = entry["dag"].get("tasks", [])
    names = [t["name"] for t in raw_tasks]
    tasks: dict[str, _Task] = {}
    for raw in raw_tasks:
        where = f"task {raw['name']}"
        allowed = {"name", "template", "depends", "dependencies", "when", "arguments"}
        _check_fields(raw, allowed, where)
        called = by_name.get(raw.get("template", ""))
        if called is None:
            raise LocalRunError(f"{where}: template {raw.get('template')!r} not found")
        _check_container_template(called, wf_vars)
        tasks[raw["name"]] = _Task(raw["name"], called, raw, _parse_depends(raw, names))
    order = _topological(tasks)
    ancestors: dict[str, set[str]] = {}
    for task in order:
        ancestors[task.name] = {d for d, _ in task.needs}
        ancestors[task.name] |= {a for d, _ in task.needs for a in ancestors[d]}
        _check_task(task, tasks, ancestors[task.name], wf_vars)
    return order


def _check_fields(obj: Mapping[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    extra = sorted(set(obj) - set(allowed))
    if extra:
        raise LocalRunError(f"unsupported feature in {where}: {', '.join(extra)}")


def _check_volume(volume: Mapping[str, Any], where: str) -> None:
    # A pod whose optional Secret does not exist starts with nothing mounted: locally it is absent.
    optional_secret = set(volume) == {"name", "secret"} and volume["secret"].get("optional")
    if set(volume) - {"name", "emptyDir"} and not optional_secret:
        raise LocalRunError(
            f"unsupported feature in {where}: volume {volume.get('name')!r}"
            " (only emptyDir and optional secret volumes)"
        )


def _check_container_template(tpl: Mapping[str, Any], wf_vars: frozenset[str]) -> None:
    where = f"template {tpl['name']}"
    for kind in ("steps", "script", "resource", "suspend", "dag", "data", "http", "plugin"):
        if kind in tpl:
            raise LocalRunError(f"unsupported feature in {where}: {kind} template")
    allowed = IGNORED_TEMPLATE_FIELDS | {"name", "container", "inputs", "outputs", "retryStrategy"}
    _check_fields(tpl, allowed, where)
    container = tpl.get("container")
    if container is None:
        raise LocalRunError(f"{where}: no container")
    allowed = IGNORED_CONTAINER_FIELDS | {"image", "command", "args", "env", "workingDir"}
    _check_fields(container, allowed, f"{where}.container")
    volumes = {v["name"]: v for v in tpl.get("volumes", [])}
    for volume in volumes.values():
        _check_volume(volume, f"{where}.volumes")
    for mount in container.get("volumeMounts", []):
        path = mount.get("mountPath")
        if path not in PROVIDED_MOUNTS and "secret" not in volumes.get(mount.get("name"), {}):
            raise LocalRunError(f"unsupported feature in {where}: volume mount at {path}")
    for item in container.get("env", []):
        _check_fields(item, {"name", "value", "valueFrom"}, f"{where} env {item.get('name')}")
    inputs, outputs = tpl.get("inputs", {}), tpl.get("outputs", {})
    _check_fields(inputs, {"parameters", "artifacts"}, f"{where}.inputs")
    _check_fields(outputs, {"parameters", "artifacts"}, f"{where}.outputs")
    for p in inputs.get("parameters", []):
        allowed = {"name", "default", "value", "enum"} | IGNORED_PARAMETER_FIELDS
        _check_fields(p, allowed, f"{where} input {p['name']}")
    for p in outputs.get("parameters", []):
        _check_fields(p, {"name", "valueFrom"} | IGNORED_PARAMETER_FIELDS, f"{where} {p['name']}")
        _check_fields(p.get("valueFrom", {}), {"path", "default"}, f"{where} {p['name']}.valueFrom")
        if "path" not in p.get("valueFrom", {}):
            raise LocalRunError(f"{where}: output parameter {p['name']} needs valueFrom.path")
        _check_vars(p["valueFrom"], frozenset(), where)  # a literal path, read by the runner
    for a in [*inputs.get("artifacts", []), *outputs.get("artifacts", [])]:
        allowed = {"name", "path", "optional"} | IGNORED_ARTIFACT_FIELDS
        _check_fields(a, allowed, f"{where} artifact {a['name']}")
        if not _under_work(a.get("path", "")):
            raise LocalRunError(
                f"{where}: artifact {a['name']} path must be under {CONTAINER_ROOT}"
            )
    retry = tpl.get("retryStrategy", {})
    _check_fields(retry, {"limit", "retryPolicy", "backoff"}, f"{where}.retryStrategy")
    if retry.get("retryPolicy", "OnFailure") not in ("OnFailure", "Always"):
        raise LocalRunError(f"unsupported feature in {where}: retryPolicy {retry['retryPolicy']}")
    known = wf_vars | {f"inputs.parameters.{p['name']}" for p in inputs.get("parameters", [])}
    known |= {f"inputs.artifacts.{a['name']}.path" for a in inputs.get("artifacts", [])}
    known |= {f"outputs.parameters.{p['name']}.path" for p in outputs.get("parameters", [])}
    known |= {f"outputs.artifacts.{a['name']}.path" for a in outputs.get("artifacts", [])}
    _check_vars(container, known, where)


def _parse_depends(raw: Mapping[str, Any], names: list[str]) -> list[tuple[str, frozenset[str]]]:
    where = f"task {raw['name']}"
    if "depends" in raw and "dependencies" in raw:
        raise LocalRunError(f"{where}: use either depends or dependencies, not both")
    if "depends" in raw:
        expr = str(raw["depends"])
        if any(token in expr for token in ("||", "!", "(", ")")):
            raise LocalRunError(f"unsupported feature in {where}: depends expression {expr!r}")
        terms = [term.strip() for term in expr.split("&&")]
    else:
        terms = list(raw.get("dependencies", []))
    needs = []
    for term in terms:
        match = _DEPENDS_TERM.match(term)
        if not match or match.group(1) not in names:
            raise LocalRunError(f"unsupported feature in {where}: depends term {term!r}")
        # A bare name is Succeeded or Skipped, as Argo expands it (nothing is Daemoned here).
        phases = {match.group(2)} if match.group(2) else {"Succeeded", "Skipped"}
        needs.append((match.group(1), frozenset(phases)))
    return needs


def _topological(tasks: dict[str, _Task]) -> list[_Task]:
    order: list[_Task] = []
    pending = list(tasks.values())
    while pending:
        done = {t.name for t in order}
        ready = next((t for t in pending if all(d in done for d, _ in t.needs)), None)
        if ready is None:
            raise LocalRunError(
                f"dependency cycle among tasks {', '.join(t.name for t in pending)}"
            )
        order.append(ready)
        pending.remove(ready)
    return order


def _check_task(
    task: _Task, tasks: Mapping[str, _Task], ancestors: set[str], wf_vars: frozenset[str]
) -> None:
    """Arguments match the template's inputs and use only outputs of tasks that run before."""
    where = f"task {task.name}"
    known = set(wf_vars)
    for name in ancestors:
        outputs = tasks[name].template.get("outputs", {}).get("parameters", [])
        known |= {f"tasks.{name}.outputs.parameters.{p['name']}" for p in outputs}
    arguments = task.spec.get("arguments", {})
    _check_fields(arguments, {"parameters", "artifacts"}, f"{where}.arguments")
    _check_vars([task.spec.get("when", ""), arguments.get("parameters", [])], known, where)
    if task.spec.get("when"):  # the shape is checked now, the values once the inputs exist
        _evaluate_when(_VAR.sub("0", task.spec["when"]), task.name)
    inputs = task.template.get("inputs", {})
    declared = {p["name"] for p in inputs.get("parameters", [])}
    for p in arguments.get("parameters", []):
        allowed = {"name", "value"} | IGNORED_PARAMETER_FIELDS
        _check_fields(p, allowed, f"{where} argument {p['name']}")
        if p["name"] not in declared:
            raise LocalRunError(f"{where}: {p['name']} is not an input of {task.template['name']}")
    declared = {a["name"] for a in inputs.get("artifacts", [])}
    for a in arguments.get("artifacts", []):
        _check_fields(a, {"name", "from"}, f"{where} argument artifact {a['name']}")
        match = _TASK_ARTIFACT.match(a.get("from", ""))
        producer = tasks[match.group(1)] if match and match.group(1) in ancestors else None
        outputs = producer.template.get("outputs", {}).get("artifacts", []) if producer else []
        if match is None or match.group(2) not in {x["name"] for x in outputs}:
            raise LocalRunError(
                f"{where}: artifact {a['name']} from {a.get('from')!r} is not an output artifact"
                " of a task it depends on"
            )
        if a["name"] not in declared:
            raise LocalRunError(f"{where}: {a['name']} is not an input of {task.template['name']}")


def _check_vars(obj: Any, known: set[str] | frozenset[str], where: str) -> None:
    for text in _strings(obj):
        for raw in _VAR.findall(text):
            name = raw.strip()
            if name.startswith("="):
                raise LocalRunError(f"unsupported feature in {where}: expression tag {{{{{raw}}}}}")
            if name not in known:
                raise LocalRunError(f"unsupported or unknown variable {{{{{name}}}}} in {where}")


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from _strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _strings(value)


# ---------------------------------------------------------------- running


def _execute(run: _Run, tasks: list[_Task]) -> int:
    run.results = {t.name: TaskResult() for t in tasks}
    width = max((len(t.name) for t in tasks), default=4)
    started = time.monotonic()
    run.say(f"workflow {run.workflow['workflow.name']} (uid {run.workflow['workflow.uid']})")
    run.say(f"  backend {run.backend}, run dir {run.run_dir}")
    failed = None
    for task in tasks:
        result = run.results[task.name]
        unmet = [d for d, phases in task.needs if run.results[d].phase not in phases]
        scope = dict(run.workflow)
        for name, res in run.results.items():
            scope |= {f"tasks.{name}.outputs.parameters.{k}": v for k, v in res.parameters.items()}
        try:
            condition = "" if unmet else _substitute(task.spec.get("when", ""), scope, task.name)
            if unmet:
                result.phase, result.message = "Omitted", f"needs {', '.join(unmet)}"
            elif condition and not _evaluate_when(condition, task.name):
                result.phase, result.message = "Skipped", f"when '{condition}' is false"
            else:
                run.say(f"  {task.name:<{width}}  Running")
                _run_task(run, task, scope)
        except LocalRunError as exc:  # e.g. an input that a skipped task should have produced
            result.phase, result.message = "Failed", str(exc)
        except KeyboardInterrupt:  # subprocess.run has killed the step; still write run.json
            result.phase, result.message = "Failed", "interrupted"
        outputs = " ".join(f"{k}={_short(v)}" for k, v in result.parameters.items())
        detail = result.message or outputs
        run.say(f"  {task.name:<{width}}  {result.phase:<9} {result.duration_s:6.1f}s  {detail}")
        if result.phase == "Failed":
            failed = task.name
            for line in _tail(run.run_dir / task.name / "stderr.log", STDERR_TAIL_LINES):
                run.say(f"    | {line}")
            break  # Argo's failFast: no new tasks start after a failure
    phase = "Failed" if failed else "Succeeded"
    total = time.monotonic() - started
    prefix = "workflow.parameters."
    summary = {
        "name": run.workflow["workflow.name"],
        "uid": run.workflow["workflow.uid"],
        "backend": run.backend,
        "phase": phase,
        "duration_s": round(total, 2),
        "parameters": {
            k[len(prefix) :]: v for k, v in run.workflow.items() if k.startswith(prefix)
        },
        "tasks": {name: _result_json(res) for name, res in run.results.items()},
    }
    tmp = run.run_dir / "run.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(run.run_dir / "run.json")
    run.say(f"workflow {summary['name']} {phase} in {total:.1f}s; see {run.run_dir}/run.json")
    if failed:
        message = run.results[failed].message
        run.say(f"error: task {failed!r} failed: {message}; logs in {run.run_dir / failed}")
        return 1
    return 0


def _run_task(run: _Run, task: _Task, dag_scope: Mapping[str, str]) -> None:
    """Stage the inputs, run the container (with retries), collect the outputs into the result."""
    tpl, where, result = task.template, f"task {task.name}", run.results[task.name]
    task_dir = run.run_dir / task.name
    work = task_dir / "work"
    work.mkdir(parents=True)

    # Process backend: /work in the template's own text (not in parameter values) becomes the
    # task's work dir; the docker backend mounts that dir at /work instead.
    def local(text: str) -> str:
        return _WORK_PATH.sub(str(work), text) if run.backend == "process" else text

    scope = dict(run.workflow)
    arguments = task.spec.get("arguments", {})
    given = {p["name"]: _as_str(p.get("value", "")) for p in arguments.get("parameters", [])}
    for p in tpl.get("inputs", {}).get("parameters", []):
        value = given.get(p["name"], p.get("default", p.get("value")))
        if value is None:
            raise LocalRunError(f"{where}: input parameter {p['name']} has no value")
        value = _substitute(_as_str(value), dag_scope, task.name)
        enum = [_as_str(e) for e in p.get("enum", [])]
        if enum and value not in enum:
            raise LocalRunError(f"{where}: input parameter {p['name']}={value!r} not in {enum}")
        scope[f"inputs.parameters.{p['name']}"] = value
    sources = {a["name"]: _TASK_ARTIFACT.match(a["from"]) for a in arguments.get("artifacts", [])}
    for a in tpl.get("inputs", {}).get("artifacts", []):
        scope[f"inputs.artifacts.{a['name']}.path"] = local(a["path"])
        match = sources.get(a["name"])
        if match is None:
            if not a.get("optional"):
                raise LocalRunError(f"{where}: input artifact {a['name']} has no source")
            continue
        producer, name = match.groups()
        source = run.results[producer].artifacts.get(name)
        if source is None:
            raise LocalRunError(f"{where}: artifact {a['name']} was not produced by {producer}")
        _copy(Path(source), _host_path(work, a["path"]))
    for p in tpl.get("outputs", {}).get("parameters", []):
        scope[f"outputs.parameters.{p['name']}.path"] = local(p["valueFrom"]["path"])
    for a in tpl.get("outputs", {}).get("artifacts", []):
        scope[f"outputs.artifacts.{a['name']}.path"] = local(a["path"])

    container = tpl["container"]
    command = [_substitute(local(_as_str(c)), scope, where) for c in container.get("command", [])]
    args = [_substitute(local(_as_str(c)), scope, where) for c in container.get("args", [])]
    step_env = dict(run.env)
    for item in container.get("env", []):
        if "valueFrom" in item:
            step_env[item["name"]] = _env_from(run, task, item)
        else:
            step_env[item["name"]] = _substitute(
                local(_as_str(item.get("value", ""))), scope, where
            )
    working_dir = container.get("workingDir")
    if run.backend == "docker":
        if not container.get("image"):
            raise LocalRunError(f"{where}: the docker backend needs container.image")
        for directory in [work, *(p for p in work.rglob("*") if p.is_dir())]:
            directory.chmod(0o777)  # the step runs as UID 10001 and writes its outputs here
        argv = docker_command(container["image"], command, args, step_env, work,
                              working_dir=working_dir, docker=run.docker)  # fmt: skip
        cwd, proc_env = None, None
    else:
        argv = _local_command(command) + args
        if not argv:
            raise LocalRunError(f"{where}: the process backend needs container.command or args")
        # Steps start `mlflow` and `uvicorn` as programs: this interpreter's bin/ goes first.
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        proc_env = {**os.environ, "PATH": path, **step_env}
        cwd = local(working_dir) if working_dir else None

    _attempt(run, task, argv, cwd, proc_env)
    if result.exit_code == 0:
        _collect_outputs(tpl, work, result)


def _env_from(run: _Run, task: _Task, item: Mapping[str, Any]) -> str:
    """A `valueFrom` env entry: the caller's variable, else a fieldRef we can answer, else error."""
    value = {**os.environ, **run.env}.get(item["name"])
    field_path = item["valueFrom"].get("fieldRef", {}).get("fieldPath")
    if value is None and field_path == "metadata.namespace":
        value = run.workflow["workflow.namespace"]
    elif value is None and field_path == "metadata.name":
        value = f"{run.workflow['workflow.name']}-{task.name}"
    if value is None:
        raise LocalRunError(
            f"task {task.name}: env {item['name']} comes from {json.dumps(item['valueFrom'])};"
            f" set {item['name']} in the environment to run locally"
        )
    return value


def _check_env_sources(run: _Run, tasks: list[_Task]) -> None:
    """Every `valueFrom` env entry can be answered, before any task runs."""
    for task in tasks:
        for item in task.template["container"].get("env", []):
            if "valueFrom" in item:
                _env_from(run, task, item)


def _attempt(
    run: _Run, task: _Task, argv: list[str], cwd: str | None, env: dict[str, str] | None
) -> None:
    """Run `argv` until it exits 0 or `retryStrategy.limit` retries are used up."""
    result, task_dir = run.results[task.name], run.run_dir / task.name
    retry = task.template.get("retryStrategy", {})
    limit = int(retry.get("limit", 0))
    backoff = retry.get("backoff", {})
    delay, factor = _duration_s(backoff.get("duration", "0")), float(backoff.get("factor", 1))
    started = time.monotonic()
    for attempt in range(1, limit + 2):
        result.attempts = attempt
        # Files, not pipes: a step may leave a daemon (the model server) holding them open.
        with (task_dir / "stdout.log").open("wb") as so, (task_dir / "stderr.log").open("wb") as se:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=so, stderr=se,
                                  cwd=cwd, env=env, check=False)  # fmt: skip
        result.exit_code = proc.returncode
        if proc.returncode == 0 or attempt > limit:
            break
        last = " ".join(_tail(task_dir / "stderr.log", 1))
        backoff_s = delay * factor ** (attempt - 1)
        wait_s = min(backoff_s, MAX_LOCAL_BACKOFF_S)  # a laptop run should not sit out 30 s
        run.say(
            f"    retry {attempt}/{limit} in {wait_s:g}s (template backoff {backoff_s:g}s)"
            f" after exit {proc.returncode}: {last}"
        )
        time.sleep(wait_s)
    result.duration_s = time.monotonic() - started
    if result.exit_code != 0:
        result.phase = "Failed"
        result.message = f"exit code {result.exit_code} after {result.attempts} attempt(s)"


def _collect_outputs(tpl: Mapping[str, Any], work: Path, result: TaskResult) -> None:
    """Output parameters from their `valueFrom.path` files, output artifacts by host path."""
    for p in tpl.get("outputs", {}).get("parameters", []):
        path = _host_path(work, p["valueFrom"]["path"])
        if path.is_file():
            result.parameters[p["name"]] = path.read_text().rstrip("\n")
        elif "default" in p["valueFrom"]:
            result.parameters[p["name"]] = _as_str(p["valueFrom"]["default"])
        else:
            result.phase = "Failed"
            result.message = f"output parameter {p['name']}: {p['valueFrom']['path']} not written"
            return
    for a in tpl.get("outputs", {}).get("artifacts", []):
        path = _host_path(work, a["path"])
        if path.exists():
            result.artifacts[a["name"]] = str(path)
        elif not a.get("optional"):
            result.phase = "Failed"
            result.message = f"output artifact {a['name']}: {a['path']} not written"
            return
    result.phase = "Succeeded"


# ---------------------------------------------------------------- small helpers


def _substitute(text: str, scope: Mapping[str, str], task: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if name not in scope:
            raise LocalRunError(f"task {task}: {{{{{name}}}}} has no value (did its task run?)")
        return scope[name]

    return _VAR.sub(replace, text)


def _evaluate_when(expr: str, task: str) -> bool:
    """A substituted `when`: `true`, `false` or one comparison of two operands."""
    text = expr.strip()
    if text in ("true", "false"):
        return text == "true"
    match = _COMPARISON.match(text)
    if not match or any(token in text for token in ("&&", "||", "(", ")")):
        raise LocalRunError(f"unsupported when expression in task {task}: {expr!r}")
    left, op, right = match.group(1).strip("'\""), match.group(2), match.group(3).strip("'\"")
    try:
        a: Any = float(left)
        b: Any = float(right)
    except ValueError:
        if op not in ("==", "!="):
            raise LocalRunError(f"when in task {task}: {op} needs numbers, got {expr!r}") from None
        a, b = left, right
    return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def _local_command(command: list[str]) -> list[str]:
    if command and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return command


def _under_work(path: str) -> bool:
    return path == CONTAINER_ROOT or path.startswith(CONTAINER_ROOT + "/")


def _host_path(work: Path, container_path: str) -> Path:
    if not _under_work(container_path):
        raise LocalRunError(f"path {container_path} is outside {CONTAINER_ROOT}")
    return work / container_path[len(CONTAINER_ROOT) :].lstrip("/")


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


def _as_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _duration_s(value: Any) -> float:
    text = str(value).strip()
    for suffix, seconds in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * seconds
    return float(text or 0)


def _short(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _tail(path: Path, lines: int) -> list[str]:
    if not path.exists():
        return []
    return path.read_text(errors="replace").splitlines()[-lines:]


def _result_json(result: TaskResult) -> dict[str, Any]:
    return {
        "phase": result.phase,
        "message": result.message,
        "attempts": result.attempts,
        "duration_s": round(result.duration_s, 2),
        "exit_code": result.exit_code,
        "outputs": {"parameters": result.parameters, "artifacts": result.artifacts},
    }


@contextmanager
def _exclusive_lock(path: Path, timeout: float, say: Callable[[str], None]) -> Iterator[None]:
    """Hold an exclusive flock on `path`; wait up to `timeout` s for another run, then refuse."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                if time.monotonic() >= deadline:
                    raise LocalRunError(
                        f"another local run (pid {holder}) holds {path};"
                        f" waited {timeout:.0f}s, try again later"
                    ) from None
                if not told:
                    say(f"waiting up to {timeout:.0f}s for local run pid {holder} ({path})")
                    told = True
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
