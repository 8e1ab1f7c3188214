"""train: fit dew point on temperature, score a seeded holdout split, log everything to MLflow."""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steps.cli import StepError, add_outputs_dir, env_default, run, write_outputs
from steps.model import FEATURE, TARGET, LinearCoefficients, log_served_model
from steps.settings import MlflowSettings
from steps.tracking import mlflow_session

MODEL_TYPES = ("linear", "elasticnet")
MIN_ROWS_PER_SPLIT = 2  # R2 needs two holdout rows; a line needs two training rows
PLOT_MAX_POINTS = 5000  # scatter a seeded sample: a plot of a million points says no more
SOURCE_METADATA_KEY = b"dewpoint.source"  # Parquet key-value metadata written by fetch


@dataclass(frozen=True)
class TrainConfig:
    """Model choice and split; the ElasticNet defaults are the prototype's."""

    model_type: str = "linear"
    alpha: float = 0.5
    l1_ratio: float = 0.5
    test_size: float = 0.2
    seed: int = 42

    def check(self) -> None:
        """Raise StepError for a value no model or split can use."""
        if self.model_type not in MODEL_TYPES:
            raise StepError(f"unknown --model-type {self.model_type!r}; choose {MODEL_TYPES}")
        if not 0.0 < self.test_size < 1.0:
            raise StepError(
                f"--test-size must be between 0 and 1 (exclusive), got {self.test_size}"
            )
        if self.model_type == "elasticnet" and not (self.alpha >= 0 and 0 <= self.l1_ratio <= 1):
            raise StepError(
                f"elasticnet needs --alpha >= 0 and 0 <= --l1-ratio <= 1, "
                f"got alpha={self.alpha}, l1_ratio={self.l1_ratio}"
            )


@dataclass(frozen=True)
class HoldoutMetrics:
    """Errors of a model on the holdout split, deg F (r2 is unitless)."""

    rmse: float
    mae: float
    r2: float


@dataclass(frozen=True)
class TrainResult:
    """What one training run produced; `holdout` is the split promote scores on."""

    run_id: str
    model_uri: str
    metrics: HoldoutMetrics
    coefficients: LinearCoefficients
    holdout: pd.DataFrame = field(repr=False)
    train_rows: int = 0

    @property
    def rmse(self) -> float:
        """Holdout RMSE, deg F."""
        return self.metrics.rmse


def read_training_frame(path: Path, what: str = "input dataset") -> pd.DataFrame:
    """Read the `temp` and `dewp` columns of a Parquet file, keeping rows that have both.

    Only those two columns are read: the model, the holdout and the logged dataset use nothing
    else, and station/date/flags as pandas objects would take more memory than the data itself.

    Raises StepError when the file is missing or unreadable, lacks the columns, or has no rows.
    """
    import pyarrow.parquet as pq

    if not path.is_file():
        raise StepError(f"{what} {path} does not exist")
    try:
        present = set(pq.read_schema(path).names)
        frame = pd.read_parquet(path, columns=[c for c in (FEATURE, TARGET) if c in present])
    except Exception as exc:  # pyarrow raises several types for a damaged or foreign file
        raise StepError(
            f"cannot read {what} {path} as Parquet: {' '.join(str(exc).split())}"
        ) from exc
    return usable_rows(frame, f"{what} {path}")


def usable_rows(frame: pd.DataFrame, where: str = "input") -> pd.DataFrame:
    """Check the `temp`/`dewp` columns are there and numeric; drop rows missing either."""
    missing = [c for c in (FEATURE, TARGET) if c not in frame.columns]
    if missing:
        raise StepError(
            f"{where} lacks column(s) {', '.join(missing)}; "
            f"it has {', '.join(map(str, frame.columns)) or 'no columns'}"
        )
    for column in (FEATURE, TARGET):
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise StepError(f"{where}: column {column} is {frame[column].dtype}, not numeric")
    kept = frame.dropna(subset=[FEATURE, TARGET])
    kept = kept[np.isfinite(kept[FEATURE]) & np.isfinite(kept[TARGET])]
    if kept.empty:
        raise StepError(f"{where} has no rows with both {FEATURE} and {TARGET}")
    return kept.reset_index(drop=True)


def source_from_metadata(path: Path) -> str | None:
    """The `dewpoint.source` description fetch stored in the Parquet metadata, if any."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception:  # an unreadable file is reported by read_training_frame
        return None
    raw = metadata.get(SOURCE_METADATA_KEY)
    return raw.decode("utf-8") if raw else None


def split_holdout(
    frame: pd.DataFrame, test_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded shuffle split into (train, holdout); StepError if either side would be too small."""
    from sklearn.model_selection import train_test_split

    n_holdout = math.ceil(len(frame) * test_size)
    n_train = len(frame) - n_holdout
    if min(n_holdout, n_train) < MIN_ROWS_PER_SPLIT:
        raise StepError(
            f"too few rows to split: {len(frame)} usable rows with test size {test_size} gives "
            f"{n_train} training and {n_holdout} holdout rows; need {MIN_ROWS_PER_SPLIT} each"
        )
    train, holdout = train_test_split(frame, test_size=n_holdout, random_state=seed, shuffle=True)
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def fit_model(train: pd.DataFrame, config: TrainConfig) -> Any:
    """Fit LinearRegression or ElasticNet(alpha, l1_ratio) of dewp on temp."""
    from sklearn.linear_model import ElasticNet, LinearRegression

    if config.model_type == "elasticnet":
        estimator = ElasticNet(
            alpha=config.alpha, l1_ratio=config.l1_ratio, random_state=config.seed
        )
    else:
        estimator = LinearRegression()
    return estimator.fit(train[[FEATURE]], train[TARGET])


def holdout_metrics(actual: np.ndarray, predicted: np.ndarray) -> HoldoutMetrics:
    """RMSE, MAE and R2 of `predicted` against `actual`."""
    from sklearn.metrics import mean_absolute_error, r2_score

    actual = np.asarray(actual, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if actual.shape != predicted.shape or not np.all(np.isfinite(predicted)):
        raise StepError(f"model gave {predicted.shape} predictions (or non-finite ones)")
    rmse = float(np.sqrt(np.mean((actual - predicted) ** 2)))
    return HoldoutMetrics(
        rmse, float(mean_absolute_error(actual, predicted)), float(r2_score(actual, predicted))
    )


def plot_fit(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    coefficients: LinearCoefficients,
    path: Path,
    seed: int = 0,
) -> Path:
    """Write a PNG: holdout scatter with the fitted line, and residuals against temperature."""
    # A bare Figure on the Agg canvas: no pyplot, no global backend switch, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = holdout.sample(min(len(holdout), PLOT_MAX_POINTS), random_state=seed)
    residuals = shown[TARGET] - (shown[FEATURE] * coefficients.coef + coefficients.intercept)
    line_x = np.linspace(
        min(train[FEATURE].min(), holdout[FEATURE].min()),
        max(train[FEATURE].max(), holdout[FEATURE].max()),
        2,
    )
    figure = Figure(figsize=(10, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    fit_ax, resid_ax = figure.subplots(1, 2)
    fit_ax.scatter(shown[FEATURE], shown[TARGET], s=6, alpha=0.4, label="holdout")
    fit_ax.plot(
        line_x,
        line_x * coefficients.coef + coefficients.intercept,
        color="tab:red",
        label=f"dewp = {coefficients.coef:.3f} temp {coefficients.intercept:+.2f}",
    )
    fit_ax.set(xlabel="TEMP (deg F)", ylabel="DEWP (deg F)", title="Fit on holdout")
    fit_ax.legend(loc="upper left")
    resid_ax.scatter(shown[FEATURE], residuals, s=6, alpha=0.4)
    resid_ax.axhline(0.0, color="tab:red")
    resid_ax.set(xlabel="TEMP (deg F)", ylabel="residual (deg F)", title="Residuals")
    _write_atomically(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    return path


def train_and_log(
    frame: pd.DataFrame,
    settings: MlflowSettings,
    config: TrainConfig | None = None,
    *,
    data_hash: str | None = None,
    data_source: str | None = None,
    holdout_out: Path | None = None,
    plot_out: Path | None = None,
) -> TrainResult:
    """Split, fit and score `frame`, then log one MLflow run with the served model; the one-call
    helper for tests and demos that need a logged model (register it with steps.register).

    Args:
        frame: rows with float `temp` and `dewp` (other columns are kept in the holdout).
        settings: tracking URI and experiment.
        config: model type, hyperparameters, split.
        data_hash: provenance of `frame` (fetch's `data-hash`); used as the dataset digest.
        data_source: where `frame` came from (URL, path or description).
        holdout_out: write the holdout split here as Parquet (promote scores on it).
        plot_out: write the fit/residual PNG here (it is logged to the run either way).

    Returns:
        The run id, model URI, holdout metrics, coefficients and the holdout frame.
    """
    config = config or TrainConfig()
    config.check()
    frame = usable_rows(frame)
    train, holdout = split_holdout(frame, config.test_size, config.seed)
    estimator = fit_model(train, config)
    coefficients = LinearCoefficients.from_estimator(estimator)
    metrics = holdout_metrics(holdout[TARGET].to_numpy(), estimator.predict(holdout[[FEATURE]]))

    with tempfile.TemporaryDirectory(prefix="dewpoint-train-") as tmp:
        plot_path = plot_fit(train, holdout, coefficients, plot_out or Path(tmp) / "fit.png")
        with mlflow_session(settings):
            run_id, model_uri = _log_run(
                settings.experiment,
                _RunContent(frame, estimator, coefficients, metrics, len(train), len(holdout)),
                config,
                plot_path,
                data_hash=data_hash,
                data_source=data_source,
            )
    if holdout_out is not None:
        _write_atomically(holdout_out, lambda tmp: holdout.to_parquet(tmp, index=False))
    return TrainResult(run_id, model_uri, metrics, coefficients, holdout, len(train))


@dataclass(frozen=True)
class _RunContent:
    """What one training run logs besides its configuration."""

    frame: pd.DataFrame
    estimator: Any
    coefficients: LinearCoefficients
    metrics: HoldoutMetrics
    train_rows: int
    holdout_rows: int


def _log_run(
    experiment: str,
    content: _RunContent,
    config: TrainConfig,
    plot_path: Path,
    *,
    data_hash: str | None,
    data_source: str | None,
) -> tuple[str, str]:
    """Log one run (inside an mlflow_session); return its run id and model URI."""
    import mlflow

    from steps import __version__

    coefficients, metrics = content.coefficients, content.metrics
    mlflow.set_experiment(experiment)
    tags = {"model.type": config.model_type, "code.version": __version__}
    if data_hash:
        tags["data.hash"] = data_hash
    if data_source:
        tags["data.source"] = data_source
    with mlflow.start_run(run_name=f"train-{config.model_type}", tags=tags) as active:
        params: dict[str, Any] = {
            "model_type": config.model_type,
            "test_size": config.test_size,
            "seed": config.seed,
            "train_rows": content.train_rows,
            "holdout_rows": content.holdout_rows,
        }
        params.update({f"estimator.{k}": v for k, v in content.estimator.get_params().items()})
        mlflow.log_params(params)
        mlflow.log_metrics(
            {
                "rmse": metrics.rmse,
                "mae": metrics.mae,
                "r2": metrics.r2,
                "coef_temp": coefficients.coef,
                "intercept": coefficients.intercept,
            }
        )
        mlflow.log_input(_dataset(content.frame, data_hash, data_source), context="training")
        mlflow.log_artifact(str(plot_path), artifact_path="plots")
        info = log_served_model(coefficients, content.frame[[FEATURE]].head(5))
        return active.info.run_id, info.model_uri


def _dataset(frame: pd.DataFrame, data_hash: str | None, data_source: str | None) -> Any:
    """The model's columns as an MLflow dataset: digest from the data hash, source from the
    description (the digest still identifies the whole validated table)."""
    import mlflow.data
    from mlflow.exceptions import MlflowException

    # Only temp and dewp: MLflow infers the dataset schema by visiting every value in Python
    # (https://github.com/mlflow/mlflow/issues/13085); on 2M rows that took 43 s for all five
    # columns and 6.5 s for these two.
    frame = frame[[FEATURE, TARGET]]
    # MLflow stores a dataset digest in a 36-character column (VARCHAR(36) on Postgres/MySQL);
    # the full data hash is also on the run as the `data.hash` tag.
    digest = (data_hash or _frame_digest(frame))[:36]
    with warnings.catch_warnings():
        # MLflow registers its local-artifact source twice and warns that a plain path is
        # "ambiguous" between the two identical classes.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        try:
            return mlflow.data.from_pandas(
                frame, source=data_source, targets=TARGET, name="validated", digest=digest
            )
        except MlflowException:
            # A description MLflow cannot resolve to a source (e.g. `gsod:2024`): the dataset
            # falls back to a code source; the text is still the run's `data.source` tag.
            return mlflow.data.from_pandas(frame, targets=TARGET, name="validated", digest=digest)


def _frame_digest(frame: pd.DataFrame) -> str:
    """A content digest of the model's columns, for frames that come without a data hash."""
    hashed = pd.util.hash_pandas_object(frame[[FEATURE, TARGET]], index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def _write_atomically(path: Path, write: Any) -> None:
    """Call `write(tmp_path)` next to `path`, then rename over it: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(tmp)
        # mkstemp makes it private (0600); holdout and plot are artifacts the next step reads, as
        # another user when the local runner's docker backend hands them over (as in dataset.py).
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """CLI: `python -m steps train --input ... --holdout-out ... --plot-out ...`."""
    parser = argparse.ArgumentParser(prog="python -m steps train", description=__doc__)
    parser.add_argument("--input", type=Path, required=True, help="validated dataset (Parquet)")
    parser.add_argument(
        "--holdout-out", type=Path, required=True, help="write the holdout split here (Parquet)"
    )
    parser.add_argument(
        "--plot-out", type=Path, required=True, help="write the fit plot here (PNG)"
    )
    parser.add_argument(
        "--model-type",
        choices=MODEL_TYPES,
        default=env_default("MODEL_TYPE", "linear"),
        help="linear (default) or elasticnet (env MODEL_TYPE)",
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="ElasticNet alpha (default 0.5)")
    parser.add_argument(
        "--l1-ratio", type=float, default=0.5, help="ElasticNet l1_ratio (default 0.5)"
    )
    parser.add_argument(
        "--test-size", type=float, default=0.2, help="holdout fraction (default 0.2)"
    )
    parser.add_argument("--seed", type=int, default=42, help="split and model seed (default 42)")
    parser.add_argument(
        "--data-hash", default=env_default("DATA_HASH"), help="fetch's data hash (env DATA_HASH)"
    )
    parser.add_argument(
        "--data-source",
        default=env_default("DATA_SOURCE"),
        help="where the data came from (env DATA_SOURCE; default: the dataset's own metadata)",
    )
    MlflowSettings.add_arguments(parser)
    add_outputs_dir(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        settings = MlflowSettings.from_args(args)
        config = TrainConfig(args.model_type, args.alpha, args.l1_ratio, args.test_size, args.seed)
        config.check()
        frame = read_training_frame(args.input)
        result = train_and_log(
            frame,
            settings,
            config,
            data_hash=args.data_hash,
            data_source=args.data_source or source_from_metadata(args.input) or str(args.input),
            holdout_out=args.holdout_out,
            plot_out=args.plot_out,
        )
        write_outputs(
            args.outputs_dir,
            {
                "run-id": result.run_id,
                "model-uri": result.model_uri,
                "rmse": repr(result.metrics.rmse),
                "mae": repr(result.metrics.mae),
                "r2": repr(result.metrics.r2),
            },
        )

    return run(body)
