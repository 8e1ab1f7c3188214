"""`make demo` / `make demo-down`: a local MLflow server, the whole pipeline through the local
runner, and the champion served by `mlflow models serve`, all on 127.0.0.1 under `.demo/`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from steps.cli import (
    EXIT_TRANSIENT,
    BadInput,
    StepError,
    TransientError,
    env_default,
    one_line,
    run,
)
from steps.contract import OneLineParser, argparse_type, non_empty_path
from steps.deploy_targets.common import DeployRequest
from steps.deploy_targets.local import (
    ServedModel,
    mlflow_program,
    running_server,
    stop_local,
)
from steps.files import write_text_atomically
from steps.processes import (
    STOP_GRACE_S,
    exclusive_lock,
    group_exists,
    http_ok,
    is_our_process,
    pid_alive,
    port_is_free,
    stop_process_group,
    wait_until_healthy,
)
from steps.redaction import redact
from steps.stages import DEPLOY, PORT
from workflows.local_runner import check_rendered, run_rendered
from workflows.local_runner.run_record import RUN_RECORD
from workflows.pipeline import render
from workflows.settings import (
    DEFAULT_MLFLOW_PORT,
    PipelineSettings,
    add_parameter_overrides,
    parameter_overrides,
    pipeline_settings,
)

DEFAULT_ROOT = Path(".demo")
# deploy's --port and --state-dir with their environment variables, declared once in
# steps/stages.py: the demo hands the serve port and state directory to deploy through them.
_PORT_FLAG, _STATE_DIR_FLAG = DEPLOY.flag("port"), DEPLOY.flag("state-dir")
DEFAULT_SERVE_PORT: int = _PORT_FLAG.default
SERVE_PORT_ENV: str = _PORT_FLAG.env
HOST = "127.0.0.1"
MLFLOW_START_TIMEOUT_S = 120.0
# How long a second `make demo` waits for the first to start MLflow: the first's wait for /health,
# plus stopping a server that never became healthy.
MLFLOW_UP_LOCK_TIMEOUT_S = MLFLOW_START_TIMEOUT_S + STOP_GRACE_S
# The example request of the README; MLflow 3 wants `dataframe_split` (docs/steps.md, PLATFORM).
EXAMPLE_BODY = '{"dataframe_split":{"columns":["temp"],"data":[[12.8]]}}'


SERVER_RECORD = "server.json"  # the MlflowProcess the demo started, under `<root>/mlflow`


@dataclass(frozen=True)
class MlflowProcess:
    """The `mlflow server` this demo started; the content of `.demo/mlflow/server.json`."""

    pid: int
    port: int
    url: str
    log: str


def mlflow_up(root: Path, port: int) -> tuple[MlflowProcess, bool]:
    """Start the demo's MLflow server on `port`, or reuse it if it is already ours and healthy.

    Args:
        root: the demo directory; the store, artifacts, log and PID file go under `root/mlflow`.
        port: loopback port for the server.

    Returns:
        The server, and True if it was started now (False if reused).

    Raises:
        StepError: the port is taken by something else, or the server does not become healthy.
        TransientError: another `make demo` held `root/mlflow/up.lock`, starting the server, for
            over MLFLOW_UP_LOCK_TIMEOUT_S seconds (exit 75).
    """
    home = (root / "mlflow").resolve()
    home.mkdir(parents=True, exist_ok=True)
    # Two `make demo` at once must not both start a server on the same port.
    with exclusive_lock(
        home / "up.lock",
        MLFLOW_UP_LOCK_TIMEOUT_S,
        lambda waiting: print(f"==> {waiting}", flush=True),
        what="demo starting MLflow",
    ):
        ours = _our_mlflow(home)
        if ours and ours.port != port:
            raise StepError(
                f"the demo's MLflow server already runs on port {ours.port}, not {port};"
                " run `make demo-down` first or set MLFLOW_PORT"
            )
        if ours:
            _wait_healthy(ours, None)
            return ours, False
        _stop_orphaned_workers(home)
        if not port_is_free(HOST, port):
            raise StepError(
                f"port {HOST}:{port} is in use by a process this demo did not start;"
                " set MLFLOW_PORT to a free port"
            )
        log = home / "server.log"
        command = [
            str(mlflow_program()), "server", "--host", HOST, "--port", str(port),
            # One worker: start-up time dominates the demo, and one user needs no more.
            "--workers", "1",
            "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
            "--artifacts-destination", str(home / "artifacts"),
        ]  # fmt: skip
        # MLflow's job runner (GenAI jobs, which the pipeline never uses) is one more Python
        # process importing MLflow at start-up: measured 46 s -> 26 s to /health on 2 busy cores.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with log.open("ab") as out:
            proc = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `make demo`; stopped by `make demo-down`
            )
        server = MlflowProcess(proc.pid, port, f"http://{HOST}:{port}", str(log))
        write_text_atomically(home / SERVER_RECORD, json.dumps(asdict(server), indent=2) + "\n")
        try:
            _wait_healthy(server, proc)
        except StepError:
            stop_process_group(proc.pid)
            (home / SERVER_RECORD).unlink(missing_ok=True)
            raise
        proc.returncode = 0  # handed over to `make demo-down`; do not warn when we exit
        return server, True


def mlflow_down(root: Path) -> bool:
    """Stop the demo's MLflow server if it is running and ours; True if one was stopped."""
    home = (root / "mlflow").resolve()
    ours = _our_mlflow(home)
    if ours:
        stop_process_group(ours.pid)
    orphans = _stop_orphaned_workers(home)
    (home / SERVER_RECORD).unlink(missing_ok=True)
    return ours is not None or orphans


def local_parameters(mlflow_port: int, given: Mapping[str, str] | None = None) -> dict[str, str]:
    """The workflow parameters of a local door (`make demo`, `submit.py --local`): `given` over
    these defaults: offline synthetic data (or `gsod` when `given` names a `gsod-path`, a local
    folder or .tar.gz of GSOD files, and no source), the `local` deploy target and the demo's
    MLflow server on loopback. The template's own defaults are the cluster's (NOAA archives,
    Kubernetes, in-cluster MLflow)."""
    given = dict(given or {})
    return {
        "source": "gsod" if given.get("gsod-path", "").strip() else "synthetic",
        "deploy-target": "local",
        "mlflow-tracking-uri": f"http://{HOST}:{mlflow_port}",
    } | given


def port_from_env(name: str, default: int) -> int:
    """A port from environment variable `name` (e.g. MLFLOW_PORT), else `default`.

    Raises:
        BadInput: the variable is set to something that is not a port number (exit 2).
    """
    text = env_default(name)  # an empty variable is unset, as at every flag
    if text is None:
        return default
    try:
        # As given and quoted as given, as the stages take SERVE_PORT (`argparse_type`, whose
        # `parse_as_given` refuses ` 5001`, and which calls `' '` blank): ASCII digits only,
        # `²` or `٣` is not a port.
        return int(argparse_type(PORT)(text))
    except argparse.ArgumentTypeError as exc:
        raise BadInput(f"{name}={exc}") from None


def check_ports_apart(mlflow: tuple[int, str], serve: tuple[int, str]) -> None:
    """BadInput when the MLflow server and the model server are given one port, each as
    (port, where it was set): found by a breaker, the run trained, registered and promoted,
    then deploy found the port taken by MLflow, and the new champion was not served."""
    if mlflow[0] == serve[0]:
        raise BadInput(
            f"{mlflow[1]} and {serve[1]} are both {serve[0]}: MLflow and the model server each "
            "need a port of their own"
        )


def tracking_server_for(parameters: dict[str, str], root: Path, mlflow_port: int) -> str:
    """Make sure an MLflow server answers at the run's `mlflow-tracking-uri`; return the URI.

    A server that answers `/health` there is used, whoever started it. Nothing there and the URI
    is the local default (`http://127.0.0.1:<mlflow_port>`): the demo's server is started (or
    reused) under `root`, as `make mlflow-up` does. Anything else is a TransientError (exit 75:
    a server that is down now may answer later) naming the parameter to change.
    """
    uri = parameters["mlflow-tracking-uri"]
    if http_ok(f"{uri.rstrip('/')}/health"):
        print(f"==> MLflow tracking server at {redact(uri)} answers; using it", flush=True)
        return uri
    if uri != local_parameters(mlflow_port)["mlflow-tracking-uri"]:
        raise TransientError(
            f"no MLflow server answers at {redact(uri)}/health (workflow parameter"
            " mlflow-tracking-uri);"
            f" start one there, or leave -p mlflow-tracking-uri out to use the demo's server on"
            f" {HOST}:{mlflow_port} (started if needed; MLFLOW_PORT picks the port)"
        )
    print(f"==> MLflow tracking server on {HOST}:{mlflow_port}", flush=True)
    server, fresh = mlflow_up(root, mlflow_port)
    print(f"    {'started' if fresh else 'reused'} pid {server.pid}", flush=True)
    return uri


def run_demo(
    root: Path,
    mlflow_port: int,
    serve_port: int,
    parameters: dict[str, str],
    settings: PipelineSettings | None = None,
) -> dict[str, str]:
    """MLflow up, the pipeline through the local runner, then check what is served.

    Args:
        root: the demo directory (`.demo`).
        mlflow_port: port of the local MLflow server.
        serve_port: port of the local model server.
        parameters: workflow parameters, over the defaults of `local_parameters`.
        settings: what the template is rendered with; default the PIPELINE_* variables
            (`pipeline_settings`), as every door reads them.

    Returns:
        The facts the demo prints: URLs, gate decision, served version, prediction, timings.

    Raises:
        StepError: MLflow did not start, a pipeline task failed, or nothing is served afterwards.
    """
    root = root.resolve()
    started = time.monotonic()
    template = render(settings or pipeline_settings())["workflow-template"]
    params = local_parameters(mlflow_port, parameters)
    run_dir = root / "runs" / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    state_dir = root / "serve"
    env = {_STATE_DIR_FLAG.env: str(state_dir), _PORT_FLAG.env: str(serve_port)}
    # A typo in SOURCE or PARAMS, a cache dir that is a file, a busy serve port: refused before
    # MLflow starts.
    check_rendered(template, params, env=env, run_dir=run_dir, cache_dir=root / "cache")
    if params["mlflow-tracking-uri"] != local_parameters(mlflow_port)["mlflow-tracking-uri"]:
        # `-p mlflow-tracking-uri=...`: that server, as `submit.py --local` uses it; nothing
        # answering there is exit 75 before the run, not a train task failing after retries.
        mlflow_url = tracking_server_for(params, root, mlflow_port)
    else:
        print(f"==> MLflow tracking server on {HOST}:{mlflow_port}", flush=True)
        mlflow, fresh = mlflow_up(root, mlflow_port)
        mlflow_url = mlflow.url
        took = time.monotonic() - started
        print(f"    {'started' if fresh else 'reused'} pid {mlflow.pid} in {took:.1f}s", flush=True)
    mlflow_s = time.monotonic() - started

    print("==> pipeline (local runner, process backend)", flush=True)
    failure = io.StringIO()  # the runner's one error line becomes the demo's
    code = run_rendered(
        template, params, run_dir=run_dir, env=env, cache_dir=root / "cache", err=failure
    )
    pipeline_s = time.monotonic() - started - mlflow_s
    if code != 0:
        reason = failure.getvalue().strip().removeprefix("error: ")
        error = TransientError if code == EXIT_TRANSIENT else StepError
        raise error(reason or f"the pipeline failed; see the task logs under {run_dir}")
    record = json.loads((run_dir / RUN_RECORD).read_text())
    tasks = record["tasks"]
    gate = tasks["promote"]["outputs"]["parameters"]

    model_name = record["parameters"]["model-name"]
    # Deploy serves the champion alias as it is when deploy runs, which may be newer than what
    # promote saw (steps/deploy.py); promote's is what a skipped deploy leaves.
    deployed = tasks.get("deploy", {}).get("outputs", {}).get("parameters", {})
    champion = deployed.get("served-version", gate["champion-version"])
    served = served_champion(state_dir, model_name, champion)
    if served is None:
        # Deploy serves the champion after every gate: this is a server gone since, or a race.
        other = running_server(state_dir)
        what = f"{other.model_uri} is served" if other else "no model server is running"
        raise StepError(
            f"{what}, but the champion is {DeployRequest(model_name, champion, '').model_uri};"
            f" serve it with `{sys.executable} -m steps deploy --target local --model-name"
            f" {model_name} --alias champion --tracking-uri {mlflow_url} --port {serve_port}"
            f" --state-dir {state_dir}`"
        )
    invocations = f"{served.url}/invocations"
    response = httpx.post(
        invocations, content=EXAMPLE_BODY, headers={"Content-Type": "application/json"}, timeout=30
    )
    if response.status_code != 200:
        raise StepError(f"{invocations} answered {response.status_code}: {one_line(response.text)}")
    return {
        "mlflow_url": redact(mlflow_url),
        "promoted": gate["promoted"],
        "reason": gate["reason"],
        "new_rmse": gate["new-rmse"],
        "champion_rmse": gate["champion-rmse"],
        "registered_version": tasks["register"]["outputs"]["parameters"]["version"],
        "served_version": served.version,
        "served_model": served.model_uri,
        "served_pid": str(served.pid),
        "serving_change": _serving_change(tasks["deploy"]),
        "invocations": invocations,
        "prediction": response.text.strip(),
        "curl": (
            f"curl -s -X POST -H 'Content-Type: application/json' -d '{EXAMPLE_BODY}' {invocations}"
        ),
        "run_dir": str(run_dir),
        "mlflow_s": f"{mlflow_s:.1f}",
        "pipeline_s": f"{pipeline_s:.1f}",
        "total_s": f"{time.monotonic() - started:.1f}",
    }


def served_champion(state_dir: Path, model_name: str, champion: str) -> ServedModel | None:
    """The local model server recorded in `state_dir` if it runs and serves exactly the champion,
    `models:/<model_name>/<champion>`; None otherwise. Model and version are both compared: two
    registered models share version numbers, so a version alone does not name the champion."""
    served = running_server(state_dir)
    wanted = DeployRequest(model_name, champion, tracking_uri="").model_uri
    return served if served is not None and served.model_uri == wanted else None


def _serving_change(deploy: dict) -> str:
    """What this run did to the model server, from the deploy task's phase and outputs."""
    if deploy["phase"] != "Succeeded":
        return f"not deployed ({deploy['phase'].lower()})"
    if deploy["outputs"]["parameters"].get("changed") == "true":
        return "deployed by this run"
    return "already served, left running"


def _print_report(facts: dict[str, str]) -> None:
    decision = "promoted" if facts["promoted"] == "true" else "not promoted"
    print(
        f"""
==> done in {facts["total_s"]}s (MLflow {facts["mlflow_s"]}s, pipeline {facts["pipeline_s"]}s)
    MLflow UI:       {facts["mlflow_url"]}
    registered:      version {facts["registered_version"]}, {decision}: {facts["reason"]}
    served:          {facts["served_model"]} (the champion, pid {facts["served_pid"]}; \
{facts["serving_change"]})
    prediction:      {facts["prediction"]}  (temp 12.8 deg F)
    try it:
{facts["curl"]}
    stop everything: make demo-down""",
        flush=True,
    )


def _recorded(home: Path) -> MlflowProcess | None:
    """The MLflow server `home`'s record names (SERVER_RECORD), alive or not; None without a
    readable record."""
    try:
        return MlflowProcess(**json.loads((home / SERVER_RECORD).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def _our_mlflow(home: Path) -> MlflowProcess | None:
    """The recorded MLflow server if its PID is alive and is the `mlflow server` we started."""
    recorded = _recorded(home)
    if recorded is None:
        return None
    ours = is_our_process(recorded.pid, words=("server",), flags={"--port": str(recorded.port)})
    return recorded if ours else None


def _stop_orphaned_workers(home: Path) -> bool:
    """Stop what is left of the recorded server's process group when its leader, `mlflow
    server`, died alone (a SIGKILL leaves its uvicorn worker serving the port); True if any.

    The demo starts the server as a session leader (`start_new_session`), so its group's id is
    the recorded PID, and Linux does not give that PID to a new process while the group has a
    member (a PID is freed only once no task uses it as process, group or session id: Linux
    kernel/pid.c, `__change_pid`), so the group is the demo's own, never someone else's.
    """
    recorded = _recorded(home)
    if recorded is None or pid_alive(recorded.pid) or not group_exists(recorded.pid):
        return False  # a live leader is ours (`_our_mlflow`) or a PID that is not ours
    stop_process_group(recorded.pid, whole=True)
    return True


def _wait_healthy(server: MlflowProcess, proc: subprocess.Popen | None) -> None:
    wait_until_healthy(
        f"{server.url}/health", timeout=MLFLOW_START_TIMEOUT_S, proc=proc, log=server.log
    )


def build_parser() -> argparse.ArgumentParser:
    """The `python -m workflows.demo` command line."""
    parser = OneLineParser(prog="python -m workflows.demo", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "mlflow-up"))
    parser.add_argument(
        "--root",
        type=non_empty_path,
        default=DEFAULT_ROOT,
        help="demo state directory",
    )
    # Without the flag, the variable is read by `port_from_env` (after parsing), so a bad one is
    # named as the variable, not as `argument --mlflow-port`.
    parser.add_argument(
        "--mlflow-port",
        type=argparse_type(PORT),
        help=f"env MLFLOW_PORT, default {DEFAULT_MLFLOW_PORT}",
    )
    parser.add_argument(
        "--serve-port",
        type=argparse_type(_PORT_FLAG.kind),  # the deploy stage's own --port rule
        help=f"env {SERVE_PORT_ENV}, default {DEFAULT_SERVE_PORT}",
    )
    parser.add_argument(
        "--source",
        help="fetch source (default synthetic: offline; gsod when -p gsod-path=DIR names a local "
        "folder or .tar.gz of GSOD files)",
    )
    add_parameter_overrides(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `make demo`, `make demo-down` and `make mlflow-up`."""

    def body() -> None:
        args = build_parser().parse_args(argv)  # inside `run`: a bad flag is one error line
        if args.command != "down":
            if args.mlflow_port is None:
                args.mlflow_port = port_from_env("MLFLOW_PORT", DEFAULT_MLFLOW_PORT)
            if args.serve_port is None:
                args.serve_port = port_from_env(SERVE_PORT_ENV, DEFAULT_SERVE_PORT)
        if args.command == "mlflow-up":
            server, fresh = mlflow_up(args.root, args.mlflow_port)
            print(f"MLflow {'started' if fresh else 'already running'}: {server.url}")
        elif args.command == "down":
            model = stop_local((args.root / "serve").resolve())
            print(f"model server: {'stopped' if model else 'not running'}")
            print(f"MLflow server: {'stopped' if mlflow_down(args.root) else 'not running'}")
        else:
            check_ports_apart(
                (args.mlflow_port, "--mlflow-port"), (args.serve_port, "--serve-port")
            )
            params = parameter_overrides(args.parameter)
            if args.source and "source" in params:  # neither wins silently
                raise BadInput("--source and -p source=... both set the source: give one")
            params = {**({"source": args.source} if args.source else {}), **params}
            settings = pipeline_settings()  # a bad PIPELINE_* variable: exit 2, nothing started
            _print_report(run_demo(args.root, args.mlflow_port, args.serve_port, params, settings))

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
