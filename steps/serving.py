"""The recommended `mlflow models serve` command for our model: one function, used by the deploy
step, the serving image and the kind manifests, and measured by `benchmarks/bench_serving.py`.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path

# Per-request overhead we can cut without patching MLflow. `mlflow models serve --env-manager
# local` runs `uvicorn --host H --port P --workers N mlflow.pyfunc.scoring_server.app:app`, and the
# uvicorn CLI reads every other option from UVICORN_* variables (click's auto_envvar_prefix).
_SERVE_ENV = {
    # One log line per request costs about a tenth of the throughput; errors are still logged.
    "UVICORN_ACCESS_LOG": "false",
    # C parsers and libuv instead of pure-Python h11 and the asyncio loop. uvloop also sets
    # TCP_NODELAY on every accepted socket: with --workers > 1 uvicorn hands asyncio a pre-bound
    # socket and Nagle stays on, so every keep-alive request after the first waits ~40 ms for a
    # delayed ACK. Workaround for https://github.com/Kludex/uvicorn/issues/3149 (open, 0.54.0).
    "UVICORN_LOOP": "uvloop",
    "UVICORN_HTTP": "httptools",
    # MLflow builds a pandas DataFrame for every request (https://github.com/mlflow/mlflow/issues/1403);
    # pandas 3 makes its column labels an Arrow-backed str Index, which costs more than the whole
    # prediction for small requests (about 40% of the scoring CPU at 1 row). Object labels, as in
    # pandas 2, change nothing for a float `temp` column. pandas reads this once at import; it is
    # deprecated and goes away with pandas 4 (https://github.com/pandas-dev/pandas/issues/68436).
    "PANDAS_FUTURE_INFER_STRING": "0",
}
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
REQUEST_TIMEOUT_S = 60  # MLflow's `--timeout`: how long one request may take, seconds


def recommended_serve_command(
    model_uri: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int | None = None,
    timeout_seconds: int = REQUEST_TIMEOUT_S,
    mlflow_executable: str | None = None,
    base_env: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The `mlflow models serve` argv and the full environment to start it with.

    Needs `uvloop` and `httptools` installed next to MLflow (pinned in pyproject.toml); uvicorn
    fails at start-up without them rather than silently falling back to the slow path. Pass the
    environment only to the model server: `mlflow server` runs uvicorn too and would pick it up.

    Args:
        model_uri: any URI `mlflow models serve -m` accepts (`models:/name/1`, `runs:/...`, a path).
        host: interface to listen on; `0.0.0.0` in a container, loopback everywhere else.
        port: TCP port.
        workers: uvicorn worker processes; default one per CPU this process may use (affinity and
            the cgroup v2 CPU quota, so a pod limited to 2 CPUs on a 32-core node gets 2).
        timeout_seconds: per-request timeout (MLflow's `--timeout`).
        mlflow_executable: the `mlflow` program; default the one next to this interpreter.
        base_env: environment to extend; default `os.environ`.

    Returns:
        `(argv, env)`: `env` is `base_env` plus the UVICORN_* and pandas settings, with this
        interpreter's bin/ first on PATH because MLflow starts `uvicorn` by name.
    """
    if workers is None:
        workers = _usable_cpus()
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    bin_dir = Path(sys.executable).parent
    mlflow = mlflow_executable or str(bin_dir / "mlflow")
    argv = [
        mlflow,
        "models",
        "serve",
        "--model-uri",
        model_uri,
        "--env-manager",
        "local",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--timeout",
        str(timeout_seconds),
    ]
    env = dict(os.environ if base_env is None else base_env)
    env.update(_SERVE_ENV)
    env["PATH"] = os.pathsep.join([str(bin_dir), env["PATH"]]) if env.get("PATH") else str(bin_dir)
    return argv, env


def _usable_cpus() -> int:
    """CPUs this process may run on, capped by a cgroup v2 quota (`cpu.max`), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 file (macOS, cgroup v1): affinity is all we know
    return max(cpus, 1)
