"""The served dew point model as an MLflow "models from code" file: plain numpy, no scikit-learn.

MLflow copies this file into the logged model and executes it when the model is loaded, so it must
import nothing from `steps` and nothing the serving image lacks (only mlflow, numpy, pandas and
what mlflow-skinny's scoring server brings: fastapi, starlette, uvicorn).
"""

from __future__ import annotations

import gc
import json
import sys

import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

FEATURE = "temp"
COEFFICIENTS_ARTIFACT = "coefficients"
# The largest request body the model server reads, in bytes. MLflow's scoring server reads the
# whole body into memory and parses it into a DataFrame (mlflow 3.17.2
# mlflow/pyfunc/scoring_server/__init__.py, `await request.body()`): one 24 MB request took a
# worker to 1.16 GB (issue 10), about 48 bytes of memory per byte sent, above the model-server
# pod's 1 GiB limit. A row is about 20 bytes of JSON (`[12.8],` in `dataframe_split`,
# `{"temp": 12.8},` in `dataframe_records`), so 1 MiB still takes ~50,000 rows per request, while
# its parse costs tens of MB. Larger batches: split them. kind/base/model-server/ingress.yaml
# refuses the same size in front of the server (tests/test_kind_manifests.py keeps them equal).
MAX_REQUEST_BODY_BYTES = 1024 * 1024
# The module MLflow's scoring server runs under uvicorn (`mlflow.pyfunc.scoring_server.app:app`,
# mlflow 3.17.2 mlflow/pyfunc/scoring_server/__init__.py get_cmd); it loads this model while its
# own body runs, then builds the app.
_SCORING_APP_MODULE = "mlflow.pyfunc.scoring_server.app"


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
        limit_request_bodies()
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


def limit_request_bodies(max_bytes: int = MAX_REQUEST_BODY_BYTES) -> bool:
    """Make the scoring server about to be built refuse request bodies over `max_bytes` (413).

    Only while MLflow's scoring server module is loading this model (its `app` not built yet);
    anywhere else (promote, tests, `mlflow.pyfunc.load_model`) nothing changes and this returns
    False. MLflow has no setting for this and uvicorn 0.54.0 has no body limit among its options
    (https://github.com/Kludex/uvicorn/pull/2019, closed unmerged), so the hook is the app's class:
    `scoring_server.init` imports `fastapi.FastAPI` when it runs, after the model is loaded
    (mlflow 3.17.2 mlflow/pyfunc/scoring_server/__init__.py, `init`); the original class is put
    back as that one app is built. A declared Content-Length over the limit is answered before
    any of the body is read; a chunked body is counted as it arrives by FastAPI's own
    `max_body_size` (fastapi 0.165.0 fastapi/_body_limit.py: Starlette's
    RequestBodyLimitMiddleware) and refused once it passes the limit. Both 413s carry MLflow's
    JSON error shape.

    Returns:
        True if the next FastAPI app built in this process refuses larger bodies.
    """
    loading = sys.modules.get(_SCORING_APP_MODULE)
    if loading is None or hasattr(loading, "app"):
        return False
    import fastapi
    from starlette.datastructures import Headers

    original = fastapi.FastAPI
    if getattr(original, "max_request_body_bytes", None) is not None:
        return True  # already armed (the model loaded twice in one import)

    class BodyLimitedFastAPI(original):  # type: ignore[misc, valid-type]
        max_request_body_bytes = max_bytes

        def __init__(self, *args, **kwargs) -> None:
            fastapi.FastAPI = original  # one app: the scoring server's
            kwargs.setdefault("max_body_size", max_bytes)
            super().__init__(*args, **kwargs)
            # Starlette raises a 413 HTTPException when the streamed bytes pass the limit.
            self.add_exception_handler(413, streamed_too_large)

        async def __call__(self, scope, receive, send) -> None:
            # Starlette answers a declared oversize body in plain text: answer it here first.
            if scope["type"] == "http":
                headers = Headers(scope=scope)
                declared = headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    await _too_large(max_bytes, headers)(scope, receive, send)
                    return
            await super().__call__(scope, receive, send)

    async def streamed_too_large(request, exc):
        return _too_large(max_bytes, request.headers)

    fastapi.FastAPI = BodyLimitedFastAPI
    return True


def _too_large(limit: int, headers):
    """A 413 in MLflow's error shape (`error_code`, `message`), INVALID_PARAMETER_VALUE as MLflow's
    own server uses for a too-large upload (mlflow 3.17.2 mlflow/server/handlers.py)."""
    from starlette.responses import Response

    declared = headers.get("content-length", "")
    size = f"of {declared} bytes " if declared.isdigit() else ""
    error = MlflowException.invalid_parameter_value(
        f"request body {size}is over the limit of {limit} bytes ({limit / 2**20:g} MiB, about "
        f"{limit // 20:,} rows of {FEATURE}): send fewer rows per request"
    )
    return Response(error.serialize_as_json(), status_code=413, media_type="application/json")


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
