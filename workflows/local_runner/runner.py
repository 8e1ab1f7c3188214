"""Running a planned local run: the lock, the tasks one at a time in dependency order (inputs
staged, container run, outputs collected), Argo's failFast, and the run record at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import string
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from steps.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_TRANSIENT
from steps.files import NotRegularFile, OverBound, blocking_parent, read_regular, what_is_at
from steps.mlflow_env import check_mlflow_environment
from steps.processes import RELEASE_LOCK_ENV, exclusive_lock, release_lock_path
from steps.stages import DEPLOY
from workflows.argo_rules import (
    MAX_MANIFEST_BYTES,
    ArgoRuleError,
    add_global_parameter,
    item_scope,
    parameter_text,
    read_when,
)
from workflows.local_runner.backends import (
    BACKENDS,
    attempt,
    check_env_sources,
    docker_command,
    env_from,
    process_command,
    process_environment,
)
from workflows.local_runner.cache import LocalCache
from workflows.local_runner.planning import (
    LocalRunError,
    PlannedTask,
    parallelism,
    plan,
    workflow_values,
)
from workflows.local_runner.preflight import preflight
from workflows.local_runner.run_record import (
    RUN_RECORD,
    Progress,
    TaskResult,
    write_run_record,
)
from workflows.local_runner.substitution import (
    ContainerPaths,
    artifact_sources,
    container_scope,
    dag_scope,
    fill,
    host_path,
    loop_nodes,
    memoization,
    with_items,
)

DEFAULT_LOCK_TIMEOUT_S = 600.0
LOCK_FILE = "local-runner.lock"
# deploy's --state-dir and its environment variable (steps/stages.py): the default lock's folder.
_STATE_DIR_FLAG = DEPLOY.flag("state-dir")
# Where a `local` deploy serves on this machine (deploy's --port and --state-dir): the command
# lines pass them on from their caller's environment (`caller_deploy_env`); the steps inherit no
# other variable a stage's flag reads (backends.STAGE_FLAG_ENV).
_PORT_FLAG = DEPLOY.flag("port")


def caller_deploy_env() -> dict[str, str]:
    """SERVE_PORT and DEPLOY_STATE_DIR as this process's caller set them (non-empty only): the
    `env` of `run_rendered` for a command line that serves the model here."""
    names = (_PORT_FLAG.env, _STATE_DIR_FLAG.env)
    return {name: os.environ[name] for name in names if name and os.environ.get(name)}


# What the cluster keeps between runs (artifact repository, memoization ConfigMaps), for the
# command lines and the demo; a run given no cache_dir gets one of its own.
DEFAULT_CACHE_DIR = Path(".demo/cache")
# The release a run changes: the MLflow tracking server and registered model these workflow
# parameters name. Local runs are serialised per release, as Argo's mutex serialises the runs of a
# namespace: two runs on one machine against the same MLflow and model wait for each other
# whatever their DEPLOY_STATE_DIR, so one cannot promote between the other's gate and deploy.
RELEASE_PARAMETERS = ("mlflow-tracking-uri", "model-name")


@dataclass
class _Run:
    workflow: dict[str, str]  # workflow.* variables, parameters included
    parameters: dict[str, str]
    run_dir: Path
    backend: str
    env: dict[str, str]
    docker: str
    progress: Progress
    cache: LocalCache
    parallelism: int | None  # items of a loop that may run at once (None: all)
    results: dict[str, TaskResult] = field(default_factory=dict)
    # The workflow's own outputs (task outputs with `globalName`), as Argo's status.outputs.
    outputs: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)  # items end in parallel


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
    cache_dir: Path | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the rendered WorkflowTemplate `template` locally with workflow `parameters`.

    Args:
        template: the WorkflowTemplate (or Workflow) dict exactly as rendered for Argo.
        parameters: workflow parameters overriding the template's defaults.
        run_dir: new or empty directory for task work dirs, logs and `run.json`.
        backend: `process` (subprocesses of this interpreter) or `docker` (the template's images).
        env: extra environment for every step (the template's own env wins over it).
        lock_file: held for the whole run; default `release_lock_file`: one per MLflow server
            and model, or for a template without them `local-runner.lock` in deploy's state
            directory (DEPLOY_STATE_DIR, else deploy's --state-dir default).
        lock_timeout: seconds to wait for another local run to finish before refusing.
        docker: the docker client program (docker backend only).
        out: where progress goes (default stdout).
        err: where the one `error:` line of a failed run goes (default stderr).
        cache_dir: what a cluster keeps between runs (`workflows/local_runner/cache.py`): the
            artifact repository of key-only artifacts and the memoization ConfigMaps. Default
            `<run_dir>/cache`: a run of its own, which finds nothing cached.

    Returns:
        0 if every task succeeded or was skipped; 75 (steps.cli.EXIT_TRANSIENT) if a task
        failed and its last attempt exited 75 (a rerun may pass); 1 for any other failure.

    Raises:
        LocalRunError: unsupported template feature, bad parameter, busy lock, a memoization
            cache file that is not a JSON object; BadDirectory (exit 2): an unusable run_dir
            or cache_dir.
    """
    tasks, values, workflow = _prepare(template, parameters, backend, env or {}, docker)
    run_dir = Path(run_dir).resolve()
    cache = LocalCache(Path(cache_dir).resolve() if cache_dir else run_dir / "cache")
    check_directories(run_dir, cache.root)
    check_memoization_caches(tasks, cache)
    extra_env = dict(env or {})
    if lock_file is None:
        state_dir = {**os.environ, **extra_env}.get(_STATE_DIR_FLAG.env) or _STATE_DIR_FLAG.default
        lock_file = release_lock_file(values, Path(state_dir))
    # Its steps run inside this lock: the promote CLI must not wait for it (steps/processes.py).
    extra_env[RELEASE_LOCK_ENV] = str(Path(lock_file).resolve())
    width = max((len(t.name) for t in tasks), default=4)
    progress = Progress(out, width, err)
    bound = parallelism(template)
    run = _Run(workflow, values, run_dir, backend, extra_env, docker, progress, cache, bound)
    run_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(
        Path(lock_file), lock_timeout, progress.say, what="local run", error=LocalRunError
    ):
        return _execute(run, tasks)


def check_rendered(
    template: dict,
    parameters: Mapping[str, str],
    backend: str = "process",
    env: Mapping[str, str] | None = None,
    docker: str = "docker",
    *,
    run_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> None:
    """The checks `run_rendered` makes before running anything, without running anything; with
    `run_dir` (and `cache_dir`) the directories and memoization cache files too, so a door that
    starts a server first (submit.py --local, the demo) refuses them before it does.

    Raises:
        LocalRunError: an unsupported template feature, a break of Argo's rules, a value the
            run would refuse (BadTemplate), a bad workflow parameter (BadParameter), an
            environment variable a step's `valueFrom` needs, an unusable run or cache
            directory (BadDirectory), a memoization cache file that is not a JSON object.
    """
    tasks, _, _ = _prepare(template, parameters, backend, env or {}, docker)
    if run_dir is not None:
        run_dir = Path(run_dir).resolve()
        cache = LocalCache(Path(cache_dir).resolve() if cache_dir else run_dir / "cache")
        check_directories(run_dir, cache.root)
        check_memoization_caches(tasks, cache)


class BadDirectory(LocalRunError):
    """A run or cache directory the run cannot use (a file, under a file, a run dir not empty):
    a bad argument, refused before anything starts."""

    exit_code = EXIT_BAD_INPUT


def check_directories(run_dir: Path, cache_dir: Path) -> None:
    """Refuse a run dir that is not a new or empty directory, and a cache dir (or its
    `memoize`/`artifacts` folders) that is something else than a directory, or lies under one.

    Raises:
        BadDirectory: naming the directory and what is wrong with it (exit 2).
    """
    for what, path in (("run dir", run_dir), ("cache dir", cache_dir)):
        try:
            found = what_is_at(path)
            parent = blocking_parent(path)
        except OSError as exc:
            raise BadDirectory(f"{what} {path} cannot be used: {exc.strerror or exc}") from None
        if parent is not None:
            raise BadDirectory(f"{what} {path} cannot be created: {parent} is not a directory")
        if found not in (None, "a directory"):
            raise BadDirectory(f"{what} {path} is {found}, not a directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise BadDirectory(f"run dir {run_dir} is not empty; give each run its own directory")
    for part in ("memoize", "artifacts"):
        found = what_is_at(cache_dir / part)
        if found not in (None, "a directory"):
            raise BadDirectory(f"cache dir {cache_dir} holds {found} at {part}, not a directory")


def check_memoization_caches(tasks: Sequence[PlannedTask], cache: LocalCache) -> None:
    """Read the cache file of every memoized template the run may call, those of the tasks of
    nested dag templates included: one that is not a JSON object of entries is refused now,
    not when its task starts after others have run.

    Raises:
        LocalRunError: the first such file (exit 1: the cache's state, not an argument).
    """
    for task in tasks:
        if task.template.get("memoize"):
            cache.check_entries(task.template["memoize"]["cache"]["configMap"]["name"])
        if task.dag:
            check_memoization_caches(task.dag, cache)


def _prepare(
    template: dict, parameters: Mapping[str, str], backend: str, env: Mapping[str, str], docker: str
) -> tuple[list[PlannedTask], dict[str, str], dict[str, str]]:
    """(tasks in run order, workflow parameter values, workflow variables) once every check
    that needs no task to run has passed: the template, the parameters, then the values."""
    if backend not in BACKENDS:
        raise LocalRunError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    tasks = plan(template)
    values = workflow_values(template, parameters)
    metadata = template.get("metadata") or {}
    prefix = metadata.get("generateName") or metadata.get("name", "workflow") + "-"
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    workflow = {
        "workflow.name": prefix + suffix,
        "workflow.uid": str(uuid.uuid4()),
        "workflow.namespace": metadata.get("namespace") or "default",
        **{f"workflow.parameters.{k}": v for k, v in values.items()},
    }
    check_env_sources(tasks, env, workflow)
    # What MLflow's client reads from the steps' environment (this process's on the process
    # backend, only `env` in a container), refused now rather than by train's first request.
    here = backend == "process"
    check_mlflow_environment(process_environment(env) if here else env, steps_here=here)
    preflight(tasks, workflow, backend, env, docker)
    return tasks, values, workflow


def _execute(run: _Run, tasks: list[PlannedTask]) -> int:
    run.results = {t.name: TaskResult() for t in tasks}
    started = time.monotonic()
    say = run.progress.say
    say(f"workflow {run.workflow['workflow.name']} (uid {run.workflow['workflow.uid']})")
    bound = "unbounded" if run.parallelism is None else str(run.parallelism)
    say(f"  backend {run.backend}, run dir {run.run_dir}, parallelism {bound}")
    failed = None
    if _run_dag(run, tasks, run.results, run.workflow, run.run_dir, ""):
        failed = next(
            _first_failed(t.name, run.results[t.name], Path(t.name))
            for t in tasks
            if run.results[t.name].phase == "Failed"
        )
    phase = "Failed" if failed else "Succeeded"
    total = time.monotonic() - started
    summary = write_run_record(
        run.run_dir,
        run.workflow,
        run.parameters,
        run.backend,
        phase,
        total,
        run.results,
        outputs=run.outputs,
    )
    say(f"workflow {summary['name']} {phase} in {total:.1f}s; see {run.run_dir / RUN_RECORD}")
    if failed:
        node, message, logs, code = failed
        run.progress.failed(f"task {node!r} failed: {message}; logs in {run.run_dir / logs}")
        # The failed task's own "try again later" carries through (a cron or a user may rerun
        # the whole run); any other failure of a run is 1, as `argo submit --wait` exits.
        return EXIT_TRANSIENT if code == EXIT_TRANSIENT else EXIT_FAILED
    return 0


def _run_dag(
    run: _Run,
    tasks: Sequence[PlannedTask],
    results: dict[str, TaskResult],
    base: Mapping[str, str],
    directory: Path,
    prefix: str,
) -> bool:
    """Run one DAG's `tasks` in order into `results`; True when one failed (Argo's failFast: no
    new task starts after it). `base`: what its tasks may name besides the tasks' outputs (the
    workflow's variables, and a nested dag's inputs); a task's node is `prefix` + its name, its
    files under `directory/<task>`."""
    templates = {t.name: t.template for t in tasks}
    for task in tasks:
        result = results[task.name]
        unmet = [t.task for t in task.needs if results[t.task].phase not in t.results]
        scope = dag_scope(base, results, templates)
        node = _Node(task, task.spec, prefix + task.name, directory / task.name, results)
        if unmet:
            result.phase, result.message = "Omitted", f"needs {', '.join(unmet)}"
            run.progress.ended(node.name, result, node.directory)
        elif task.loop:
            _run_loop(run, task, scope, result)
        else:
            _run_node(run, node, scope, result)
        if result.phase == "Failed":
            return True
    return False


def _first_failed(node: str, result: TaskResult, logs: Path) -> tuple[str, str, Path, int | None]:
    """(node name, message, log directory under the run dir, last exit code or None) of the
    failure in node `node` (logs in `logs`): its own, or its first failed item's or nested
    task's, innermost first."""
    for index, (child_node, child) in enumerate((result.children or {}).items()):
        if child.phase == "Failed":
            return _first_failed(child_node, child, logs / str(index))
    for task, child in (result.tasks or {}).items():
        if child.phase == "Failed":
            return _first_failed(f"{node}.{task}", child, logs / task)
    return node, result.message, logs, result.exit_code


def _from_cache(result: TaskResult) -> bool:
    """A node that ran nothing: a memoization hit, or a dag whose every task that succeeded did."""
    if result.tasks is not None:
        ran = [t for t in result.tasks.values() if t.phase == "Succeeded"]
        return bool(ran) and all(_from_cache(t) for t in ran)
    return bool((result.memoization or {}).get("hit"))


def _run_loop(run: _Run, task: PlannedTask, scope: Mapping[str, str], group: TaskResult) -> None:
    """A looping task: one node per item, at most `run.parallelism` at a time (each a process on
    the process backend), in loop order; Argo's failFast starts no new item after a failure.

    The group is Skipped with no items (docs/walk-through/loops.md), Failed when an item failed,
    else Succeeded; its outputs are its items' (`dag_scope` aggregates them).
    """
    where = f"task {task.name}"
    started = time.monotonic()
    try:
        nodes = loop_nodes(task, scope) or []
    except (ArgoRuleError, LocalRunError) as exc:
        group.phase, group.message = "Failed", f"{where}: {exc}"
        run.progress.ended(task.name, group, run.run_dir / task.name)
        return
    group.children = {node: TaskResult() for node, _ in nodes}
    if not nodes:
        group.phase, group.message = "Skipped", f"{task.loop} has no items"
        run.progress.ended(task.name, group, run.run_dir / task.name)
        return
    run.progress.width = max(run.progress.width, *(len(node) for node, _ in nodes))
    stop = threading.Event()

    def one(index: int, node: str, item: Any) -> None:
        if stop.is_set():
            return  # failFast: never started, as Argo creates no node for it
        result = group.children[node]
        try:
            spec = with_items(task.spec, item_scope(item))
        except LocalRunError as exc:
            result.phase, result.message = "Failed", f"{node}: {exc}"
        else:
            directory = run.run_dir / task.name / str(index)
            _run_node(run, _Node(task, spec, node, directory, run.results), scope, result)
        if result.phase == "Failed":
            stop.set()

    workers = run.parallelism or len(nodes)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=task.name) as pool:
        for future in [pool.submit(one, i, node, item) for i, (node, item) in enumerate(nodes)]:
            future.result()
    phases = [c.phase for c in group.children.values()]
    group.duration_s = time.monotonic() - started
    if "Failed" in phases:
        group.phase = "Failed"
        failed = [n for n, c in group.children.items() if c.phase == "Failed"]
        group.message = f"{len(failed)} of {len(nodes)} item(s) failed: {', '.join(failed)}"
    else:
        group.phase = "Succeeded"
        hits = sum(_from_cache(c) for c in group.children.values())
        group.message = f"{len(nodes)} item(s), {hits} from the memoization cache"
    run.progress.ended(task.name, group, run.run_dir / task.name)


@dataclass(frozen=True)
class _Node:
    """One node to run: a task, or one item of a looping task."""

    task: PlannedTask
    spec: Mapping[str, Any]  # the task, its `{{item...}}` filled in for an item
    name: str  # Argo's node name: the task's, `task(index:item)`, `<dag node>.<task>`
    directory: Path  # its logs and work dir
    results: Mapping[str, TaskResult]  # of the tasks of its DAG: where its `from` artifacts are


def _run_node(run: _Run, node: _Node, scope: Mapping[str, str], result: TaskResult) -> None:
    """One node: its `when`, then its memoization cache, else its container; progress lines and
    the workflow's global outputs as it ends."""
    try:
        condition = fill(node.spec.get("when", ""), scope, f"task {node.name}")
        if condition and not read_when(condition).holds():
            result.phase, result.message = "Skipped", f"when '{condition}' is false"
        else:
            run.progress.started(node.name)
            if node.task.dag is None:
                _run_task(run, node, scope, result)
            else:
                _run_dag_node(run, node, scope, result)
    except LocalRunError as exc:  # e.g. an input that a skipped task should have produced
        result.phase, result.message = "Failed", str(exc)
    except ArgoRuleError as exc:  # a `when` that is no comparison once its values are in
        result.phase, result.message = "Failed", f"task {node.name}: {exc}"
    except KeyboardInterrupt:  # subprocess.run has killed the step; still write run.json
        result.phase, result.message = "Failed", "interrupted"
    run.progress.ended(node.name, result, node.directory)
    if result.phase == "Succeeded":
        with run.lock:
            for param in (node.task.template.get("outputs") or {}).get("parameters") or []:
                if param.get("globalName") and param["name"] in result.parameters:
                    value = result.parameters[param["name"]]
                    add_global_parameter(run.outputs, param["globalName"], value)


def _run_dag_node(run: _Run, node: _Node, dag: Mapping[str, str], result: TaskResult) -> None:
    """A node of a dag template: its inputs from the task's arguments, then its tasks in order,
    each node named `<node>.<task>` as Argo names them (v4.1.2 workflow/controller/dag.go,
    taskNodeName). Its tasks see its inputs as `{{inputs.parameters.N}}`: Argo substitutes them
    into the whole template, its tasks' arguments included, before it runs the DAG
    (operator.go executeTemplate -> common.ProcessArgs, workflow/common/util.go)."""
    started = time.monotonic()
    tasks = node.task.dag or ()
    inputs = container_scope(
        node.task, node.spec, run.workflow, dag, ContainerPaths(node.directory, mapped=False)
    )
    run.progress.width = max([run.progress.width, *(len(f"{node.name}.{t.name}") for t in tasks)])
    result.tasks = {t.name: TaskResult() for t in tasks}
    failed = _run_dag(run, tasks, result.tasks, inputs, node.directory, f"{node.name}.")
    result.duration_s = time.monotonic() - started
    if failed:
        failing = next(n for n, t in result.tasks.items() if t.phase == "Failed")
        result.phase, result.message = "Failed", f"task {node.name}.{failing} failed"
        return
    ran = [t for t in result.tasks.values() if t.phase == "Succeeded"]
    result.phase = "Succeeded"
    result.message = (
        f"{len(ran)} task(s), {sum(_from_cache(t) for t in ran)} from the memoization cache"
    )


def _run_task(run: _Run, node: _Node, dag: Mapping[str, str], result: TaskResult) -> None:
    """Stage the inputs, run the container (with retries), collect the outputs into the result;
    a memoized template's cache is asked first and given the outputs after."""
    task, spec, task_dir = node.task, node.spec, node.directory
    tpl, where = task.template, f"task {node.name}"
    work = task_dir / "work"
    work.mkdir(parents=True)
    # Process backend: /work in the template's own text (not in parameter values) becomes the
    # task's work dir; the docker backend mounts that dir at /work instead.
    paths = ContainerPaths(work, mapped=run.backend == "process")
    scope = container_scope(task, spec, run.workflow, dag, paths)
    memo = memoization(tpl, scope, where)
    if memo is not None:
        key, cache_name, max_age = memo
        result.memoization = {"hit": False, "key": key, "cacheName": cache_name}
        outputs = run.cache.load_entry(cache_name, key, max_age)
        if outputs is not None:
            result.memoization["hit"] = True
            _restore_outputs(run.cache, tpl, outputs, result)
            return
    sources = artifact_sources(task, spec, scope)
    for a in (tpl.get("inputs") or {}).get("artifacts") or []:
        source = sources.get(a["name"])
        if source is None:
            if not a.get("optional"):
                raise LocalRunError(f"{where}: input artifact {a['name']} has no source")
            continue
        target = host_path(work, a["path"])
        if source.key is not None:
            if not run.cache.get(source.key, target) and not a.get("optional"):
                raise LocalRunError(
                    f"{where}: input artifact {a['name']}: key {source.key!r} does not exist in "
                    f"the artifact repository ({run.cache.root / 'artifacts'})"
                )
            continue
        produced = node.results[source.task].artifacts.get(source.output)
        if produced is None:
            raise LocalRunError(f"{where}: artifact {a['name']} was not produced by {source.task}")
        if not Path(produced).exists():  # a memoization hit names it; it was deleted since
            raise LocalRunError(
                f"{where}: artifact {a['name']} of {source.task} is no longer at {produced}"
            )
        _copy(Path(produced), target)

    container = tpl["container"]
    command = [
        fill(paths.local(parameter_text(c)), scope, where) for c in container.get("command") or []
    ]
    args = [fill(paths.local(parameter_text(c)), scope, where) for c in container.get("args") or []]
    step_env = dict(run.env)
    for item in container.get("env") or []:
        if item.get("valueFrom") is not None:
            value = env_from(item, run.env, run.workflow, task.name)
            if value is not None:
                step_env[item["name"]] = value
        else:
            value = parameter_text(item.get("value") if item.get("value") is not None else "")
            step_env[item["name"]] = fill(paths.local(value), scope, where)
    working_dir = container.get("workingDir")
    working_dir = fill(paths.local(working_dir), scope, where) if working_dir else None
    if run.backend == "docker":
        for directory in [work, *(p for p in work.rglob("*") if p.is_dir())]:
            directory.chmod(0o777)  # the step runs as UID 10001 and writes its outputs here
        argv = docker_command(fill(container["image"], scope, where), command, args, step_env,
                              work, working_dir=working_dir, docker=run.docker)  # fmt: skip
        cwd, proc_env = None, None
    else:
        argv, proc_env = process_command(command, args, step_env, where)
        cwd = working_dir
        if cwd:  # under the work dir (preflight); a container runtime creates it, so here too
            Path(cwd).mkdir(parents=True, exist_ok=True)

    attempt(task, result, task_dir, argv, cwd, proc_env, run.progress.say)
    if result.exit_code == 0:
        _collect_outputs(tpl, work, result, run.cache, scope, where)
    if memo is not None and result.phase == "Succeeded":
        key, cache_name, _ = memo
        saved = _saved_outputs(run, tpl, node.name, result, scope, where)
        node_id = f"{run.workflow['workflow.name']}-{node.name}"
        try:
            run.cache.save_entry(cache_name, key, node_id, saved)
        except LocalRunError as exc:  # Argo marks the node Error when the cache refuses it
            result.phase, result.message = "Failed", f"{where}: {exc}"


def _saved_outputs(
    run: _Run,
    tpl: Mapping[str, Any],
    node: str,
    result: TaskResult,
    scope: Mapping[str, str],
    where: str,
) -> dict[str, Any]:
    """The node's outputs as Argo caches them: parameters by value, artifacts by their key in
    the repository (one that had no key is stored at `<workflow name>/<node>/<artifact>`, as the
    repository's keyFormat would place it)."""
    parameters = [{"name": k, "value": v} for k, v in result.parameters.items()]
    artifacts = []
    for a in (tpl.get("outputs") or {}).get("artifacts") or []:
        if a["name"] not in result.artifacts:
            continue
        key = (a.get("s3") or {}).get("key")
        if key:
            key = fill(key, scope, where)
        else:
            key = f"{run.workflow['workflow.name']}/{_key_safe(node)}/{a['name']}"
            run.cache.put(key, Path(result.artifacts[a["name"]]))
        artifacts.append({"name": a["name"], "s3": {"key": key}})
    return {"parameters": parameters, "artifacts": artifacts}


def _key_safe(node: str) -> str:
    """A node name as one segment of a repository key."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in node)


def _restore_outputs(
    cache: LocalCache, tpl: Mapping[str, Any], outputs: Mapping[str, Any], result: TaskResult
) -> None:
    """A cache hit: the node succeeds with the cached parameters and artifacts, no container."""
    result.phase = "Succeeded"
    result.parameters = {
        p["name"]: str(p.get("value", "")) for p in outputs.get("parameters") or []
    }
    for a in outputs.get("artifacts") or []:
        key = (a.get("s3") or {}).get("key")
        if key:
            result.artifacts[a["name"]] = str(cache.artifact_path(key))


def _collect_outputs(
    tpl: Mapping[str, Any],
    work: Path,
    result: TaskResult,
    cache: LocalCache,
    scope: Mapping[str, str],
    where: str,
) -> None:
    """Output parameters from their `valueFrom.path` files, output artifacts by host path; a
    key-only output artifact is uploaded to its key in the repository (the cache directory)."""
    for p in (tpl.get("outputs") or {}).get("parameters") or []:
        path = host_path(work, p["valueFrom"]["path"])
        if path.is_file():
            # Argo reads the whole file (v4.1.2 workflow/executor/executor.go SaveParameters),
            # then stores it through the apiserver, which takes no request over
            # MAX_MANIFEST_BYTES: a larger value fails the task, never fills this memory.
            try:
                data = read_regular(path, MAX_MANIFEST_BYTES, name=p["valueFrom"]["path"])
            except (NotRegularFile, OverBound) as exc:
                result.phase = "Failed"
                result.message = f"output parameter {p['name']}: {exc}"
                return
            # Bytes that are not UTF-8 become U+FFFD, as Go's encoding/json writes a string
            # holding them when Argo stores the node's outputs.
            text = data.decode("utf-8", errors="replace")
            # One trailing newline dropped, as Argo drops it (SaveParameters: `strings.
            # TrimSuffix(..., "\n")`); a second is kept, and the next stage refuses it.
            result.parameters[p["name"]] = text.removesuffix("\n")
        elif "default" in p["valueFrom"]:
            result.parameters[p["name"]] = parameter_text(p["valueFrom"]["default"])
        else:
            result.phase = "Failed"
            result.message = f"output parameter {p['name']}: {p['valueFrom']['path']} not written"
            return
    for a in (tpl.get("outputs") or {}).get("artifacts") or []:
        path = host_path(work, a["path"])
        if path.exists():
            key = (a.get("s3") or {}).get("key")
            if key:
                path = cache.put(fill(key, scope, where), path)
            result.artifacts[a["name"]] = str(path)
        elif not a.get("optional"):
            result.phase = "Failed"
            result.message = f"output artifact {a['name']}: {a['path']} not written"
            return
    result.phase = "Succeeded"


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


def release_lock_file(parameters: Mapping[str, str], state_dir: Path) -> Path:
    """The lock a run holds: one per MLflow tracking server and model (RELEASE_PARAMETERS), the
    file the promote CLI also takes (`steps.processes.release_lock_path`);
    `state_dir/local-runner.lock` for a template without those parameters."""
    if not all(parameters.get(name) for name in RELEASE_PARAMETERS):
        return state_dir / LOCK_FILE
    return release_lock_path(parameters["mlflow-tracking-uri"], parameters["model-name"])
