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
        self.temp_range: tuple[float, float] | None = None

    def load_context(self, context) -> None:
        """Read the coefficients once, when the model is loaded (not per request)."""
        with open(context.artifacts[COEFFICIENTS_ARTIFACT], encoding="utf-8") as handle:
            coefficients = json.load(handle)
        self.coef = float(coefficients["coef"])
        self.intercept = float(coefficients["intercept"])
        # Written by train from steps/climate.py (validate's range); absent in older models.
        if "temp_range_f" in coefficients:
            low, high = coefficients["temp_range_f"]
            self.temp_range = (float(low), float(high))
        # Everything alive now (MLflow, pandas, the app) stays alive for the server's lifetime.
        # Freezing it takes it out of the collector's view, so full collections under load stop
        # rescanning it: they cost 90-220 ms each and set the p99 (benchmarks/bench_serving.py).
        gc.freeze()

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        """Predict dew point (deg F) for the `temp` column (deg F) of a DataFrame.

        The signature types `temp` as Any, so MLflow passes the request's values as they came
        (steps/model.py, `model_signature`), and this checks them, each failure the caller's error
        (INVALID_PARAMETER_VALUE, which the scoring server answers with a 400) naming the field:
        a JSON number (not a string, boolean, list or object), finite (not null, NaN or Infinity)
        and within the physical range of surface air temperature that validate enforces. A float
        column (the usual request) is checked and predicted without a Python loop.
        """
        temp = temperatures(model_input, self.temp_range)
        return temp * self.coef + self.intercept


def temperatures(model_input: pd.DataFrame, temp_range: tuple[float, float] | None) -> np.ndarray:
    """The `temp` column as float64, or MlflowException.invalid_parameter_value naming the
    field, the first bad row and what was wrong."""
    try:
        values = np.asarray(model_input[FEATURE])
    except (KeyError, TypeError, IndexError):
        raise MlflowException.invalid_parameter_value(
            f"the input has no {FEATURE!r} column (deg F)"
        ) from None
    if values.ndim != 1:
        raise MlflowException.invalid_parameter_value(
            f"{FEATURE} must be one JSON number (deg F) per row"
        )
    if values.dtype.kind in "iuf":
        temp = values.astype(np.float64, copy=False)
    else:
        for row, value in enumerate(values):
            if value is not None and (
                isinstance(value, bool | np.bool_)
                or not isinstance(value, int | float | np.integer | np.floating)
            ):
                raise MlflowException.invalid_parameter_value(
                    f"{FEATURE} must be a JSON number (deg F); row {row} is a "
                    f"{_json_kind(value)}: {str(value)[:40]!r}"
                )
        temp = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if not np.isfinite(temp).all():
        bad = np.flatnonzero(~np.isfinite(temp))
        raise MlflowException.invalid_parameter_value(
            f"{FEATURE} must be a finite number (deg F); {bad.size} row(s) are missing, NaN or "
            f"infinite, first at row {int(bad[0])}"
        )
    if temp_range is not None:
        low, high = temp_range
        outside = (temp < low) | (temp > high)
        if outside.any():
            row = int(np.flatnonzero(outside)[0])
            raise MlflowException.invalid_parameter_value(
                f"{FEATURE} must be within [{low:g}, {high:g}] deg F, the physical range of "
                f"surface air temperature; row {row} is {temp[row]:g}"
            )
    return temp


def _json_kind(value: object) -> str:
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, str | bytes):
        return "string"
    if isinstance(value, list | tuple | np.ndarray):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# Imported as `steps.served_model` (tests, type checks) this only defines the class; executed by
# MLflow as a models-from-code file (under a generated module name) it registers the instance.
if __name__ != "steps.served_model":
    mlflow.models.set_model(LinearDewpointModel())
