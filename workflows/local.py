"""Run a rendered Argo WorkflowTemplate on this machine, no cluster: each DAG task's container runs
as a subprocess (backend `process`) or a `docker run` (backend `docker`), in dependency order.

What runs locally is the rendered dict Argo would get, so the runner supports exactly the subset our
templates use and rejects everything else by name (`LocalRunError`), never skipping it silently:

- `spec.entrypoint` names a `dag` template whose tasks each call a `container` template; tasks run
  one at a time in dependency order (ties keep template order). Argo would run independent tasks
  in parallel; our pipeline is a chain, so the result is the same.
- `depends`: task names joined by `&&`, each bare (`a`: Succeeded or Skipped, as in Argo) or with
  `.Succeeded`, `.Skipped` or `.Failed`; or the legacy `dependencies` list (same as bare names).
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

# Fields accepted and ignored because they do not change what runs or what it computes:
# scheduling, pod security and resources, cleanup, metadata, artifact storage settings.
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

_VAR = re.compile(r"\{\{(.*?)\}\}")
_WORK_PATH = re.compile(r"(?<![\w./-])/work(?![\w.-])")
_TASK_OUTPUT_ARTIFACT = re.compile(r"^\{\{\s*tasks\.([\w-]+)\.outputs\.artifacts\.([\w-]+)\s*\}\}$")
_DEPENDS_TERM = re.compile(r"^([\w-]+?)(?:\.(Succeeded|Skipped|Failed))?$")
_COMPARISON = re.compile(r"^\s*(\S+?)\s*(==|!=|<=|>=|<|>)\s*(\S+?)\s*$")


class LocalRunError(StepError):
    """The template uses something the local runner does not support, or a run cannot start."""


@dataclass
class TaskResult:
    """What happened to one DAG task."""

    phase: str = "Pending"  # Succeeded, Failed, Skipped, Omitted, Pending (never reached)
    message: str = ""
    attempts: int = 0
    duration_s: float = 0.0
    exit_code: int | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> host path


@dataclass
class _Task:
    name: str
    template: dict[str, Any]
    needs: list[tuple[str, frozenset[str]]]  # (task, phases that satisfy it)
    spec: dict[str, Any]


# --------------------------------------------------------------------------- public entry point


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
        run_dir: fresh or empty directory for task work dirs, logs and `run.json`.
        backend: `process` (subprocesses in this venv) or `docker` (the template's images).
        env: extra environment for every step (the template's own env wins over it).
        lock_file: lock held for the whole run; default under DEPLOY_STATE_DIR (or .demo/serve).
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
    stream = out or sys.stdout
    extra_env = dict(env or {})
    workflow_params = _workflow_parameters(template, parameters)
    tasks = _plan(template)
    name_prefix = template.get("metadata", {}).get("generateName") or (
        template.get("metadata", {}).get("name", "workflow") + "-"
    )
    alphabet = string.ascii_lowercase + string.digits
    workflow = {
        "workflow.name": name_prefix + "".join(secrets.choice(alphabet) for _ in range(5)),
        "workflow.uid": str(uuid.uuid4()),
        "workflow.namespace": template.get("metadata", {}).get("namespace") or "default",
        **{f"workflow.parameters.{k}": v for k, v in workflow_params.items()},
    }
    run_dir = Path(run_dir).resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise LocalRunError(f"run dir {run_dir} is not empty; give each run its own directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    if lock_file is None:
        state_dir = {**os.environ, **extra_env}.get("DEPLOY_STATE_DIR") or ".demo/serve"
        lock_file = Path(state_dir) / "local-runner.lock"

    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    with _exclusive_lock(Path(lock_file), lock_timeout, say):
        return _execute(tasks, workflow, run_dir, backend, extra_env, docker, say)


# --------------------------------------------------------------------------- validation / plan


def _workflow_parameters(template: dict, given: Mapping[str, str]) -> dict[str, str]:
    declared = template.get("spec", {}).get("arguments", {}).get("parameters", [])
    for key in template.get("spec", {}).get("arguments", {}):
        if key != "parameters":
            raise LocalRunError(f"unsupported feature: spec.arguments.{key}")
    values: dict[str, str] = {}
    for param in declared:
        _check_fields(param, {"name", "value", "enum"} | IGNORED_PARAMETER_FIELDS, "parameter")
        if "value" in param:
            values[param["name"]] = _as_str(param["value"])
    names = {p["name"] for p in declared}
    unknown = sorted(set(given) - names)
    if unknown:
        raise LocalRunError(
            f"unknown workflow parameter(s) {', '.join(unknown)}; known: {sorted(names)}"
        )
    values.update({k: _as_str(v) for k, v in given.items()})
    for param in declared:
        name = param["name"]
        if name not in values:
            raise LocalRunError(f"workflow parameter {name!r} has no value; pass it")
        enum = [_as_str(e) for e in param.get("enum", [])]
        if enum and values[name] not in enum:
            raise LocalRunError(f"workflow parameter {name}={values[name]!r} not in {enum}")
    return values


def _check_fields(obj: Mapping[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    extra = sorted(set(obj) - set(allowed))
    if extra:
        raise LocalRunError(f"unsupported feature in {where}: {', '.join(extra)}")


def _plan(template: dict) -> list[_Task]:
    """Check the whole template before anything runs; return the tasks in execution order."""
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

    raw_tasks = entry["dag"].get("tasks", [])
    task_names = [t["name"] for t in raw_tasks]
    tasks: dict[str, _Task] = {}
    for raw in raw_tasks:
        where = f"task {raw['name']}"
        _check_fields(
            raw, {"name", "template", "depends", "dependencies", "when", "arguments"}, where
        )
        called = by_name.get(raw.get("template", ""))
        if called is None:
            raise LocalRunError(f"{where}: template {raw.get('template')!r} not found")
        _check_container_template(called)
        if "depends" in raw and "dependencies" in raw:
            raise LocalRunError(f"{where}: use either depends or dependencies, not both")
        needs = _parse_depends(raw, task_names)
        tasks[raw["name"]] = _Task(raw["name"], called, needs, raw)

    for task in tasks.values():
        _check_task_references(task, tasks, spec)
    return _topological(tasks)


def _check_volume(volume: Mapping[str, Any], where: str) -> None:
    # An optional Secret that does not exist leaves its mount empty in a pod; locally it is absent.
    optional_secret = set(volume) == {"name", "secret"} and volume["secret"].get("optional")
    if set(volume) - {"name", "emptyDir"} and not optional_secret:
        raise LocalRunError(
            f"unsupported feature in {where}: volume {volume.get('name')!r}"
            " (only emptyDir and optional secret volumes)"
        )


def _check_container_template(tpl: Mapping[str, Any]) -> None:
    where = f"template {tpl['name']}"
    for feature in ("steps", "script", "resource", "suspend", "dag", "data", "http", "plugin"):
        if feature in tpl:
            raise LocalRunError(f"unsupported feature in {where}: {feature} template")
    allowed = IGNORED_TEMPLATE_FIELDS | {"name", "container", "inputs", "outputs", "retryStrategy"}
    _check_fields(tpl, allowed, where)
    if "container" not in tpl:
        raise LocalRunError(f"{where}: no container")
    container = tpl["container"]
    allowed_c = IGNORED_CONTAINER_FIELDS | {"image", "command", "args", "env", "workingDir"}
    _check_fields(container, allowed_c, f"{where}.container")
    volumes = {v["name"]: v for v in tpl.get("volumes", [])}
    for volume in volumes.values():
        _check_volume(volume, f"{where}.volumes")
    for mount in container.get("volumeMounts", []):
        if mount.get("mountPath") not in PROVIDED_MOUNTS and "secret" not in volumes.get(
            mount.get("name"), {}
        ):
            raise LocalRunError(
                f"unsupported feature in {where}: volume mount at {mount.get('mountPath')}"
            )
    for item in container.get("env", []):
        _check_fields(item, {"name", "value", "valueFrom"}, f"{where} env {item.get('name')}")
    inputs, outputs = tpl.get("inputs", {}), tpl.get("outputs", {})
    _check_fields(inputs, {"parameters", "artifacts"}, f"{where}.inputs")
    _check_fields(outputs, {"parameters", "artifacts"}, f"{where}.outputs")
    for p in inputs.get("parameters", []):
        _check_fields(
            p,
            {"name", "default", "value", "enum"} | IGNORED_PARAMETER_FIELDS,
            f"{where} input {p['name']}",
        )
    for p in outputs.get("parameters", []):
        _check_fields(
            p, {"name", "valueFrom"} | IGNORED_PARAMETER_FIELDS, f"{where} output {p['name']}"
        )
        _check_fields(
            p.get("valueFrom", {}), {"path", "default"}, f"{where} output {p['name']}.valueFrom"
        )
        if "path" not in p.get("valueFrom", {}):
            raise LocalRunError(f"{where}: output parameter {p['name']} needs valueFrom.path")
    for kind_, arts in (
        ("input", inputs.get("artifacts", [])),
        ("output", outputs.get("artifacts", [])),
    ):
        for a in arts:
            _check_fields(
                a,
                {"name", "path", "optional"} | IGNORED_ARTIFACT_FIELDS,
                f"{where} {kind_} artifact {a['name']}",
            )
            if not _under_work(a.get("path", "")):
                raise LocalRunError(
                    f"{where}: {kind_} artifact {a['name']} path must be under {CONTAINER_ROOT}"
                )
    retry = tpl.get("retryStrategy", {})
    _check_fields(retry, {"limit", "retryPolicy", "backoff"}, f"{where}.retryStrategy")
    if retry.get("retryPolicy", "OnFailure") not in ("OnFailure", "Always"):
        raise LocalRunError(f"unsupported feature in {where}: retryPolicy {retry['retryPolicy']}")
    # Every variable a container uses must be one the runner can fill.
    known = _container_scope_names(tpl)
    _check_vars(container, known, where)
    for p in outputs.get("parameters", []):
        _check_vars(p["valueFrom"], set(), where)  # a literal path: no variables


def _container_scope_names(tpl: Mapping[str, Any]) -> set[str] | None:
    inputs, outputs = tpl.get("inputs", {}), tpl.get("outputs", {})
    names = {f"inputs.parameters.{p['name']}" for p in inputs.get("parameters", [])}
    names |= {f"inputs.artifacts.{a['name']}.path" for a in inputs.get("artifacts", [])}
    names |= {f"outputs.parameters.{p['name']}.path" for p in outputs.get("parameters", [])}
    names |= {f"outputs.artifacts.{a['name']}.path" for a in outputs.get("artifacts", [])}
    return names | {"workflow.name", "workflow.uid", "workflow.namespace", "workflow.parameters.*"}


def _parse_depends(
    raw: Mapping[str, Any], task_names: list[str]
) -> list[tuple[str, frozenset[str]]]:
    where = f"task {raw['name']}"
    if "dependencies" in raw:
        terms = list(raw["dependencies"])
    elif "depends" in raw:
        expr = str(raw["depends"])
        if any(tok in expr for tok in ("||", "!", "(", ")")):
            raise LocalRunError(
                f"unsupported feature in {where}: depends expression {expr!r} (only a && b)"
            )
        terms = [t.strip() for t in expr.split("&&")]
    else:
        return []
    needs = []
    for term in terms:
        match = _DEPENDS_TERM.match(term)
        if not match or match.group(1) not in task_names:
            raise LocalRunError(f"unsupported feature in {where}: depends term {term!r}")
        # A bare name means Succeeded or Skipped, as Argo expands it (Daemoned cannot happen here).
        phases = {match.group(2)} if match.group(2) else {"Succeeded", "Skipped"}
        needs.append((match.group(1), frozenset(phases)))
    return needs


def _check_task_references(
    task: _Task, tasks: Mapping[str, _Task], spec: Mapping[str, Any]
) -> None:
    where = f"task {task.name}"
    wf_params = {p["name"] for p in spec.get("arguments", {}).get("parameters", [])}
    known: set[str] = {"workflow.name", "workflow.uid", "workflow.namespace"}
    known |= {f"workflow.parameters.{n}" for n in wf_params}
    for other in tasks.values():
        for p in other.template.get("outputs", {}).get("parameters", []):
            known.add(f"tasks.{other.name}.outputs.parameters.{p['name']}")
    arguments = task.spec.get("arguments", {})
    _check_fields(arguments, {"parameters", "artifacts"}, f"{where}.arguments")
    _check_vars(task.spec.get("when", ""), known, where)
    _check_vars(arguments.get("parameters", []), known, where)
    declared_in = {p["name"] for p in task.template.get("inputs", {}).get("parameters", [])}
    for p in arguments.get("parameters", []):
        _check_fields(
            p, {"name", "value"} | IGNORED_PARAMETER_FIELDS, f"{where} argument {p['name']}"
        )
        if p["name"] not in declared_in:
            raise LocalRunError(
                f"{where}: argument {p['name']} is not an input of {task.template['name']}"
            )
    declared_art = {a["name"] for a in task.template.get("inputs", {}).get("artifacts", [])}
    for a in arguments.get("artifacts", []):
        _check_fields(a, {"name", "from"}, f"{where} argument artifact {a['name']}")
        match = _TASK_OUTPUT_ARTIFACT.match(a.get("from", ""))
        producer = tasks.get(match.group(1)) if match else None
        produced = (
            {x["name"] for x in producer.template.get("outputs", {}).get("artifacts", [])}
            if producer
            else set()
        )
        if not match or match.group(2) not in produced:
            raise LocalRunError(
                f"{where}: artifact {a['name']} from {a.get('from')!r} is not a task's output"
            )
        if a["name"] not in declared_art:
            raise LocalRunError(
                f"{where}: artifact {a['name']} is not an input of {task.template['name']}"
            )


def _check_vars(obj: Any, known: set[str] | None, where: str) -> None:
    for text in _strings(obj):
        for raw in _VAR.findall(text):
            name = raw.strip()
            if name.startswith("="):
                raise LocalRunError(f"unsupported feature in {where}: expression tag {{{{{raw}}}}}")
            if (
                known is not None
                and name not in known
                and not (
                    "workflow.parameters.*" in known and name.startswith("workflow.parameters.")
                )
            ):
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


def _topological(tasks: dict[str, _Task]) -> list[_Task]:
    order: list[_Task] = []
    done: set[str] = set()
    pending = list(tasks.values())
    while pending:
        ready = [t for t in pending if all(dep in done for dep, _ in t.needs)]
        if not ready:
            raise LocalRunError(
                f"dependency cycle among tasks {', '.join(t.name for t in pending)}"
            )
        order.append(ready[0])
        done.add(ready[0].name)
        pending.remove(ready[0])
    return order


# --------------------------------------------------------------------------- execution


def _execute(
    tasks: list[_Task],
    workflow: dict[str, str],
    run_dir: Path,
    backend: str,
    extra_env: dict[str, str],
    docker: str,
    say: Callable[[str], None],
) -> int:
    results = {t.name: TaskResult() for t in tasks}
    width = max(len(t.name) for t in tasks) if tasks else 4
    started = time.monotonic()
    say(f"workflow {workflow['workflow.name']} (uid {workflow['workflow.uid']}) backend={backend}")
    say(f"  run dir {run_dir}")
    failed: str | None = None
    for task in tasks:
        result = results[task.name]
        unmet = [d for d, phases in task.needs if results[d].phase not in phases]
        if unmet:
            result.phase, result.message = "Omitted", f"dependencies not met: {', '.join(unmet)}"
        else:
            dag_scope = dict(workflow)
            for name, res in results.items():
                dag_scope.update(
                    {f"tasks.{name}.outputs.parameters.{k}": v for k, v in res.parameters.items()}
                )
            condition = _substitute(task.spec.get("when", ""), dag_scope, f"task {task.name} when")
            if condition and not _evaluate_when(condition, task.name):
                result.phase, result.message = "Skipped", f"when '{condition}' is false"
            else:
                say(f"  {task.name:<{width}}  Running")
                _run_task(
                    task,
                    result,
                    dag_scope,
                    results,
                    workflow,
                    run_dir,
                    backend,
                    extra_env,
                    docker,
                    say,
                )
        outputs = " ".join(f"{k}={_short(v)}" for k, v in result.parameters.items())
        detail = result.message or outputs
        say(f"  {task.name:<{width}}  {result.phase:<9} {result.duration_s:6.1f}s  {detail}")
        if result.phase == "Failed":
            failed = task.name
            tail = run_dir / task.name / "stderr.log"
            for line in _tail(tail, STDERR_TAIL_LINES):
                say(f"    | {line}")
            break
    phase = "Failed" if failed else "Succeeded"
    total = time.monotonic() - started
    summary = {
        "name": workflow["workflow.name"],
        "uid": workflow["workflow.uid"],
        "backend": backend,
        "phase": phase,
        "duration_s": round(total, 2),
        "parameters": {
            k[len("workflow.parameters.") :]: v
            for k, v in workflow.items()
            if k.startswith("workflow.parameters.")
        },
        "tasks": {name: _result_json(res) for name, res in results.items()},
    }
    tmp = run_dir / "run.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(run_dir / "run.json")
    say(f"workflow {workflow['workflow.name']} {phase} in {total:.1f}s; see {run_dir}/run.json")
    if failed:
        res = results[failed]
        say(f"error: task {failed!r} failed: {res.message}; logs in {run_dir / failed}")
        return 1
    return 0


def _run_task(
    task: _Task,
    result: TaskResult,
    dag_scope: dict[str, str],
    results: Mapping[str, TaskResult],
    workflow: Mapping[str, str],
    run_dir: Path,
    backend: str,
    extra_env: dict[str, str],
    docker: str,
    say: Callable[[str], None],
) -> None:
    tpl, where = task.template, f"task {task.name}"
    task_dir = run_dir / task.name
    work = task_dir / "work"
    work.mkdir(parents=True)

    # Process backend: /work in the template's own text (not in parameter values) becomes the
    # task's work dir; the docker backend mounts that dir at /work instead.
    def to_local(text: str) -> str:
        return _WORK_PATH.sub(str(work), text) if backend == "process" else text

    arguments = task.spec.get("arguments", {})
    given = {
        p["name"]: _substitute(_as_str(p.get("value", "")), dag_scope, where)
        for p in arguments.get("parameters", [])
    }

    scope = {k: v for k, v in workflow.items()}
    for p in tpl.get("inputs", {}).get("parameters", []):
        value = given.get(p["name"], p.get("default", p.get("value")))
        if value is None:
            raise LocalRunError(f"{where}: input parameter {p['name']} has no value")
        enum = [_as_str(e) for e in p.get("enum", [])]
        if enum and _as_str(value) not in enum:
            raise LocalRunError(f"{where}: input parameter {p['name']}={value!r} not in {enum}")
        scope[f"inputs.parameters.{p['name']}"] = _as_str(value)
    sources = {}
    for a in arguments.get("artifacts", []):
        match = _TASK_OUTPUT_ARTIFACT.match(a["from"])
        assert match is not None  # checked by _plan
        producer, art = match.groups()
        path = results[producer].artifacts.get(art)
        if path is None:
            raise LocalRunError(
                f"{where}: artifact {a['name']} comes from {producer}, which did not produce it"
            )
        sources[a["name"]] = Path(path)
    for a in tpl.get("inputs", {}).get("artifacts", []):
        scope[f"inputs.artifacts.{a['name']}.path"] = to_local(a["path"])
        if a["name"] in sources:
            _copy(sources[a["name"]], _host_path(work, a["path"]))
        elif not a.get("optional"):
            raise LocalRunError(f"{where}: input artifact {a['name']} has no source")
    for kind in ("parameters", "artifacts"):
        for o in tpl.get("outputs", {}).get(kind, []):
            path = o["valueFrom"]["path"] if kind == "parameters" else o["path"]
            scope[f"outputs.{kind}.{o['name']}.path"] = to_local(path)

    container = tpl["container"]
    command = [
        _substitute(to_local(_as_str(c)), scope, where) for c in container.get("command", [])
    ]
    args = [_substitute(to_local(_as_str(c)), scope, where) for c in container.get("args", [])]
    step_env = dict(extra_env)
    for item in container.get("env", []):
        if "valueFrom" in item:
            value = {**os.environ, **extra_env}.get(item["name"])
            field_path = item["valueFrom"].get("fieldRef", {}).get("fieldPath")
            if value is None and field_path in ("metadata.namespace", "metadata.name"):
                pod_name = f"{workflow['workflow.name']}-{task.name}"
                namespace = workflow["workflow.namespace"]
                value = namespace if field_path == "metadata.namespace" else pod_name
            if value is None:
                raise LocalRunError(
                    f"{where}: env {item['name']} comes from {json.dumps(item['valueFrom'])};"
                    f" set {item['name']} in the environment to run locally"
                )
            step_env[item["name"]] = value
        else:
            value = to_local(_as_str(item.get("value", "")))
            step_env[item["name"]] = _substitute(value, scope, where)
    working_dir = container.get("workingDir")

    if backend == "docker":
        if not container.get("image"):
            raise LocalRunError(f"{where}: the docker backend needs container.image")
        work.chmod(0o777)  # the step runs as UID 10001 and writes its outputs here
        for sub in work.rglob("*"):
            if sub.is_dir():
                sub.chmod(0o777)
        argv = docker_command(
            container["image"],
            command,
            args,
            step_env,
            work,
            working_dir=working_dir,
            docker=docker,
        )
        cwd, proc_env = None, None
    else:
        argv = _local_command(command) + args
        if not argv:
            raise LocalRunError(f"{where}: the process backend needs container.command or args")
        proc_env = {**os.environ, **step_env}
        # Steps start `mlflow` and `uvicorn` as programs: put this venv's bin/ first on PATH.
        proc_env["PATH"] = os.pathsep.join(
            [str(Path(sys.executable).parent), proc_env.get("PATH", "")]
        )
        cwd = to_local(working_dir) if working_dir else None

    retry = tpl.get("retryStrategy", {})
    limit = int(retry.get("limit", 0))
    backoff = retry.get("backoff", {})
    delay, factor = _duration_s(backoff.get("duration", "0")), float(backoff.get("factor", 1))
    started = time.monotonic()
    for attempt in range(1, limit + 2):
        result.attempts = attempt
        with (task_dir / "stdout.log").open("wb") as so, (task_dir / "stderr.log").open("wb") as se:
            # Files, not pipes: a step may leave a daemon (the model server) holding them open.
            proc = subprocess.run(
                argv,
                stdout=so,
                stderr=se,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env=proc_env,
                check=False,
            )
        result.exit_code = proc.returncode
        if proc.returncode == 0:
            break
        if attempt <= limit:
            wait = min(delay * factor ** (attempt - 1), MAX_LOCAL_BACKOFF_S)
            last = _tail(task_dir / "stderr.log", 1)
            say(f"    retry {attempt}/{limit} after exit {proc.returncode}: {''.join(last)}")
            time.sleep(wait)
    result.duration_s = time.monotonic() - started
    if result.exit_code != 0:
        result.phase = "Failed"
        result.message = f"exit code {result.exit_code} after {result.attempts} attempt(s)"
        return
    for p in tpl.get("outputs", {}).get("parameters", []):
        path = _host_path(work, p["valueFrom"]["path"])
        if path.is_file():
            result.parameters[p["name"]] = path.read_text().rstrip("\n")
        elif "default" in p["valueFrom"]:
            result.parameters[p["name"]] = _as_str(p["valueFrom"]["default"])
        else:
            result.phase, result.message = (
                "Failed",
                f"output parameter {p['name']}: {p['valueFrom']['path']} was not written",
            )
            return
    for a in tpl.get("outputs", {}).get("artifacts", []):
        path = _host_path(work, a["path"])
        if path.exists():
            result.artifacts[a["name"]] = str(path)
        elif not a.get("optional"):
            result.phase, result.message = (
                "Failed",
                f"output artifact {a['name']}: {a['path']} was not written",
            )
            return
    result.phase = "Succeeded"


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
    # Kubernetes `command` replaces the image ENTRYPOINT and `args` its CMD; docker splits them so.
    if command:
        argv += ["--entrypoint", command[0], image, *command[1:], *args]
    else:
        argv += [image, *args]
    return argv


# --------------------------------------------------------------------------- small helpers


def _substitute(text: str, scope: Mapping[str, str], where: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if name not in scope:
            raise LocalRunError(
                f"variable {{{{{name}}}}} in {where} has no value (did its task run?)"
            )
        return scope[name]

    return _VAR.sub(replace, text)


def _evaluate_when(expr: str, task: str) -> bool:
    """Evaluate a substituted `when`: `true`, `false` or one comparison of two operands."""
    text = expr.strip()
    if text in ("true", "false"):
        return text == "true"
    match = _COMPARISON.match(text)
    if not match or any(tok in text for tok in ("&&", "||", "(", ")")):
        raise LocalRunError(f"unsupported when expression in task {task}: {expr!r}")
    left, op, right = (s.strip("'\"") if i != 1 else s for i, s in enumerate(match.groups()))
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
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
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
