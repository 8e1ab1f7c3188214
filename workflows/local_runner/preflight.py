"""Before a local run starts: what it would otherwise find out only while running, found from the
template, the workflow parameters and the backend alone, so a template that cannot run fails
before its first task does (issue 11).

`planning` checks the template's shape; here every value the run will compute that does not wait
for a task's output is computed now and checked as the run would check it: the items of a loop
and their keys, `when`, input parameters against their enums, memoization keys and ages,
key-only artifact keys (also with their unknown parts set aside: `x/../../y` leaves the
repository whatever `x` is) and ConfigMap names as files of the cache directory, the program a
step starts, its arguments, environment (no NUL byte, env names Kubernetes takes) and working
directory, and, for a container running one of the project's stages, the flag values its
template fixes, checked with that stage's declarations.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from steps.cli import BadInput
from steps.deploy_targets.local import serving_problem
from steps.stages import DEPLOY, STAGES
from workflows.argo_rules import (
    ArgoRuleError,
    container_problems,
    item_scope,
    parameter_text,
    read_when,
    references,
    substitute,
)
from workflows.local_runner.backends import PYTHON_NAMES, missing_program
from workflows.local_runner.cache import cache_name_problem, key_problem
from workflows.local_runner.planning import (
    CONTAINER_ROOT,
    BadTemplate,
    LocalRunError,
    PlannedTask,
    under_work,
)
from workflows.local_runner.substitution import (
    ContainerPaths,
    container_scope,
    known,
    loop_nodes,
    memoization,
    with_items,
)


def preflight(
    tasks: list[PlannedTask],
    workflow: Mapping[str, str],
    backend: str,
    env: Mapping[str, str],
    docker: str = "docker",
) -> None:
    """Check every value of the run that the template and `workflow` (its variables, parameters
    included) fix already, for `backend` with the extra environment `env`.

    Raises:
        BadTemplate (exit code 2): the first problem, naming the task (or loop item) and field.
    """
    if backend == "docker" and shutil.which(docker) is None:
        raise BadTemplate(f"the docker backend needs the {docker!r} program; none is on PATH")
    _check_tasks(tasks, workflow, workflow, "", backend, env)


def _check_tasks(
    tasks: Sequence[PlannedTask],
    workflow: Mapping[str, str],
    dag: Mapping[str, str],
    prefix: str,
    backend: str,
    env: Mapping[str, str],
) -> None:
    """`preflight` for one DAG's tasks; `dag`: what they may name besides the tasks' outputs (the
    workflow's variables, and a nested dag's inputs, as `runner._run_dag` gives them), `prefix`:
    the dag node's name and a dot, for a nested one."""
    for task in tasks:
        for node, spec in _nodes(task, dag):
            try:
                if task.dag is None:
                    _check_node(task, spec, workflow, dag, backend, env)
                    continue
                inputs = _check_dag_node(task, spec, workflow, dag)
            except (ArgoRuleError, LocalRunError) as exc:
                reason = str(exc).removeprefix(f"task {task.name}: ")
                raise BadTemplate(f"task {prefix}{node}: {reason}") from None
            _check_tasks(task.dag, workflow, inputs, f"{prefix}{node}.", backend, env)


def _check_dag_node(
    task: PlannedTask, spec: Mapping[str, Any], workflow: Mapping[str, str], dag: Mapping[str, str]
) -> dict[str, str]:
    """A node calling a dag template: its `when`, and the inputs its tasks will see where known
    (`runner._run_dag_node`)."""
    condition = known(spec.get("when", ""), dag)
    if condition:
        read_when(condition).holds()
    paths = ContainerPaths(Path(CONTAINER_ROOT), mapped=False)
    return container_scope(task, spec, workflow, dag, paths, known_only=True)


def _nodes(task: PlannedTask, workflow: Mapping[str, str]) -> Iterator[tuple[str, dict]]:
    """(node name, task spec) of each node the task will run as far as known now: each item of
    withItems, or of a withParam that names no task output; else the task as written."""
    try:
        nodes = loop_nodes(task, workflow, known_only=True) if task.loop else None
    except ArgoRuleError as exc:
        raise BadTemplate(f"task {task.name}: {exc}") from None
    if nodes is None:
        yield task.name, task.spec  # no loop, or its items come from a task's output
        return
    for node, item in nodes:
        try:
            yield node, with_items(task.spec, item_scope(item))
        except LocalRunError as exc:
            raise BadTemplate(f"task {node}: {exc}") from None


def _check_node(
    task: PlannedTask,
    spec: Mapping[str, Any],
    workflow: Mapping[str, str],
    dag: Mapping[str, str],
    backend: str,
    env: Mapping[str, str],
) -> None:
    """One node's values, as `runner._run_node` and `_run_task` compute them, where known."""
    condition = known(spec.get("when", ""), dag)
    if condition:
        read_when(condition).holds()
    paths = ContainerPaths(Path(CONTAINER_ROOT), mapped=False)
    scope = container_scope(task, spec, workflow, dag, paths, known_only=True)
    tpl = task.template
    memoization(tpl, scope, f"task {task.name}", known_only=True)
    if tpl.get("memoize"):
        problem = cache_name_problem(tpl["memoize"]["cache"]["configMap"]["name"])
        if problem:
            raise ArgoRuleError(f"template {tpl['name']}: {problem}")
    template_keys = [a.get("s3") for a in [*_artifacts(tpl, "inputs"), *_artifacts(tpl, "outputs")]]
    for s3, values in [
        *((s3, scope) for s3 in template_keys),
        *((a.get("s3"), dag) for a in (spec.get("arguments") or {}).get("artifacts") or []),
    ]:
        if s3 and s3.get("key"):
            _check_key(str(s3["key"]), values)
    _check_container(tpl, scope, backend, env)


def _artifacts(tpl: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    return (tpl.get(kind) or {}).get("artifacts") or []


def _check_key(key: str, scope: Mapping[str, str]) -> None:
    """A key-only artifact's key names a place inside the repository: now, when its values are
    known; else with each unknown value as one plain segment (`..` written around a value
    leaves the repository whatever the value is)."""
    value = known(key, scope)
    skeleton = value if value is not None else substitute(key, lambda n: scope.get(n, "x"))
    problem = key_problem(skeleton)
    if problem:
        raise ArgoRuleError(problem if value is not None else f"{problem}, whatever {key!r} holds")


def _check_container(
    tpl: Mapping[str, Any], scope: Mapping[str, str], backend: str, env: Mapping[str, str]
) -> None:
    """The program a step starts, its arguments, environment and the directory it starts in."""
    container = tpl["container"]
    for where, problem in container_problems(container, lambda text: known(text, scope)):
        raise ArgoRuleError(f"template {tpl['name']} container.{where}: {problem}")
    _check_stage_arguments(tpl)
    command = [known(c, scope) for c in container.get("command") or []]
    args = [known(a, scope) for a in container.get("args") or []]
    argv = [*command, *args]
    if backend == "process" and not argv:
        raise ArgoRuleError(
            "the container has no command and no args: the process backend has no image "
            "entrypoint to run (use --backend docker, or give a command)"
        )
    if argv and argv[0] == "":
        raise ArgoRuleError("the program to start (command[0], else args[0]) is empty")
    step_env = {**env}
    for item in container.get("env") or []:
        value = known(item["value"], scope) if item.get("value") is not None else None
        if value is not None:
            step_env[item["name"]] = value
    if backend == "process":
        _check_local_serving(argv, step_env)
    program = argv[0] if argv else None
    if backend == "process" and program:
        problem = missing_program(program, step_env)
        if problem:
            raise ArgoRuleError(problem)
    working_dir = container.get("workingDir")
    if working_dir is not None:
        directory = known(working_dir, scope)
        skeleton = directory or substitute(parameter_text(working_dir), lambda n: "x")
        if backend == "process" and not under_work(skeleton):
            raise ArgoRuleError(
                f"workingDir {working_dir!r} is not under {CONTAINER_ROOT}: the process backend "
                "runs a step in its own work directory, never in one of this machine's"
            )
        if not skeleton.startswith("/"):
            raise ArgoRuleError(f"workingDir {working_dir!r} is not an absolute path")


def _check_local_serving(argv: Sequence[str | None], env: Mapping[str, str]) -> None:
    """A local deploy the process backend will run on this machine (`python -m steps deploy
    --target local`): where it will serve, its port and state directory (from the caller's
    SERVE_PORT and DEPLOY_STATE_DIR, `runner.caller_deploy_env`), checked now as the step checks
    them first (`steps.deploy_targets.local.serving_problem`): a busy port or a state directory
    no file can be made in failed the run only after fetch, train, register and promote."""
    if len(argv) < 4 or argv[0] not in PYTHON_NAMES or list(argv[1:4]) != ["-m", "steps", "deploy"]:
        return
    try:
        values = DEPLOY.given_values(
            argv[4:], env, ("target", "stop", "host", "port", "state-dir"), "deploy"
        )
    except BadInput as exc:
        raise ArgoRuleError(str(exc)) from None
    if values is None or values["target"] != "local" or values["stop"]:
        return
    problem = serving_problem(values["host"], values["port"], values["state-dir"])
    if problem is not None:
        port, state_dir = DEPLOY.flag("port").env, DEPLOY.flag("state-dir").env
        picks = f"{port} picks the port, {state_dir} the state directory"
        raise ArgoRuleError(f"deploy --target local: {problem} ({picks})")


def _check_stage_arguments(tpl: Mapping[str, Any]) -> None:
    """A container running one of the project's stages (`python -m steps <stage>`): the values
    its template fixes (literal args and env values, no `{{...}}`) checked with that stage's
    declarations (steps/stages.py), as the stage will check them when it starts."""
    container = tpl["container"]
    argv = [parameter_text(a) for a in [*(container.get("command") or []),
                                        *(container.get("args") or [])]]  # fmt: skip
    if len(argv) < 4 or argv[0] not in PYTHON_NAMES or argv[1:3] != ["-m", "steps"]:
        return
    stage = STAGES.get(argv[3])
    if stage is None and not references(argv[3]):
        raise ArgoRuleError(
            f"template {tpl['name']}: no stage {argv[3]!r} to run; choose one of "
            f"{', '.join(STAGES)}"
        )
    if stage is None:
        return  # the stage is a parameter's: the stage refuses an unknown one when it starts
    env = {
        str(e["name"]): parameter_text(e["value"])
        for e in container.get("env") or []
        if e.get("value") is not None
    }
    try:
        stage.check_given(
            argv[4:], env, lambda text: not references(text), f"template {tpl['name']}"
        )
    except BadInput as exc:
        raise ArgoRuleError(str(exc)) from None
