"""Log a fitted linear dew point model as the lean pyfunc in `steps/served_model.py`.

The logged model needs only mlflow, numpy and pandas at serving time: no scikit-learn, no pickles.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd

FEATURE = "temp"
TARGET = "dewp"
MODEL_ARTIFACT_NAME = "model"
# Same name as in served_model.py (not imported from there: that would import mlflow here).
COEFFICIENTS_ARTIFACT = "coefficients"
# The models-from-code file MLflow copies into every logged model.
SERVED_MODEL_CODE = Path(__file__).with_name("served_model.py")
# Packages the served model imports, pinned to the versions this process runs with. mlflow-skinny
# (not mlflow): the serving image installs only it, and the full mlflow depends on it, so the
# requirement is satisfied in both places and MLflow's load-time dependency check stays quiet.
SERVING_PACKAGES = ("mlflow-skinny", "numpy", "pandas")


@dataclass(frozen=True)
class LinearCoefficients:
    """dewp = temp * coef + intercept."""

    coef: float
    intercept: float

    @classmethod
    def from_estimator(cls, estimator: Any) -> LinearCoefficients:
        """Read the single slope and the intercept of a fitted scikit-learn linear model."""
        coef = [float(c) for c in getattr(estimator, "coef_", [])]
        if len(coef) != 1:
            raise ValueError(f"expected a linear model fitted on one feature, got coef_={coef}")
        coefficients = cls(coef[0], float(estimator.intercept_))
        if not (math.isfinite(coefficients.coef) and math.isfinite(coefficients.intercept)):
            raise ValueError(f"fitted coefficients are not finite: {coefficients}")
        return coefficients

    def to_json(self) -> str:
        """JSON that round-trips the floats exactly (Python writes the shortest exact repr)."""
        return json.dumps({"feature": FEATURE, "coef": self.coef, "intercept": self.intercept})


def serving_pip_requirements() -> list[str]:
    """Exact pins of the only packages the served model needs, as installed here."""
    return [f"{name}=={version(name)}" for name in SERVING_PACKAGES]


def model_signature() -> Any:
    """Signature: one float64 input column `temp`, one float64 output (dew point, deg F)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(DataType.double, FEATURE)]),
        outputs=Schema([ColSpec(DataType.double, TARGET)]),
    )


def log_served_model(coefficients: LinearCoefficients, input_example: pd.DataFrame) -> Any:
    """Log `coefficients` as the served pyfunc in the active MLflow run; return its ModelInfo.

    Args:
        coefficients: slope and intercept of the fitted model.
        input_example: a few rows with a float64 `temp` column, stored next to the model.
    """
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix="dewpoint-model-") as tmp:
        path = Path(tmp) / "coefficients.json"
        path.write_text(coefficients.to_json(), encoding="utf-8")
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT_NAME,
            python_model=str(SERVED_MODEL_CODE),
            artifacts={COEFFICIENTS_ARTIFACT: str(path)},
            signature=model_signature(),
            input_example=input_example[[FEATURE]].astype("float64"),
            pip_requirements=serving_pip_requirements(),
        )
