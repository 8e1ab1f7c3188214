"""Fault injection: the MLflow server dies during register and promote, bad requests reach the
served model, a model's artifact is corrupted in the store before deploy.

Everything is real and on 127.0.0.1: our own `mlflow server` (not the session one: these tests kill
it and start it again on the same store), the steps as subprocesses, and a champion served by the
local deploy target. A small HTTP proxy sits between the steps and MLflow; it forwards every
request and, when armed, kills the real server at an exact request or drops chosen requests (reset
connection), so "the server died mid-promote" happens at the same point on every run.

Faults covered elsewhere (listed in README "Failure behaviour"): bad GSOD files and network faults
in tests/test_fetch.py and tests/test_gsod_format.py, a model that cannot load or answer on deploy
in tests/test_deploy_local.py and tests/test_deploy_kubernetes.py, two runs at once in
tests/test_local_runner.py.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import mlflow
import pytest

from steps.cli import EXIT_BAD_INPUT, EXIT_TRANSIENT
from steps.deploy_targets.local import STATE_FILE, ServedModel, running_server, stop_local
from steps.processes import pid_alive
from steps.promote import CHAMPION, PREVIOUS_CHAMPION, TAG_DECISION, promote_if_better
from steps.register import train_and_register
from steps.served_model import MAX_JSON_DEPTH, MAX_REQUEST_BODY_BYTES
from steps.settings import MlflowSettings
from steps.tracking import HTTP_RETRY_DEFAULTS, hanging_server_bound_s
from steps.train import train_and_log
from tests.conftest import MlflowServer, assert_one_line_error, free_port, start_mlflow_server
from tests.fake_k8s import FakeKubernetes
from tests.model_helpers import (
    REPO,
    dewpoint_frame,
    error_line,
    made_in_fahrenheit,
    run_step,
    step_env,
    write_dataset,
)

MODEL = "faults-dewpoint"
GOOD_REQUEST = {"dataframe_split": {"columns": ["temp"], "data": [[12.8]]}}


# --- a fault-injecting HTTP proxy --------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request the proxy received."""

    method: str
    path: str
    body: bytes

    def json(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            return {}


Match = Callable[[Seen], bool]


@dataclass
class Trigger:
    """Call `action` once, on the first request that `match`es, before or after forwarding it.

    After forwarding, the answer is not passed on (the client's connection is reset): the request
    took effect on the server but the client never heard back.
    """

    match: Match
    action: Callable[[], None]
    after_forwarding: bool = False
    fired: bool = False


@dataclass
class Drop:
    """Reset the client's connection on every request that `match`es (the server stays up)."""

    match: Match
    after_forwarding: bool = False  # forward it first: it takes effect, the answer is lost
    hang: bool = False  # instead: hold the connection without a word until healed (max 300 s)
    limit: int | None = None  # only the first `limit` matching requests (None: every one)
    status: int | None = None  # instead of a reset: answer this HTTP status, not forwarding it
    trickle: bool = False  # instead: forward it, then pass the answer's body on a byte a second
    count: int = 0
    first_at: float | None = None  # when the first matching request came (time.monotonic())

    def takes(self, seen: Seen) -> bool:
        return self.match(seen) and (self.limit is None or self.count < self.limit)


@dataclass
class FaultProxy:
    """HTTP/1.1 proxy on 127.0.0.1 in front of `upstream`, with scripted faults."""

    upstream: str
    trigger: Trigger | None = None
    drop: Drop | None = None
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        proxy = self
        target = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(self.command, self.path, body)
                with proxy.lock:
                    proxy.seen.append(seen)
                    trigger = proxy.trigger
                    fire = trigger is not None and not trigger.fired and trigger.match(seen)
                    if fire:
                        trigger.fired = True
                    drop = proxy.drop if proxy.drop and proxy.drop.takes(seen) else None
                    if drop:
                        drop.count += 1
                        drop.first_at = drop.first_at or time.monotonic()
                if fire and not trigger.after_forwarding:
                    trigger.action()
                if drop and drop.hang:
                    deadline = time.monotonic() + 300
                    while proxy.drop is drop and time.monotonic() < deadline:
                        time.sleep(0.2)
                    return self._reset()
                if drop and drop.status:
                    return self._answer(drop.status)
                if drop and not (drop.after_forwarding or drop.trickle):
                    return self._reset()
                try:
                    status, headers, answer = self._forward(seen)
                except OSError:  # the server is gone: so is this connection
                    return self._reset()
                if fire and trigger.after_forwarding:
                    trigger.action()
                    return self._reset()
                if drop and not drop.trickle:
                    return self._reset()
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                if drop:  # until the client hangs up, or healed (then the rest at once)
                    with contextlib.suppress(OSError):
                        for at in range(len(answer)):
                            if proxy.drop is not drop:
                                return self.wfile.write(answer[at:])
                            self.wfile.write(answer[at : at + 1])
                            self.wfile.flush()
                            time.sleep(1)
                    return None
                self.wfile.write(answer)

            def _forward(self, seen: Seen) -> tuple[int, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    conn.request(seen.method, seen.path, body=seen.body or None, headers=headers)
                    response = conn.getresponse()
                    return response.status, response.getheaders(), response.read()
                finally:
                    conn.close()

            def _answer(self, status: int) -> None:
                body = json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE",
                                   "message": f"injected {status}"}).encode()  # fmt: skip
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _reset(self) -> None:
                """Drop the connection with a TCP reset, as a dying server does."""
                self.close_connection = True
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                self.connection.close()

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def heal(self) -> None:
        """No more faults; forget what was seen."""
        with self.lock:
            self.trigger = None
            self.drop = None
            self.seen.clear()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def alias_write(alias: str, version: str | None = None) -> Match:
    """Requests that point `alias` (at `version`, if given) somewhere."""

    def match(seen: Seen) -> bool:
        if seen.method != "POST" or not seen.path.endswith("/registered-models/alias"):
            return False
        body = seen.json()
        return body.get("alias") == alias and (version is None or body.get("version") == version)

    return match


def artifact_download(seen: Seen) -> bool:
    """A model file fetched through the server's artifact proxy (pyfunc loading for scoring)."""
    return seen.method == "GET" and "/mlflow-artifacts/artifacts" in seen.path


def artifact_file_download(seen: Seen) -> bool:
    """A file's bytes fetched through the artifact proxy (`artifact_download` less the listings,
    `.../mlflow-artifacts/artifacts?path=...`): MLflow streams these (stream=True)."""
    return seen.method == "GET" and "/mlflow-artifacts/artifacts/" in seen.path


def tag_write(key: str) -> Match:
    """Requests that set model version tag `key`."""

    def match(seen: Seen) -> bool:
        return (
            seen.method == "POST"
            and seen.path.endswith("/model-versions/set-tag")
            and seen.json().get("key") == key
        )

    return match


def version_create(seen: Seen) -> bool:
    return seen.method == "POST" and seen.path.endswith("/model-versions/create")


# --- the world: our own MLflow, a champion, a served model ---------------------------------------


@dataclass
class World:
    """Our MLflow server (killable), registered versions, and the champion served locally."""

    root: Path
    server: MlflowServer
    proxy: FaultProxy
    settings: MlflowSettings  # straight to the server, for set-up and checks
    holdout_path: Path
    v1: str  # previous champion
    v2: str  # champion, and the served model
    v3: str  # registered, not promoted yet; the gate promotes it (same RMSE as v2)
    state_dir: Path
    serve_port: int
    served: ServedModel | None = None
    served_prediction: float | None = None

    @property
    def port(self) -> int:
        return int(urlsplit(self.server.url).port)

    def kill_server(self) -> None:
        """SIGKILL our MLflow server's process group: no clean shutdown, as in a node failure."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.server.proc.pid, signal.SIGKILL)
        self.server.proc.wait(timeout=60)

    def restart_server(self) -> None:
        """Start MLflow again on the same store and port (the proxy's upstream)."""
        self.server = start_mlflow_server(self.root, port=self.port)

    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(self.server.url, registry_uri=self.server.url)

    def aliases(self) -> dict[str, str]:
        return dict(self.client().get_registered_model(MODEL).aliases)

    def set_baseline_aliases(self) -> None:
        client = self.client()
        client.set_registered_model_alias(MODEL, PREVIOUS_CHAMPION, self.v1)
        client.set_registered_model_alias(MODEL, CHAMPION, self.v2)

    def predict(self) -> float:
        url = f"http://127.0.0.1:{self.serve_port}/invocations"
        response = httpx.post(url, json=GOOD_REQUEST, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]

    def assert_served_unchanged(self) -> None:
        """The model server the deploy step started is the same process, answering the same."""
        assert running_server(self.state_dir) == self.served
        assert self.predict() == self.served_prediction

    def step(self, stage: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run a step through the proxy."""
        common = ["--tracking-uri", self.proxy.url, "--model-name", MODEL]
        return run_step(stage, *args, *common, env=step_env(**env), timeout=600)

    def promote_command(self, version: str, outputs: Path, tracking_uri: str) -> list[str]:
        """The promote CLI for `version` against `tracking_uri` (a proxy of our server)."""
        command = [sys.executable, "-m", "steps", "promote", "--version", version]
        command += ["--holdout", str(self.holdout_path), "--tracking-uri", tracking_uri]
        return [*command, "--model-name", MODEL, "--outputs-dir", str(outputs)]

    def promote(self, version: str, outputs: Path, **env: str) -> subprocess.CompletedProcess[str]:
        return self.step(
            "promote", "--version", version, "--holdout", str(self.holdout_path),
            "--outputs-dir", str(outputs), **env,
        )  # fmt: skip


def _deploy_command(world: World, version: str, tracking_uri: str | None = None) -> list[str]:
    command = [sys.executable, "-m", "steps", "deploy", "--target", "local", "--version", version]
    command += ["--model-name", MODEL, "--tracking-uri", tracking_uri or world.server.url]
    command += ["--port", str(world.serve_port), "--state-dir", str(world.state_dir)]
    return [*command, "--timeout", "240"]


def _deploy(
    world: World, version: str, tracking_uri: str | None = None, timeout: float = 900, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _deploy_command(world, version, tracking_uri), capture_output=True, text=True, cwd=REPO,
        env=step_env(**env), timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("faults-mlflow")
    server = start_mlflow_server(root)
    proxy = FaultProxy(server.url)
    state_dir = tmp_path_factory.mktemp("faults-serve")
    previous_uri = os.environ.get("MLFLOW_TRACKING_URI")
    made: list[World] = []
    try:
        settings = MlflowSettings(server.url, model_name=MODEL, experiment="faults")
        good = dewpoint_frame(rows=1500, seed=1)
        first, v1 = train_and_register(dewpoint_frame(rows=1500, seed=2, intercept=-9.5), settings)
        made_in_fahrenheit(server.url, first.run_id)  # the first champion's data: its units
        _, v2 = train_and_register(good, settings)
        _, v3 = train_and_register(good, settings)
        holdout = dewpoint_frame(rows=800, seed=99)
        holdout_path = write_dataset(holdout, root / "holdout.parquet")
        promote_if_better(settings, v1.version, holdout)
        assert promote_if_better(settings, v2.version, holdout).promoted
        world = World(
            root, server, proxy, settings, holdout_path, v1.version, v2.version, v3.version,
            state_dir, free_port(),
        )  # fmt: skip
        made.append(world)
        assert world.aliases() == {CHAMPION: world.v2, PREVIOUS_CHAMPION: world.v1}
        deployed = _deploy(world, world.v2)
        assert deployed.returncode == 0, deployed.stderr[-3000:]
        world.served = running_server(state_dir)
        assert world.served is not None and world.served.version == world.v2
        world.served_prediction = world.predict()
        yield world
    finally:
        stop_local(state_dir)
        proxy.close()
        (made[0].server if made else server).stop()  # the current one, after restarts
        mlflow.set_tracking_uri(previous_uri)


@pytest.fixture
def fresh(world: World) -> Iterator[World]:
    """Each test starts from a live server, the baseline aliases and a proxy without faults."""
    if world.server.proc.poll() is not None:
        world.restart_server()
    world.proxy.heal()
    world.set_baseline_aliases()
    yield world
    world.proxy.heal()
    if world.server.proc.poll() is not None:
        world.restart_server()


# --- 1. MLflow dies during register and promote ---------------------------------------------------


@pytest.mark.slow
def test_register_mlflow_killed_after_the_version_is_written_then_a_rerun_reuses_it(
    fresh: World, tmp_path: Path
) -> None:
    world = fresh
    run = train_and_log(dewpoint_frame(rows=600, seed=31), world.settings)
    world.proxy.trigger = Trigger(version_create, world.kill_server, after_forwarding=True)
    outputs = tmp_path / "o"

    failed = world.step(
        "register", "--run-id", run.run_id, "--model-uri", run.model_uri,
        "--outputs-dir", str(outputs),
    )  # fmt: skip

    assert world.proxy.trigger.fired
    assert "cannot reach MLflow" in error_line(failed, EXIT_TRANSIENT)  # Argo retries it
    # The create was sent once; what followed were look-ups of the run's versions (bounded).
    assert sum(version_create(s) for s in world.proxy.seen) == 1
    assert not outputs.exists()

    world.restart_server()
    written = world.client().search_model_versions(f"name = '{MODEL}' and run_id = '{run.run_id}'")
    assert len(written) == 1  # the write landed; the answer was lost with the server
    world.proxy.heal()
    again = world.step("register", "--run-id", run.run_id, "--model-uri", run.model_uri)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.strip().splitlines()[-1]) == {
        "model-name": MODEL,
        "version": written[0].version,
    }
    versions = world.client().search_model_versions(f"name = '{MODEL}' and run_id = '{run.run_id}'")
    assert len(versions) == 1
    assert world.aliases() == {CHAMPION: world.v2, PREVIOUS_CHAMPION: world.v1}
    world.assert_served_unchanged()


def versions_of(world: World, run_id: str) -> list[str]:
    found = world.client().search_model_versions(f"run_id = '{run_id}'")
    return sorted(mv.version for mv in found if mv.name == MODEL)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("lost", "limit"),
    [("answer", 1), ("answer", 2), ("answer", None), ("request", 1), ("request", 2)],
)
def test_register_ends_with_exactly_one_version_per_run_whatever_is_lost(
    fresh: World, tmp_path: Path, lost: str, limit: int | None
) -> None:
    """The server drops the first `limit` (None: every) `model-versions/create` calls, either
    before they reach MLflow ("request") or after MLflow wrote the version ("answer")."""
    world = fresh
    run = train_and_log(dewpoint_frame(rows=600, seed=70 + (limit or 9)), world.settings)
    world.proxy.drop = Drop(version_create, after_forwarding=lost == "answer", limit=limit)

    done = world.step(
        "register", "--run-id", run.run_id, "--model-uri", run.model_uri,
        "--outputs-dir", str(tmp_path / "o"),
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    assert world.proxy.drop.count == (1 if lost == "answer" else limit)
    versions = versions_of(world, run.run_id)
    assert len(versions) == 1, versions
    assert (tmp_path / "o" / "version").read_text() == versions[0]
    assert f"run {run.run_id} registered as version {versions[0]}" in done.stderr
    world.assert_served_unchanged()


@pytest.mark.slow
def test_register_every_create_request_lost_fails_then_a_rerun_makes_the_one_version(
    fresh: World,
) -> None:
    world = fresh
    run = train_and_log(dewpoint_frame(rows=600, seed=79), world.settings)
    world.proxy.drop = Drop(version_create)

    failed = world.step("register", "--run-id", run.run_id, "--model-uri", run.model_uri)

    line = error_line(failed, EXIT_TRANSIENT)  # no answer each time: Argo retries the step
    assert "cannot register" in line and "4 attempts" in line
    assert world.proxy.drop.count == 4  # one try and 3 bounded retries, each after a look-up
    assert versions_of(world, run.run_id) == []
    world.proxy.heal()
    again = world.step("register", "--run-id", run.run_id, "--model-uri", run.model_uri)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(versions_of(world, run.run_id)) == 1


@pytest.mark.slow
def test_register_removes_duplicates_an_earlier_client_left_and_says_which(fresh: World) -> None:
    """Two versions of one run exist (as MLflow's re-sending client used to leave them): register
    keeps the first, deletes the other and names it."""
    world = fresh
    run = train_and_log(dewpoint_frame(rows=600, seed=80), world.settings)
    client = world.client()  # the world fixture registered MODEL already
    model_id = run.model_uri.removeprefix("models:/")
    first, second = (
        client.create_model_version(MODEL, run.model_uri, run.run_id, model_id=model_id).version
        for _ in range(2)
    )

    done = world.step("register", "--run-id", run.run_id, "--model-uri", run.model_uri)

    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "model-name": MODEL,
        "version": first,
    }
    assert f"removed duplicate version(s) {second}" in done.stderr
    assert versions_of(world, run.run_id) == [first]


@pytest.mark.slow
def test_promote_mlflow_killed_while_scoring_moves_nothing(fresh: World, tmp_path: Path) -> None:
    world = fresh
    world.proxy.trigger = Trigger(artifact_download, world.kill_server)

    failed = world.promote(world.v3, tmp_path / "o")

    assert world.proxy.trigger.fired
    assert f"cannot score models:/{MODEL}/" in error_line(failed, EXIT_TRANSIENT)
    writes = [
        s for s in world.proxy.seen for a in (CHAMPION, PREVIOUS_CHAMPION) if alias_write(a)(s)
    ]
    assert writes == []
    assert not (tmp_path / "o").exists()
    world.restart_server()
    assert world.aliases() == {CHAMPION: world.v2, PREVIOUS_CHAMPION: world.v1}
    assert TAG_DECISION not in world.client().get_model_version(MODEL, world.v3).tags
    world.assert_served_unchanged()


@pytest.mark.slow
def test_promote_mlflow_hanging_while_scoring_fails_within_its_timeouts_and_moves_nothing(
    fresh: World, tmp_path: Path
) -> None:
    """MLflow accepts connections but never answers: the step's HTTP timeout and bounded retries
    end it (MLFLOW_HTTP_REQUEST_TIMEOUT lowered to 5 s here, as a user may; default 10 s)."""
    world = fresh
    world.proxy.drop = Drop(artifact_download, hang=True)

    failed = world.promote(world.v3, tmp_path / "o", MLFLOW_HTTP_REQUEST_TIMEOUT="5")

    assert f"cannot score models:/{MODEL}/" in error_line(failed, EXIT_TRANSIENT)
    assert world.proxy.drop.count >= 1
    world.proxy.heal()
    assert world.aliases() == {CHAMPION: world.v2, PREVIOUS_CHAMPION: world.v1}
    assert TAG_DECISION not in world.client().get_model_version(MODEL, world.v3).tags
    world.assert_served_unchanged()


@pytest.mark.slow
def test_deploy_with_model_files_trickling_in_fails_within_its_timeout_and_serves_on(
    fresh: World,
) -> None:
    """MLflow answers the download of each model file at once, then sends its body a byte a
    second. A streamed body must bring STREAMED_BODY_MIN_BYTES_PER_S x MLFLOW_HTTP_REQUEST_TIMEOUT
    bytes in each TIMEOUT seconds (`steps.tracking.answer_deadlines`), so the download fails
    about TIMEOUT (2 s here) after it began: one line, exit 75, nothing served changes. Before,
    each read waited for one byte only and the step outlived the time limit below."""
    world = fresh
    state_before = (world.state_dir / STATE_FILE).read_text()
    world.proxy.drop = Drop(artifact_file_download, trickle=True)

    failed = _deploy(world, world.v3, world.proxy.url, timeout=120, MLFLOW_HTTP_REQUEST_TIMEOUT="2")
    ended = time.monotonic()

    line = error_line(failed, EXIT_TRANSIENT)
    assert f"cannot score models:/{MODEL}/{world.v3}" in line and world.proxy.url in line, line
    assert world.proxy.drop.first_at is not None
    assert ended - world.proxy.drop.first_at <= 2 + 10  # then the step's own exit
    assert (world.state_dir / STATE_FILE).read_text() == state_before
    world.assert_served_unchanged()


@pytest.mark.slow
@pytest.mark.parametrize("lost", ["request", "answer"])
def test_promote_champion_write_fails_then_both_aliases_are_put_back(
    fresh: World, tmp_path: Path, lost: str
) -> None:
    """The server drops the write of `champion` -> new version (every retry of it) after
    `previous-champion` has moved. "answer": the write lands each time, only the answer is lost."""
    world = fresh
    world.proxy.drop = Drop(alias_write(CHAMPION, world.v3), after_forwarding=lost == "answer")

    failed = world.promote(world.v3, tmp_path / "o")

    assert world.aliases() == {CHAMPION: world.v2, PREVIOUS_CHAMPION: world.v1}
    line = error_line(failed, EXIT_TRANSIENT)
    assert f"moving alias 'champion' of '{MODEL}' to version {world.v3} failed" in line
    assert "aliases put back as they were" in line
    assert world.proxy.drop.count == 4  # one try and MLflow's 3 bounded retries
    assert TAG_DECISION not in world.client().get_model_version(MODEL, world.v3).tags
    assert not (tmp_path / "o").exists()
    world.assert_served_unchanged()


@pytest.mark.slow
def test_promote_mlflow_killed_between_the_alias_writes_keeps_the_champion_and_a_rerun_finishes(
    fresh: World, tmp_path: Path
) -> None:
    """The worst moment: `previous-champion` has moved, the server dies before `champion` moves,
    so nothing can be put back. The champion (what serves) is unchanged; the error says so."""
    world = fresh
    world.proxy.trigger = Trigger(alias_write(CHAMPION, world.v3), world.kill_server)

    failed = world.promote(world.v3, tmp_path / "o")

    assert world.proxy.trigger.fired
    line = error_line(failed, EXIT_TRANSIENT)  # a retry of the step finishes the move
    assert "putting the aliases back failed too" in line and "rerun promote" in line
    world.restart_server()
    # Documented residue: previous-champion names the champion until the step is rerun.
    assert world.aliases() == {CHAMPION: world.v2, PREVIOUS_CHAMPION: world.v2}
    world.assert_served_unchanged()

    world.proxy.heal()
    done = world.promote(world.v3, tmp_path / "o")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "o" / "promoted").read_text() == "true"
    assert world.aliases() == {CHAMPION: world.v3, PREVIOUS_CHAMPION: world.v2}
    assert world.client().get_model_version(MODEL, world.v3).tags[TAG_DECISION] == "promoted"


@dataclass
class HeldRun:
    """A promote run held at one request; its exit code and stderr once it ended."""

    returncode: int | None = None
    stderr: str = ""


@contextlib.contextmanager
def _promote_held(world: World, version: str, outputs: Path, match: Match) -> Iterator[HeldRun]:
    """Start the promote CLI of `version` through a proxy of its own that holds the first request
    matching `match` until the block ends; enter the block once it is held; fill the result after.

    The held request must stay held however long the block takes on a busy machine: with MLflow's
    30 s read timeout (steps/tracking.py) the hold ended early under load and the retry went
    through, so the run gets a 600 s timeout."""
    held = FaultProxy(world.server.url)
    release = threading.Event()
    held.trigger = Trigger(match, lambda: release.wait(300))
    command = world.promote_command(version, outputs, held.url)
    env = step_env(MLFLOW_HTTP_REQUEST_TIMEOUT="600")
    run = subprocess.Popen(command, cwd=REPO, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    result = HeldRun()
    try:
        deadline = time.monotonic() + 300
        while not held.trigger.fired and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert held.trigger.fired, run.communicate(timeout=60)
        yield result
    finally:
        release.set()
        _, result.stderr = run.communicate(timeout=600)
        result.returncode = run.returncode
        held.close()


@pytest.mark.slow
def test_promote_two_runs_at_once_each_judged_against_the_champion_it_replaces(
    fresh: World, tmp_path: Path
) -> None:
    """Runs A and B both read champion v2. A is held right before its re-read of the champion
    while B promotes; A must then judge against B's version, so the alias history is
    v2 -> B -> A and no version vanishes from it."""
    world = fresh
    good = dewpoint_frame(rows=1500, seed=1)  # v2's data: A and B score exactly as v2 does
    a = train_and_register(good, world.settings)[1].version
    b = train_and_register(good, world.settings)[1].version
    model_reads = []

    def second_champion_read(seen: Seen) -> bool:
        if seen.method == "GET" and "/registered-models/get" in seen.path:
            model_reads.append(seen)
        return len(model_reads) == 2

    with _promote_held(world, a, tmp_path / "a", second_champion_read) as run_a:
        run_b = world.promote(b, tmp_path / "b")
        assert run_b.returncode == 0, run_b.stderr[-3000:]
        assert world.aliases() == {CHAMPION: b, PREVIOUS_CHAMPION: world.v2}

    err = run_a.stderr
    assert run_a.returncode == 0, err[-3000:]
    assert f"the champion moved from {world.v2} to {b} while this gate scored" in err
    assert world.aliases() == {CHAMPION: a, PREVIOUS_CHAMPION: b}
    assert world.client().get_model_version(MODEL, a).tags["gate.champion_version"] == b
    assert (tmp_path / "a" / "champion-version").read_text() == a


@pytest.mark.slow
def test_promote_race_with_a_slow_alias_write_has_one_winner_and_the_loser_moves_nothing(
    fresh: World, tmp_path: Path
) -> None:
    """Runs A and B both judge against champion v2. A's write of `champion` is held in the
    network (it lands late) while B runs from start to end: MLflow has no conditional alias write,
    so before the fix both succeeded, A's late write overwrote B's champion and B's version fell
    out of the alias history (B then served a version that was not the champion). Now A's claim
    (`gate.replaces`, written before any alias moves) makes B refuse in one line, exit 75,
    moving nothing; A finishes; B's rerun is judged against A's version: v2 -> A -> B."""
    world = fresh
    good = dewpoint_frame(rows=1500, seed=1)  # v2's data: A and B score exactly as v2 does
    a = train_and_register(good, world.settings)[1].version
    b = train_and_register(good, world.settings)[1].version
    with _promote_held(world, a, tmp_path / "a", alias_write(CHAMPION, a)) as run_a:
        run_b = world.promote(b, tmp_path / "b")

    assert run_a.returncode == 0, run_a.stderr[-3000:]
    line = error_line(run_b, EXIT_TRANSIENT)
    assert f"version {a}" in line and f"from champion {world.v2}" in line, line
    assert "nothing moved" in line and "rerun promote" in line, line
    assert not (tmp_path / "b").exists()
    assert world.aliases() == {CHAMPION: a, PREVIOUS_CHAMPION: world.v2}
    tags_a = world.client().get_model_version(MODEL, a).tags
    assert tags_a["gate.replaces"] == world.v2 and tags_a[TAG_DECISION] == "promoted"
    assert "gate.replaces" not in world.client().get_model_version(MODEL, b).tags  # withdrawn

    again = world.promote(b, tmp_path / "b")

    assert again.returncode == 0, again.stderr[-3000:]
    assert world.aliases() == {CHAMPION: b, PREVIOUS_CHAMPION: a}
    assert world.client().get_model_version(MODEL, b).tags["gate.replaces"] == a


@pytest.mark.slow
def test_two_local_promotes_of_one_release_take_turns_and_keep_the_whole_history(
    fresh: World, tmp_path: Path
) -> None:
    """Two promote CLIs against one tracking server and model on one machine (state directories
    play no part): B waits for A's release lock while A's `champion` write is held, then judges
    against A's version. Before, B either overwrote A's champion or refused on A's claim."""
    world = fresh
    good = dewpoint_frame(rows=1500, seed=1)
    a = train_and_register(good, world.settings)[1].version
    b = train_and_register(good, world.settings)[1].version
    release = threading.Event()
    world.proxy.trigger = Trigger(alias_write(CHAMPION, a), lambda: release.wait(300))
    env = step_env(MLFLOW_HTTP_REQUEST_TIMEOUT="600")

    def start(version: str, log: Path) -> subprocess.Popen[str]:
        command = world.promote_command(version, tmp_path / version, world.proxy.url)
        return subprocess.Popen(command, cwd=REPO, env=env, text=True,
                                stdout=subprocess.DEVNULL, stderr=log.open("w"))  # fmt: skip

    run_a = start(a, tmp_path / "a.log")
    try:
        deadline = time.monotonic() + 300
        while not world.proxy.trigger.fired and time.monotonic() < deadline:
            assert run_a.poll() is None, (tmp_path / "a.log").read_text()[-3000:]
            time.sleep(0.2)
        run_b = start(b, tmp_path / "b.log")
        while "waiting up to" not in (tmp_path / "b.log").read_text():
            assert run_b.poll() is None and time.monotonic() < deadline, (
                tmp_path / "b.log"
            ).read_text()[-3000:]
            time.sleep(0.2)
    finally:
        release.set()
    assert run_a.wait(timeout=600) == 0, (tmp_path / "a.log").read_text()[-3000:]
    assert run_b.wait(timeout=600) == 0, (tmp_path / "b.log").read_text()[-3000:]
    assert world.aliases() == {CHAMPION: b, PREVIOUS_CHAMPION: a}
    assert world.client().get_model_version(MODEL, a).tags["gate.replaces"] == world.v2
    assert world.client().get_model_version(MODEL, b).tags["gate.replaces"] == a


@pytest.mark.slow
@pytest.mark.parametrize("answer", ["reset", 500, 503])
def test_promote_decision_tag_lost_after_the_move_says_what_moved_and_a_rerun_only_completes_it(
    fresh: World, tmp_path: Path, answer: str | int
) -> None:
    world = fresh
    new = train_and_register(dewpoint_frame(rows=1500, seed=1), world.settings)[1].version
    status = answer if isinstance(answer, int) else None
    world.proxy.drop = Drop(tag_write(TAG_DECISION), status=status)

    failed = world.promote(new, tmp_path / "o")

    line = error_line(failed)
    assert f"champion moved from version {world.v2} to {new}" in line, line
    assert f"previous-champion to {world.v2}" in line and "rerun promote" in line
    if status:  # an answer is not "cannot reach"
        assert f"answered HTTP {status}" in line and "cannot reach" not in line
    assert world.aliases() == {CHAMPION: new, PREVIOUS_CHAMPION: world.v2}
    evidence = world.client().get_model_version(MODEL, new).tags
    assert (
        TAG_DECISION not in evidence
        and f"<= champion version {world.v2}" in evidence["gate.reason"]
    )
    world.proxy.heal()

    again = world.promote(new, tmp_path / "o")

    assert again.returncode == 0, again.stderr[-3000:]
    tags = world.client().get_model_version(MODEL, new).tags
    assert tags[TAG_DECISION] == "promoted"
    assert {k: v for k, v in tags.items() if k != TAG_DECISION} == evidence  # nothing replaced
    assert world.aliases() == {CHAMPION: new, PREVIOUS_CHAMPION: world.v2}


_ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [("0{v}", True), ("00{v}", True), (" {v}\n", False), ("+{v}", False), ("{v}.0", False),
     ("{arabic}", False), ("{v}_0", False)],
)  # fmt: skip
def test_promote_of_the_champion_spelled_otherwise_moves_nothing(
    fresh: World, tmp_path: Path, spelling: str, canonical: bool
) -> None:
    """`--version 02` for champion 2 is the champion (a no-op), never a new version that would
    overwrite previous-champion with the champion itself; non-ASCII digits are refused, and so is
    white space around the number (every flag takes its value as given since 8655e05)."""
    world = fresh
    version = spelling.format(v=world.v2, arabic=world.v2.translate(_ARABIC_INDIC))

    done = world.promote(version, tmp_path / "o")

    if canonical:
        assert done.returncode == 0, done.stderr[-3000:]
        assert (tmp_path / "o" / "champion-version").read_text() == world.v2
        assert "already the champion" in (tmp_path / "o" / "reason").read_text()
    else:
        line = error_line(done, EXIT_BAD_INPUT)
        assert f"--version {version!r}: must be an integer from 1 to" in line
    assert world.aliases() == {CHAMPION: world.v2, PREVIOUS_CHAMPION: world.v1}
    world.assert_served_unchanged()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [("0{v}", True), (" {v}\n", False), ("+{v}", False), ("{arabic}", False)],
)
def test_deploy_of_the_served_version_spelled_otherwise_is_a_no_op_or_refused(
    fresh: World, tmp_path: Path, spelling: str, canonical: bool
) -> None:
    """Deploy reads versions as promote does: `--version 02` for served version 2 changes
    nothing and its outputs say `2`; non-ASCII digits or a sign are bad input (exit 2)."""
    world = fresh
    version = spelling.format(v=world.v2, arabic=world.v2.translate(_ARABIC_INDIC))
    command = [*_deploy_command(world, version), "--outputs-dir", str(tmp_path / "o")]

    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=step_env(),
                          timeout=900, check=False)  # fmt: skip

    if canonical:
        assert done.returncode == 0, done.stderr[-3000:]
        assert (tmp_path / "o" / "served-version").read_text() == world.v2
        assert (tmp_path / "o" / "changed").read_text() == "false"
    else:
        assert "--version" in error_line(done, EXIT_BAD_INPUT)
        assert not (tmp_path / "o").exists()
    world.assert_served_unchanged()


# --- 2. bad requests to the served model ---------------------------------------------------------

JSON = "application/json"
# Just under the request body limit: big inputs still reach the parser and the number check.
UNDER_THE_LIMIT = MAX_REQUEST_BODY_BYTES - 1024


def _split(value: str) -> str:
    """A dataframe_split body with one row whose temp is `value` (raw JSON text)."""
    return '{"dataframe_split": {"columns": ["temp"], "data": [[' + value + "]]}}"


BAD_REQUESTS = {
    "wrong column name": (
        '{"dataframe_split": {"columns": ["tmp"], "data": [[12.8]]}}', JSON,
        "unknown column 'tmp'"),
    "string instead of number": (_split('"warm"'), JSON, "temp must be a JSON number"),
    "null temp": (_split("null"), JSON, "temp must be a finite number"),
    "NaN temp": (_split("NaN"), JSON, "temp must be a finite number"),
    "Infinity temp": (_split("-Infinity"), JSON, "temp must be a finite number"),
    "empty body": ("", JSON, "valid JSON"),
    "invalid JSON": (_split("12.8")[:-3], JSON, "valid JSON"),
    "no input field": ("{}", JSON, "exactly one of the input fields"),
    "1 MB of junk": ("x" * UNDER_THE_LIMIT, JSON, "valid JSON"),
    "1 MB string as temp": (
        _split('"' + "9" * UNDER_THE_LIMIT + 'x"'), JSON, "temp must be a JSON number"),
    "wrong content type": (json.dumps(GOOD_REQUEST), "text/plain", "send application/json"),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_is_a_4xx_with_a_message_and_the_server_keeps_answering(
    world: World, case: str
) -> None:
    body, content_type, message = BAD_REQUESTS[case]
    url = f"http://127.0.0.1:{world.serve_port}/invocations"

    response = httpx.post(
        url, content=body.encode(), headers={"Content-Type": content_type}, timeout=120
    )

    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert message in response.text[:5000]
    assert world.predict() == world.served_prediction
    assert running_server(world.state_dir) == world.served


def _body(shape: str, value: str) -> str:
    """A one-row request in each of MLflow's JSON input formats, temp given as raw JSON text."""
    return {
        "dataframe_split": _split(value),
        "dataframe_records": '{"dataframe_records": [{"temp": ' + value + "}]}",
        "inputs": '{"inputs": {"temp": [' + value + "]}}",
    }[shape]


NOT_A_NUMBER = ['"12.8"', '"warm"', '""', "true", "[12.8]", '{"f": 12.8}']
OUTSIDE_THE_RANGE = ["1e6", "1e308", "-130.5", "140.1", "-1e308"]


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["dataframe_split", "dataframe_records", "inputs"])
@pytest.mark.parametrize("value", NOT_A_NUMBER + OUTSIDE_THE_RANGE)
def test_served_model_refuses_a_temp_that_is_not_a_number_within_the_physical_range(
    world: World, shape: str, value: str
) -> None:
    """Any temp that is not a JSON number (a number sent as a string included) is a 400 naming
    the field; a number outside the range validate enforces is a 400 naming the range."""
    url = f"http://127.0.0.1:{world.serve_port}/invocations"

    response = httpx.post(
        url, content=_body(shape, value), headers={"Content-Type": JSON}, timeout=60
    )

    assert response.status_code == 400, (response.status_code, response.text[:500])
    if value in NOT_A_NUMBER:
        assert "temp must be a JSON number" in response.text
    else:
        assert "temp must be within [-130, 140] deg F" in response.text
    assert world.predict() == world.served_prediction


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["dataframe_split", "dataframe_records", "inputs"])
@pytest.mark.parametrize("value", ["-130", "140", "12", "12.8", "-0.0"])
def test_served_model_predicts_any_number_within_the_range(
    world: World, shape: str, value: str
) -> None:
    url = f"http://127.0.0.1:{world.serve_port}/invocations"
    response = httpx.post(
        url, content=_body(shape, value), headers={"Content-Type": JSON}, timeout=60
    )
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["predictions"]) == 1


@pytest.mark.slow
def test_request_without_content_type_does_not_take_the_server_down(world: World) -> None:
    url = f"http://127.0.0.1:{world.serve_port}/invocations"
    response = httpx.post(url, content=json.dumps(GOOD_REQUEST).encode(), timeout=60)
    assert response.status_code >= 400
    assert world.predict() == world.served_prediction


@pytest.mark.slow
def test_request_without_content_type_is_a_415_naming_the_served_type(world: World) -> None:
    """MLflow 3.17.2's scoring server splits a missing Content-Type (None): a 500. The served
    model answers first."""
    url = f"http://127.0.0.1:{world.serve_port}/invocations"
    response = httpx.post(url, content=json.dumps(GOOD_REQUEST).encode(), timeout=60)
    _assert_refused(response, 415, "send application/json")


def _tree_memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM: peak RSS) in KiB summed over `pid` and its descendants, from /proc."""
    rss = peak = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{current}/status").read_text().splitlines()
        )
        rss += int(status["VmRSS"].split()[0])
        peak += int(status["VmHWM"].split()[0])
        for task in Path(f"/proc/{current}/task").iterdir():
            pending += [int(c) for c in (task / "children").read_text().split()]
    return rss, peak


def _assert_refused(response: httpx.Response, status: int, message: str) -> None:
    """An answer in MLflow's error shape whose message says `message`."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == JSON
    error = response.json()
    assert error["error_code"] == "INVALID_PARAMETER_VALUE"
    assert message in error["message"], error["message"][:500]


def _distinct_keys(n: int) -> str:
    return json.dumps({"dataframe_records": [{f"k{i}": 1} for i in range(n)]})


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


REFUSED_SHAPES = {
    # 119 KB: MLflow 3.17.2 built a 10,000 x 10,000 frame, 1.96 GB RSS (issue 10).
    "10k records with distinct keys": (_distinct_keys(10_000), JSON, 400, "unknown column 'k0'"),
    "one record with 10k keys": (
        json.dumps({"dataframe_records": [{f"k{i}": 1 for i in range(10_000)}]}), JSON, 400,
        "unknown column 'k0'"),
    "10k keys in inputs": (
        json.dumps({"inputs": {f"k{i}": [1] for i in range(10_000)}}), JSON, 400,
        "unknown column 'k0'"),
    "a split row of 10k values": (
        json.dumps({"dataframe_split": {"data": [list(range(10_000))]}}), JSON, 400,
        "a row has 10000 values"),
    "a column named twice": (
        '{"dataframe_split": {"columns": ["temp", "temp"], "data": [[1, 2]]}}', JSON, 400,
        "named twice"),
    # A RecursionError and a 500 in MLflow 3.17.2.
    "10 KB of nested brackets": (_nested(5000), JSON, 400, "nests 5000 levels deep"),
    "100k levels inside dataframe_split.data": (
        '{"dataframe_split": {"columns": ["temp"], "data": ' + _nested(100_000) + "}}", JSON, 400,
        "nests 100002 levels deep"),
    "one level too deep": (
        _split("[" * (MAX_JSON_DEPTH - 3) + "12.8" + "]" * (MAX_JSON_DEPTH - 3)), JSON, 400,
        f"over the limit of {MAX_JSON_DEPTH}"),
    # MLflow 3.17.2 answered every CSV request with a 400 "Failed to get pandas types".
    "valid CSV": ("temp\n12.8\n", "text/csv", 415, "send application/json"),
    "Parquet": ("PAR1", "application/vnd.apache.parquet", 415, "send application/json"),
    "an integer over 4300 digits": (_split("9" * 5000), JSON, 400, "temp must be a JSON number"),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", list(REFUSED_SHAPES))
def test_served_model_refuses_a_request_shape_before_parsing_it(world: World, case: str) -> None:
    """Columns other than temp, rows wider than one value, JSON nested over MAX_JSON_DEPTH and
    content types other than JSON are refused in MLflow's error shape, naming the problem, before
    MLflow's parser or pandas build anything: the model server's peak RSS grows by under 200 MiB
    (10,000 distinct keys took it to 1.96 GB), and it keeps serving the same model."""
    body, content_type, status, message = REFUSED_SHAPES[case]
    url = f"http://127.0.0.1:{world.serve_port}/invocations"
    assert world.served is not None
    _, peak_before = _tree_memory_kib(world.served.pid)

    response = httpx.post(
        url, content=body.encode(), headers={"Content-Type": content_type}, timeout=120
    )

    _assert_refused(response, status, message)
    _, peak_after = _tree_memory_kib(world.served.pid)
    assert peak_after - peak_before < 200 * 1024, (peak_before, peak_after)
    assert world.predict() == world.served_prediction
    assert running_server(world.state_dir) == world.served


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["dataframe_split", "dataframe_records", "inputs"])
@pytest.mark.parametrize("value", [str(10**400), str(-(10**400)), "1" + "0" * 4299])
def test_served_model_names_temp_for_an_integer_no_float_holds(
    world: World, shape: str, value: str
) -> None:
    """10**400 is valid JSON but no float: a 400 naming temp and its range (MLflow 3.17.2's
    generic "unexpected error" before)."""
    url = f"http://127.0.0.1:{world.serve_port}/invocations"
    response = httpx.post(
        url, content=_body(shape, value), headers={"Content-Type": JSON}, timeout=60
    )
    _assert_refused(response, 400, "temp must be within [-130, 140] deg F; row 0 is an integer")
    assert world.predict() == world.served_prediction


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["dataframe_records", "inputs"])
def test_served_model_still_serves_the_widest_allowed_requests(world: World, shape: str) -> None:
    """The shape check refuses nothing the model reads: many rows of the one column."""
    rows = 5_000
    body = {
        "dataframe_records": {"dataframe_records": [{"temp": 12.8}] * rows},
        "inputs": {"inputs": {"temp": [12.8] * rows}},
    }[shape]
    url = f"http://127.0.0.1:{world.serve_port}/invocations"
    response = httpx.post(url, json=body, timeout=120)
    assert response.status_code == 200, response.text[:500]
    assert response.json()["predictions"] == [world.served_prediction] * rows


def _request_of_exactly(size: int) -> bytes:
    """A valid one-row request padded with JSON whitespace to exactly `size` bytes."""
    body = json.dumps(GOOD_REQUEST).encode()
    return body + b" " * (size - len(body))


def _chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """`body` as a generator: httpx sends it chunked, with no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _assert_too_large(response: httpx.Response) -> None:
    """A 413 in MLflow's error shape naming the limit."""
    assert response.status_code == 413, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == JSON
    error = response.json()
    assert error["error_code"] == "INVALID_PARAMETER_VALUE"
    assert f"over the limit of {MAX_REQUEST_BODY_BYTES} bytes" in error["message"]


@pytest.mark.slow
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize(
    ("size", "status"),
    [(MAX_REQUEST_BODY_BYTES, 200), (MAX_REQUEST_BODY_BYTES + 1, 413), (2 * 2**20, 413)],
)
def test_served_model_refuses_a_request_body_over_the_limit_with_a_413(
    world: World, framing: str, size: int, status: int
) -> None:
    """Whatever the framing, a body up to the limit is served and one byte more is a 413 in
    MLflow's error shape; the server keeps serving the same model."""
    url = f"http://127.0.0.1:{world.serve_port}/invocations"
    body = _request_of_exactly(size)

    response = httpx.post(
        url,
        content=body if framing == "content-length" else _chunks(body),
        headers={"Content-Type": JSON},
        timeout=120,
    )

    assert ("transfer-encoding" in response.request.headers) == (framing == "chunked")
    if status == 413:
        _assert_too_large(response)
    else:
        assert response.status_code == 200, response.text[:500]
        assert response.json()["predictions"] == [world.served_prediction]
    assert world.predict() == world.served_prediction
    assert running_server(world.state_dir) == world.served


def _read_response(sock: socket.socket) -> httpx.Response:
    """One HTTP/1.1 response with a Content-Length read from `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    length = int({k.lower(): v for k, v in headers.items()}["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        body += chunk
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=body[:length])


@pytest.mark.slow
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_served_model_answers_413_before_the_body_is_all_sent(world: World, framing: str) -> None:
    """The server does not wait for (or keep) a body over the limit: with a 2 MiB Content-Length
    it answers before a byte of the body is sent, chunked once one byte past the limit arrived,
    with the rest of the body never sent."""
    head = "POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    with socket.create_connection(("127.0.0.1", world.serve_port), timeout=60) as sock:
        if framing == "content-length":
            sock.sendall(f"{head}Content-Length: {2 * 2**20}\r\n\r\n".encode())
        else:
            sock.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
            for chunk in _chunks(b"x" * (MAX_REQUEST_BODY_BYTES + 1)):
                sock.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        # No more of the body (no last chunk either): the answer must come anyway.
        response = _read_response(sock)

    _assert_too_large(response)
    assert world.predict() == world.served_prediction


# --- 3. a corrupt model artifact in the store ----------------------------------------------------


@pytest.mark.slow
def test_deploy_of_a_version_with_a_corrupt_artifact_fails_and_the_champion_keeps_serving(
    fresh: World,
) -> None:
    world = fresh
    result, registered = train_and_register(dewpoint_frame(rows=600, seed=41), world.settings)
    model_id = result.model_uri.removeprefix("models:/")
    stored = [
        p for p in (world.root / "artifacts").rglob("coefficients*.json") if model_id in str(p)
    ]
    assert len(stored) == 1, stored
    stored[0].write_text('{"coef": 0.8, "intercep')  # cut short, as by a failed upload

    failed = _deploy(world, registered.version)

    assert failed.returncode == 1, failed.stderr[-3000:]
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: serving models:/"), failed.stderr
    world.assert_served_unchanged()
    assert world.aliases() == {CHAMPION: world.v2, PREVIOUS_CHAMPION: world.v1}


# --- 4. MLflow dead or dying while deploy runs ----------------------------------------------------


@contextlib.contextmanager
def _silent_server() -> Iterator[str]:
    """A tracking URI whose server accepts connections (the kernel completes them) and never
    answers a byte."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


# What a trickling server sends after each request head, then its tick once every half second,
# for ever: a status line whose headers never end, or headers and an endless chunked body.
TRICKLES = {
    "head": (b"HTTP/1.1 200 OK\r\n", b"X"),
    "chunked body": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"1\r\n \r\n",
    ),
}


class _CountingSilentServer:
    """A tracking server that accepts every connection and reads every request, but never answers
    a byte, or with `trickle` (a TRICKLES value) trickles its answer to each, or with `answer`
    sends that answer to each; counts the requests
    (their heads) it was sent and notes when the first came."""

    def __init__(
        self, trickle: tuple[bytes, bytes] | None = None, answer: bytes | None = None
    ) -> None:
        self._answer = answer  # sent whole after each request head, when given
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.requests: list[str] = []  # request lines, in order
        self.first_request_at: float | None = None  # time.monotonic()
        self._trickle = trickle
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._sock.accept()
                with self._lock:
                    self._held.append(conn)
                threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        data = b""
        with contextlib.suppress(OSError):
            while chunk := conn.recv(65536):
                data += chunk
                while b"\r\n\r\n" in data:  # a request head: count it, keep its line
                    head, data = data.split(b"\r\n\r\n", 1)
                    with self._lock:
                        self.requests.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
                        self.first_request_at = self.first_request_at or time.monotonic()
                    if self._answer is not None:
                        conn.sendall(self._answer)
                    elif self._trickle:  # until the client hangs up (an OSError here)
                        conn.sendall(self._trickle[0])
                        while True:
                            time.sleep(0.5)
                            conn.sendall(self._trickle[1])

    def close(self) -> None:
        self._sock.close()
        with self._lock:
            for conn in self._held:
                conn.close()


def _every_step_commands(
    world: World, tmp_path: Path, cluster: FakeKubernetes
) -> dict[str, list[str]]:
    """The command line (after `python -m steps`) of train, register, promote and deploy on both
    targets, each naming `world`'s model and its own outputs under `tmp_path / "outputs"`."""
    dataset = write_dataset(dewpoint_frame(rows=300, seed=9), tmp_path / "validated.parquet")
    out = tmp_path / "outputs"
    common = ["--model-name", MODEL]
    return {
        "train": [
            "train", "--input", str(dataset), "--holdout-out", str(tmp_path / "h.parquet"),
            "--plot-out", str(tmp_path / "fit.png"), "--outputs-dir", str(out / "train"),
        ],
        "register": [
            "register", "--run-id", "0" * 32, "--model-uri", "models:/m-0", *common,
            "--outputs-dir", str(out / "register"),
        ],
        "promote": [
            "promote", "--version", world.v3, "--holdout", str(world.holdout_path), *common,
            "--outputs-dir", str(out / "promote"),
        ],
        "deploy local": _deploy_command(world, world.v3)[3:-2],  # --timeout: the step's default
        "deploy kubernetes": [
            "deploy", "--target", "kubernetes", "--version", world.v3, *common,
            "--kube-api", cluster.api_url, "--service-url", cluster.service_url,
            "--namespace", cluster.namespace, "--outputs-dir", str(out / "deploy-kubernetes"),
        ],
    }  # fmt: skip


def _run_every_step(
    commands: dict[str, list[str]],
    servers: dict[str, _CountingSilentServer],
    env: dict[str, str],
    timeout: float,
) -> dict[str, tuple[int, str, float]]:
    """Run each command at once against its server (its --tracking-uri); per step, its exit code,
    stderr and when it ended (time.monotonic()). A step not ended within `timeout` s fails the
    test."""
    running: dict[str, subprocess.Popen[str]] = {}
    ended: dict[str, float] = {}
    try:
        for name, args in commands.items():
            if "--tracking-uri" in args:  # deploy local names the live server: point it away
                args[args.index("--tracking-uri") + 1] = servers[name].url
            else:
                args += ["--tracking-uri", servers[name].url]
            running[name] = subprocess.Popen(
                [sys.executable, "-m", "steps", *args], cwd=REPO, env=env, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
        stop = time.monotonic() + timeout
        while len(ended) < len(running) and time.monotonic() < stop:
            ended.update({n: time.monotonic() for n, p in running.items() if p.poll() is not None})
            time.sleep(0.1)
        assert set(ended) == set(running), (
            f"still running after {timeout} s: {set(running) - set(ended)}"
        )
        return {n: (p.returncode, p.communicate()[1], ended[n]) for n, p in running.items()}
    finally:
        for proc in running.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for server in servers.values():
            server.close()


# A server's answer to every request, for the test below: none, or a 503 asking for a retry in a
# day (with MLflow's default MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER, true, urllib3 slept a day
# before the first retry, past the test's time limit; the pipeline's default is false,
# steps/mlflow_env.py).
NO_USEFUL_ANSWER = {
    "never": None,
    "retry after a day": (
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 86400\r\nContent-Length: 0\r\n\r\n"
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("answer", sorted(NO_USEFUL_ANSWER))
def test_every_step_against_a_tracking_server_that_never_answers_fails_within_the_stated_bound(
    fresh: World, tmp_path: Path, answer: str
) -> None:
    """train, register, promote and deploy (both targets), with the settings they ship with (no
    MLFLOW_* in the environment), against a server that accepts connections and never answers:
    each sends its first request 1 + MLFLOW_HTTP_REQUEST_MAX_RETRIES times, then fails in one
    line with exit 75 and changes nothing. Each attempt ends after MLFLOW_HTTP_REQUEST_TIMEOUT, so
    the step ends within `hanging_server_bound_s()` (48 s). The steps run at once; before, each
    attempt waited 30 s (about 130 s per step), past the subprocess timeout below. The same for
    a server that answers 503 asking for a retry in a day (NO_USEFUL_ANSWER)."""
    world = fresh
    state_before = (world.state_dir / STATE_FILE).read_text()
    with FakeKubernetes(f"models:/{MODEL}/{world.v2}") as cluster:
        commands = _every_step_commands(world, tmp_path, cluster)
        servers = {
            name: _CountingSilentServer(answer=NO_USEFUL_ANSWER[answer]) for name in commands
        }
        results = _run_every_step(commands, servers, step_env(), timeout=110)

    attempts = 1 + int(HTTP_RETRY_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    for name, (code, err, ended) in results.items():
        assert_one_line_error(code, err, servers[name].url, exit_code=EXIT_TRANSIENT)
        seen = servers[name].requests
        assert len(seen) == attempts and len(set(seen)) == 1, (name, seen)
        first = servers[name].first_request_at
        assert first is not None and ended - first <= hanging_server_bound_s(step_env()) + 10, name
    assert hanging_server_bound_s(step_env()) == 48.0  # the bound README states
    _assert_every_step_changed_nothing(world, tmp_path, cluster, state_before)


@pytest.mark.slow
@pytest.mark.parametrize("trickle", sorted(TRICKLES))
def test_every_step_against_a_tracking_server_that_trickles_fails_within_the_stated_bound(
    fresh: World, tmp_path: Path, trickle: str
) -> None:
    """As above, but the server answers a byte every half second, for ever: its headers never
    end, or its chunked body never does. A socket timeout (MLFLOW_HTTP_REQUEST_TIMEOUT) is the
    wait for each read, so before `steps.tracking.answer_deadlines` each step waited for ever (the
    time limit below failed the test); now each attempt ends MLFLOW_HTTP_REQUEST_TIMEOUT after its
    request, so the step ends within `hanging_server_bound_s` of its first request, with one line
    and exit 75. Small settings keep it quick: a 2 s timeout, one retry (a bound of 4 s). An
    endless body is no read timeout while the head is awaited, so it is sent once, not retried."""
    world = fresh
    state_before = (world.state_dir / STATE_FILE).read_text()
    settings = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "2", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
    env = step_env(**settings)
    bound = hanging_server_bound_s(env)
    assert bound == 4.0
    with FakeKubernetes(f"models:/{MODEL}/{world.v2}") as cluster:
        commands = _every_step_commands(world, tmp_path, cluster)
        servers = {name: _CountingSilentServer(TRICKLES[trickle]) for name in commands}
        results = _run_every_step(commands, servers, env, timeout=90)

    for name, (code, err, ended) in results.items():
        assert_one_line_error(code, err, servers[name].url, exit_code=EXIT_TRANSIENT)
        seen = servers[name].requests
        assert len(seen) == (2 if trickle == "head" else 1) and len(set(seen)) == 1, (name, seen)
        first = servers[name].first_request_at
        # Then the step's own exit: about 2 s, more with five steps on two cores.
        assert first is not None and ended - first <= bound + 10, (name, ended - first)
    _assert_every_step_changed_nothing(world, tmp_path, cluster, state_before)


def _assert_every_step_changed_nothing(
    world: World, tmp_path: Path, cluster: FakeKubernetes, state_before: str
) -> None:
    """No output written (`_every_step_commands`), nothing deployed, served or moved."""
    # The steps ran at once: one that made `outputs/` for its own folder cannot remove it while
    # another's folder is in it, so an empty `outputs/` may stay.
    assert [p for p in (tmp_path / "outputs").rglob("*") if not p.is_dir()] == []
    assert not (tmp_path / "h.parquet").exists()
    assert cluster.patches == [] and cluster.model_uri() == f"models:/{MODEL}/{world.v2}"
    assert (world.state_dir / STATE_FILE).read_text() == state_before
    world.assert_served_unchanged()
    world.proxy.heal()
    assert world.aliases() == {CHAMPION: world.v2, PREVIOUS_CHAMPION: world.v1}


@pytest.mark.slow
@pytest.mark.parametrize("dead", ["closed port", "never answers"])
def test_deploy_against_a_dead_tracking_server_fails_within_its_bounds_and_serves_on(
    fresh: World, dead: str
) -> None:
    """Deploy bounds MLflow's HTTP retries and timeouts as the other steps do (steps/tracking.py;
    the timeout lowered to 5 s here, as a user may): one line, exit 75, nothing served changes.
    MLflow's own defaults (7 retries, backoff 2, 120 s) took about 250 s: the subprocess timeout
    below fails the test long before that."""
    world = fresh
    state_before = (world.state_dir / STATE_FILE).read_text()
    with contextlib.ExitStack() as stack:
        if dead == "closed port":
            uri = f"http://127.0.0.1:{free_port()}"
        else:
            uri = stack.enter_context(_silent_server())
        failed = _deploy(world, world.v3, uri, timeout=120, MLFLOW_HTTP_REQUEST_TIMEOUT="5")

    assert_one_line_error(
        failed.returncode, failed.stderr, f"cannot look up models:/{MODEL}/{world.v3}", uri,
        exit_code=EXIT_TRANSIENT,
    )  # fmt: skip
    assert (world.state_dir / STATE_FILE).read_text() == state_before
    world.assert_served_unchanged()


@pytest.mark.slow
def test_deploy_with_mlflow_killed_mid_download_fails_transient_and_serves_on(
    fresh: World,
) -> None:
    world = fresh
    state_before = (world.state_dir / STATE_FILE).read_text()
    world.proxy.trigger = Trigger(artifact_download, world.kill_server)

    failed = _deploy(world, world.v3, world.proxy.url, timeout=120)  # MLflow's own: ~250 s

    assert world.proxy.trigger.fired
    assert_one_line_error(
        failed.returncode, failed.stderr, f"models:/{MODEL}/{world.v3}", exit_code=EXIT_TRANSIENT
    )
    assert (world.state_dir / STATE_FILE).read_text() == state_before
    world.assert_served_unchanged()


@pytest.mark.slow
def test_deploy_with_mlflow_killed_while_it_swaps_servers_still_ends_serving(fresh: World) -> None:
    """MLflow is killed the moment deploy stops the old server. Before: the new server and the
    restart of the old one both needed the registry, so neither loaded, the state file was
    deleted and nothing served. Now every server serves the verified copy deploy downloaded
    first: the swap needs no registry and ends with v3 served and recorded."""
    world = fresh
    old = world.served
    assert old is not None
    deploy = subprocess.Popen(
        _deploy_command(world, world.v3), cwd=REPO, env=step_env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while pid_alive(old.pid) and deploy.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(old.pid), deploy.communicate(timeout=60)
        world.kill_server()
        out, err = deploy.communicate(timeout=600)
    finally:
        if deploy.poll() is None:
            deploy.kill()
        world.served = running_server(world.state_dir)  # whatever serves now, for later tests
        if world.served is not None:
            world.served_prediction = world.predict()

    assert deploy.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["served-version"] == world.v3
    served = running_server(world.state_dir)
    assert served is not None and served.version == world.v3 and served.pid != old.pid
    assert json.loads((world.state_dir / STATE_FILE).read_text())["pid"] == served.pid
    assert world.predict() == pytest.approx(world.served_prediction)
