"""Local deploy target: `mlflow models serve` as a detached process, tracked in a state directory.

Each server serves a verified copy of its model kept under `<state-dir>/models/` (the bytes the
trust check read), so restarting a version never needs the registry, and the copy's path in the
server's own command line records the server from the moment it starts: no exit path (Ctrl-C, a
full disk, SIGKILL) can leave a server of ours that `deploy` and `--stop` do not find. The swap
keeps the old server up until the new version is proven (see `deploy_local`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from steps.cli import StepError
from steps.deploy_targets.common import (
    DeployRequest,
    DeployResult,
    fetch_verified_model,
    smoke_test,
)
from steps.files import write_text_atomically
from steps.processes import (
    all_pids,
    command_line,
    flag_values,
    free_port,
    http_ok,
    is_our_process,
    port_is_free,
    stop_process_group,
    wait_until_healthy,
)
from steps.serving import recommended_serve_command

STATE_FILE = "server.json"
MODELS_DIR = "models"  # <state-dir>/models/<copy>/{model/, served-as.json}
COPY_MODEL = "model"
COPY_RECORD = "served-as.json"


@dataclass(frozen=True)
class ServedModel:
    """One `mlflow models serve` process we started; the content of the state file."""

    pid: int
    host: str
    port: int
    model_uri: str
    version: str
    log: str
    # The verified local copy it serves; "" for a server an older deploy started from the registry.
    model_path: str = ""

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://{self.host}:{self.port}"

    @property
    def serve_flags(self) -> dict[str, str]:
        """The flags its command line holds: how a live PID is told to be this server."""
        return {"--model-uri": self.model_path or self.model_uri, "--port": str(self.port)}


def deploy_local(
    request: DeployRequest, *, host: str, port: int, state_dir: Path, timeout: float
) -> DeployResult:
    """Serve `request.model_uri` on `host:port`, replacing the server recorded in `state_dir`.

    Order of events, so that a bad version or a registry outage never takes the old one down:
    0. download the version into `state_dir/models/`, check it is our served model (the only
       step that needs MLflow; everything after serves this copy);
    1. start the new version on a free scratch port, wait for /ping, smoke-test it, stop it;
    2. stop the old server, start the new version on `port`, wait for /ping, smoke-test it;
    3. if step 2 fails or is interrupted, start the old version again (from its copy) on its port.
    With no old server, only step 2 runs. Trade-off: the port is dark while step 2 starts one
    server (seconds, measured in benchmarks/); serving both on one port would need a proxy in
    front, which is more moving parts than a laptop demo needs.

    A server that was started but not proven is stopped on every exit path (an exception, Ctrl-C);
    one that serves but could not be written to the state file (a full disk) is still found by
    `running_server` through its command line.

    Args:
        request: model version to serve and the tracking URI to load it from.
        host: interface to bind, normally 127.0.0.1.
        port: the port clients use.
        state_dir: where the state file, the model copies and the server logs live.
        timeout: seconds to wait for each server to answer /ping.

    Returns:
        The served version and whether anything changed.

    Raises:
        StepError: the new version could not be served; the old server (if any) still serves.
        TransientError: MLflow unreachable while looking the version up; nothing was touched.
    """
    state_dir = state_dir.resolve()  # servers' command lines name their copy by absolute path
    state_dir.mkdir(parents=True, exist_ok=True)
    old = _server_on(state_dir, host, port)
    for stray in servers_started_from(state_dir):
        if old is None or stray.pid != old.pid:
            stop_process_group(stray.pid)  # a leftover of a run killed mid-deploy
    if old is None:
        _remove_state(state_dir)  # stale, if any: it names no process of ours
        if not port_is_free(host, port):
            raise StepError(f"port {host}:{port} is in use by a process this step did not start")
    try:
        model_path = _verified_copy(request, state_dir)
        if old is not None and old.model_uri == request.model_uri and _ping(old.url):
            _write_state(state_dir, old)  # repairs the record of a server found by its command line
            return DeployResult(served_version=request.version, changed=False)
        served = _serve(request, model_path, old, host, port, state_dir, timeout)
    finally:
        _prune_copies(state_dir)
    _write_state(state_dir, served)
    return DeployResult(served_version=request.version, changed=True)


def _serve(
    request: DeployRequest,
    model_path: Path,
    old: ServedModel | None,
    host: str,
    port: int,
    state_dir: Path,
    timeout: float,
) -> ServedModel:
    """Steps 1-3 of `deploy_local`: the proven server now on `port`."""
    if old is None:
        return _start_and_prove(request, model_path, host, port, state_dir, "server", timeout)

    # 1. Prove the candidate where nobody is looking; the old server keeps serving meanwhile.
    candidate = _start_and_prove(
        request, model_path, host, free_port(host), state_dir, "candidate", timeout
    )
    stop_process_group(candidate.pid)

    # 2. Swap.
    try:
        stop_process_group(old.pid)
        return _start_and_prove(request, model_path, host, port, state_dir, "server", timeout)
    except BaseException as exc:  # a failure, Ctrl-C or any bug: the old version serves again
        # 3. Put the old version back, from its copy (no registry needed) if it has one.
        old_request = DeployRequest(_model_name(old.model_uri), old.version, request.tracking_uri)
        old_model = old.model_path or old.model_uri
        try:
            restored = _start_and_prove(
                old_request, old_model, old.host, old.port, state_dir, "server", timeout
            )
        except StepError as restore_exc:
            _remove_state(state_dir)
            raise StepError(f"{exc}; restarting {old.model_uri} failed too: {restore_exc}") from exc
        _write_state(state_dir, restored)
        if isinstance(exc, StepError):
            raise StepError(f"{exc}; restarted {old.model_uri}") from exc
        raise


def stop_local(state_dir: Path) -> bool:
    """Stop the server recorded in `state_dir` (by its PID), and any other server serving a model
    copy of `state_dir` (left by a deploy that was killed before it could record it); forget them.

    Returns:
        True if a running server was stopped, False if there was none.
    """
    state_dir = state_dir.resolve()
    found = {s.pid: s for s in servers_started_from(state_dir)}
    recorded = running_server(state_dir)
    if recorded:
        found[recorded.pid] = recorded
    for served in found.values():
        stop_process_group(served.pid)
    _remove_state(state_dir)
    _prune_copies(state_dir)
    return bool(found)


def read_state(state_dir: Path) -> ServedModel | None:
    """The server recorded in `state_dir`, or None if there is no (readable) state file."""
    try:
        return ServedModel(**json.loads((state_dir / STATE_FILE).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def running_server(state_dir: Path) -> ServedModel | None:
    """The recorded server if its PID is alive and really is the `mlflow models serve` we started;
    else the server of ours on the recorded port, or the only one, found by its command line
    (`servers_started_from`: started, but the deploy died before it could record it).

    A stale state file (reboot, killed by hand, PID reused by another program) gives None, so we
    never signal a process we did not start.
    """
    served = read_state(state_dir)
    if served is not None and is_our_process(served.pid, ("serve",), served.serve_flags):
        return served
    found = servers_started_from(state_dir)
    on_port = [s for s in found if served is not None and s.port == served.port]
    if on_port:
        return on_port[0]
    return found[0] if len(found) == 1 else None


def servers_started_from(state_dir: Path) -> list[ServedModel]:
    """Every live `mlflow models serve` whose model is a copy under `state_dir/models/`, with
    what its command line and the copy's record say (its log is unknown: "")."""
    copies = (state_dir.resolve() / MODELS_DIR).resolve()
    found = []
    for pid in all_pids():
        argv = command_line(pid)
        if "serve" not in argv:
            continue
        flags = flag_values(argv)
        model = Path(flags.get("--model-uri", "/"))
        if model.name != COPY_MODEL or model.parent.parent != copies:
            continue
        try:
            record = json.loads((model.parent / COPY_RECORD).read_text())
            port = int(flags["--port"])
        except (OSError, ValueError, KeyError):
            continue
        found.append(
            ServedModel(
                pid, flags.get("--host", ""), port, record["model_uri"], record["version"], "",
                str(model),
            )
        )  # fmt: skip
    return found


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
    request: DeployRequest,
    model: Path | str,
    host: str,
    port: int,
    state_dir: Path,
    role: str,
    timeout: float,
) -> ServedModel:
    """Start a server of `model` (a copy, or a `models:/` URI), wait for /ping and smoke-test
    it; stop it again if any of that fails or is interrupted (Ctrl-C, any exception)."""
    log = state_dir / f"{role}-v{request.version}.log"
    proc = _start_server(str(model), request.tracking_uri, host, port, log)
    path = str(model) if isinstance(model, Path) else ""
    served = ServedModel(
        proc.pid, host, port, request.model_uri, request.version, str(log), model_path=path
    )
    try:
        wait_until_healthy(f"{served.url}/ping", timeout=timeout, proc=proc, log=served.log)
        smoke_test(served.url)
    except StepError as exc:
        stop_process_group(proc.pid)
        raise StepError(f"serving {request.model_uri} on port {port} failed: {exc}") from exc
    except BaseException:
        stop_process_group(proc.pid)
        raise
    # The server must outlive this step: mark it as handled so Popen does not warn when
    # this process exits, it is stopped later by PID.
    proc.returncode = 0
    return served


def _model_name(model_uri: str) -> str:
    """`dewpoint-lr` from `models:/dewpoint-lr/3`."""
    return model_uri.removeprefix("models:/").rsplit("/", 1)[0]


def _start_server(
    model: str, tracking_uri: str, host: str, port: int, log: Path
) -> subprocess.Popen:
    mlflow = mlflow_program()
    # One worker: with --workers > 1, uvicorn 0.54's supervisor respawns a worker whose model fails
    # to load instead of exiting (seen here: /ping just never answers until the timeout), so a
    # broken model would cost the whole --timeout. https://github.com/Kludex/uvicorn/issues/1115
    command, env = recommended_serve_command(
        model, host=host, port=port, workers=1, mlflow_executable=str(mlflow)
    )
    env["MLFLOW_TRACKING_URI"] = tracking_uri  # only a `models:/` URI (an older record) reads it
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


def _server_on(state_dir: Path, host: str, port: int) -> ServedModel | None:
    """The running server of `state_dir` on `host:port` (recorded, or found by command line)."""
    served = running_server(state_dir)
    if served is not None and (served.host, served.port) == (host, port):
        return served
    for found in servers_started_from(state_dir):
        if (found.host, found.port) == (host, port):
            return found
    return None


def _verified_copy(request: DeployRequest, state_dir: Path) -> Path:
    """Download and check `request`'s version into a new `state_dir/models/<copy>/model`."""
    copies = state_dir / MODELS_DIR
    copies.mkdir(parents=True, exist_ok=True)
    home = copies / f"v{request.version}-{uuid.uuid4().hex[:8]}"
    incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=copies))
    try:
        downloaded = fetch_verified_model(request, incoming)
        home.mkdir()
        write_text_atomically(
            home / COPY_RECORD,
            json.dumps({"model_uri": request.model_uri, "version": request.version}) + "\n",
        )
        downloaded.rename(home / COPY_MODEL)
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    return home / COPY_MODEL


def _prune_copies(state_dir: Path) -> None:
    """Remove the model copies no running server of `state_dir` serves."""
    copies = state_dir / MODELS_DIR
    if not copies.is_dir():
        return
    in_use = {Path(s.model_path).parent for s in servers_started_from(state_dir)}
    for home in copies.iterdir():
        if home.resolve() not in in_use:
            with contextlib.suppress(OSError):
                shutil.rmtree(home)


def _ping(url: str) -> bool:
    return http_ok(f"{url}/ping")


def _write_state(state_dir: Path, served: ServedModel) -> None:
    write_text_atomically(state_dir / STATE_FILE, json.dumps(asdict(served), indent=2) + "\n")


def _remove_state(state_dir: Path) -> None:
    (state_dir / STATE_FILE).unlink(missing_ok=True)
