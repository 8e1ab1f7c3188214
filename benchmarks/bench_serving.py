"""Serving benchmark under wrk: our `mlflow models serve` set-up vs stock MLflow vs a bare ASGI app.

Run `make bench-serving` (or `python benchmarks/bench_serving.py --help`); needs Debian's `wrk`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from steps.model import LinearCoefficients, log_served_model
from steps.processes import free_port, stop_process_group
from steps.serving import recommended_serve_command

HOST = "127.0.0.1"
FLOOR_APP_DIR = Path(__file__).resolve().parent
VERIFY_ROWS = 1000
VERIFY_TOLERANCE = 1e-9
# What `pip install mlflow==3.17.2` gives uvicorn's "auto" choices (MLflow depends on plain
# `uvicorn`, without the [standard] extra that brings uvloop and httptools). Pinned for the stock
# server so that installing them for our setup does not quietly speed up "stock" as well.
STOCK_UVICORN_ENV = {"UVICORN_LOOP": "asyncio", "UVICORN_HTTP": "h11"}

# POSTs the body file named by WRK_BODY_FILE and prints wrk's exact figures as one JSON line.
WRK_SCRIPT = """
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"socket_errors": %d, "status_errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass(frozen=True)
class Workload:
    """One wrk load: `rows` rows per request, `connections` concurrent keep-alive connections."""

    rows: int
    connections: int

    @property
    def label(self) -> str:
        """Short name for tables."""
        return f"{self.rows} row{'s' if self.rows > 1 else ''} x {self.connections} conn"


@dataclass
class Sample:
    """wrk's figures for one run."""

    req_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    # Server CPU (all its processes, user + system) per request: unlike req/s and latency it barely
    # moves when other work competes for the cores, so it is the steadier figure on a shared box.
    cpu_ms_per_req: float


@dataclass
class Server:
    """A server process this benchmark started, in its own process group."""

    name: str
    url: str
    proc: subprocess.Popen
    log: Path
    workers: int

    def stop(self) -> None:
        """Stop the process group this benchmark started (TERM, then KILL after 20 s)."""
        if self.proc.poll() is not None:
            return
        stop_process_group(self.proc.pid, timeout=20)
        self.proc.wait()

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by this server's process and all its descendants."""
        return sum(
            _process_cpu_seconds(pid) for pid in [self.proc.pid, *_descendants(self.proc.pid)]
        )

    def log_tail(self, lines: int = 15) -> str:
        """The end of the server's log, for error messages."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Variant:
    """A server set-up under test, and the samples measured for it per workload."""

    name: str
    description: str
    start: Callable[[int, Path], Server]
    samples: dict[Workload, list[Sample]] = field(default_factory=dict)


def _descendants(pid: int) -> list[int]:
    """PIDs of every live process below `pid`, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")" that closes the command name, utime and stime are the 12th and 13th fields.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def default_workers() -> int:
    """The worker count steps/serving.py chooses on this machine."""
    argv, _ = recommended_serve_command("unused")
    return int(argv[argv.index("--workers") + 1])


def dataframe_split_body(temps: np.ndarray) -> bytes:
    """The MLflow 3 scoring body for a `temp` column."""
    data = [[float(t)] for t in temps]
    return json.dumps({"dataframe_split": {"columns": ["temp"], "data": data}}).encode()


def fit_model(rows: int = 5000, seed: int = 7) -> tuple[object, pd.DataFrame]:
    """Fit scikit-learn's LinearRegression of dew point on temperature (deg F), GSOD-like data."""
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(seed)
    temp = np.round(rng.uniform(-10.0, 95.0, rows), 1)
    dewp = np.round(0.92 * temp - 9.5 + rng.normal(0.0, 6.0, rows), 1)
    frame = pd.DataFrame({"temp": temp})
    return LinearRegression().fit(frame, dewp), frame


def log_models(workdir: Path, estimator: object, frame: pd.DataFrame) -> dict[str, str]:
    """Log our lean pyfunc and the same estimator the default (sklearn flavour) way.

    A private sqlite store under `workdir`, artifacts next to it: no MLflow server needed.
    Returns the model URIs by name (`ours`, `stock`) and `tracking_uri`.
    """
    import mlflow
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import infer_signature

    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.create_experiment(
        "bench-serving", artifact_location=(workdir / "artifacts").as_uri()
    )
    example = frame.head(5)
    coefficients = LinearCoefficients.from_estimator(estimator)
    (workdir / "coefficients.json").write_text(coefficients.to_json())
    with mlflow.start_run(experiment_id=experiment):
        ours = log_served_model(coefficients, example)
        stock = mlflow.sklearn.log_model(
            estimator,
            name="sklearn-model",
            signature=infer_signature(frame, estimator.predict(frame)),
            input_example=example,
        )
    return {
        "ours": ours.model_uri,
        "stock": stock.model_uri,
        "tracking_uri": tracking_uri,
    }


def start_process(
    name: str, argv: list[str], env: dict[str, str], workdir: Path, workers: int, port: int
) -> Server:
    """Start `argv` in a new process group, output to `workdir/<name>.log`."""
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(name, f"http://{HOST}:{port}", proc, log, workers)


def wait_ready(server: Server, timeout: float = 240.0) -> None:
    """Wait until /ping answers and every uvicorn worker has logged its start-up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}"
            )
        started = server.log.read_text(errors="replace").count("Application startup complete")
        if started >= server.workers:
            try:
                if httpx.get(f"{server.url}/ping", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    raise TimeoutError(f"{server.name} not ready within {timeout:.0f}s:\n{server.log_tail()}")


def verify_predictions(server: Server, body: bytes, expected: np.ndarray) -> float:
    """POST `body`; fail unless the predictions match `expected` within VERIFY_TOLERANCE."""
    response = httpx.post(
        f"{server.url}/invocations",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    if response.status_code != 200:
        raise RuntimeError(f"{server.name}: HTTP {response.status_code}: {response.text[:300]}")
    predictions = response.json()["predictions"]
    # The sklearn flavour answers a list of floats; a DataFrame output would be a list of dicts.
    got = np.array([p if isinstance(p, float) else next(iter(p.values())) for p in predictions])
    if got.shape != expected.shape:
        raise RuntimeError(
            f"{server.name}: {got.shape[0]} predictions for {expected.shape[0]} rows"
        )
    worst = float(np.max(np.abs(got - expected)))
    if worst > VERIFY_TOLERANCE:
        raise RuntimeError(f"{server.name}: prediction off by {worst:.3g} (> {VERIFY_TOLERANCE})")
    return worst


def run_wrk(
    wrk: str, script: Path, body_file: Path, server: Server, connections: int, seconds: float
) -> Sample:
    """One wrk run (one thread, keep-alive) against `server`; figures from the Lua `done` hook."""
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        f"{server.url}/invocations",
    ]
    env = {**os.environ, "WRK_BODY_FILE": str(body_file)}
    cpu_before = server.cpu_seconds()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    cpu_used = server.cpu_seconds() - cpu_before
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout}")
    figures = json.loads(line.removeprefix("WRK_JSON "))
    return Sample(
        req_per_s=figures["requests"] / (figures["duration_us"] / 1e6),
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        errors=figures["socket_errors"] + figures["status_errors"],
        cpu_ms_per_req=1000 * cpu_used / max(figures["requests"], 1),
    )


def median_sample(samples: list[Sample]) -> Sample:
    """Median of each figure over rounds (each figure on its own)."""
    return Sample(
        req_per_s=statistics.median(s.req_per_s for s in samples),
        p50_ms=statistics.median(s.p50_ms for s in samples),
        p99_ms=statistics.median(s.p99_ms for s in samples),
        errors=sum(s.errors for s in samples),
        cpu_ms_per_req=statistics.median(s.cpu_ms_per_req for s in samples),
    )


def print_report(
    variants: list[Variant], workloads: list[Workload], rounds: int, seconds: float
) -> bool:
    """Print the medians table and the ratios; return whether the target was met."""
    by_name = {v.name: v for v in variants}
    print(
        f"\nMedians of {rounds} rounds x {seconds:g} s per cell; wrk -t1, keep-alive, "
        f"{os.cpu_count()} CPUs shared with wrk (and with anything else running)."
    )
    print(
        f"{'workload':<22}{'server':<18}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'CPU ms/req':>12}{'errors':>8}"
    )
    for workload in workloads:
        for variant in variants:
            m = median_sample(variant.samples[workload])
            print(
                f"{workload.label:<22}{variant.name:<18}{m.req_per_s:>9.0f}{m.p50_ms:>9.2f}"
                f"{m.p99_ms:>9.2f}{m.cpu_ms_per_req:>12.3f}{m.errors:>8d}"
            )
    if "ours" not in by_name or "stock" not in by_name:
        return True
    # Every variant of our set-up (ours, ours-wN) against stock and the floor.
    candidates = [v for v in variants if v.name.startswith("ours")]
    print(
        f"\n{'workload':<22}{'server':<18}{'req/s x stock':>15}{'req/s x floor':>15}"
        f"{'p99 x stock':>13}{'CPU/req stock/x':>17}"
    )
    met: dict[str, bool] = {}
    for workload in workloads:
        stock = median_sample(by_name["stock"].samples[workload])
        for candidate in candidates:
            ours = median_sample(candidate.samples[workload])
            floor_ratio = "-"
            if "floor" in by_name:
                floor = median_sample(by_name["floor"].samples[workload])
                floor_ratio = f"{ours.req_per_s / floor.req_per_s:.2f}"
            print(
                f"{workload.label:<22}{candidate.name:<18}{ours.req_per_s / stock.req_per_s:>15.2f}"
                f"{floor_ratio:>15}{ours.p99_ms / stock.p99_ms:>13.2f}"
                f"{stock.cpu_ms_per_req / ours.cpu_ms_per_req:>17.2f}"
            )
            if workload.connections >= 16:
                met[candidate.name] = met.get(candidate.name, True) and (
                    ours.req_per_s >= 1.4 * stock.req_per_s and ours.p99_ms <= stock.p99_ms
                )
    print("\ntarget at 16 connections: req/s >= 1.4x stock and p99 <= stock")
    for name, ok in met.items():
        print(f"  {name:<18}{'met' if ok else 'NOT met'}")
    return met.get("ours", True)


def build_variants(
    ours_uri: str,
    stock_uri: str,
    base_env: dict[str, str],
    workers: int,
    coefficients_file: Path,
    attribution: bool,
    compare_workers: list[int],
) -> list[Variant]:
    """The set-ups to compare: `attribution` adds the two half-way set-ups, `compare_workers`
    ours with other worker counts."""
    mlflow = str(Path(sys.executable).parent / "mlflow")
    clean_env = {k: v for k, v in base_env.items() if not k.startswith("UVICORN_")}

    def ours_flags(uri: str, name: str, count: int = workers) -> Callable[[int, Path], Server]:
        def start(port: int, workdir: Path) -> Server:
            argv, env = recommended_serve_command(
                uri, host=HOST, port=port, workers=count, base_env=clean_env
            )
            return start_process(name, argv, env, workdir, count, port)

        return start

    def stock_flags(uri: str, name: str) -> Callable[[int, Path], Server]:
        def start(port: int, workdir: Path) -> Server:
            argv = [
                mlflow,
                "models",
                "serve",
                "-m",
                uri,
                "--env-manager",
                "local",
                "-h",
                HOST,
                "-p",
                str(port),
            ]
            env = {**clean_env, **STOCK_UVICORN_ENV}
            env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
            return start_process(name, argv, env, workdir, 1, port)

        return start

    def floor(port: int, workdir: Path) -> Server:
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(FLOOR_APP_DIR),
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "floor_app:app",
        ]
        env = {**clean_env, "FLOOR_COEFFICIENTS": str(coefficients_file)}
        return start_process("floor", argv, env, workdir, workers, port)

    variants = [
        Variant(
            "ours",
            "lean pyfunc (steps/model.py) + steps/serving.py flags",
            ours_flags(ours_uri, "ours"),
        ),
        Variant(
            "stock",
            "mlflow.sklearn.log_model + default `mlflow models serve`",
            stock_flags(stock_uri, "stock"),
        ),
        Variant(
            "floor", "bare ASGI app (benchmarks/floor_app.py), same uvicorn flags as ours", floor
        ),
    ]
    variants += [
        Variant(f"ours-w{n}", f"ours with {n} worker(s)", ours_flags(ours_uri, f"ours-w{n}", n))
        for n in compare_workers
    ]
    if attribution:
        variants += [
            Variant(
                "sklearn+ourflags",
                "mlflow.sklearn model + steps/serving.py flags",
                ours_flags(stock_uri, "sklearn-ourflags"),
            ),
            Variant(
                "lean+stockflags",
                "lean pyfunc + default `mlflow models serve`",
                stock_flags(ours_uri, "lean-stockflags"),
            ),
        ]
    return variants


@contextlib.contextmanager
def stop_on_exit(servers: list[Server]) -> Iterator[None]:
    """Stop every server started here, also on errors, Ctrl-C and SIGTERM."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        for server in servers:
            server.stop()
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of A/B/C (default 3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rows", default="1,1000", help="rows per request, comma list")
    parser.add_argument("--connections", default="1,16", help="connections, comma list")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="workers for ours and the floor (default: steps/serving.py's choice)",
    )
    parser.add_argument(
        "--attribution",
        action="store_true",
        help="also run sklearn+our flags and lean pyfunc+stock flags",
    )
    parser.add_argument(
        "--compare-workers",
        default="",
        help="also run ours with these worker counts, comma list (e.g. 1,3)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep models and logs here")
    parser.add_argument("--json", type=Path, default=None, help="write every sample as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Fit, log, serve, verify, load with wrk in alternating rounds, print medians and ratios."""
    args = parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print(
            "wrk not found: install it with `apt-get install -y wrk` (Debian/Ubuntu) "
            "and run again.",
            file=sys.stderr,
        )
        return 2
    workloads = [
        Workload(int(r), int(c)) for r in args.rows.split(",") for c in args.connections.split(",")
    ]
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serving-"))
            )
        else:
            workdir = args.workdir.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        return run(args, wrk, workdir, workloads)


def run(args: argparse.Namespace, wrk: str, workdir: Path, workloads: list[Workload]) -> int:
    """The benchmark body, in `workdir`."""
    estimator, frame = fit_model()
    uris = log_models(workdir, estimator, frame)
    ours_uri, stock_uri, tracking_uri = uris["ours"], uris["stock"], uris["tracking_uri"]
    coefficients_file = workdir / "coefficients.json"
    workers = args.workers or default_workers()
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)
    body_files = {}
    for rows in {w.rows for w in workloads} | {VERIFY_ROWS}:
        body_files[rows] = workdir / f"body-{rows}.json"
        body_files[rows].write_bytes(dataframe_split_body(frame["temp"].to_numpy()[:rows]))
    verify_frame = frame.head(VERIFY_ROWS)
    expected = np.asarray(estimator.predict(verify_frame), dtype=np.float64)

    base_env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    variants = build_variants(
        ours_uri,
        stock_uri,
        base_env,
        workers,
        coefficients_file,
        args.attribution,
        [int(n) for n in args.compare_workers.split(",") if n],
    )
    servers: list[Server] = []
    with stop_on_exit(servers):
        for variant in variants:
            servers.append(variant.start(free_port(), workdir))
        for server, variant in zip(servers, variants, strict=True):
            wait_ready(server)
            worst = verify_predictions(server, body_files[VERIFY_ROWS].read_bytes(), expected)
            print(
                f"{variant.name:<18} ready, {server.workers} worker(s), {VERIFY_ROWS} "
                f"predictions match sklearn (max |diff| {worst:.1e}): {variant.description}"
            )
        for server in servers:  # warm every worker and the caches before the first round
            run_wrk(wrk, script, body_files[min(body_files)], server, 16, 2)
        for round_index in range(args.rounds):
            for workload in workloads:
                # Rotate the order every round so no set-up always runs first or last.
                shift = round_index % len(variants)
                for variant, server in (
                    list(zip(variants, servers, strict=True))[shift:]
                    + list(zip(variants, servers, strict=True))[:shift]
                ):
                    sample = run_wrk(
                        wrk,
                        script,
                        body_files[workload.rows],
                        server,
                        workload.connections,
                        args.seconds,
                    )
                    variant.samples.setdefault(workload, []).append(sample)
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    print_report(variants, workloads, args.rounds, args.seconds)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    v.name: {w.label: [s.__dict__ for s in v.samples[w]] for w in workloads}
                    for v in variants
                },
                indent=2,
            )
        )
    errors = sum(s.errors for v in variants for ss in v.samples.values() for s in ss)
    if errors:
        print(
            f"error: {errors} failed requests during load (see the errors column)", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
