"""The model history picture promote logs after each gate: the holdout RMSE of every version of the
registered model by registration date, each gate decision, the champion marked.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.promote import TAG_DECISION, TAG_NEW_RMSE

HISTORY_ARTIFACT_DIR = "history"
HISTORY_FILE = "model-history.png"


@dataclass(frozen=True)
class VersionPoint:
    """One model version on the history plot.

    `rmse` is the version's holdout RMSE in deg F, on the holdout of its own training run (promote's
    `gate.new_rmse`, else the run's `rmse` metric; None if neither exists). `decision` is
    `promoted`, `rejected` or None (never gated).
    """

    version: int
    registered: dt.datetime
    rmse: float | None
    decision: str | None
    champion: bool


def model_history(client: Any, model_name: str, champion: str | None) -> list[VersionPoint]:
    """Every version of `model_name`, oldest first, read through an `MlflowClient`.

    Args:
        client: an `mlflow.MlflowClient` for the tracking server.
        model_name: the registered model.
        champion: the version the `champion` alias names now, if any.
    """
    quoted = model_name.replace("\\", "\\\\").replace("'", "\\'")
    points = []
    for mv in client.search_model_versions(f"name = '{quoted}'"):
        rmse = _float(mv.tags.get(TAG_NEW_RMSE))
        if rmse is None and mv.run_id:
            rmse = _float(client.get_run(mv.run_id).data.metrics.get("rmse"))
        points.append(
            VersionPoint(
                version=int(mv.version),
                registered=dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC),
                rmse=rmse,
                decision=mv.tags.get(TAG_DECISION),
                champion=str(mv.version) == str(champion),
            )
        )
    return sorted(points, key=lambda p: p.version)


def plot_model_history(points: list[VersionPoint], model_name: str, path: Path) -> Path:
    """Write the history PNG: RMSE by registration date, marker by gate decision, champion starred.

    Raises:
        ValueError: no version has an RMSE to plot.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scored = [p for p in points if p.rmse is not None]
    if not scored:
        raise ValueError(f"no version of {model_name} has a holdout RMSE to plot")
    figure = Figure(figsize=(9, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.plot([p.registered for p in scored], [p.rmse for p in scored], color="0.8", zorder=1)
    styles = {
        "promoted": {"marker": "o", "color": "tab:green", "label": "promoted"},
        "rejected": {"marker": "x", "color": "tab:red", "label": "rejected"},
        None: {"marker": "o", "color": "0.5", "label": "not gated", "facecolors": "none"},
    }
    for decision, style in styles.items():
        group = [p for p in scored if p.decision == decision]
        if group:
            ax.scatter([p.registered for p in group], [p.rmse for p in group], zorder=2, **style)
    for champion in (p for p in scored if p.champion):
        ax.scatter(
            [champion.registered], [champion.rmse], marker="*", s=320, color="gold",
            edgecolors="black", zorder=3, label=f"champion (version {champion.version})",
        )  # fmt: skip
    for p in scored:
        ax.annotate(f"v{p.version}", (p.registered, p.rmse), textcoords="offset points",
                    xytext=(0, 8), ha="center", fontsize=8)  # fmt: skip
    ax.set(
        title=f"{model_name}: holdout RMSE of every version",
        xlabel="registered (UTC)",
        ylabel="holdout RMSE (deg F, each on its own holdout)",
    )
    ax.margins(x=0.05, y=0.15)  # room for the version labels above the highest point
    ax.legend(loc="best", fontsize=8)
    figure.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def log_model_history(client: Any, model_name: str, champion: str | None, run_id: str) -> str:
    """Plot the history and log it to training run `run_id` as `history/model-history.png`.

    Returns:
        The artifact path within the run.
    """
    points = model_history(client, model_name, champion)
    with tempfile.TemporaryDirectory(prefix="dewpoint-history-") as tmp:
        path = plot_model_history(points, model_name, Path(tmp) / HISTORY_FILE)
        client.log_artifact(run_id, str(path), artifact_path=HISTORY_ARTIFACT_DIR)
    return f"{HISTORY_ARTIFACT_DIR}/{HISTORY_FILE}"


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
