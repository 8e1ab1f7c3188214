"""Shared fixtures: free loopback ports and a real MLflow tracking server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Assert a step exited 1 with exactly one `error: ...` line on stderr containing `needles`."""
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def wait_http_ok(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers 200; fail early if `proc` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s")


def mlflow_executable() -> str:
    """The `mlflow` program of the interpreter running the tests."""
    candidate = Path(sys.executable).parent / "mlflow"
    return str(candidate) if candidate.exists() else (shutil.which("mlflow") or "mlflow")


@dataclass
class MlflowServer:
    """A running `mlflow server` on loopback."""

    url: str
    root: Path
    proc: subprocess.Popen

    def stop(self) -> None:
        """Stop the server (and its workers) started by this fixture."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
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
