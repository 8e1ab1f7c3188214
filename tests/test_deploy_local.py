"""Deploy stage, `local` target, against a real MLflow registry and real `mlflow models serve`."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest

from steps.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_TRANSIENT, BadInput, StepError
from steps.deploy_targets import local
from steps.deploy_targets.common import SMOKE_BODY, DeployRequest
from steps.deploy_targets.local import (
    BACKEND_FILE,
    LOCK_FILE,
    STATE_FILE,
    ServedModel,
    read_state,
    running_server,
    stop_local,
)
from steps.model import LinearCoefficients
from steps.processes import pid_alive, port_is_free, stop_process_group, wait_until_healthy
from tests.conftest import MlflowServer, free_port
from tests.model_helpers import RawCoefficients, RequestLoad, register_served

REPO = Path(__file__).resolve().parents[1]
TEMPS = [row[0] for row in SMOKE_BODY["dataframe_split"]["data"]]

# Known relations dewp = slope * temp + intercept: v1 and v2 must predict them exactly.
V1 = (0.8, -5.0)
V2 = (0.5, 10.0)

# Our served model with a coefficients artifact it cannot read, and one that predicts NaN: both
# pass deploy's trust check (steps/model_trust.py), so deploy's own checks must catch them.
BROKEN_COEFFICIENTS = RawCoefficients('{"feature": "temp"}')
NAN_COEFFICIENTS = RawCoefficients('{"feature": "temp", "coef": NaN, "intercept": NaN}')

# Where a fault hits the local target: while a started server is proven (its smoke test), and
# when the proven server is written to the state file.
FAULT_POINTS = {
    "proving": "smoke_test",
    "recording": "_write_state",
    "starting the front": "_start_front",
}
FAULT_RUNNER = """
import errno, os, runpy, signal, sys
import steps.deploy_targets.local as local
from steps.files import write_atomically

real = getattr(local, "{where}")

def no_space(tmp):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

def faulty(*args, **kwargs):
    setattr(local, "{where}", real)  # once
    if "{fault}" == "ctrl-c":
        os.kill(os.getpid(), signal.SIGINT)
    elif "{fault}" == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif "{fault}" == "no space":
        write_atomically(args[0] / local.STATE_FILE, no_space)  # _write_state(state_dir, ...)
    raise RuntimeError("a bug")

setattr(local, "{where}", faulty)
sys.argv[0] = "steps"
runpy.run_module("steps", run_name="__main__")
"""


@dataclass
class Registry:
    """A registered model with versions created for these tests."""

    url: str
    name: str
    experiment_id: str
    root: Path

    def linear(self, slope: float, intercept: float) -> str:
        """Register our served model predicting exactly dewp = slope * temp + intercept."""
        return self.served(LinearCoefficients(slope, intercept))

    def served(self, coefficients: LinearCoefficients | RawCoefficients) -> str:
        """Register our served model (passes the trust check) with `coefficients`."""
        return register_served(self.url, self.experiment_id, self.name, coefficients)


@pytest.fixture(scope="module")
def registry(
    mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """A fresh registered model name on the session's MLflow server."""
    # set_tracking_uri also sets MLFLOW_TRACKING_URI in os.environ: put both back afterwards.
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(mlflow_server.url)
    suffix = uuid.uuid4().hex[:8]
    experiment = mlflow.MlflowClient(mlflow_server.url).create_experiment(f"deploy-{suffix}")
    root = tmp_path_factory.mktemp("deploy-models")
    yield Registry(mlflow_server.url, f"deploy-local-{suffix}", experiment, root)
    mlflow.set_tracking_uri(previous)


@dataclass
class LocalDeploy:
    """Runs `python -m steps deploy --target local` as a user would, on one port and state dir."""

    registry: Registry
    state_dir: Path
    port: int

    def run(self, version: str, *extra: str) -> subprocess.CompletedProcess:
        """Run the deploy step in its own process; the server it starts must outlive it."""
        return self._run([sys.executable, "-m", "steps"], version, *extra)

    def run_with_fault(
        self, version: str, where: str, fault: str, *extra: str
    ) -> subprocess.CompletedProcess:
        """`run` with `fault` injected the first time the step reaches `where` (FAULT_POINTS) in
        its own process: a real SIGINT or SIGKILL sent to itself, a full disk, or a bug."""
        patch = FAULT_RUNNER.format(where=FAULT_POINTS[where], fault=fault)
        return self._run([sys.executable, "-c", patch], version, *extra)

    def command(
        self, version: str, *extra: str, python: tuple[str, ...] = (sys.executable, "-m", "steps")
    ) -> list[str]:
        """The deploy command line; `version` "" passes no --version (an empty number is bad
        input: docs/steps.md). A `--model-name`, `--port`, `--state-dir` or `--timeout` in
        `extra` replaces this deploy's own (a flag given twice is refused)."""
        command = [*python, "deploy", "--target", "local"]
        command += ["--version", version] if version else []
        command += ["--tracking-uri", self.registry.url]
        defaults = {
            "--model-name": self.registry.name,
            "--port": str(self.port),
            "--state-dir": str(self.state_dir),
            "--timeout": "240",
        }
        for flag, value in defaults.items():
            command += [] if flag in extra else [flag, value]
        return [*command, *extra]

    def _run(
        self,
        python: list[str],
        version: str,
        *extra: str,
        preexec_fn: Callable[[], None] | None = None,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(version, *extra, python=tuple(python)), capture_output=True, text=True,
            cwd=REPO, timeout=900, check=False, preexec_fn=preexec_fn,
        )  # fmt: skip

    def start(self, version: str, *extra: str) -> subprocess.Popen:
        """`run`, without waiting for it."""
        return subprocess.Popen(
            self.command(version, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=REPO,
        )  # fmt: skip

    def predict(self) -> list[float]:
        """Predictions of whatever serves on the port now."""
        url = f"http://127.0.0.1:{self.port}/invocations"
        response = httpx.post(url, json=SMOKE_BODY, timeout=30)
        response.raise_for_status()
        return response.json()["predictions"]

    def state_text(self) -> str:
        """The raw state file."""
        return (self.state_dir / STATE_FILE).read_text()


def outputs(result: subprocess.CompletedProcess) -> dict[str, str]:
    """The step's outputs: the JSON line it prints last on stdout."""
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def one_line_error(result: subprocess.CompletedProcess, code: int = EXIT_FAILED) -> str:
    """Assert the step failed (exit `code`) with exactly one `error:` line on stderr; return it."""
    assert result.returncode == code, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def expected(relation: tuple[float, float]) -> list[float]:
    """What a model with dewp = slope * temp + intercept predicts for the smoke-test temps."""
    slope, intercept = relation
    return [slope * t + intercept for t in TEMPS]


def _serve_pids(*needles: str) -> list[int]:
    """PIDs of every process (but this one) with an argument containing one of `needles`: a
    model name in a `models:/` URI, or a state directory (the front's backend file, the copy a
    model server serves)."""
    proc = Path("/proc")
    found = []
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(n.encode() in arg for n in needles for arg in argv):
            found.append(int(entry.name))
    return found


def _kill_servers_of(*needles: str) -> None:
    """Teardown safety net: stop any server of this test (`_serve_pids`) still running."""
    for pid in _serve_pids(*needles):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def local_deploy(registry: Registry, tmp_path: Path) -> Iterator[LocalDeploy]:
    """A deploy on a free port; teardown stops every server it started, by PID."""
    deploy = LocalDeploy(registry, tmp_path / "serve", free_port())
    yield deploy
    stop_local(deploy.state_dir)
    _kill_servers_of(registry.name, str(deploy.state_dir.resolve()))


@pytest.mark.slow
def test_local_deploy_swaps_versions_and_keeps_serving_through_bad_ones(
    registry: Registry, local_deploy: LocalDeploy
) -> None:
    v1 = registry.linear(*V1)
    v2 = registry.linear(*V2)
    broken = registry.served(BROKEN_COEFFICIENTS)
    nan = registry.served(NAN_COEFFICIENTS)

    assert outputs(local_deploy.run(v1)) == {"served-version": v1, "changed": "true"}
    assert local_deploy.predict() == pytest.approx(expected(V1))
    first = read_state(local_deploy.state_dir)
    assert first is not None and first.version == v1

    assert outputs(local_deploy.run(v2)) == {"served-version": v2, "changed": "true"}
    assert local_deploy.predict() == pytest.approx(expected(V2))
    second = running_server(local_deploy.state_dir)
    assert second is not None and second.version == v2 and second.pid != first.pid

    # Same version again: nothing restarted.
    state_before = local_deploy.state_text()
    assert outputs(local_deploy.run(v2)) == {"served-version": v2, "changed": "false"}
    assert local_deploy.state_text() == state_before

    # A model that cannot load, one that predicts NaN, one that is not registered (bad input):
    # v2 stays.
    causes = {
        broken: (
            f"server exited with code 1; see {local_deploy.state_dir}/server-v{broken}-",
            EXIT_FAILED,
        ),
        nan: ("non-numeric or non-finite predictions", EXIT_FAILED),
        "99": ("does not exist at", EXIT_BAD_INPUT),
    }
    for bad, (cause, code) in causes.items():
        assert cause in one_line_error(local_deploy.run(bad), code)
        assert local_deploy.state_text() == state_before
        assert running_server(local_deploy.state_dir) == second
        assert local_deploy.predict() == pytest.approx(expected(V2))


@pytest.mark.slow
def test_stop_local_stops_the_server_by_pid(registry: Registry, local_deploy: LocalDeploy) -> None:
    version = registry.linear(*V1)
    outputs(local_deploy.run(version))
    served = running_server(local_deploy.state_dir)
    assert served is not None

    result = local_deploy.run("", "--stop")

    assert outputs(result) == {"served-version": "none", "changed": "true"}
    assert not (local_deploy.state_dir / STATE_FILE).exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{served.url}/ping", timeout=5)
    assert outputs(local_deploy.run("", "--stop"))["changed"] == "false"


@pytest.mark.slow
@pytest.mark.parametrize("change", ["serve v2", "stop"])
def test_a_full_disk_for_the_outputs_fails_before_what_is_served_changes(
    change: str, registry: Registry, local_deploy: LocalDeploy, tmp_path: Path
) -> None:
    """The outputs' files get their room before another model is served or the server stops
    (before: v2 was served, or the server stopped, then writing the outputs failed)."""
    v1 = registry.linear(*V1)
    v2 = registry.linear(*V2)
    outputs(local_deploy.run(v1))
    before = local_deploy.state_text()
    full = tmp_path / "full"
    version, extra = (v2, ()) if change == "serve v2" else ("", ("--stop",))
    runner = [sys.executable, "-m", "tests.full_disk", str(full)]
    result = local_deploy._run(runner, version, *extra, "--outputs-dir", str(full / "o"))

    line = one_line_error(result)
    assert f"cannot write {full / 'o'}" in line and "No space left on device" in line
    assert local_deploy.state_text() == before
    assert local_deploy.predict() == pytest.approx(expected(V1))
    assert not full.exists()


@pytest.mark.slow
def test_the_servers_serve_without_mlflow_s_or_argo_s_credentials(
    registry: Registry, local_deploy: LocalDeploy
) -> None:
    """The model server and the front outlive the step; they held MLFLOW_TRACKING_URI and
    MLFLOW_TRACKING_PASSWORD (and any ARGO_TOKEN) in their environment, which serving a downloaded
    copy does not need: they start without them, and serve."""
    version = registry.linear(*V1)
    secrets = {
        "MLFLOW_TRACKING_USERNAME": "u",
        "MLFLOW_TRACKING_PASSWORD": "pw-not-for-servers",
        "ARGO_TOKEN": "argo-not-for-servers",
        "MLFLOW_REGISTRY_URI": registry.url,
    }
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.url, **secrets}
    result = subprocess.run(
        local_deploy.command(version), capture_output=True, text=True, cwd=REPO, env=env,
        timeout=900, check=False,
    )  # fmt: skip
    assert outputs(result)["served-version"] == version
    assert local_deploy.predict() == pytest.approx(expected(V1))
    pids = _serve_pids(str(local_deploy.state_dir.resolve()))
    assert len(pids) >= 2  # the front and the model server
    for pid in pids:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        names = {item.partition(b"=")[0].decode() for item in environ}
        assert not names & {*secrets, "MLFLOW_TRACKING_URI"}, (pid, names)


def test_stale_state_file_is_not_trusted(tmp_path: Path) -> None:
    # PID 1 is alive but is not our server: it must never be signalled.
    state = {"pid": 1, "host": "127.0.0.1", "port": 5001, "model_uri": "models:/m/1"}
    state |= {"version": "1", "log": "x.log"}
    (tmp_path / STATE_FILE).write_text(json.dumps(state))

    assert read_state(tmp_path) is not None
    assert running_server(tmp_path) is None
    assert stop_local(tmp_path) is False


@pytest.mark.parametrize("host", ["localhost", "127.1"])
def test_a_deploy_looks_its_host_up_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    """`serving_problem` looked the host up for "our server listens there" and again for the
    port check; a deploy then a third time for the served model on host:port, before fetching
    the version. Now once per check, the address passed along."""
    lookups: list[str] = []
    lookup = socket.getaddrinfo

    def counted(name: str, *args: Any, **kwargs: Any) -> Any:
        lookups.append(name)
        return lookup(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counted)
    state_dir, port = tmp_path / "serve", free_port()
    assert local.serving_problem(host, port, state_dir) is None
    assert lookups == [host]

    def unknown(request: DeployRequest, state_dir: Path) -> Path:
        raise BadInput("no such version")

    lookups.clear()
    # The registry's look-up first (`check_registered`) finds the version; the copy does not.
    monkeypatch.setattr(local, "check_registered", lambda request: None)
    monkeypatch.setattr(local, "_verified_copy", unknown)
    request = DeployRequest("m", "1", "http://127.0.0.1:1")
    with pytest.raises(BadInput, match="no such version"):
        local.deploy_local(request, host=host, port=port, state_dir=state_dir, timeout=5)
    assert lookups == [host]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("swap", "where", "fault"),
    [
        (False, "proving", "ctrl-c"),
        (False, "proving", "bug"),
        (False, "proving", "sigkill"),
        (False, "recording", "no space"),
        (False, "recording", "ctrl-c"),
        (False, "recording", "sigkill"),
        (True, "proving", "ctrl-c"),
        (True, "recording", "sigkill"),
    ],
)
def test_no_exit_path_leaves_a_server_that_deploy_and_stop_cannot_find(
    registry: Registry, local_deploy: LocalDeploy, swap: bool, where: str, fault: str
) -> None:
    """Ctrl-C, a full disk, a bug or SIGKILL between starting a server and recording it: the
    port is then free or holds a server `running_server` finds (and, after a swap, serves),
    `--stop` stops every process of the state directory, and the next deploy works (before:
    "port in use by a process this step did not start", for good)."""
    v1 = registry.linear(*V1)
    version = v1
    if swap:
        outputs(local_deploy.run(v1))
        version = registry.linear(*V2)

    failed = local_deploy.run_with_fault(version, where, fault)

    assert failed.returncode != 0, failed.stdout + failed.stderr
    ours = (registry.name, str(local_deploy.state_dir.resolve()))
    left = _serve_pids(*ours)
    if fault == "no space":
        assert "No space left on device" in one_line_error(failed)
    served = running_server(local_deploy.state_dir)
    if served is None:
        assert port_is_free("127.0.0.1", local_deploy.port)
    else:
        assert served.port == local_deploy.port
        assert local_deploy.predict() == pytest.approx(expected(V2 if served.version != v1 else V1))
    if swap:  # the old version, or the proven new one, serves: never nothing
        assert served is not None
    assert outputs(local_deploy.run("", "--stop"))["changed"] == ("true" if left else "false")
    assert _serve_pids(*ours) == []
    assert port_is_free("127.0.0.1", local_deploy.port)
    assert outputs(local_deploy.run(version)) == {"served-version": version, "changed": "true"}


@pytest.mark.slow
def test_redeploy_under_load_refuses_or_fails_no_request(
    registry: Registry, local_deploy: LocalDeploy
) -> None:
    """Clients post to the port back to back while v1 is replaced by v2: not one request is
    refused or fails (before: about 7 s of refused connections per swap, 678 of 7,078 requests
    under load), and the answers move from v1's predictions to v2's."""
    v1 = registry.linear(*V1)
    v2 = registry.linear(*V2)
    outputs(local_deploy.run(v1))
    _redeploy_under_load_answers_every_request(local_deploy, v2)


def _redeploy_under_load_answers_every_request(
    deploy: LocalDeploy, v2: str, *, old_server_on_port: bool = False
) -> None:
    """Clients post to the port back to back (the served V1 answering first) while `deploy`
    deploys `v2` (V2): not one request is refused or fails, and the answers move from V1's
    predictions to V2's.

    With `old_server_on_port` (V1 served without the front, its clients connected to its uvicorn
    itself), stopping that server may close, unanswered, the connections it holds then: uvicorn
    closes on shutdown every connection whose request it has not read yet
    (https://github.com/Kludex/uvicorn/discussions/2315). Clients resend those; there can be at
    most one per client (each holds one connection, and the server stops once)."""
    url = f"http://127.0.0.1:{deploy.port}/invocations"
    clients = 4
    with RequestLoad(url, SMOKE_BODY, clients, resend_unanswered=old_server_on_port) as load:
        while load.answered < 20 and not load.failed:  # the old server answers first
            time.sleep(0.05)
        assert outputs(deploy.run(v2)) == {"served-version": v2, "changed": "true"}
        after = load.answered + 20  # and some more, now that the old server is stopped
        deadline = time.monotonic() + 60
        while load.answered < after and not load.failed and time.monotonic() < deadline:
            time.sleep(0.1)

    assert load.failed == [], (len(load.failed), load.answered, load.failed[:5])
    assert load.closed_unanswered <= (clients if old_server_on_port else 0)
    assert load.answered >= after
    seen = [list(p) for p in load.predictions]
    assert all(p == pytest.approx(expected(V1)) or p == pytest.approx(expected(V2)) for p in seen)
    assert any(p == pytest.approx(expected(V1)) for p in seen)
    assert any(p == pytest.approx(expected(V2)) for p in seen)
    assert deploy.predict() == pytest.approx(expected(V2))


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.slow
def test_two_deploys_on_one_state_directory_take_turns(
    registry: Registry, local_deploy: LocalDeploy
) -> None:
    """A second deploy started while the first proves its server waits for it, then swaps
    (before: the second stopped the first's candidate as a leftover, and the first failed with
    "server exited with code -15")."""
    v1 = registry.linear(*V1)
    v2 = registry.linear(*V2)
    copies = str(local_deploy.state_dir.resolve() / "models")
    first = local_deploy.start(v1)
    _wait_for(lambda: bool(_serve_pids(copies)) or first.poll() is not None, "v1's server")

    second = local_deploy.run(v2)
    first_out, first_err = first.communicate(timeout=900)

    assert first.returncode == 0, first_err
    assert json.loads(first_out.splitlines()[-1]) == {"served-version": v1, "changed": "true"}
    assert outputs(second) == {"served-version": v2, "changed": "true"}
    assert f"waiting up to 240s for deploy pid {first.pid}" in second.stderr
    assert local_deploy.predict() == pytest.approx(expected(V2))
    served = running_server(local_deploy.state_dir)
    assert served is not None and served.version == v2
    assert _serve_pids(copies) == [served.pid]  # v1's server stopped by the swap, none left over


def test_deploy_and_stop_refuse_in_one_line_while_another_deploy_holds_the_state_directory(
    local_deploy: LocalDeploy,
) -> None:
    local_deploy.state_dir.mkdir(parents=True)
    lock = local_deploy.state_dir / LOCK_FILE
    with lock.open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242")
        held.flush()
        for version, extra in (("7", ()), ("", ("--stop",))):
            result = local_deploy.run(version, *extra, "--timeout", "0.5")

            assert result.returncode == EXIT_TRANSIENT, result.stderr
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            held_by = f"another deploy (pid 4242) holds {lock.resolve()}"
            assert errors == [f"error: {held_by}; waited 0s, try again later"]
    assert port_is_free("127.0.0.1", local_deploy.port)


def _file_size_limit(limit: int) -> Callable[[], None]:
    """preexec_fn: files of the child may not grow past `limit` bytes (RLIMIT_FSIZE), as on a
    full disk; a write past it fails with EFBIG instead of killing the process (SIGXFSZ)."""

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_files


@pytest.mark.slow
def test_a_full_disk_during_deploy_fails_naming_the_write_and_serves_on(
    registry: Registry, local_deploy: LocalDeploy
) -> None:
    """No room to write the new version's copy: exit 1 (not 75: a retry will not make room),
    one line saying what could not be written, the old version still served and recorded
    (before: exit 75, "cannot score models:/frog/11 (version)")."""
    v1 = registry.linear(*V1)
    v2 = registry.linear(*V2)
    outputs(local_deploy.run(v1))
    before = local_deploy.state_text()

    # 64 bytes: the lock file's PID fits, a model file does not.
    result = local_deploy._run([sys.executable, "-m", "steps"], v2, preexec_fn=_file_size_limit(64))

    line = one_line_error(result)
    assert f"cannot download models:/{registry.name}/{v2} (version) into" in line
    assert "no space left to write" in line and "File too large" in line
    assert local_deploy.state_text() == before
    assert local_deploy.predict() == pytest.approx(expected(V1))


def _as_deployed_before_the_front(deploy: LocalDeploy) -> ServedModel:
    """Turn the deploy of `deploy.state_dir` into what a deploy before the front left: its model
    server itself on the serve port, recorded with no front. Returns the record."""
    served = running_server(deploy.state_dir)
    assert served is not None and served.front_pid
    stop_process_group(served.front_pid)
    stop_process_group(served.pid)
    (deploy.state_dir / BACKEND_FILE).unlink()
    log = deploy.state_dir / "old-style.log"
    proc = local._start_server(served.model_path, served.host, deploy.port, log)
    wait_until_healthy(f"{served.url}/ping", timeout=240, proc=proc, log=log)
    proc.returncode = 0  # outlives this helper; stopped by PID
    old = dataclasses.replace(served, pid=proc.pid, log=str(log), backend_port=0, front_pid=0)
    local._write_state(deploy.state_dir, old)
    assert running_server(deploy.state_dir) == old
    return old


@pytest.mark.slow
def test_upgrade_from_a_deploy_without_front_under_load_refuses_no_request(
    registry: Registry, local_deploy: LocalDeploy
) -> None:
    """v1 served the old way (its `mlflow models serve` on the serve port, no front), clients
    posting back to back, then a deploy of v2: the front takes over the old server's listening
    socket, so not one request is refused or fails; at most one per client is closed unanswered
    as the old server stops, and resent (before: the old server closed the port and
    connections were refused until the front bound it: 29,054 refused requests in one run). This
    kernel allows the takeover (`take_listening_socket`); where it does not, README says what
    happens instead."""
    v1 = registry.linear(*V1)
    v2 = registry.linear(*V2)
    outputs(local_deploy.run(v1))
    old = _as_deployed_before_the_front(local_deploy)

    _redeploy_under_load_answers_every_request(local_deploy, v2, old_server_on_port=True)

    served = running_server(local_deploy.state_dir)
    assert served is not None and served.version == v2 and served.front_pid != 0
    assert not pid_alive(old.pid)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["sigterm", "bug"])
def test_an_interrupted_upgrade_from_a_deploy_without_front_serves_the_old_version(
    registry: Registry, local_deploy: LocalDeploy, fault: str
) -> None:
    """The first redeploy after a deploy without a front must stop the old server to free the
    port. SIGTERM, or a bug, after that stop and before the front answers: the old version is
    served and recorded again, no server is left over, and the next deploy works (before:
    nothing was served)."""
    v1 = registry.linear(*V1)
    v2 = registry.linear(*V2)
    outputs(local_deploy.run(v1))
    old = _as_deployed_before_the_front(local_deploy)

    if fault == "sigterm":
        step = local_deploy.start(v2)
        _wait_for(lambda: not pid_alive(old.pid) or step.poll() is not None, "the old server")
        step.send_signal(signal.SIGTERM)
        _, err = step.communicate(timeout=900)
        assert step.returncode == 1, err
        assert "stopped by SIGTERM" in err
    else:
        failed = local_deploy.run_with_fault(v2, "starting the front", "bug")
        assert failed.returncode != 0 and "a bug" in failed.stderr, failed.stderr

    assert local_deploy.predict() == pytest.approx(expected(V1))
    restored = running_server(local_deploy.state_dir)
    assert restored is not None and restored.version == v1 and restored.backend_port == 0
    assert restored.port == local_deploy.port and restored.pid != old.pid
    assert _serve_pids(str(local_deploy.state_dir.resolve())) == [restored.pid]
    assert outputs(local_deploy.run(v2)) == {"served-version": v2, "changed": "true"}
    assert local_deploy.predict() == pytest.approx(expected(V2))


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """`folder` read-only while inside: chmod for a user, a read-only bind mount for root (whom
    permission bits do not stop); skips the test where root may not mount."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make {folder} read-only here: {mounted.stderr!r}")
    try:
        remount = ["mount", "-o", "remount,bind,ro", str(folder)]
        if subprocess.run(remount, capture_output=True).returncode != 0:
            pytest.skip(f"cannot remount {folder} read-only here")
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.slow
def test_stop_on_a_read_only_state_directory_stops_the_servers_and_says_the_record_stays(
    registry: Registry, local_deploy: LocalDeploy
) -> None:
    """`--stop` promises that nothing of the state directory runs: done, so exit 0, with one
    `warning:` line naming the record it could not remove; the stale record is ignored and the
    next deploy serves (before: servers stopped, yet exit 1 and an error line)."""
    version = registry.linear(*V1)
    outputs(local_deploy.run(version))

    with _read_only(local_deploy.state_dir):
        result = local_deploy.run("", "--stop")
        assert (local_deploy.state_dir / STATE_FILE).exists()

    assert outputs(result) == {"served-version": "none", "changed": "true"}
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("warning: stopped 2 process(es) of ")
    assert f"could not remove {STATE_FILE} (Read-only file system)" in lines[0]
    assert _serve_pids(str(local_deploy.state_dir.resolve())) == []
    assert port_is_free("127.0.0.1", local_deploy.port)
    assert running_server(local_deploy.state_dir) is None
    assert outputs(local_deploy.run(version)) == {"served-version": version, "changed": "true"}


# Runs the deploy step with the `champion` alias moved to the next of `moves` (versions; None
# deletes it) as each serve of the local target ends: another door promoting while this deploy
# serves.
ALIAS_MOVER = """
import runpy, sys
import mlflow
import steps.deploy as deploy

real = deploy._DEPLOY["local"]
moves = {moves!r}

def moving(*args, **kwargs):
    result = real(*args, **kwargs)
    if moves:
        client = mlflow.MlflowClient({url!r})
        to = moves.pop(0)
        if to is None:
            client.delete_registered_model_alias({name!r}, "champion")
        else:
            client.set_registered_model_alias({name!r}, "champion", to)
    return result

deploy._DEPLOY["local"] = moving
sys.argv[0] = "steps"
runpy.run_module("steps", run_name="__main__")
"""


def _set_champion(registry: Registry, version: str) -> None:
    client = mlflow.MlflowClient(registry.url)
    client.set_registered_model_alias(registry.name, "champion", version)


def _deploy_alias_while_it_moves(
    deploy: LocalDeploy, moves: list[str]
) -> subprocess.CompletedProcess:
    registry = deploy.registry
    script = ALIAS_MOVER.format(moves=moves, url=registry.url, name=registry.name)
    return deploy._run([sys.executable, "-c", script], "", "--alias", "champion")


@pytest.mark.slow
def test_deploy_of_the_champion_alias_serves_the_version_it_names_when_deploy_ends(
    registry: Registry, local_deploy: LocalDeploy
) -> None:
    """`--alias champion` (the pipeline's deploy) serves the version the alias names when deploy
    runs (before: deploy served the version this run's promote output, so after a promote from
    another door, run A's deploy served v1 over the champion v2)."""
    v1 = registry.linear(*V1)
    v2 = registry.linear(*V2)
    _set_champion(registry, v1)
    assert outputs(local_deploy.run("", "--alias", "champion")) == {
        "served-version": v1, "changed": "true",
    }  # fmt: skip
    assert local_deploy.predict() == pytest.approx(expected(V1))

    _set_champion(registry, v2)  # promoted through another door after this run's promote
    assert outputs(local_deploy.run("", "--alias", "champion")) == {
        "served-version": v2, "changed": "true",
    }  # fmt: skip

    assert local_deploy.predict() == pytest.approx(expected(V2))
    assert running_server(local_deploy.state_dir).version == v2


@pytest.mark.slow
def test_deploy_of_an_alias_that_moved_while_serving_serves_it_again(
    registry: Registry, local_deploy: LocalDeploy
) -> None:
    """The alias moves right after deploy proved the version it read: deploy reads it again and
    serves the version it names now, and says so."""
    v1 = registry.linear(*V1)
    v2 = registry.linear(*V2)
    _set_champion(registry, v1)

    result = _deploy_alias_while_it_moves(local_deploy, [v2])

    assert outputs(result) == {"served-version": v2, "changed": "true"}
    assert f"moved from version {v1} to {v2}" in result.stderr
    assert local_deploy.predict() == pytest.approx(expected(V2))


@pytest.mark.slow
def test_deploy_of_an_alias_that_keeps_moving_gives_up_transiently_and_keeps_serving(
    registry: Registry, local_deploy: LocalDeploy
) -> None:
    """An alias that moves after every serve: deploy stops after ALIAS_ROUNDS serves with exit
    75 (Argo's retry, or the next run, serves it as it is then) and the last version it proved
    stays served and recorded."""
    v1 = registry.linear(*V1)
    v2 = registry.linear(*V2)
    _set_champion(registry, v1)

    result = _deploy_alias_while_it_moves(local_deploy, [v2, v1, v2])

    assert result.returncode == EXIT_TRANSIENT, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("error: the alias 'champion' of ")
    assert "moved after each of 3 deploys" in last
    assert f"version {v1}, deployed last, stays served" in last
    # It says it deploys only what it deploys: v2, then v1 again (not v2 a third time).
    assert result.stderr.count("deploying version") == 2
    assert local_deploy.predict() == pytest.approx(expected(V1))
    assert running_server(local_deploy.state_dir).version == v1


@pytest.mark.slow
def test_deploy_of_an_alias_removed_while_serving_says_what_stays_served(
    registry: Registry, local_deploy: LocalDeploy
) -> None:
    """The alias is deleted right after deploy served the version it named: exit 1, and the one
    error line says that version stays served (before: "nothing to serve ... left as it is",
    while the served model had changed)."""
    v1 = registry.linear(*V1)
    v2 = registry.linear(*V2)
    outputs(local_deploy.run(v1))
    _set_champion(registry, v2)

    line = one_line_error(_deploy_alias_while_it_moves(local_deploy, [None]))

    what = f"alias 'champion' of registered model {registry.name!r}"
    assert f"{what} does not exist at {registry.url}: it changed after version {v2}" in line
    assert "stays served" in line
    assert local_deploy.predict() == pytest.approx(expected(V2))


def test_deploy_of_a_missing_alias_changes_nothing(
    registry: Registry, local_deploy: LocalDeploy
) -> None:
    """No `previous-champion` alias: one error line, exit 2 (bad input, as every name the registry
    does not have), nothing started or stopped: with nothing served, and with a version served,
    which stays served."""
    client = mlflow.MlflowClient(registry.url)
    v1 = registry.linear(*V1)  # the registered model exists
    with contextlib.suppress(mlflow.exceptions.MlflowException):
        client.delete_registered_model_alias(registry.name, "previous-champion")

    line = one_line_error(local_deploy.run("", "--alias", "previous-champion"), EXIT_BAD_INPUT)

    what = f"alias 'previous-champion' of registered model {registry.name!r}"
    assert f"{what} does not exist at {registry.url}" in line
    assert "nothing to deploy" in line
    assert not (local_deploy.state_dir / STATE_FILE).exists()
    assert port_is_free("127.0.0.1", local_deploy.port)

    outputs(local_deploy.run(v1))
    served = running_server(local_deploy.state_dir)
    one_line_error(local_deploy.run("", "--alias", "previous-champion"), EXIT_BAD_INPUT)
    assert running_server(local_deploy.state_dir) == served
    assert local_deploy.predict() == pytest.approx(expected(V1))


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--version", "1", "--alias", "champion"], "not both"),
        ([], "pass --version or --alias:"),
        (["--alias", "champion", "--run-id", "a" * 32], "not with --alias"),
        (["--stop", "--alias", "champion"], "not with --version or --alias"),
        (["--stop", "--version", "1"], "not with --version or --alias"),
    ],
    ids=["version and alias", "neither", "run-id with alias", "stop and alias", "stop and version"],
)
def test_deploy_needs_exactly_one_of_version_and_alias(
    local_deploy: LocalDeploy, flags: list[str], needle: str
) -> None:
    result = local_deploy.run("", *flags)

    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert needle in result.stderr, result.stderr
    assert not local_deploy.state_dir.exists()


@dataclass
class Served:
    """A real model served through a state directory, and what must stay as it is."""

    deploy: LocalDeploy
    next_version: str  # a version a deploy would serve, were it not refused
    server: ServedModel
    state: str


@pytest.fixture(scope="module")
def served(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """v1 served on a free port (one serve for every case of the module); teardown stops it."""
    deploy = LocalDeploy(registry, tmp_path_factory.mktemp("served") / "serve", free_port())
    try:
        outputs(deploy.run(registry.linear(*V1)))
        server = running_server(deploy.state_dir)
        assert server is not None
        yield Served(deploy, registry.linear(*V2), server, deploy.state_text())
    finally:
        stop_local(deploy.state_dir)
        _kill_servers_of(str(deploy.state_dir.resolve()))


# Where a deploy cannot serve, or cannot write what it must: each was found only after the
# served model had been stopped (or the new version served), which then stayed down (issue 11).
CANNOT_SERVE = {
    "busy port": (lambda held: ["--port", str(held)], "the port is in use by another process"),
    "unresolvable host": (lambda _: ["--host", "nosuch.invalid"], "has no IPv4 address"),
    "address not of this machine": (
        lambda _: ["--host", "192.0.2.1"],
        "192.0.2.1 is no address of this machine",
    ),
    "IPv6 host": (lambda _: ["--host", "::1"], "has no IPv4 address"),
    "state dir under /proc": (lambda _: ["--state-dir", "/proc/self/serve"], "cannot be written"),
    "outputs dir under /proc": (lambda _: ["--outputs-dir", "/proc/self"], "cannot be written"),
    # Refused at parse, as every flag that takes no empty value (before: 127.0.0.1, and served).
    "empty host": (lambda _: ["--host", ""], "--host is empty"),
    "blank host": (lambda _: ["--host", " "], "--host is blank"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CANNOT_SERVE)
def test_a_host_port_or_directory_deploy_cannot_use_is_refused_and_the_served_model_stays(
    served: Served, held_port: int, case: str
) -> None:
    """Refused before anything is stopped or started: one `error:` line, exit 2, and the served
    model's processes, state file and answers as they were (before: the server was stopped as a
    stray, then "port in use", exit 1; or v2 served, then the outputs failed)."""
    extra, words = CANNOT_SERVE[case]
    result = served.deploy.run(served.next_version, *extra(held_port))

    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    assert running_server(served.deploy.state_dir) == served.server
    assert pid_alive(served.server.pid) and pid_alive(served.server.front_pid)
    assert served.deploy.state_text() == served.state
    assert served.deploy.predict() == pytest.approx(expected(V1))


@pytest.mark.slow
def test_the_port_our_own_front_holds_is_one_a_redeploy_may_serve_on(served: Served) -> None:
    """The served port is busy, but with this state directory's front: a redeploy, not refused;
    another state directory is refused it."""
    deploy = served.deploy
    assert local.serving_problem("127.0.0.1", deploy.port, deploy.state_dir) is None
    other = local.serving_problem("127.0.0.1", deploy.port, deploy.state_dir.parent / "other")
    assert other is not None and "in use" in other


def _assert_serves_as_before(served: Served) -> None:
    """The model `served` started: same processes, same state file, same answers."""
    assert running_server(served.deploy.state_dir) == served.server
    assert pid_alive(served.server.pid) and pid_alive(served.server.front_pid)
    assert served.deploy.state_text() == served.state
    assert served.deploy.predict() == pytest.approx(expected(V1))


# A deploy to another port than the served model's that cannot serve there, with its error line
# (exit 2: bad input, found before anything is stopped or started; 1: the new server failed).
MOVE_FAILURES = {
    "version not registered": (lambda s: ["99"], "does not exist at", EXIT_BAD_INPUT),
    "no such model": (
        lambda s: [s.server.version, "--model-name", f"no-such-{uuid.uuid4().hex[:8]}"],
        "does not exist at",
        EXIT_BAD_INPUT,
    ),
    "ping times out": (
        lambda s: [s.next_version, "--timeout", "0.5"],
        "did not answer 200 within 0.5s",
        EXIT_FAILED,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", MOVE_FAILURES)
def test_a_deploy_to_another_port_that_fails_leaves_the_served_model_serving(
    served: Served, case: str
) -> None:
    """The served model serves, and the state file names it, until the new one answers /ping and
    predicts on its own port; a deploy that fails before leaves both as they were, and nothing on
    the port asked for (before: the served model was stopped first, as a "stray", and nothing was
    served after the failure; a version not registered was exit 1)."""
    args, words, code = MOVE_FAILURES[case]
    port = free_port()

    line = one_line_error(served.deploy.run(*args(served), "--port", str(port)), code)

    assert words in line
    _assert_serves_as_before(served)
    assert port_is_free("127.0.0.1", port)


@pytest.mark.slow
def test_a_deploy_to_another_port_whose_front_fails_leaves_the_served_model_serving(
    served: Served,
) -> None:
    """The new version is proven, then its front on the new port fails to start: the new server
    is stopped, and the served model still serves, recorded, through its own front."""
    port = free_port()

    failed = served.deploy.run_with_fault(
        served.next_version, "starting the front", "bug", "--port", str(port)
    )

    assert failed.returncode != 0 and "a bug" in failed.stderr, failed.stderr
    _assert_serves_as_before(served)
    assert port_is_free("127.0.0.1", port)
    copies = str(served.deploy.state_dir.resolve() / "models")
    assert _serve_pids(copies) == [served.server.pid]  # the new model server was stopped


@pytest.mark.slow
def test_a_deploy_to_another_port_leaves_a_hung_served_model(
    registry: Registry, local_deploy: LocalDeploy
) -> None:
    """v1's model server hangs (SIGSTOP: it takes connections and never answers), v2 is deployed
    to another port: v2 serves there, recorded, and v1's server and front are stopped. Before,
    the new front was proven through the backend it shared with v1's front, so every proof went
    to the hung v1, and a move could not leave it (exit 1 after --timeout)."""
    v1 = registry.linear(*V1)
    v2 = registry.linear(*V2)
    outputs(local_deploy.run(v1))
    first = running_server(local_deploy.state_dir)
    assert first is not None and first.front_pid
    moved = dataclasses.replace(local_deploy, port=free_port())
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        result = moved.run(v2, "--port", str(moved.port), "--timeout", "60")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGCONT)

    assert outputs(result) == {"served-version": v2, "changed": "true"}
    assert moved.predict() == pytest.approx(expected(V2))
    served = running_server(local_deploy.state_dir)
    assert served is not None and (served.version, served.port) == (v2, moved.port)
    assert not pid_alive(first.pid) and not pid_alive(first.front_pid)
    assert port_is_free("127.0.0.1", local_deploy.port)


def _recorded_with_front(state_dir: Path) -> ServedModel:
    """What a deploy records: clients' port 5001 (its front), its model server on 41001."""
    return ServedModel(
        pid=111, host="127.0.0.1", port=5001, model_uri="models:/m/1", version="1", log="",
        model_path=str(state_dir / "models" / "v1" / "model"), backend_port=41001, front_pid=222,
    )  # fmt: skip


def _backend_of(state_dir: Path) -> str:
    return json.loads((state_dir / BACKEND_FILE).read_text())["url"]


@pytest.mark.parametrize(
    "failure",
    [StepError("starting the front on port 6001 failed: ..."), KeyboardInterrupt()],
    ids=["front proof fails", "Ctrl-C mid-move"],
)
def test_a_failed_move_from_a_hung_model_points_the_fronts_back_at_its_model_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    """Breaker 55: the fronts had been pointed back at `current.url`, the old front's own
    address, so it forwarded every request to itself and the recorded server was no longer
    found (`running_server`): a model that hung only briefly was never served again."""
    current = _recorded_with_front(tmp_path)
    local._write_backend(tmp_path, current.backend_url)  # as the first deploy left it
    new = ServedModel(333, "127.0.0.1", 42002, "models:/m/2", "2", "", model_path="x")
    monkeypatch.setattr(local, "_ping", lambda url: False)  # the served model hangs
    moved_first = []

    def front_fails(*args: object, **kwargs: object) -> int:
        moved_first.append(_backend_of(tmp_path))
        raise failure

    monkeypatch.setattr(local, "_start_front", front_fails)
    with pytest.raises(type(failure)):
        local._switch(tmp_path, new, None, None, current, "127.0.0.1", "127.0.0.1", 6001, 5.0)

    assert moved_first == [new.url]  # proven through `new`, not the hung one
    assert _backend_of(tmp_path) == current.backend_url == "http://127.0.0.1:41001"


def test_a_failed_second_backend_write_from_a_hung_model_leaves_the_backend_as_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Breaker 55: the write after the new front was proven failed (a full disk): the new front
    was stopped, but backend.json kept naming `new`, which the caller stops next, while the
    state file names `current`."""
    current = _recorded_with_front(tmp_path)
    local._write_backend(tmp_path, current.backend_url)
    new = ServedModel(333, "127.0.0.1", 42002, "models:/m/2", "2", "", model_path="x")
    monkeypatch.setattr(local, "_ping", lambda url: False)
    monkeypatch.setattr(local, "_start_front", lambda *a, **k: 444)
    stopped = []
    monkeypatch.setattr(local, "stop_process_group", lambda pid, *a, **k: stopped.append(pid))
    writes = []
    real_write = local._write_backend

    def write(state_dir: Path, url: str) -> None:
        writes.append(url)
        if len(writes) == 2:  # the write after the new front is proven
            raise StepError("cannot write backend.json: No space left on device")
        real_write(state_dir, url)

    monkeypatch.setattr(local, "_write_backend", write)
    with pytest.raises(StepError):
        local._switch(tmp_path, new, None, None, current, "127.0.0.1", "127.0.0.1", 6001, 5.0)

    assert stopped == [444]
    assert _backend_of(tmp_path) == current.backend_url


@pytest.mark.slow
@pytest.mark.parametrize("host", ["localhost", "127.1", "127.0.0.1"])
def test_a_redeploy_to_the_served_address_spelled_otherwise_is_a_redeploy(
    served: Served, host: str
) -> None:
    """`localhost`, `127.1` and `127.0.0.1` are one address: deploying the served version there
    is a no-op (before: "the port is in use by another process", exit 2, for any spelling but the
    one the served model was deployed with)."""
    deploy = served.deploy
    assert local.serving_problem(host, deploy.port, deploy.state_dir) is None

    result = deploy.run(served.server.version, "--host", host)

    assert outputs(result) == {"served-version": served.server.version, "changed": "false"}
    _assert_serves_as_before(served)


@pytest.mark.slow
def test_a_deploy_to_another_port_moves_the_served_model_there(
    registry: Registry, local_deploy: LocalDeploy
) -> None:
    """v1 served on one port, v2 deployed to another: v2 serves there, recorded; v1's server and
    front are stopped and its port is free."""
    v1 = registry.linear(*V1)
    v2 = registry.linear(*V2)
    outputs(local_deploy.run(v1))
    first = running_server(local_deploy.state_dir)
    assert first is not None
    moved = dataclasses.replace(local_deploy, port=free_port())

    assert outputs(moved.run(v2, "--port", str(moved.port))) == {
        "served-version": v2,
        "changed": "true",
    }

    assert moved.predict() == pytest.approx(expected(V2))
    served = running_server(local_deploy.state_dir)
    assert served is not None and (served.version, served.port) == (v2, moved.port)
    assert not pid_alive(first.pid) and not pid_alive(first.front_pid)
    assert port_is_free("127.0.0.1", local_deploy.port)


@pytest.mark.parametrize("alias", ["champion", "previous-champion"])
def test_deploy_of_an_alias_of_a_model_the_registry_does_not_have_is_bad_input(
    registry: Registry, local_deploy: LocalDeploy, alias: str
) -> None:
    """`--alias champion` of a model name the registry does not have was exit 1 (MLflow's
    RESOURCE_DOES_NOT_EXIST): bad input, exit 2, one line naming the model, as an unknown
    `--version` is; nothing started, and what is served stays served."""
    missing = f"{registry.name}-missing"
    line = one_line_error(
        local_deploy.run("", "--alias", alias, "--model-name", missing), EXIT_BAD_INPUT
    )
    assert f"registered model {missing!r} does not exist at {registry.url}" in line
    assert "nothing to deploy" in line
    assert not (local_deploy.state_dir / STATE_FILE).exists()
    assert port_is_free("127.0.0.1", local_deploy.port)
    if alias == "champion":  # once: serving takes a while
        outputs(local_deploy.run(registry.linear(*V1)))
        served = running_server(local_deploy.state_dir)
        one_line_error(
            local_deploy.run("", "--alias", alias, "--model-name", missing), EXIT_BAD_INPUT
        )
        assert running_server(local_deploy.state_dir) == served
