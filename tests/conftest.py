"""Shared fixtures: free loopback ports and a real MLflow tracking server."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from steps.cli import EXIT_BAD_INPUT, EXIT_FAILED
from steps.deploy_targets.local import mlflow_program
from steps.processes import free_port, stop_process_group, wait_until_healthy

__all__ = ["free_port"]  # tests import it from here


def assert_one_line_error(code: int, err: str, *needles: str, exit_code: int = EXIT_FAILED) -> None:
    """Assert a step exited `exit_code` (default 1, failed) with exactly one `error: ...` line on
    stderr containing `needles`."""
    assert code == exit_code, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def assert_bad_input(code: int, err: str, *needles: str) -> None:
    """Assert a step refused a flag value: exit 2 and one `error: ...` line with `needles`."""
    assert_one_line_error(code, err, *needles, exit_code=EXIT_BAD_INPUT)


def wait_http_ok(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers 200; fail early if `proc` died (steps.processes' loop)."""
    wait_until_healthy(url, timeout=timeout, proc=proc)


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 this test holds listening (another program's)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def demo_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """The local door (`make demo`, `submit.py --local`) pointed at this test: working directory
    `tmp_path` (so `.demo/` is under it), free MLFLOW_PORT and SERVE_PORT, DEPLOY_STATE_DIR
    unset. Returns (mlflow_port, serve_port)."""
    monkeypatch.chdir(tmp_path)
    mlflow_port, serve_port = free_port(), free_port()
    monkeypatch.setenv("MLFLOW_PORT", str(mlflow_port))
    monkeypatch.setenv("SERVE_PORT", str(serve_port))
    monkeypatch.delenv("DEPLOY_STATE_DIR", raising=False)
    return mlflow_port, serve_port


def mlflow_executable() -> str:
    """The `mlflow` program of the interpreter running the tests, found as the steps find it."""
    return str(mlflow_program())


@dataclass
class MlflowServer:
    """A running `mlflow server` on loopback."""

    url: str
    root: Path
    proc: subprocess.Popen

    def stop(self) -> None:
        """Stop the server (and its workers) started by this fixture."""
        if self.proc.poll() is None:
            stop_process_group(self.proc.pid, timeout=20)
            self.proc.wait()


def start_mlflow_server(root: Path, port: int | None = None) -> MlflowServer:
    """Start a real MLflow server (sqlite store, proxied local artifacts) under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = (root / "server.log").open("ab")
    proc = subprocess.Popen(
        [
            mlflow_executable(),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        # No GenAI job runner (unused here): one process fewer at start-up, 46 s -> 26 s to /health
        # on 2 busy cores (workflows/demo.py starts its server the same way).
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = MlflowServer(f"http://127.0.0.1:{port}", root, proc)
    try:
        wait_http_ok(f"{server.url}/health", timeout=90, proc=proc)
    except Exception:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real MLflow tracking server for the whole test session."""
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


@pytest.fixture
def sqlite_tracking_uri(tmp_path: Path) -> str:
    """A private sqlite-backed MLflow store for fast unit tests."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
