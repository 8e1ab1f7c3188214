"""train: fit dew point on temperature over every validated year, streamed in bounded memory;
score a holdout split decided row by row; log everything to MLflow."""

from __future__ import annotations

import contextlib
import hashlib
import math
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from steps.cli import BadInput, StepError, one_line, run
from steps.dataset import data_hash as hash_of_rows
from steps.files import path_problem, write_atomically
from steps.holdout_split import KEY_VERSION
from steps.least_squares import elasticnet_fit, line_errors, linear_fit
from steps.model import (
    FEATURE,
    REFERENCE_HOLDOUT_ARTIFACT,
    REFERENCE_MAX_ROWS,
    TARGET,
    LinearCoefficients,
    log_served_model,
)
from steps.redaction import redact, redact_values
from steps.register import (
    TAG_DATA_PART_PREFIX,
    TAG_DATA_PARTS,
    TAG_DATA_SOURCE,
    TAG_DATA_UNITS,
    TAG_DATA_UNITS_BASIS,
    TAG_FETCHED_HASH,
    TAG_VALIDATED_HASH,
)
from steps.revision import MLFLOW_GIT_COMMIT_TAG, UNKNOWN, source_revision
from steps.settings import MlflowSettings
from steps.stages import TRAIN
from steps.tracking import mlflow_session, tag_value
from steps.training_data import (
    DatasetPart,
    TrainingSummary,
    check_split,
    check_validated_rows,
    combined_hash,
    find_parts,
    frame_batches,
    read_batches,
    select_parts,
    summarize,
)
from steps.validate import units_of

PLOT_MAX_POINTS = 5000  # scatter a uniform sample: a plot of a million points says no more
VALIDATION_ARTIFACT = "validation/validation.json"  # validate's report, on the training run
# In the pipeline a year validate succeeded for is stored unless it was deleted after it was
# cached: Argo takes a memoized node's outputs without checking that their objects still exist.
MISSING_PART_HINT = (
    "in the pipeline, a year whose validate came from the memoization cache after its stored "
    'dataset was deleted: delete that year\'s cache entries (docs/cluster.md, "Many years")'
)


@dataclass(frozen=True)
class TrainConfig:
    """Model choice and split; the ElasticNet defaults are the prototype's."""

    model_type: str = TRAIN.flag("model-type").default
    alpha: float = TRAIN.flag("alpha").default
    l1_ratio: float = TRAIN.flag("l1-ratio").default
    test_size: float = TRAIN.flag("test-size").default
    seed: int = TRAIN.flag("seed").default

    def check(self) -> None:
        """Raise BadInput for a value the declared flags refuse (NaN, infinities, out of range).

        The CLI has checked its flags already; this covers callers in Python with the same rules.
        """
        values = {"model-type": self.model_type, "alpha": self.alpha, "l1-ratio": self.l1_ratio,
                  "test-size": self.test_size, "seed": self.seed}  # fmt: skip
        for name, value in values.items():
            TRAIN.flag(name).convert(repr(value) if isinstance(value, float) else str(value))


@dataclass(frozen=True)
class HoldoutMetrics:
    """Errors of a model on the holdout split, deg F (r2 is unitless).

    `rmse` and `r2` cover every holdout row (from its co-moments, exactly); `mae` covers the
    holdout sample, which is every holdout row up to HOLDOUT_MAX_ROWS.
    """

    rmse: float
    mae: float
    r2: float


@dataclass(frozen=True)
class TrainResult:
    """What one training run produced; `holdout` is the holdout sample promote scores on."""

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
    """Read the `temp` and `dewp` columns of a Parquet file, keeping rows that have both: the
    holdout files promote scores on (train's holdout sample, a champion's reference holdout).

    Raises StepError when the file is missing or unreadable, lacks the columns, or has no rows.
    """
    import pyarrow.parquet as pq

    problem = path_problem(path)
    if problem:
        raise StepError(f"{what} {path} {problem}")
    try:
        present = set(pq.read_schema(path).names)
        frame = pd.read_parquet(path, columns=[c for c in (FEATURE, TARGET) if c in present])
    except Exception as exc:  # pyarrow raises several types for a damaged or foreign file
        raise StepError(f"cannot read {what} {path} as Parquet: {one_line(exc)}") from exc
    return usable_rows(frame, f"{what} {path}")


def usable_rows(frame: pd.DataFrame, where: str = "input") -> pd.DataFrame:
    """Check the `temp`/`dewp` columns are there and numeric; drop rows missing either.

    Raises:
        StepError: a column is missing or not numeric, or no row has both values (`where` names
            the input).
    """
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


def fit_line(summary: TrainingSummary, config: TrainConfig) -> LinearCoefficients:
    """The model on the training rows' co-moments: least squares, or ElasticNet(alpha, l1_ratio)
    in its closed form for one feature (steps.least_squares); both exact, over every row.

    Raises StepError when the fitted coefficients are not finite.
    """
    if config.model_type == "elasticnet":
        line = elasticnet_fit(summary.train, config.alpha, config.l1_ratio)
    else:
        line = linear_fit(summary.train)
    if not (math.isfinite(line.coef) and math.isfinite(line.intercept)):
        raise StepError(f"fitted coefficients are not finite: {line}")
    return line


def holdout_metrics(summary: TrainingSummary, line: LinearCoefficients) -> HoldoutMetrics:
    """RMSE and R2 of `line` over every holdout row; MAE over the holdout sample."""
    errors = line_errors(summary.holdout, line)
    sample = summary.sample
    residual = sample[TARGET].to_numpy() - (sample[FEATURE].to_numpy() * line.coef + line.intercept)
    return HoldoutMetrics(errors.rmse, float(np.mean(np.abs(residual))), errors.r2)


def plot_fit(
    holdout: pd.DataFrame,
    coefficients: LinearCoefficients,
    path: Path,
    temp_span: tuple[float, float] | None = None,
) -> Path:
    """Write a PNG: holdout scatter with the fitted line, and residuals against temperature.

    Args:
        holdout: temp/dewp rows in split-key order (a uniform sample: the first
            PLOT_MAX_POINTS are drawn).
        coefficients: the fitted line.
        path: where the PNG goes (written atomically).
        temp_span: (lowest, highest) temperature of the training rows, deg F: the line's extent
            (default: the holdout's).
    """
    # A bare Figure on the Agg canvas: no pyplot, no global backend switch, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = holdout.head(PLOT_MAX_POINTS)
    residuals = shown[TARGET] - (shown[FEATURE] * coefficients.coef + coefficients.intercept)
    low, high = temp_span or (holdout[FEATURE].min(), holdout[FEATURE].max())
    line_x = np.linspace(min(low, holdout[FEATURE].min()), max(high, holdout[FEATURE].max()), 2)
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
    write_atomically(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    return path


def train_and_log(
    frame: pd.DataFrame,
    settings: MlflowSettings,
    config: TrainConfig | None = None,
    *,
    data_source: str | None = None,
    validation_report: dict[str, Any] | None = None,
    holdout_out: Path | None = None,
    plot_out: Path | None = None,
) -> TrainResult:
    """Split, fit and score `frame`, then log one MLflow run with the served model; the one-call
    helper for tests and demos that need a logged model (register it with steps.register).

    Args:
        frame: rows with `station`, `date` (they decide the split) and float `temp` and `dewp`.
        settings: tracking URI and experiment.
        config: model type, hyperparameters, split.
        data_source: where `frame` came from (URL, path or description): a frame carries no
            metadata to take it from, so the caller's word is the `data.source` tag.
        validation_report: validate's report on these rows (refused unless the frame's rows hash
            to its `validated_data_hash`): logged as `validation/validation.json`; that hash
            becomes the tag `data.validated_hash` and the MLflow dataset's digest, its
            `fetched_data_hash` the tag `data.fetched_hash`. Without a report neither is tagged:
            nothing ties a hash to these rows.
        holdout_out: write the holdout sample here as Parquet (promote scores on it).
        plot_out: write the fit/residual PNG here (it is logged to the run either way).

    Returns:
        The run id, model URI, holdout metrics, coefficients and the holdout sample.
    """
    config = config or TrainConfig()
    config.check()
    report = validation_report or {}
    if report.get("validated_data_hash"):  # the report describes these rows, or is refused
        check_validated_rows("input frame", _frame_data_hash(frame), report["validated_data_hash"])
    summary = summarize(frame_batches(frame), config.test_size, config.seed)
    provenance = _Provenance(
        fetched_hash=report.get("fetched_data_hash"),
        validated_hash=report.get("validated_data_hash"),
        source=data_source,
        reports={VALIDATION_ARTIFACT: validation_report} if validation_report else {},
        parts=(),
        units=units_of([(validation_report, None)]),
    )
    return _fit_and_log(
        summary, settings, config, provenance, lambda: _frame_digest(frame), holdout_out, plot_out
    )


def train_on_parts(
    parts: Sequence[DatasetPart],
    settings: MlflowSettings,
    config: TrainConfig | None = None,
    *,
    holdout_out: Path | None = None,
    plot_out: Path | None = None,
) -> TrainResult:
    """Train on validated dataset files, read a batch at a time (steps.training_data): peak
    memory is one batch plus the holdout sample, however many parts (years) there are.

    Provenance: with one part, its hashes and validation report as for a single dataset; with
    several, `data.validated_hash` and `data.fetched_hash` combine the parts' hashes
    (steps.training_data.combined_hash), each part's report is logged as
    `validation/<part>.json`, and the run is tagged `data.parts` (the part names, in the pipeline
    the years) and `data.part.<name>.validated_hash` / `.fetched_hash` / `.rows`. Every tag about
    the data comes from the parts themselves (their rows, checked against their reports, and the
    metadata validate wrote with them, steps.training_data.read_part): no caller's value can
    tag a run with a hash or source other than those of the rows it fit.

    Raises StepError for unreadable parts, missing or non-numeric columns, too few rows.
    """
    config = config or TrainConfig()
    config.check()
    if not parts:
        raise StepError("no dataset to train on")
    where = f"input dataset {parts[0].path}" if len(parts) == 1 else "input datasets"
    summary = summarize(read_batches(parts), config.test_size, config.seed)
    check_split(summary, config.test_size, where)
    if len(parts) == 1:
        reports = {VALIDATION_ARTIFACT: parts[0].report} if parts[0].report else {}
    else:
        reports = {f"validation/{p.name}.json": p.report for p in parts if p.report}
    provenance = _Provenance(
        fetched_hash=fetched_hash_of(parts),
        validated_hash=combined_hash([(p.name, p.validated_hash) for p in parts]),
        source=_parts_source(parts),
        reports=reports,
        parts=tuple(parts) if len(parts) > 1 else (),
        units=units_of([(p.report, p.source_metadata) for p in parts]),
    )
    return _fit_and_log(
        summary, settings, config, provenance, lambda: _files_digest(parts), holdout_out, plot_out
    )


def fetched_hash_of(parts: Sequence[DatasetPart]) -> str | None:
    """The run's fetched data hash (tag `data.fetched_hash`, output `data-hash`): the parts'
    `fetched_data_hash` from their validation reports, combined; None when a part has none."""
    return combined_hash([(p.name, p.fetched_hash) for p in parts])


def _parts_source(parts: Sequence[DatasetPart]) -> str:
    """The parts' source description: the first part's, naming how many more there are."""
    first = parts[0].source or str(parts[0].path)
    return first if len(parts) == 1 else f"{first} and {len(parts) - 1} more part(s)"


def _fit_and_log(
    summary: TrainingSummary,
    settings: MlflowSettings,
    config: TrainConfig,
    provenance: _Provenance,
    fallback_digest: Callable[[], str],
    holdout_out: Path | None,
    plot_out: Path | None,
) -> TrainResult:
    """Fit, score, plot and log one run (the common end of train_and_log and train_on_parts)."""
    check_split(summary, config.test_size)
    line = fit_line(summary, config)
    metrics = holdout_metrics(summary, line)
    holdout = summary.sample
    with tempfile.TemporaryDirectory(prefix="dewpoint-train-") as tmp:
        span = (summary.train.min_x, summary.train.max_x)
        plot_path = plot_fit(holdout, line, plot_out or Path(tmp) / "fit.png", span)
        # Written as tags, dataset input and artifact: no credential in clear.
        provenance = provenance.redacted()
        digest = (provenance.validated_hash or fallback_digest())[:36]
        with mlflow_session(settings):
            run_id, model_uri = _log_run(
                settings.experiment,
                _RunContent(summary, line, metrics, digest),
                config,
                plot_path,
                provenance,
            )
    if holdout_out is not None:
        write_atomically(holdout_out, lambda tmp: holdout.to_parquet(tmp, index=False))
    return TrainResult(run_id, model_uri, metrics, line, holdout, summary.train.count)


@dataclass(frozen=True)
class _Provenance:
    """Where the rows came from: the hashes, the source, validate's report(s) and the parts."""

    fetched_hash: str | None
    validated_hash: str | None
    source: str | None
    reports: dict[str, dict[str, Any] | None]  # artifact path -> validate's report
    parts: tuple[DatasetPart, ...]  # the parts, when there are several
    units: tuple[str, str]  # how the units are known and on what (steps.validate.units_of)

    def redacted(self) -> _Provenance:
        """The same with every credential in URLs masked (steps.redaction)."""
        return _Provenance(
            self.fetched_hash,
            self.validated_hash,
            redact(self.source) if self.source else None,
            {path: redact_values(report) for path, report in self.reports.items()},
            self.parts,
            self.units,
        )

    def tags(self) -> dict[str, str]:
        """`data.fetched_hash`, `data.validated_hash`, `data.source` (those known), `data.units`
        and `data.units_basis`; with several parts `data.parts` and
        `data.part.<name>.{validated_hash,fetched_hash,rows}`."""
        tags = {
            TAG_FETCHED_HASH: self.fetched_hash,
            TAG_VALIDATED_HASH: self.validated_hash,
            TAG_DATA_SOURCE: tag_value(self.source) if self.source else None,
            TAG_DATA_UNITS: self.units[0],
            TAG_DATA_UNITS_BASIS: self.units[1],
        }
        if self.parts:
            tags[TAG_DATA_PARTS] = ",".join(part.name for part in self.parts)
            for part in self.parts:
                prefix = f"{TAG_DATA_PART_PREFIX}{part.name}."
                tags[prefix + "validated_hash"] = part.validated_hash
                tags[prefix + "fetched_hash"] = part.fetched_hash
                tags[prefix + "rows"] = str(part.rows)
        return {k: str(v) for k, v in tags.items() if v}


@dataclass(frozen=True)
class _RunContent:
    """What one training run logs besides its configuration and provenance."""

    summary: TrainingSummary
    coefficients: LinearCoefficients
    metrics: HoldoutMetrics
    digest: str  # the MLflow dataset's digest: the validated hash (36 characters at most)


def _log_run(
    experiment: str,
    content: _RunContent,
    config: TrainConfig,
    plot_path: Path,
    provenance: _Provenance,
) -> tuple[str, str]:
    """Log one run (inside an mlflow_session); return its run id and model URI."""
    import mlflow

    from steps import __version__

    coefficients, metrics, summary = content.coefficients, content.metrics, content.summary
    mlflow.set_experiment(experiment)
    revision = source_revision()
    tags = {"model.type": config.model_type, "code.version": __version__, **revision.tags()}
    if revision.commit != UNKNOWN:
        tags[MLFLOW_GIT_COMMIT_TAG] = revision.commit  # shown on MLflow's run page
    tags |= provenance.tags()
    with mlflow.start_run(run_name=f"train-{config.model_type}", tags=tags) as active:
        params: dict[str, Any] = {
            "model_type": config.model_type,
            "test_size": config.test_size,
            "seed": config.seed,
            "split": f"hash(station, date, seed) v{KEY_VERSION}",
            "train_rows": summary.train.count,
            "holdout_rows": summary.holdout.count,
            "holdout_sample_rows": len(summary.sample),
            "dropped_rows": summary.rows_dropped,
        }
        if config.model_type == "elasticnet":
            params |= {"alpha": config.alpha, "l1_ratio": config.l1_ratio}
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
        mlflow.log_input(_dataset(content.digest, provenance.source), context="training")
        mlflow.log_artifact(str(plot_path), artifact_path="plots")
        for artifact, report in provenance.reports.items():
            if report is not None:
                mlflow.log_dict(report, artifact)
        _log_reference_holdout(summary.sample)
        info = log_served_model(coefficients, summary.sample.head(5))
        return active.info.run_id, info.model_uri


def _log_reference_holdout(holdout: pd.DataFrame) -> None:
    """Log the holdout sample's first REFERENCE_MAX_ROWS rows (in split-key order: a uniform
    sample) as REFERENCE_HOLDOUT_ARTIFACT: the reference promote scores candidates on once this
    run's model is champion."""
    import mlflow

    reference = holdout[[FEATURE, TARGET]].head(REFERENCE_MAX_ROWS)
    folder, name = REFERENCE_HOLDOUT_ARTIFACT.rsplit("/", 1)
    with tempfile.TemporaryDirectory(prefix="dewpoint-reference-") as tmp:
        path = Path(tmp) / name
        reference.reset_index(drop=True).to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=folder)


def _dataset(digest: str, data_source: str | None) -> Any:
    """The training data as an MLflow dataset: its digest (the validated hash), its source and
    the model's two columns, without the rows (a MetaDataset: logging rows would load them all)."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.exceptions import MlflowException
    from mlflow.types import ColSpec, DataType, Schema

    source: Any = CodeDatasetSource(tags={})
    if data_source:
        with warnings.catch_warnings():
            # MLflow registers its local-artifact source twice and warns that a plain path is
            # "ambiguous" between the two identical classes: one class per artifact-repository
            # scheme, and both "" and "file" are LocalArtifactRepository (mlflow 3.17.2
            # mlflow/data/artifact_dataset_sources.py `register_artifact_dataset_sources`; the
            # warning: mlflow/data/dataset_source_registry.py `resolve`).
            warnings.filterwarnings(
                "ignore", message="The specified dataset source can be interpreted"
            )
            # A description MLflow cannot resolve to a source (e.g. `gsod:2024`): the dataset
            # keeps a code source; the text is still the run's `data.source` tag.
            with contextlib.suppress(MlflowException):
                source = resolve_dataset_source(data_source)
    schema = Schema([ColSpec(DataType.double, FEATURE), ColSpec(DataType.double, TARGET)])
    return MetaDataset(source, name="validated", digest=digest, schema=schema)


def _frame_digest(frame: pd.DataFrame) -> str:
    """A content digest of the model's columns, for frames that come without a data hash."""
    usable = frame[[FEATURE, TARGET]].dropna()
    hashed = pd.util.hash_pandas_object(usable, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def _frame_data_hash(frame: pd.DataFrame) -> str:
    """The data hash (steps/dataset.py) of a frame's dataset columns; BadInput when it lacks one
    (it cannot then be the rows validate kept)."""
    try:
        return hash_of_rows(pa.Table.from_pandas(frame, preserve_index=False))
    except StepError as exc:
        raise BadInput(f"input frame: {exc}") from None


def _files_digest(parts: Sequence[DatasetPart]) -> str:
    """A content digest of files that come without validate's hash: SHA-256 of their bytes."""
    digest = hashlib.sha256()
    for part in parts:
        with part.path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """CLI: `python -m steps train --input ... --holdout-out ... --plot-out ...`."""

    def body() -> None:
        args = TRAIN.parse(argv)
        settings = MlflowSettings.from_args(args)
        config = TrainConfig(args.model_type, args.alpha, args.l1_ratio, args.test_size, args.seed)
        config.check()
        found = find_parts(args.input)
        try:
            parts = select_parts(found, args.parts)
        except StepError as exc:
            raise StepError(f"{exc}; {MISSING_PART_HINT}") from None
        # The outputs' room first: a full disk fails before a run is logged to MLflow.
        with TRAIN.reserve_outputs(args.outputs_dir) as outputs:
            result = train_on_parts(
                parts,
                settings,
                config,
                holdout_out=args.holdout_out,
                plot_out=args.plot_out,
            )
            written = {
                "run-id": result.run_id,
                "model-uri": result.model_uri,
                "rmse": repr(result.metrics.rmse),
                "mae": repr(result.metrics.mae),
                "r2": repr(result.metrics.r2),
                "data-hash": fetched_hash_of(parts) or "",
            }
            outputs.write(written)

    return run(body)
