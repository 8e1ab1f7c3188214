"""Test helpers for the model stages: datasets with a known dew point relation, CLI runs, stores."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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


def make_experiment(tracking_uri: str, name: str, artifact_dir: Path) -> str:
    """Create experiment `name` with artifacts under `artifact_dir` (not ./mlruns in the cwd)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    return client.create_experiment(name, artifact_location=artifact_dir.as_uri())


def step_env(**extra: str) -> dict[str, str]:
    """The test process's environment without MLflow settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(extra)
    return env


def run_step(
    stage: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `python -m steps <stage> args...` in a subprocess from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "steps", stage, *args],
        cwd=REPO,
        env=env if env is not None else step_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The `error: ...` line a failed step printed; asserts there is exactly one."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]
