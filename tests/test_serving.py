"""steps/serving.py: the recommended `mlflow models serve` command, checked on a real server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from steps import serving
from steps.model import LinearCoefficients
from steps.serving import recommended_serve_command
from tests import model_helpers

COEF, INTERCEPT = 0.9125, -8.75


def test_command_serves_locally_with_the_given_workers_and_cut_overheads() -> None:
    argv, env = recommended_serve_command(
        "models:/dewpoint-lr/3", port=5123, workers=3, base_env={"PATH": "/usr/bin"}
    )
    assert argv[1:3] == ["models", "serve"]
    options = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert options == {
        "--model-uri": "models:/dewpoint-lr/3",
        "--env-manager": "local",
        "--host": "127.0.0.1",
        "--port": "5123",
        "--workers": "3",
        "--timeout": "60",
    }
    assert env["UVICORN_ACCESS_LOG"] == "false"
    assert (env["UVICORN_LOOP"], env["UVICORN_HTTP"]) == ("uvloop", "httptools")
    assert env["PANDAS_FUTURE_INFER_STRING"] == "0"
    # MLflow starts `uvicorn` by name: the interpreter's bin/ must come first on PATH.
    assert env["PATH"].split(os.pathsep)[1:] == ["/usr/bin"]
    assert (Path(env["PATH"].split(os.pathsep)[0]) / "uvicorn").exists()


def test_base_env_is_not_modified_and_zero_workers_is_refused() -> None:
    base = {"PATH": "/usr/bin", "KEEP": "1"}
    _, env = recommended_serve_command("runs:/abc/model", workers=1, base_env=base)
    assert base == {"PATH": "/usr/bin", "KEEP": "1"}
    assert env["KEEP"] == "1"
    with pytest.raises(ValueError, match="at least 1"):
        recommended_serve_command("runs:/abc/model", workers=0)


@pytest.mark.parametrize(
    ("cpu_max", "cap"),
    [("50000 100000\n", 1), ("150000 100000\n", 2), ("max 100000\n", None)],
)
def test_default_workers_follow_the_cgroup_cpu_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_max: str, cap: int | None
) -> None:
    cpu_max_file = tmp_path / "cpu.max"
    cpu_max_file.write_text(cpu_max)
    monkeypatch.setattr(serving, "_CGROUP_CPU_MAX", cpu_max_file)
    affinity = len(os.sched_getaffinity(0))
    argv, _ = recommended_serve_command("runs:/abc/model")
    expected = affinity if cap is None else min(cap, affinity)
    assert argv[argv.index("--workers") + 1] == str(expected)


def _descendants(pid: int) -> list[int]:
    """PIDs of every process below `pid`, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.fixture
def served_lean_model(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """Our lean model served by the recommended command with 2 workers; yields url, proc, log."""
    with model_helpers.served_lean_model(
        tmp_path, LinearCoefficients(COEF, INTERCEPT), workers=2
    ) as served:
        yield served


@pytest.mark.slow
def test_recommended_command_serves_exact_predictions_without_access_log(
    served_lean_model: tuple[str, subprocess.Popen, Path],
) -> None:
    url, proc, log = served_lean_model
    temps = np.round(np.linspace(-20.0, 100.0, 1000), 1)
    body = {"dataframe_split": {"columns": ["temp"], "data": [[float(t)] for t in temps]}}
    with httpx.Client(timeout=30) as client:
        for _ in range(5):
            response = client.post(f"{url}/invocations", json=body)
            assert response.status_code == 200, response.text
    predictions = np.array(response.json()["predictions"], dtype=np.float64)
    np.testing.assert_allclose(predictions, temps * COEF + INTERCEPT, rtol=0, atol=1e-9)

    # Both workers run on uvloop and httptools: their shared objects are mapped in each process.
    workers = [
        pid
        for pid in _descendants(proc.pid)
        if b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes()
        and "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    ]
    assert len(workers) == 2, f"expected 2 uvicorn workers, found {workers}"
    for pid in workers:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "uvloop" in maps and "httptools" in maps, f"worker {pid} lacks uvloop/httptools"

    text = log.read_text(errors="replace")
    assert "Application startup complete" in text
    assert '"POST /invocations' not in text, "access log is still on"


def _pid_namespace_wrapper() -> list[str]:
    """`unshare --pid --fork`: the command runs as PID 1 of a new PID namespace, as a container's
    first process does; the test skips (saying why) where that is not allowed."""
    unshare = shutil.which("unshare")
    wrapper = [unshare, "--pid", "--fork"] if unshare else []
    if not wrapper or subprocess.run([*wrapper, "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare --pid --fork` (util-linux, root or user namespaces)")
    return wrapper


@pytest.mark.slow
@pytest.mark.parametrize("first_process", [True, False], ids=["as-pid-1", "as-a-child"])
def test_sigterm_stops_the_serve_command_only_when_it_is_not_a_containers_first_process(
    tmp_path: Path, first_process: bool
) -> None:
    """kind/base/model-server/deployment.yaml relies on this: `mlflow` is the pod's PID 1 and
    installs no SIGTERM handler, so the kernel drops the kubelet's SIGTERM (man 7 pid_namespaces)
    and the server keeps answering until SIGKILL at terminationGracePeriodSeconds. Run as an
    ordinary child, the same SIGTERM stops it (the control: this test can tell them apart)."""
    wrapper = _pid_namespace_wrapper() if first_process else []
    with model_helpers.served_lean_model(
        tmp_path, LinearCoefficients(COEF, INTERCEPT), wrapper=wrapper
    ) as (url, proc, _):
        mlflow_pid = _descendants(proc.pid)[0] if first_process else proc.pid
        assert b"models\0serve" in Path(f"/proc/{mlflow_pid}/cmdline").read_bytes()

        os.kill(mlflow_pid, signal.SIGTERM)

        deadline = time.monotonic() + 10
        answering = True
        while answering and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                answering = httpx.get(f"{url}/ping", timeout=5).status_code == 200
            except httpx.TransportError:
                answering = False
        assert answering == first_process
        if first_process:
            body = {"dataframe_split": {"columns": ["temp"], "data": [[50.0]]}}
            response = httpx.post(f"{url}/invocations", json=body, timeout=30)
            assert response.json()["predictions"] == [pytest.approx(50.0 * COEF + INTERCEPT)]
