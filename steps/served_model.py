"""The served dew point model as an MLflow "models from code" file: plain numpy, no scikit-learn.

MLflow copies this file into the logged model and executes it when the model is loaded, so it must
import nothing from `steps` and nothing the serving image lacks (only mlflow, numpy, pandas).
"""

from __future__ import annotations

import gc
import json

import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

FEATURE = "temp"
COEFFICIENTS_ARTIFACT = "coefficients"


class LinearDewpointModel(mlflow.pyfunc.PythonModel):
    """Dew point = temp * coef + intercept, with both numbers read from a small JSON artifact."""

    def __init__(self) -> None:
        self.coef = float("nan")
        self.intercept = float("nan")

    def load_context(self, context) -> None:
        """Read the coefficients once, when the model is loaded (not per request)."""
        with open(context.artifacts[COEFFICIENTS_ARTIFACT], encoding="utf-8") as handle:
            coefficients = json.load(handle)
        self.coef = float(coefficients["coef"])
        self.intercept = float(coefficients["intercept"])
        # Everything alive now (MLflow, pandas, the app) stays alive for the server's lifetime.
        # Freezing it takes it out of the collector's view, so full collections under load stop
        # rescanning it: they cost 90-220 ms each and set the p99 (benchmarks/bench_serving.py).
        gc.freeze()

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        """Predict dew point (deg F) for the `temp` column (deg F) of a DataFrame.

        MLflow has already enforced the signature (a float64 `temp` column), so this reads the
        column as a numpy view and does one multiply-add; the 1-D array becomes `predictions`.
        A missing, NaN or infinite temperature (JSON null, NaN, Infinity pass the signature) is
        the caller's error: INVALID_PARAMETER_VALUE, which the scoring server answers with a 400,
        rather than a 200 with NaN predictions.
        """
        temp = np.asarray(model_input[FEATURE], dtype=np.float64)
        if not np.isfinite(temp).all():
            bad = np.flatnonzero(~np.isfinite(temp))
            raise MlflowException.invalid_parameter_value(
                f"{FEATURE} must be a finite number (deg F); {bad.size} row(s) are missing, NaN or "
                f"infinite, first at row {int(bad[0])}"
            )
        return temp * self.coef + self.intercept


# Imported as `steps.served_model` (tests, type checks) this only defines the class; executed by
# MLflow as a models-from-code file (under a generated module name) it registers the instance.
if __name__ != "steps.served_model":
    mlflow.models.set_model(LinearDewpointModel())
