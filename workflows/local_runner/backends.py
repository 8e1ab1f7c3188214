"""Backends of a local run: how one task's container runs on this machine, as a subprocess of this
interpreter (`process`) or a `docker run` of the template's image (`docker`), with Argo's retries.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from steps.stages import STAGES
from workflows import retry_expression
from workflows.argo_rules import int_or_string, read_backoff
from workflows.local_runner.planning import (
    CONTAINER_ROOT,
    BadTemplate,
    LocalRunError,
    PlannedTask,
)
from workflows.local_runner.run_record import STDERR_LOG, STDOUT_LOG, TaskResult, tail

BACKENDS = ("process", "docker")
# `command[0]` names that run this interpreter on the process backend.
PYTHON_NAMES = ("python", "python3")
DOCKER_USER = "10001:10001"
# Retries wait at most this long locally: a laptop run should not sit out a 30 s backoff.
MAX_LOCAL_BACKOFF_S = 1.0


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


def process_command(
    command: list[str], args: list[str], env: Mapping[str, str], where: str
) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of one step as a subprocess: `python`/`python3` is this interpreter,
    whose bin/ goes first on PATH (steps start `mlflow` and `uvicorn` as programs).

    Raises:
        LocalRunError: the container has neither command nor args.
    """
    if command and command[0] in PYTHON_NAMES:
        command = [sys.executable, *command[1:]]
    argv = [*command, *args]
    if not argv:
        raise LocalRunError(f"{where}: the process backend needs container.command or args")
    return argv, process_environment(env)


# Every variable a stage's flag reads (steps/stages.py, `Flag.env`). A pod gets only the env its
# template sets; on the process backend one left in the caller's shell (PROMOTE_CLAIM_LEASE=0,
# VALIDATE_MIN_ROWS, SYNTHETIC_SEED, ...) would change a step the template did not configure so,
# e.g. promote failing after train and register had done their work. So they are not inherited.
STAGE_FLAG_ENV = frozenset(
    flag.env for stage in STAGES.values() for flag in stage.all_flags if flag.env
)


def process_environment(env: Mapping[str, str]) -> dict[str, str]:
    """A step's environment on the process backend: this process's without the variables a
    stage's flag reads (`STAGE_FLAG_ENV`), this interpreter's bin/ first on PATH, then `env`
    (the caller's extra variables, `valueFrom` entries answered from this environment, and the
    template's env): only those set a flag's variable, as a pod's template does."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    inherited = {k: v for k, v in os.environ.items() if k not in STAGE_FLAG_ENV}
    return {**inherited, "PATH": path, **env}


def missing_program(program: str, env: Mapping[str, str]) -> str | None:
    """Why the process backend could not start `program` (argv[0]) with `env`, or None: a bare
    name found on no directory of the step's PATH, or an absolute path outside /work (where a
    step may write one) that is no file. Relative paths depend on the step's directory: None."""
    if program in PYTHON_NAMES:
        return None
    if "/" not in program:
        if shutil.which(program, path=process_environment(env)["PATH"]) is None:
            return f"program {program!r} is on no directory of the step's PATH"
        return None
    outside_work = program.startswith("/") and not program.startswith(f"{CONTAINER_ROOT}/")
    if outside_work and not Path(program).is_file():
        return f"program {program!r} does not exist on this machine"
    return None


def env_from(
    item: Mapping[str, Any], caller_env: Mapping[str, str], workflow: Mapping[str, str], task: str
) -> str | None:
    """A `valueFrom` env entry: the caller's variable, else a fieldRef we can answer, else None
    for an optional Secret key (unset, as in a pod whose optional Secret does not exist), else
    error."""
    value = {**os.environ, **caller_env}.get(item["name"])
    secret = item["valueFrom"].get("secretKeyRef") or {}
    if value is None and secret.get("optional") is True:
        return None
    field_path = (item["valueFrom"].get("fieldRef") or {}).get("fieldPath")
    if value is None and field_path == "metadata.namespace":
        value = workflow["workflow.namespace"]
    elif value is None and field_path == "metadata.name":
        value = f"{workflow['workflow.name']}-{task}"
    if value is None:
        raise LocalRunError(
            f"task {task}: env {item['name']} comes from {json.dumps(item['valueFrom'])};"
            f" set {item['name']} in the environment to run locally"
        )
    return value


def check_env_sources(
    tasks: list[PlannedTask], caller_env: Mapping[str, str], workflow: Mapping[str, str]
) -> None:
    """Every `valueFrom` env entry can be answered, before any task runs.

    Raises:
        BadTemplate (exit code 2): one cannot.
    """
    for task in tasks:
        if task.dag is not None:
            check_env_sources(list(task.dag), caller_env, workflow)
            continue
        for item in task.template["container"].get("env") or []:
            if item.get("valueFrom") is not None:
                try:
                    env_from(item, caller_env, workflow, task.name)
                except LocalRunError as exc:
                    raise BadTemplate(str(exc)) from None


def attempt(
    task: PlannedTask,
    result: TaskResult,
    task_dir: Path,
    argv: list[str],
    cwd: str | None,
    env: dict[str, str] | None,
    say: Callable[[str], None],
) -> None:
    """Run `argv` until it exits 0 or `retryStrategy.limit` retries are used up; stdout and
    stderr go to `task_dir/stdout.log` and `stderr.log`, the outcome into `result`."""
    retry = task.template.get("retryStrategy") or {}
    # All checked by planning._check_container_template before any task runs.
    limit = int_or_string(retry.get("limit", 0), "retryStrategy.limit")
    condition = (
        retry_expression.parse(str(retry["expression"])) if retry.get("expression") else None
    )
    backoff = read_backoff(retry.get("backoff"))
    started, skipped_s = time.monotonic(), 0.0  # skipped: template waits not waited here
    for number in range(1, limit + 2):
        result.attempts = number
        # Files, not pipes: a step may leave a daemon (the model server) holding them open.
        try:
            with (task_dir / STDOUT_LOG).open("wb") as so, (task_dir / STDERR_LOG).open("wb") as se:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=so, stderr=se,
                                      cwd=cwd, env=env, check=False)  # fmt: skip
        except (OSError, ValueError) as exc:
            # Checked up front (preflight), yet gone since, or a NUL byte that a task's output
            # brought into an argument or variable (ValueError): the task fails.
            result.duration_s = time.monotonic() - started
            result.phase = "Failed"
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            result.message = f"cannot start {argv[0]!r}: {reason}"
            return
        # A process killed by signal N exits 128+N in a container; subprocess says -N.
        result.exit_code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        if proc.returncode == 0 or number > limit:
            break
        last = " ".join(tail(task_dir / STDERR_LOG, 1))
        if condition is not None and not _expression_allows(condition, result, started, task):
            say(
                f"    no retry: retryStrategy.expression is false after exit {result.exit_code}"
                f" ({condition.text}): {last}"
            )
            break
        backoff_s = backoff.wait_seconds(number)
        # Argo does not retry when the wait would end past maxDuration from the first start,
        # counted as on Argo: with the template's waits, not the shorter local ones.
        bound = backoff.max_duration_s
        if bound is not None and time.monotonic() - started + skipped_s + backoff_s > bound:
            say(
                f"    no retry: waiting {backoff_s:g}s more would pass the template's "
                f"backoff.maxDuration of {bound:g}s after exit {result.exit_code}: {last}"
            )
            break
        wait_s = min(backoff_s, MAX_LOCAL_BACKOFF_S)
        skipped_s += backoff_s - wait_s
        say(
            f"    retry {number}/{limit} in {wait_s:g}s (template backoff {backoff_s:g}s)"
            f" after exit {proc.returncode}: {last}"
        )
        time.sleep(wait_s)
    result.duration_s = time.monotonic() - started
    if result.exit_code != 0:
        result.phase = "Failed"
        result.message = f"exit code {result.exit_code} after {result.attempts} attempt(s)"


def _expression_allows(
    condition: retry_expression.RetryExpression, result: TaskResult, started: float, task: Any
) -> bool:
    """Argo's reading of the last attempt: a failed container is phase `Failed` with the message
    `Error (exit code N)` (this runner has no pod-level `Error` phase)."""
    try:
        return condition.allows_retry(
            exit_code=result.exit_code or 0,
            status="Failed",
            duration_s=time.monotonic() - started,
            message=f"Error (exit code {result.exit_code})",
        )
    except retry_expression.ExpressionError as exc:
        raise LocalRunError(f"task {task.name}: retryStrategy.expression: {exc}") from None
