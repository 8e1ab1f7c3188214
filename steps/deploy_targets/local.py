"""Local deploy target: `mlflow models serve` behind a small front (steps/deploy_targets/front.py)
on the serve port, tracked in a state directory.

Each model server listens on a port of its own and serves a verified copy of its model kept under
`<state-dir>/models/` (the bytes the trust check read: no server reads the registry). The front
forwards every request to the server named in `<state-dir>/backend.json`; a redeploy proves the
new server, then rewrites that file, so requests move to the new version between one request and
the next, and none is refused. Every process's own command line names the state directory (the
front its backend file, a model server its copy), so no exit path (Ctrl-C, a full disk, SIGKILL)
can leave a server of ours that `deploy` and `--stop` do not find. A deploy or `--stop` holds
`<state-dir>/deploy.lock` throughout, so two never work on one state directory at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from steps.cli import BadInput, StepError
from steps.deploy_targets.common import (
    DeployRequest,
    DeployResult,
    check_registered,
    fetch_verified_model,
    smoke_test,
)
from steps.deploy_targets.front import LISTEN_FD_ENV
from steps.files import (
    NotRegularFile,
    OverBound,
    read_json_record,
    write_problem,
    write_text_atomically,
)
from steps.processes import (
    all_pids,
    bind_problem,
    command_line,
    exclusive_lock,
    flag_values,
    free_port,
    http_ok,
    ipv4_address,
    is_our_process,
    no_ipv4_address,
    stop_process_group,
    take_listening_socket,
    wait_until_healthy,
)
from steps.serving import recommended_serve_command

STATE_FILE = "server.json"
# Held for a whole deploy or --stop: one at a time per state directory, or one stops the
# server the other is proving as a "leftover".
LOCK_FILE = "deploy.lock"
BACKEND_FILE = "backend.json"  # {"url": ...}: where the front sends requests
FRONT_MODULE = "steps.deploy_targets.front"
MODELS_DIR = "models"  # <state-dir>/models/<copy>/{model/, served-as.json}
COPY_MODEL = "model"
COPY_RECORD = "served-as.json"


@dataclass(frozen=True)
class ServedModel:
    """The model server we started and the front before it; the content of the state file."""

    pid: int  # the model server
    host: str
    port: int  # the port clients use: the front's
    model_uri: str
    version: str
    log: str
    # The verified local copy it serves; "" for a server an older deploy started from the registry.
    model_path: str = ""
    backend_port: int = 0  # the model server's own port; 0: no front, it listens on `port` (older)
    front_pid: int = 0

    @property
    def url(self) -> str:
        """Base URL clients use."""
        return f"http://{self.host}:{self.port}"

    @property
    def backend_url(self) -> str:
        """Base URL of the model server itself."""
        return f"http://{self.host}:{self.backend_port or self.port}"

    @property
    def serve_flags(self) -> dict[str, str]:
        """The flags its command line holds: how a live PID is told to be this server."""
        port = self.backend_port or self.port
        return {"--model-uri": self.model_path or self.model_uri, "--port": str(port)}


# Alike in shape only to DeployRequest (common.py): both are small frozen records, not shared logic.
@dataclass(frozen=True)
class _Process:
    """A front or model server of a state directory, as its command line describes it."""

    pid: int
    host: str
    port: int
    model_path: str = ""


def deploy_local(
    request: DeployRequest, *, host: str, port: int, state_dir: Path, timeout: float
) -> DeployResult:
    """Serve `request.model_uri` on `host:port`, replacing the version served there.

    Order of events, so that a bad version or a registry outage never takes the old one down and
    no request is refused:
    1. download the version into `state_dir/models/`, check it is our served model (the only step
       that needs MLflow; a version it does not know is bad input), before anything is stopped;
    2. start it on a free port of its own, wait for /ping, smoke-test it (the old one still
       serves; a failure ends here);
    3. point the front at it (rewrite `backend.json`; the first deploy starts the front, and a
       deploy to another host:port than the served model's starts and proves one there first),
       record it, then stop the old server, which finishes the requests it has (and its front,
       if it listens elsewhere).
    A server started but not yet serving is stopped on every exit path Python sees (an exception,
    Ctrl-C); any other is found again by its command line (`running_server`).

    Args:
        request: model version to serve and the tracking URI to load it from.
        host: interface to bind, normally 127.0.0.1.
        port: the port clients use (the front's).
        state_dir: where the state file, the backend file, the model copies and the logs live.
        timeout: seconds to wait for each server to answer /ping.

    Returns:
        The served version and whether anything changed.

    Raises:
        StepError: the new version could not be served (a file that cannot be written included);
            the old one (if any) still serves.
        TransientError: MLflow unreachable while looking the version up; nothing was touched.
            Or another deploy or `--stop` of `state_dir` held it for `timeout` seconds.
    """
    # A version the registry does not know is bad input, refused before the state directory is
    # made, locked or pruned (before, a refused version still pruned the unused model copies).
    check_registered(request)
    state_dir = state_dir.resolve()  # command lines name the state directory by absolute path
    state_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(state_dir / LOCK_FILE, timeout, _say, what="deploy"):
        return _deploy_locked(request, host, port, state_dir, timeout)


def serving_problem(host: str, port: int, state_dir: Path) -> str | None:
    """Why a local deploy could not serve on host:port with `state_dir`, or None: no file can be
    made in the state directory (`steps.files.write_problem`), or no server can listen on
    host:port (`steps.processes.bind_problem`: a host that resolves to no IPv4 address of this
    machine, a port another process holds), unless this state directory's own front (or model
    server of a deploy without one) listens there already: a redeploy. Every door asks it before
    anything runs (the deploy step, the local runner's preflight), and deploy again under its
    lock, before it stops anything: the served model stays served."""
    return _serving_check(host, port, state_dir)[0]


def _serving_check(host: str, port: int, state_dir: Path) -> tuple[str | None, str]:
    """(`serving_problem`'s answer, the IPv4 address `host` names: looked up here once, for a
    deploy to pass along; "" when there is none)."""
    problem = write_problem(state_dir)
    if problem is not None:
        return f"the state directory {state_dir} {problem}", ""
    try:
        address = ipv4_address(host)
    except socket.gaierror as exc:
        return f"cannot serve on {host}:{port}: {no_ipv4_address(host, exc)}", ""
    if any(_ours_on(state_dir.resolve(), address, port)):
        return None, address
    problem = bind_problem(host, port, address=address)
    return (None if problem is None else f"cannot serve on {host}:{port}: {problem}"), address


def _ours_on(
    state_dir: Path, address: str, port: int
) -> tuple[ServedModel | None, _Process | None]:
    """(the running server of `state_dir`, its front), each only if it listens on address:port
    (`address`: the IPv4 address of the deploy's host): however its own host is spelled
    (`localhost`, `127.1`, `127.0.0.1`)."""
    old = running_server(state_dir)
    if old is not None and not _listens_on(old.host, old.port, address, port):
        old = None
    front = next(
        (f for f in _fronts(state_dir) if _listens_on(f.host, f.port, address, port)), None
    )
    return old, front


def _listens_on(host: str, port: int, address: str, at_port: int) -> bool:
    """Whether a server given host:port listens on address:at_port: the IPv4 address `host`
    names (`steps.processes.ipv4_address`; a host with none listens nowhere)."""
    if port != at_port:
        return False
    try:
        return ipv4_address(host) == address
    except socket.gaierror:
        return False


def _deploy_locked(
    request: DeployRequest, host: str, port: int, state_dir: Path, timeout: float
) -> DeployResult:
    """`deploy_local`, holding the state directory's lock."""
    problem, address = _serving_check(host, port, state_dir)
    if problem is not None:  # before anything is stopped: what is served stays served
        raise BadInput(problem)
    # What serves now, on host:port or elsewhere (a deploy to another --host or --port): it
    # serves, and the state file names it, until the new version serves on host:port.
    current = running_server(state_dir)
    old, front = _ours_on(state_dir, address, port)
    try:
        # A version the registry does not know is bad input, found before anything is stopped.
        model_path = _verified_copy(request, state_dir)
        keep = {p for p in (current and current.pid, current and current.front_pid) if p}
        for stray in [*_model_servers(state_dir), *_fronts(state_dir)]:
            if stray.pid not in keep and stray.pid != (front and front.pid):
                stop_process_group(stray.pid)  # a leftover of a run killed mid-deploy
        if current is None:
            _remove_state(state_dir)  # stale, if any: it names no process of ours
        if old is not None and old.model_uri == request.model_uri and _ping(old.url):
            _write_state(state_dir, old)  # repairs the record of a server found by its command line
            return DeployResult(served_version=request.version, changed=False)
        new = _start_and_prove(request, model_path, host, free_port(address), state_dir, timeout)
        try:
            front_pid = _switch(state_dir, new, front, old, current, host, address, port, timeout)
        except BaseException:
            stop_process_group(new.pid)
            raise
        served = dataclasses.replace(new, port=port, backend_port=new.port, front_pid=front_pid)
        _write_state(state_dir, served)
        # SIGTERM: each finishes its requests under way, then exits. Its front too, if it
        # listens elsewhere (a deploy to another address); one on host:port now serves `new`.
        for pid in (current.pid, current.front_pid) if current is not None else ():
            if pid and pid not in (served.pid, front_pid):
                stop_process_group(pid)
    finally:
        _prune_copies(state_dir)
    return DeployResult(served_version=request.version, changed=True)


def _switch(
    state_dir: Path,
    new: ServedModel,
    front: _Process | None,
    old: ServedModel | None,
    current: ServedModel | None,
    host: str,
    address: str,
    port: int,
    timeout: float,
) -> int:
    """Point a front on host:port at `new` (starting the front if there is none); return the
    front's PID. `old` is `current` (what serves now) if it listens on host:port, else None.
    `address`: the IPv4 address `host` names, looked up once per deploy (`_serving_check`)."""
    if front is not None:
        _write_backend(state_dir, new.url)
        return front.pid
    if current is not None and current.front_pid:
        # A deploy to another address, from a front that serves `current` through the backend
        # file: the new front starts and is proven through that file's backend too, then both
        # fronts are moved to `new` (proven already). A front that does not start leaves
        # `current` served as it was. A `current` that does not answer /ping (hung, or gone)
        # serves nothing to keep: the fronts move to `new` first, so the new front is proven
        # through `new` rather than through the server the move is leaving.
        hung = not _ping(current.backend_url)
        if hung:
            _write_backend(state_dir, new.url)
        try:
            front_pid = _start_front(state_dir, host, port, timeout)
            try:
                _write_backend(state_dir, new.url)
            except BaseException:
                stop_process_group(front_pid)
                raise
        except BaseException:
            if hung:  # back to `current`'s model server, as the state file has it: the caller
                _write_backend(state_dir, current.backend_url)  # stops `new`
            raise
        return front_pid
    if old is None:  # the first deploy, or a move from a model server without a front
        _write_backend(state_dir, new.url)
        return _start_front(state_dir, host, port, timeout)
    # Served by an older deploy without a front, on the port itself. Where the kernel lets us,
    # the front takes over the very socket the old server listens on: the port never stops
    # listening, connections that come while the old server stops and the front starts wait in
    # its queue, and none is refused. Elsewhere (`take_listening_socket` says when) the old server
    # must close the port before the front can bind it: connections are refused until the front
    # answers. Whatever ends this early (SIGTERM, Ctrl-C, a bug, a front that does not start),
    # the old version is served on the port again.
    listening = take_listening_socket(old.pid, address, port)
    try:
        _write_backend(state_dir, new.url)
        if listening is None:
            stop_process_group(old.pid)
            return _start_front(state_dir, host, port, timeout)
        with listening:
            return _start_front(
                state_dir, host, port, timeout, listening=listening,
                then=lambda: stop_process_group(old.pid),
            )  # fmt: skip
    except BaseException:
        _restore(old, state_dir, timeout)
        raise


def _restore(old: ServedModel, state_dir: Path, timeout: float) -> None:
    """Serve `old` (a record without a front) on its port again and record the new PID."""
    stop_process_group(old.pid)  # if it was interrupted while stopping
    (state_dir / BACKEND_FILE).unlink(missing_ok=True)
    log = Path(old.log) if old.log else state_dir / f"server-v{old.version}-{old.port}.log"
    proc = _start_server(old.model_path or old.model_uri, old.host, old.port, log)
    _prove_or_stop(proc, old.url, timeout, log, f"restoring {old.model_uri} on port {old.port}")
    _write_state(state_dir, dataclasses.replace(old, pid=proc.pid))


def stop_local(state_dir: Path, *, timeout: float = 300.0) -> bool:
    """Stop the front and every model server of `state_dir` (the recorded ones by PID, any other
    by its command line: left by a deploy that was killed); forget them.

    A record that cannot be removed (a read-only state directory) is left with one `warning:`
    line on stderr naming it, and is not an error: the servers are stopped, which is what `--stop`
    promises, and a record naming no live process of ours is ignored by every reader
    (`running_server` checks each PID's command line).

    Args:
        timeout: seconds to wait for a deploy of `state_dir` that is under way.

    Returns:
        True if a running server was stopped, False if there was none.

    Raises:
        TransientError: a deploy of `state_dir` held its lock for `timeout` seconds.
    """
    state_dir = state_dir.resolve()
    # No state directory: no deploy to wait for, and --stop creates none (servers may still run).
    locked = state_dir.is_dir()
    lock = exclusive_lock(state_dir / LOCK_FILE, timeout, _say, what="deploy")
    with lock if locked else contextlib.nullcontext():
        pids = {p.pid for p in [*_fronts(state_dir), *_model_servers(state_dir)]}
        recorded = running_server(state_dir)
        if recorded:
            pids |= {p for p in (recorded.pid, recorded.front_pid) if p}
        for pid in pids:
            stop_process_group(pid)
        kept = []
        for record in (state_dir / STATE_FILE, state_dir / BACKEND_FILE):
            try:
                record.unlink(missing_ok=True)
            except OSError as exc:
                kept.append(f"{record.name} ({exc.strerror or errno.errorcode.get(exc.errno)})")
        _prune_copies(state_dir)
    if kept:
        _say(
            f"warning: stopped {len(pids)} process(es) of {state_dir}, but could not remove "
            f"{', '.join(kept)}: a stale record, ignored by later deploys"
        )
    return bool(pids)


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def read_state(state_dir: Path) -> ServedModel | None:
    """The server recorded in `state_dir`, or None if there is no (readable) state file."""
    try:
        return ServedModel(**read_json_record(state_dir / STATE_FILE))
    except (OSError, ValueError, TypeError, NotRegularFile, OverBound):
        return None


def running_server(state_dir: Path) -> ServedModel | None:
    """What serves through `state_dir`'s front: the model server `backend.json` names and the
    front, both alive and really the processes we started (told by their command lines).

    The state file is the record; when it is stale (the step was killed between switching and
    recording), the record is rebuilt from the command lines. A stale state file (reboot, killed
    by hand, PID reused by another program) gives None, so we never signal a process we did not
    start. A record of an older deploy without a front is returned if its server still runs.
    """
    recorded = read_state(state_dir)
    fronts = _fronts(state_dir)
    backend_port = _backend_port(state_dir)
    if not fronts or backend_port is None:
        if recorded is not None and recorded.backend_port == 0 and _is_alive(recorded):
            return recorded
        return None
    front = next((f for f in fronts if recorded and f.pid == recorded.front_pid), fronts[0])
    if (
        recorded is not None
        and recorded.front_pid == front.pid
        and recorded.backend_port == backend_port
        and _is_alive(recorded)
    ):
        return recorded
    for server in _model_servers(state_dir):
        if server.port == backend_port:
            return _rebuilt(server, front)
    return None


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
    request: DeployRequest, model: Path, host: str, port: int, state_dir: Path, timeout: float
) -> ServedModel:
    """Start a server of the copy `model` on `port`, wait for /ping and smoke-test it; stop it
    again if any of that fails or is interrupted (Ctrl-C, any exception)."""
    log = state_dir / f"server-v{request.version}-{port}.log"
    proc = _start_server(str(model), host, port, log)
    served = ServedModel(
        proc.pid, host, port, request.model_uri, request.version, str(log), model_path=str(model)
    )
    _prove_or_stop(proc, served.url, timeout, log, f"serving {request.model_uri} on port {port}")
    return served


def _prove_or_stop(proc: subprocess.Popen, url: str, timeout: float, log: Path, what: str) -> None:
    """Wait until `url`/ping answers, then smoke-test `url`; stop `proc`'s process group if
    either fails or is interrupted (Ctrl-C, any exception). `what` names it in the error."""
    try:
        wait_until_healthy(f"{url}/ping", timeout=timeout, proc=proc, log=log)
        smoke_test(url)
    except StepError as exc:
        stop_process_group(proc.pid)
        raise StepError(f"{what} failed: {exc}") from exc
    except BaseException:
        stop_process_group(proc.pid)
        raise
    # The server must outlive this step: mark it as handled so Popen does not warn when
    # this process exits, it is stopped later by PID.
    proc.returncode = 0


# What a server started here on a local copy does not need, and so is not given: the tracking
# server and its credentials (MLFLOW_TRACKING_URI, _USERNAME, _PASSWORD, _TOKEN, ... and
# MLFLOW_REGISTRY_URI) and the Argo token. `mlflow models serve -m <directory>` reads the model
# from the directory alone (tests/test_deploy_local.py serves one started without them); these
# processes outlive the step, and their environment is readable by the user's other processes.
_NOT_FOR_SERVERS = ("MLFLOW_TRACKING_", "MLFLOW_REGISTRY_URI", "ARGO_TOKEN")


def server_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default `os.environ`) without the variables `_NOT_FOR_SERVERS` names."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if not k.startswith(_NOT_FOR_SERVERS)}


def _start_server(model: str, host: str, port: int, log: Path) -> subprocess.Popen:
    mlflow = mlflow_program()
    # One worker: with --workers > 1, uvicorn 0.54's supervisor respawns a worker whose model fails
    # to load instead of exiting (seen here: /ping just never answers until the timeout), so a
    # broken model would cost the whole --timeout. https://github.com/Kludex/uvicorn/issues/1115
    # A record of an older deploy may name a `models:/` URI rather than a copy: that server reads
    # the model from MLflow, so it keeps MLflow's settings.
    local_copy = "://" not in model and not model.startswith(("models:", "runs:"))
    command, env = recommended_serve_command(
        model, host=host, port=port, workers=1, mlflow_executable=str(mlflow),
        base_env=server_environment() if local_copy else None,
    )  # fmt: skip
    # `models serve` execs `uvicorn` by name; it must find the one beside our mlflow.
    env["PATH"] = os.pathsep.join([str(mlflow.parent), env.get("PATH", "")])
    return _detached(command, log, env)


def _detached(
    command: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> subprocess.Popen:
    """Start `command` in its own process group (it outlives the step and is stopped with
    killpg), its output appended to `log`, with the file descriptors `pass_fds` inherited."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, pass_fds=pass_fds,
        )  # fmt: skip


def _start_front(
    state_dir: Path,
    host: str,
    port: int,
    timeout: float,
    *,
    listening: socket.socket | None = None,
    then: Callable[[], None] | None = None,
) -> int:
    """Start the front on `host:port` (accepting on `listening`, a socket already listening
    there, if given), run `then`, and smoke-test the model server through the front; its PID.
    The front is stopped again if `then` or the proof fails or is interrupted."""
    log = state_dir / "front.log"
    command = [sys.executable, "-m", FRONT_MODULE, host, str(port), str(state_dir / BACKEND_FILE)]
    if listening is None:
        proc = _detached(command, log, server_environment())
    else:
        env = {**server_environment(), LISTEN_FD_ENV: str(listening.fileno())}
        proc = _detached(command, log, env, pass_fds=(listening.fileno(),))
    try:
        if then is not None:
            then()
    except BaseException:
        stop_process_group(proc.pid)
        raise
    url = f"http://{host}:{port}"
    _prove_or_stop(proc, url, timeout, log, f"starting the front on port {port}")
    return proc.pid


def _fronts(state_dir: Path) -> list[_Process]:
    """Live fronts whose backend file is `state_dir`'s."""
    backend_file = str(state_dir.resolve() / BACKEND_FILE)
    found = []
    for pid, argv in _command_lines():
        if FRONT_MODULE in argv and argv[-1:] == [backend_file] and len(argv) >= 4:
            with contextlib.suppress(ValueError):
                found.append(_Process(pid, argv[-3], int(argv[-2])))
    return found


def _model_servers(state_dir: Path) -> list[_Process]:
    """Live `mlflow models serve` processes whose model is a copy under `state_dir/models/`."""
    copies = (state_dir.resolve() / MODELS_DIR).resolve()
    found = []
    for pid, argv in _command_lines():
        if "serve" not in argv:
            continue
        flags = flag_values(argv)
        model = Path(flags.get("--model-uri", "/"))
        if model.name == COPY_MODEL and model.parent.parent == copies:
            with contextlib.suppress(KeyError, ValueError):
                found.append(_Process(pid, flags["--host"], int(flags["--port"]), str(model)))
    return found


def _command_lines() -> list[tuple[int, list[str]]]:
    return [(pid, command_line(pid)) for pid in all_pids()]


def _rebuilt(server: _Process, front: _Process) -> ServedModel | None:
    """The record of `server` behind `front`, from its copy's `served-as.json`."""
    try:
        copy = read_json_record(Path(server.model_path).parent / COPY_RECORD)
    except (OSError, ValueError, NotRegularFile, OverBound):
        return None
    return ServedModel(
        server.pid, front.host, front.port, copy["model_uri"], copy["version"], "",
        model_path=server.model_path, backend_port=server.port, front_pid=front.pid,
    )  # fmt: skip


def _is_alive(served: ServedModel) -> bool:
    """Its model server (and front, if it has one) run, and are the processes we started."""
    if not is_our_process(served.pid, ("serve",), served.serve_flags):
        return False
    return served.front_pid == 0 or is_our_process(served.front_pid, (FRONT_MODULE,))


def _backend_port(state_dir: Path) -> int | None:
    try:
        url = read_json_record(state_dir / BACKEND_FILE)["url"]
        return int(url.rsplit(":", 1)[1])
    except (OSError, ValueError, KeyError, IndexError, TypeError, NotRegularFile, OverBound):
        return None


def _write_backend(state_dir: Path, url: str) -> None:
    write_text_atomically(state_dir / BACKEND_FILE, json.dumps({"url": url}) + "\n")


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
    in_use = {Path(s.model_path).parent for s in _model_servers(state_dir)}
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
