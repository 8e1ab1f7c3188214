"""Test helpers for the model stages: datasets with a known dew point relation, CLI runs, stores."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from steps.cli import EXIT_FAILED
from steps.model import LinearCoefficients, log_served_model
from steps.model_trust import PROVENANCE_TAG
from steps.processes import stop_process_group
from steps.serving import recommended_serve_command
from tests.conftest import free_port, wait_http_ok

REPO = Path(__file__).resolve().parent.parent

# The validated dataset's Arrow schema (docs/steps.md, "Dataset").
DATASET_SCHEMA = pa.schema(
    [
        ("station", pa.string()),
        ("date", pa.date32()),
        ("temp", pa.float64()),
        ("dewp", pa.float64()),
        ("frshtt", pa.string()),
    ]
)


def dewpoint_frame(
    rows: int = 400,
    seed: int = 0,
    slope: float = 0.8,
    intercept: float = -10.0,
    noise: float = 2.0,
) -> pd.DataFrame:
    """Rows in the dataset's columns with dewp = slope * temp + intercept + N(0, noise)."""
    rng = np.random.default_rng(seed)
    temp = rng.uniform(-10.0, 95.0, rows)
    start = dt.date(2024, 1, 1)
    return pd.DataFrame(
        {
            "station": ["72509014739"] * rows,
            "date": [start + dt.timedelta(days=i % 366) for i in range(rows)],
            "temp": temp,
            "dewp": slope * temp + intercept + rng.normal(0.0, noise, rows),
            "frshtt": ["010000"] * rows,
        }
    )


def split_rows(
    frame: pd.DataFrame, test_size: float = 0.2, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, holdout rows) of `frame` as train splits them (steps.holdout_split), with
    rows missing temp or dewp dropped: the rows a single-table fit of the same split uses."""
    from steps.holdout_split import in_holdout, row_keys

    usable = frame.dropna(subset=["temp", "dewp"]).reset_index(drop=True)
    keys = row_keys(
        pa.array(usable["station"].astype(str), pa.string()),
        pa.array(pd.to_datetime(usable["date"]).dt.date, pa.date32()),
        seed,
    )
    held = in_holdout(keys, test_size)
    return usable[~held].reset_index(drop=True), usable[held].reset_index(drop=True)


def sklearn_fit(
    train: pd.DataFrame, model_type: str = "linear", alpha: float = 0.5, l1_ratio: float = 0.5
) -> LinearCoefficients:
    """Today's single-table fit: scikit-learn's LinearRegression (or ElasticNet) on `train`."""
    from sklearn.linear_model import ElasticNet, LinearRegression

    estimator = (
        ElasticNet(alpha=alpha, l1_ratio=l1_ratio)
        if model_type == "elasticnet"
        else LinearRegression()
    )
    estimator.fit(train[["temp"]], train["dewp"])
    return LinearCoefficients(float(estimator.coef_[0]), float(estimator.intercept_))


def write_dataset(frame: pd.DataFrame, path: Path, source: dict | None = None) -> Path:
    """Write `frame` as Parquet with the contract's types and `dewpoint.source` metadata."""
    try:
        table = pa.Table.from_pandas(frame, schema=DATASET_SCHEMA, preserve_index=False)
    except (KeyError, pa.ArrowException, TypeError, ValueError):
        # Deliberately broken frames (a missing column, text temperatures) keep their own types.
        table = pa.Table.from_pandas(frame, preserve_index=False)
    if source is not None:
        table = table.replace_schema_metadata({"dewpoint.source": json.dumps(source)})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def made_in_fahrenheit(tracking_uri: str, *run_ids: str) -> None:
    """Tag training runs a test logged from rows it generated in deg F (`dewpoint_frame`, the
    synthetic source) as train tags generated data: `data.units=generated` (steps/validate.py
    `units_evidence`). train_and_log tags a frame without a report `unchecked`, and promote makes
    no first champion of that (steps/promote.py, rule 2)."""
    import mlflow

    from steps.register import TAG_DATA_UNITS, TAG_DATA_UNITS_BASIS

    client = mlflow.MlflowClient(tracking_uri)
    for run_id in run_ids:
        client.set_tag(run_id, TAG_DATA_UNITS, "generated")
        client.set_tag(run_id, TAG_DATA_UNITS_BASIS, "rows the test generated in deg F")


def make_experiment(tracking_uri: str, name: str, artifact_dir: Path) -> str:
    """Create experiment `name` with artifacts under `artifact_dir` (not ./mlruns in the cwd)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    return client.create_experiment(name, artifact_location=artifact_dir.as_uri())


class RawCoefficients:
    """Coefficients artifact text written as given: a broken or non-finite artifact of our own
    served model, which passes deploy's trust check (steps/model_trust.py) and fails later."""

    def __init__(self, text: str) -> None:
        self.text = text

    def to_json(self) -> str:
        return self.text


def register_served(
    tracking_uri: str,
    experiment_id: str,
    name: str,
    coefficients: LinearCoefficients | RawCoefficients,
) -> str:
    """Register this project's served model with `coefficients`, tagged as register tags it.

    The version passes deploy's and promote's trust check (our models-from-code file, the
    coefficients artifact alone, the provenance tag). Returns its version number.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with mlflow.start_run(experiment_id=experiment_id) as run:
            info = log_served_model(coefficients, pd.DataFrame({"temp": [50.0]}))  # type: ignore[arg-type]
    finally:
        mlflow.set_tracking_uri(previous)  # None unsets MLFLOW_TRACKING_URI again
    with contextlib.suppress(Exception):
        client.create_registered_model(name)
    version = client.create_model_version(
        name,
        info.model_uri,
        run.info.run_id,
        tags={PROVENANCE_TAG: "tests"},
        model_id=info.model_id,
    )
    return str(version.version)


def step_env(**extra: str) -> dict[str, str]:
    """The test process's environment without MLflow settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(extra)
    return env


def run_step(
    stage: str,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    full_disk: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m steps <stage> args...` in a subprocess from the repository root; with
    `full_disk`, as if the disk under that directory were full (tests/full_disk.py)."""
    runner = ["steps"] if full_disk is None else ["tests.full_disk", str(full_disk)]
    return subprocess.run(
        [sys.executable, "-m", *runner, stage, *args],
        cwd=REPO,
        env=env if env is not None else step_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_line(result: subprocess.CompletedProcess[str], exit_code: int = EXIT_FAILED) -> str:
    """The `error: ...` line a failed step printed; asserts there is exactly one and the step
    exited `exit_code` (1 failed, 2 bad input, 75 transient)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == exit_code, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


@contextmanager
def served_lean_model(
    root: Path, coefficients: LinearCoefficients, workers: int = 1, wrapper: Sequence[str] = ()
) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """Log our lean model with `coefficients` to a sqlite store under `root` and serve it with the
    recommended `mlflow models serve` command (as the local deploy target does), run under
    `wrapper` if given (e.g. `unshare --pid --fork`); yields the base URL, the server process (the
    wrapper's, if any) and its log. The server is stopped, and the global tracking URI put back,
    on exit."""
    import mlflow

    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        experiment = mlflow.create_experiment("serving", artifact_location=(root / "a").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = log_served_model(coefficients, pd.DataFrame({"temp": [10.0, 50.0, 80.0]}))
    finally:
        mlflow.set_tracking_uri(previous)
    port = free_port()
    argv, env = recommended_serve_command(info.model_uri, port=port, workers=workers)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    log = root / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*wrapper, *argv], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/ping", timeout=180, proc=proc)
        yield f"http://127.0.0.1:{port}", proc, log
    finally:
        if proc.poll() is None:  # a test may have stopped it already
            stop_process_group(proc.pid)


def station_year(
    mean_f: float, swing_f: float, seed: int = 0, days: int = 365, station: str = "72530094846"
) -> pd.DataFrame:
    """One station-year of plausible daily means in deg F with FRSHTT flags: a seasonal cycle,
    humidity by day, dew point by Magnus, rain on humid days, thunder on warm humid days (as in
    real GSOD data, where no thunder day is below 40 F) and snow on cold rainy ones."""
    from steps.climate import dewpoint_f

    rng = np.random.default_rng(seed)
    day = np.arange(days)
    temp = mean_f + swing_f * np.cos(2 * np.pi * (day - 200) / 365.25) + rng.normal(0, 5, days)
    temp = np.clip(temp, -60.0, 95.0)
    rh = np.clip(rng.normal(70, 12, days), 20, 100)
    dewp = dewpoint_f(temp, rh)
    rain = rng.random(days) < np.where(rh > 80, 0.6, 0.1)
    thunder = rain & (temp > 55) & (rng.random(days) < 0.5)
    snow = rain & (temp < 32)
    flags = [f"0{int(r)}{int(s)}0{int(t)}0" for r, s, t in zip(rain, snow, thunder, strict=True)]
    start = dt.date(2023, 1, 1)
    return pd.DataFrame(
        {
            "station": [station] * days,
            "date": [start + dt.timedelta(days=int(i)) for i in day],
            "temp": temp.round(1),
            "dewp": dewp.round(1),
            "frshtt": flags,
        }
    )


def gsod_access_csv(frame: pd.DataFrame) -> bytes:
    """`frame` (one station's rows, the dataset's columns) as one file in NCEI's access CSV
    format: 28 quoted columns, TEMP and DEWP in deg F to tenths (NCEI GSOD readme); the columns
    the dataset does not carry hold plausible values or GSOD's missing markers."""
    from steps.gsod_format import GSOD_HEADER

    lines = [GSOD_HEADER.decode()]
    for row in frame.itertuples(index=False):
        lines.append(
            f'"{row.station}","{row.date}","41.0","-88.0","200.0","TEST FIELD, IL US",'
            f'"{row.temp:6.1f}","24","{row.dewp:6.1f}","24","1013.2","24","1012.0","24",'
            f'"  9.9","24","  5.0","24"," 10.0","999.9","{row.temp + 9:6.1f}"," ",'
            f'"{row.temp - 9:6.1f}"," "," 0.00","G","999.9","{row.frshtt}"'
        )
    return ("\n".join(lines) + "\n").encode()


def mixed_units(frame: pd.DataFrame, fraction: float, seed: int = 0) -> pd.DataFrame:
    """`frame` with a random `fraction` of its rows converted to deg C (both temp and dewp,
    (x - 32) / 1.8, rounded to tenths as GSOD writes them); the rest stay in deg F."""
    converted = np.random.default_rng(seed).random(len(frame)) < fraction
    celsius = in_celsius(frame).round({"temp": 1, "dewp": 1})
    return frame.assign(
        temp=np.where(converted, celsius["temp"], frame["temp"]),
        dewp=np.where(converted, celsius["dewp"], frame["dewp"]),
    )


def in_celsius(frame: pd.DataFrame) -> pd.DataFrame:
    """The same observations with temp and dewp converted to deg C: (x - 32) / 1.8."""
    return frame.assign(temp=(frame["temp"] - 32) / 1.8, dewp=(frame["dewp"] - 32) / 1.8)


ROW_EDITS = ("deg C", "one temp edited", "one row removed", "one flag edited")


def edit_rows(path: Path, edit: str) -> None:
    """Change the rows of a dataset file with pyarrow, keeping its schema metadata (fetch's
    source and data hash, validate's report), as anyone can: one of ROW_EDITS (every temp and
    dewp converted to deg C, the first temp 0.1 F warmer, the first row gone, the first row's
    FRSHTT thunder flag set)."""
    table = pq.read_table(path)
    metadata = table.schema.metadata
    if edit == "one row removed":
        table = table.slice(1)
    for name in {"deg C": ("temp", "dewp"), "one temp edited": ("temp",),
                 "one flag edited": ("frshtt",)}.get(edit, ()):  # fmt: skip
        values = table.column(name).to_pylist()
        if edit == "deg C":
            values = [None if v is None else (v - 32) / 1.8 for v in values]
        else:
            values[0] = values[0] + 0.1 if name == "temp" else "000010"
        index = table.schema.get_field_index(name)
        table = table.set_column(index, table.schema.field(index), pa.array(values))
    assert edit in ROW_EDITS and table.schema.metadata == metadata
    pq.write_table(table, path)


def summer(frame: pd.DataFrame) -> pd.DataFrame:
    """June to August rows."""
    months = pd.to_datetime(frame["date"]).dt.month
    return frame[months.isin([6, 7, 8])].reset_index(drop=True)


class RequestLoad:
    """Clients that POST `body` to `url` back to back in threads until stopped, half over one
    kept-alive connection each, half over a new connection per request; every answer that is not
    a 200 and every request that fails (refused, reset, timed out) is counted as failed.

    Used as a context manager around a redeploy: `failed` must stay empty (issue 10).

    With `resend_unanswered`, a request whose connection the server closed before sending any
    byte of an answer (`closed_unanswered`) is counted there and sent again, as RFC 9112 section
    9.3.1 lets a client do for a request it knows to be idempotent (`/invocations` changes
    nothing); refused connections and every other error still count as failed.
    """

    def __init__(
        self,
        url: str,
        body: dict,
        clients: int = 4,
        timeout: float = 30.0,
        *,
        resend_unanswered: bool = False,
    ) -> None:
        self.url, self.body, self.timeout = url, body, timeout
        self.resend_unanswered = resend_unanswered
        self.answered = 0
        self.closed_unanswered = 0
        self.failed: list[str] = []
        self.predictions: set[tuple[float, ...]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True)
            for i in range(clients)
        ]

    def __enter__(self) -> RequestLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, keep_alive: bool) -> None:
        client = httpx.Client(timeout=self.timeout) if keep_alive else None
        try:
            while not self._stop.is_set():
                try:
                    if client is not None:
                        response = client.post(self.url, json=self.body)
                    else:
                        response = httpx.post(self.url, json=self.body, timeout=self.timeout)
                    ok = response.status_code == 200
                    outcome = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    if self.resend_unanswered and _closed_unanswered(exc):
                        with self._lock:
                            self.closed_unanswered += 1
                        continue
                    ok, outcome = False, f"{type(exc).__name__}: {exc}"
                with self._lock:
                    if ok:
                        self.answered += 1
                        self.predictions.add(tuple(response.json()["predictions"]))
                    else:
                        self.failed.append(outcome)
        finally:
            if client is not None:
                client.close()


def _closed_unanswered(exc: httpx.HTTPError) -> bool:
    """Whether `exc` says the server closed (or reset) the connection before any byte of an
    answer: httpcore's "Server disconnected without sending a response", or a reset while the
    request was being written or its answer awaited. A refused connection (`ConnectError`) and a
    timeout are not."""
    if isinstance(exc, httpx.RemoteProtocolError):
        return "without sending a response" in str(exc)
    return isinstance(exc, httpx.ReadError | httpx.WriteError)
