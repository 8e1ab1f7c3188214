"""steps/processes.py: ports, health polling, process-group stop and the PID identity check, on
Linux's /proc and on the `ps` path macOS takes (forced here by hiding /proc)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import ClassVar

import pytest

from steps import processes
from steps.cli import StepError
from steps.processes import (
    all_pids,
    command_line,
    free_port,
    is_our_process,
    pid_alive,
    port_is_free,
    stop_process_group,
    take_listening_socket,
    wait_until_healthy,
)
from workflows import demo

SLEEPER = "import time; print('ready', flush=True); time.sleep(120)"


@pytest.fixture(params=["proc", "ps"])
def pid_source(request, monkeypatch, tmp_path: Path) -> str:
    """Run the test with /proc (Linux) and again as on macOS, where only `ps` can tell."""
    if request.param == "ps":
        monkeypatch.setattr(processes, "PROC", tmp_path / "no-proc")
    return request.param


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    """A process group of our own: a sleeping Python with `server --port 5050` in its argv."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SLEEPER, "server", "--port", "5050", "--workers", "1"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    # Right after exec, /proc/<pid>/cmdline can still be empty for a moment: wait until it runs.
    assert proc.stdout.readline().strip() == b"ready"
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_free_port_is_free_until_someone_listens():
    port = free_port()
    assert port_is_free("127.0.0.1", port)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert not port_is_free("127.0.0.1", port)
    assert port_is_free("127.0.0.1", port)


def test_command_line_and_identity(pid_source: str, sleeper: subprocess.Popen):
    argv = command_line(sleeper.pid)
    assert argv[-5:] == ["server", "--port", "5050", "--workers", "1"]
    assert is_our_process(sleeper.pid, words=("server",), flags={"--port": "5050"})
    assert not is_our_process(sleeper.pid, words=("server",), flags={"--port": "5051"})
    assert not is_our_process(sleeper.pid, words=("serve", "models"))


def test_all_pids_lists_a_live_process_and_not_a_dead_one(
    pid_source: str, sleeper: subprocess.Popen
):
    assert sleeper.pid in all_pids()
    sleeper.kill()
    sleeper.wait()
    assert sleeper.pid not in all_pids()


def test_a_dead_or_reused_pid_is_not_ours(pid_source: str, sleeper: subprocess.Popen):
    pid = sleeper.pid
    sleeper.kill()
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # dead, left a zombie: not reaped yet
    assert not pid_alive(pid)  # our own exited child is reaped, not taken for alive
    assert not is_our_process(pid, words=("server",))
    assert command_line(pid) == []
    # PID 1 is alive but is not a server we started.
    assert pid_alive(1) and not is_our_process(1, words=("server",), flags={"--port": "5050"})


def test_stop_process_group_stops_the_leader_and_its_children():
    child_code = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {SLEEPER!r}]); "
        "time.sleep(120)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", child_code], stdout=subprocess.PIPE, start_new_session=True
    )
    assert parent.stdout.readline().strip() == b"ready"
    group = _group_members(parent.pid)
    assert len(group) == 2
    stop_process_group(parent.pid, timeout=10)
    assert not pid_alive(parent.pid)
    for _ in range(50):
        if not any(pid_alive(p) for p in group):
            break
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in group)
    stop_process_group(parent.pid)  # a group that is gone already is fine


def test_stop_process_group_ends_a_stopped_group_with_sigterm_not_sigkill():
    """A stopped server (SIGSTOP: hung, or held by a debugger) acts on SIGTERM once continued:
    it ends by SIGTERM, as a running one does (before: SIGTERM stayed pending, and the group was
    SIGKILLed after the whole grace period)."""
    says_term = (
        "import signal, sys; "
        "signal.signal(signal.SIGTERM, lambda *_: (print('term', flush=True), sys.exit(0))); "
        + SLEEPER
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", says_term], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout.readline().strip() == b"ready"
    os.killpg(proc.pid, signal.SIGSTOP)

    stop_process_group(proc.pid, timeout=60)

    assert proc.stdout.read().strip() == b"term"  # its handler ran: SIGKILL runs none


def _group_members(pgid: int) -> list[int]:
    ps = subprocess.run(
        ["ps", "-e", "-o", "pid=,pgid="], capture_output=True, text=True, check=True
    )
    rows = (line.split() for line in ps.stdout.splitlines())
    return [int(pid) for pid, group in rows if int(group) == pgid]


class _Health(BaseHTTPRequestHandler):
    answers: ClassVar[list[int]] = []

    def do_GET(self) -> None:
        code = self.answers.pop(0) if self.answers else 200
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_wait_until_healthy_polls_until_200_then_gives_up_or_sees_the_exit():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/health"
    try:
        _Health.answers = [503, 503]
        wait_until_healthy(url, timeout=30)
        assert _Health.answers == []
        _Health.answers = [503] * 10_000
        with pytest.raises(StepError, match=r"/health did not answer 200 within 0.5s; see x.log"):
            wait_until_healthy(url, timeout=0.5, log="x.log")
    finally:
        server.shutdown()
        server.server_close()
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    with pytest.raises(StepError, match=r"server exited with code 3; see s.log"):
        wait_until_healthy(f"http://127.0.0.1:{free_port()}/", timeout=30, proc=dead, log="s.log")


def test_demo_reuses_its_mlflow_by_pid_and_command_line_without_proc(
    pid_source: str, sleeper: subprocess.Popen, tmp_path: Path
):
    """macOS has no /proc: the demo still recognises the MLflow server it recorded, and still
    refuses a recorded PID that now runs something else."""
    home = tmp_path / "mlflow"
    home.mkdir()
    record = {"pid": sleeper.pid, "port": 5050, "url": "http://127.0.0.1:5050", "log": "l"}
    (home / "server.json").write_text(json.dumps(record))
    assert demo._our_mlflow(home) == demo.MlflowProcess(**record)
    (home / "server.json").write_text(json.dumps({**record, "port": 5051}))
    assert demo._our_mlflow(home) is None
    (home / "server.json").write_text(json.dumps({**record, "pid": 1}))
    assert demo._our_mlflow(home) is None


# --- exclusive locks: one bounded helper (steps.processes.exclusive_lock) for every lock ---------


def test_no_module_takes_a_lock_of_its_own():
    """flock is called in one place, the bounded `exclusive_lock`; a lock elsewhere would wait
    for ever and name no holder."""
    root = Path(__file__).resolve().parent.parent
    offenders = [
        str(path.relative_to(root))
        for folder in ("steps", "workflows")
        for path in sorted((root / folder).rglob("*.py"))
        if "flock(" in path.read_text() and path != root / "steps" / "processes.py"
    ]
    assert offenders == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1"])
def test_take_listening_socket_copies_the_socket_another_process_listens_on(host: str) -> None:
    """A copy of a listening socket that a process in its own session holds: the same socket
    (connections made after that process is gone are still accepted through the copy), however
    its address is spelled (before: only as getsockname says it, `127.0.0.1`). A port nobody
    listens on, or one another group holds, gives None."""
    listener = subprocess.Popen(
        [sys.executable, "-c", (
            "import socket, sys, time\n"
            "s = socket.create_server(('127.0.0.1', 0))\n"
            "print(s.getsockname()[1], flush=True)\n"
            "time.sleep(120)\n"
        )],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        port = int(listener.stdout.readline())
        assert take_listening_socket(listener.pid, "127.0.0.1", free_port()) is None
        assert take_listening_socket(listener.pid + 10**7, "127.0.0.1", port) is None
        copy = take_listening_socket(listener.pid, host, port)
        assert copy is not None
        stop_process_group(listener.pid)
        with copy, socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            accepted, _ = copy.accept()  # not refused: the socket outlived its first owner
            with accepted:
                client.sendall(b"x")
                assert accepted.recv(1) == b"x"
    finally:
        stop_process_group(listener.pid)
        listener.stdout.close()
