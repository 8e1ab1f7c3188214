"""Local deploy benchmark: first deploy, swap and no-op wall times, how long the port is dark, and
how many requests of clients posting without pause were refused or failed during the swap.

Run `python benchmarks/bench_deploy_local.py` (sqlite MLflow store under a temp dir, loopback only).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import mlflow

from steps.deploy_targets.common import SMOKE_BODY, DeployRequest
from steps.deploy_targets.local import deploy_local, running_server, stop_local
from steps.model import LinearCoefficients
from steps.processes import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' helpers
from tests.model_helpers import RequestLoad, register_served

HOST = "127.0.0.1"


class PingWatcher:
    """Polls /ping in a thread and records the longest stretch without a 200 (the dark window)."""

    def __init__(self, url: str, interval: float = 0.05) -> None:
        self.url, self.interval = url, interval
        self.longest_dark = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PingWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        dark_since: float | None = None
        while not self._stop.is_set():
            try:
                ok = httpx.get(self.url, timeout=1).status_code == 200
            except httpx.HTTPError:
                ok = False
            now = time.monotonic()
            if ok and dark_since is not None:
                self.longest_dark = max(self.longest_dark, now - dark_since)
                dark_since = None
            elif not ok and dark_since is None:
                dark_since = now
            time.sleep(self.interval)
        if dark_since is not None:
            self.longest_dark = max(self.longest_dark, time.monotonic() - dark_since)


def register_versions(tracking_uri: str, name: str, root: Path) -> list[str]:
    """Register two versions of the served model (different coefficients), tagged as the register
    step tags them, so they pass deploy's trust check."""
    mlflow.set_tracking_uri(tracking_uri)  # the registry follows it (one sqlite store for both)
    experiment = mlflow.MlflowClient(tracking_uri).create_experiment(
        "bench-deploy", artifact_location=str(root / "artifacts")
    )
    return [
        register_served(tracking_uri, experiment, name, LinearCoefficients(coef, intercept))
        for coef, intercept in [(0.8, -5.0), (0.5, 10.0)]
    ]


def answer_rate(base_url: str, seconds: float) -> float:
    """Answers per second the 4 load clients get from `base_url` in `seconds`."""
    with RequestLoad(f"{base_url}/invocations", SMOKE_BODY) as load:
        time.sleep(seconds)
    return load.answered / seconds


def timed(label: str, action) -> float:
    """Run `action`, print and return its wall time."""
    start = time.monotonic()
    result = action()
    seconds = time.monotonic() - start
    print(f"{label:<34} {seconds:7.2f} s   changed={result.changed}")
    return seconds


def main() -> None:
    """Deploy v1, swap to v2 while watching /ping, deploy v2 again; print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--timeout", type=float, default=300.0, help="per-server /ping timeout")
    parser.add_argument(
        "--rate-seconds", type=float, default=10.0, help="load time for each answers/s figure"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        root = Path(tmp)
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        v1, v2 = register_versions(tracking_uri, "bench-deploy", root)
        port = free_port(HOST)
        state_dir = root / "serve"

        def deploy(version: str):
            request = DeployRequest("bench-deploy", version, tracking_uri)
            return deploy_local(
                request, host=HOST, port=port, state_dir=state_dir, timeout=args.timeout
            )

        try:
            first = timed("first deploy (v1, one start)", lambda: deploy(v1))
            invocations = f"http://{HOST}:{port}/invocations"
            with (
                PingWatcher(f"http://{HOST}:{port}/ping") as watcher,
                RequestLoad(invocations, SMOKE_BODY) as load,
            ):
                swap = timed("swap v1 -> v2 under load", lambda: deploy(v2))
            noop = timed("same version again (no-op)", lambda: deploy(v2))
            served = running_server(state_dir)
            assert served is not None
            rates = {
                "direct": answer_rate(served.backend_url, args.rate_seconds),
                "front": answer_rate(served.url, args.rate_seconds),
            }
        finally:
            stop_local(state_dir)
        dark = watcher.longest_dark
        print(f"{'longest /ping dark window in swap':<34} {dark:7.2f} s")
        total = load.answered + len(load.failed)
        print(f"{'requests during swap (4 clients)':<34} {total:7d}")
        print(f"{'refused or failed during swap':<34} {len(load.failed):7d}")
        print(f"refused or failed / requests       {len(load.failed) / max(total, 1):7.3f}")
        print(f"dark window / swap time            {dark / swap:7.2f}")
        print(f"dark window / first deploy         {dark / first:7.2f}")
        print(f"no-op / swap                       {noop / swap:7.3f}")
        print(f"{'answers/s, model server directly':<34} {rates['direct']:7.1f}")
        print(f"{'answers/s, through the front':<34} {rates['front']:7.1f}")
        print(f"front / direct answers per second  {rates['front'] / rates['direct']:7.2f}")


if __name__ == "__main__":
    main()
