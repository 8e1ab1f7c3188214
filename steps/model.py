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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is only needed to call log_served_model; keep this module light
    import pandas as pd

from steps.climate import TEMP_RANGE_F

# The regression models train can fit (steps/train.py `fit_model`); the stage declaration and the
# workflow parameter's enum are made from this tuple.
MODEL_TYPES = ("linear", "elasticnet")
FEATURE = "temp"
TARGET = "dewp"
MODEL_ARTIFACT_NAME = "model"
# Every training run logs (a seeded sample of) its holdout split here; once its model is champion,
# promote scores every candidate and the champion on it, so the gate is never decided by the
# candidate's own data alone (steps/promote.py).
REFERENCE_HOLDOUT_ARTIFACT = "reference/holdout.parquet"
REFERENCE_MAX_ROWS = 100_000  # an RMSE from 100,000 rows is exact to well under 0.01 deg F
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
        """Read the single slope and the intercept of a fitted scikit-learn linear model.

        Raises:
            ValueError: the model was fitted on more than one feature, or a coefficient is not
                finite.
        """
        coef = [float(c) for c in getattr(estimator, "coef_", [])]
        if len(coef) != 1:
            raise ValueError(f"expected a linear model fitted on one feature, got coef_={coef}")
        coefficients = cls(coef[0], float(estimator.intercept_))
        if not (math.isfinite(coefficients.coef) and math.isfinite(coefficients.intercept)):
            raise ValueError(f"fitted coefficients are not finite: {coefficients}")
        return coefficients

    def to_json(self) -> str:
        """JSON that round-trips the floats exactly (Python writes the shortest exact repr).

        `temp_range_f` carries validate's physical range of temperatures (steps.climate) to the
        served model, which refuses inputs outside it: one definition, read where it is served.
        """
        return json.dumps(
            {"feature": FEATURE, "coef": self.coef, "intercept": self.intercept,
             "temp_range_f": list(TEMP_RANGE_F)}
        )  # fmt: skip


def serving_pip_requirements() -> list[str]:
    """Exact pins of the only packages the served model needs, as installed here."""
    return [f"{name}=={version(name)}" for name in SERVING_PACKAGES]


def model_signature() -> Any:
    """Signature: one required input column `temp`, one float64 output (dew point, deg F).

    The input's type is `Any`, not `double`, on purpose: with a typed column MLflow's scoring
    server casts the request's values to the type before the model sees them
    (mlflow/utils/proto_json_utils.py `cast_df_types_according_to_schema`), so `"12.8"` (a JSON
    string) was silently predicted. The served model checks the JSON types itself: `temp` must be
    a number within the physical range (steps/served_model.py); MLflow still enforces the column.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import AnyType

    return ModelSignature(
        inputs=Schema([ColSpec(AnyType(), FEATURE)]),
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
