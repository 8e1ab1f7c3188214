"""Local deploy target: `mlflow models serve` as a detached process, tracked in a state directory.

The swap keeps the old server up until the new version is proven (see `deploy_local`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from steps.cli import StepError
from steps.deploy_targets.common import DeployRequest, DeployResult, smoke_test
from steps.files import write_text_atomically
from steps.processes import (
    free_port,
    http_ok,
    is_our_process,
    port_is_free,
    stop_process_group,
    wait_until_healthy,
)
from steps.serving import recommended_serve_command

STATE_FILE = "server.json"


@dataclass(frozen=True)
class ServedModel:
    """One `mlflow models serve` process we started; the content of the state file."""

    pid: int
    host: str
    port: int
    model_uri: str
    version: str
    log: str

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://{self.host}:{self.port}"


def deploy_local(
    request: DeployRequest, *, host: str, port: int, state_dir: Path, timeout: float
) -> DeployResult:
    """Serve `request.model_uri` on `host:port`, replacing the server recorded in `state_dir`.

    Order of events, so that a bad version never takes the old one down:
    1. start the new version on a free scratch port, wait for /ping, smoke-test it, stop it;
    2. stop the old server, start the new version on `port`, wait for /ping, smoke-test it;
    3. if step 2 fails, start the old version again on its port.
    With no old server, only step 2 runs. Trade-off: the port is dark while step 2 starts one
    server (seconds, measured in benchmarks/); serving both on one port would need a proxy in
    front, which is more moving parts than a laptop demo needs.

    Args:
        request: model version to serve and the tracking URI to load it from.
        host: interface to bind, normally 127.0.0.1.
        port: the port clients use.
        state_dir: where the state file and server logs live.
        timeout: seconds to wait for each server to answer /ping.

    Returns:
        The served version and whether anything changed.

    Raises:
        StepError: the new version could not be served; the old server (if any) still serves.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    old = running_server(state_dir)
    if old is None:
        _remove_state(state_dir)  # stale, if any: it names no process of ours
        if not port_is_free(host, port):
            raise StepError(f"port {host}:{port} is in use by a process this step did not start")
        served = _start_and_prove(request, host, port, state_dir, "server", timeout)
        _write_state(state_dir, served)
        return DeployResult(served_version=request.version, changed=True)
    if (old.model_uri, old.host, old.port) == (request.model_uri, host, port) and _ping(old.url):
        return DeployResult(served_version=request.version, changed=False)

    # 1. Prove the candidate where nobody is looking; the old server keeps serving meanwhile.
    candidate = _start_and_prove(request, host, free_port(host), state_dir, "candidate", timeout)
    stop_process_group(candidate.pid)

    # 2. Swap.
    stop_process_group(old.pid)
    try:
        served = _start_and_prove(request, host, port, state_dir, "server", timeout)
    except StepError as exc:
        # 3. Put the old version back.
        old_request = DeployRequest(_model_name(old.model_uri), old.version, request.tracking_uri)
        try:
            restored = _start_and_prove(
                old_request, old.host, old.port, state_dir, "server", timeout
            )
        except StepError as restore_exc:
            _remove_state(state_dir)
            raise StepError(f"{exc}; restarting {old.model_uri} failed too: {restore_exc}") from exc
        _write_state(state_dir, restored)
        raise StepError(f"{exc}; restarted {old.model_uri}") from exc
    _write_state(state_dir, served)
    return DeployResult(served_version=request.version, changed=True)


def stop_local(state_dir: Path) -> bool:
    """Stop the server recorded in `state_dir` (by its PID) and forget it.

    Returns:
        True if a running server was stopped, False if there was none.
    """
    served = running_server(state_dir)
    if served:
        stop_process_group(served.pid)
    _remove_state(state_dir)
    return served is not None


def read_state(state_dir: Path) -> ServedModel | None:
    """The server recorded in `state_dir`, or None if there is no (readable) state file."""
    try:
        return ServedModel(**json.loads((state_dir / STATE_FILE).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def running_server(state_dir: Path) -> ServedModel | None:
    """The recorded server if its PID is alive and really is the `mlflow models serve` we started.

    A stale state file (reboot, killed by hand, PID reused by another program) gives None, so we
    never signal a process we did not start.
    """
    served = read_state(state_dir)
    if served is None:
        return None
    flags = {"--model-uri": served.model_uri, "--port": str(served.port)}
    return served if is_our_process(served.pid, words=("serve",), flags=flags) else None


def mlflow_program() -> Path:
    """The `mlflow` program of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "mlflow"
    if beside.exists():
        return beside
    found = shutil.which("mlflow")
    if found is None:
        raise StepError("cannot find the mlflow program next to the interpreter or on PATH")
    return Path(found)


def _start_and_prove(
    request: DeployRequest, host: str, port: int, state_dir: Path, role: str, timeout: float
) -> ServedModel:
    """Start a server, wait for /ping and smoke-test it; stop it again if any of that fails."""
    log = state_dir / f"{role}-v{request.version}.log"
    proc = _start_server(request, host, port, log)
    served = ServedModel(proc.pid, host, port, request.model_uri, request.version, str(log))
    try:
        wait_until_healthy(f"{served.url}/ping", timeout=timeout, proc=proc, log=served.log)
        smoke_test(served.url)
    except StepError as exc:
        stop_process_group(proc.pid)
        raise StepError(f"serving {request.model_uri} on port {port} failed: {exc}") from exc
    # The server must outlive this step: mark it as handled so Popen does not warn when
    # this process exits, it is stopped later by PID.
    proc.returncode = 0
    return served


def _model_name(model_uri: str) -> str:
    """`dewpoint-lr` from `models:/dewpoint-lr/3`."""
    return model_uri.removeprefix("models:/").rsplit("/", 1)[0]


def _start_server(request: DeployRequest, host: str, port: int, log: Path) -> subprocess.Popen:
    mlflow = mlflow_program()
    # One worker: with --workers > 1, uvicorn 0.54's supervisor respawns a worker whose model fails
    # to load instead of exiting (seen here: /ping just never answers until the timeout), so a
    # broken model would cost the whole --timeout. https://github.com/Kludex/uvicorn/issues/1115
    command, env = recommended_serve_command(
        request.model_uri, host=host, port=port, workers=1, mlflow_executable=str(mlflow)
    )
    env["MLFLOW_TRACKING_URI"] = request.tracking_uri
    # `models serve` execs `uvicorn` by name; it must find the one beside our mlflow.
    env["PATH"] = os.pathsep.join([str(mlflow.parent), env.get("PATH", "")])
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # own process group: outlives the step, stopped with killpg
        )


def _ping(url: str) -> bool:
    return http_ok(f"{url}/ping")


def _write_state(state_dir: Path, served: ServedModel) -> None:
    write_text_atomically(state_dir / STATE_FILE, json.dumps(asdict(served), indent=2) + "\n")


def _remove_state(state_dir: Path) -> None:
    (state_dir / STATE_FILE).unlink(missing_ok=True)
