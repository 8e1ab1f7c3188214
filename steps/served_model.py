"""The served dew point model as an MLflow "models from code" file: plain numpy, no scikit-learn.

MLflow copies this file into the logged model and executes it when the model is loaded, so it must
import nothing from `steps` and nothing the serving image lacks (only mlflow, numpy, pandas and
what mlflow-skinny's scoring server brings: fastapi, starlette, uvicorn).
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
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
# The one content type served. MLflow 3.17.2's scoring server also reads text/csv and Parquet
# (mlflow/pyfunc/scoring_server/__init__.py, `invocations`), but its CSV reader asks the signature
# for pandas types, which an `any` column has none of (every CSV request was a 400 "Failed to get
# pandas types"), and a Parquet body is compressed: 1 MiB of it can unpack into any number of rows.
# Both are refused with a 415 before MLflow reads them.
SERVED_CONTENT_TYPE = "application/json"
# MLflow 3.17.2's JSON input fields (mlflow/utils/proto_json_utils.py, SUPPORTED_FORMATS).
INPUT_FIELDS = ("dataframe_split", "dataframe_records", "instances", "inputs")
# How deeply a request's JSON may nest. `{"dataframe_split": {"data": [[12.8]]}}` is 4 deep, one
# more lets a list or object sent as a temp reach the check that names the field. Python's json
# parser recurses once per level: 5,000 levels (10 KB) were a RecursionError and a 500 (issue 10).
MAX_JSON_DEPTH = 5
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
    JSON error shape. A POST to /invocations within the limit is read here and its shape checked
    by `refuse_request_shape` before MLflow's parser or pandas sees it.

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
                if scope["method"] == "POST" and scope["path"] == "/invocations":
                    body = await _read_body(receive, max_bytes)
                    if body is None:
                        await _too_large(max_bytes, headers)(scope, receive, send)
                        return
                    # Off the event loop: /ping keeps answering while a 1 MiB body is checked.
                    refusal = await asyncio.to_thread(
                        refuse_request_shape, body, headers.get("content-type")
                    )
                    if refusal is not None:
                        await _refused(*refusal)(scope, receive, send)
                        return
                    receive = _replayed(body, receive)
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


async def _read_body(receive, max_bytes: int) -> bytes | None:
    """The whole request body from ASGI `receive`, or None once it passes `max_bytes` (the rest
    is never read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away: let the app see an empty body
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replayed(body: bytes, receive):
    """An ASGI `receive` that gives the app `body` once, then whatever the client sends."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _refused(status: int, message: str):
    """An answer in MLflow's error shape (`error_code` INVALID_PARAMETER_VALUE, `message`)."""
    from starlette.responses import Response

    error = MlflowException.invalid_parameter_value(message)
    return Response(error.serialize_as_json(), status_code=status, media_type="application/json")


# A JSON string (escapes included): its brackets are text, not nesting.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
# Each byte's step in nesting depth: +1 for `[` and `{`, -1 for `]` and `}`, 0 for the rest.
_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[[ord("["), ord("{")]] = 1
_DEPTH_STEP[[ord("]"), ord("}")]] = -1


def json_depth(body: bytes) -> int:
    """How deeply the arrays and objects in a JSON text nest (0 for a scalar), counted without
    parsing or recursing, in time linear in len(body) bytes."""
    # One table look-up a byte: 8x faster than two np.isin passes (70 -> 8 us for a one-row
    # request, 8.5 -> 1.2 ms for 50,000 rows; timeit on this machine).
    text = np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8)
    return int(np.cumsum(_DEPTH_STEP[text], dtype=np.int32).max(initial=0))


def refuse_request_shape(
    body: bytes, content_type: str | None, columns: tuple[str, ...] = (FEATURE,)
) -> tuple[int, str] | None:
    """Why a request to /invocations is refused before MLflow parses it, as (HTTP status,
    message), or None to let MLflow read it.

    MLflow's parser and pandas build whatever the request describes: 10,000 records with
    distinct keys (119 KB) became a 10,000 x 10,000 frame, 1.96 GB and 10 s of a worker; 10 KB
    of nested brackets a RecursionError (issue 10). So, before either runs: the content type
    must be `SERVED_CONTENT_TYPE` (415 otherwise, missing included); the JSON may nest at most
    `MAX_JSON_DEPTH` deep (400); and every column a request names, or a row's width, must be
    among `columns` (the ones the model reads, `FEATURE`; the signature is built from the same
    name in steps/model.py), so the frame is at most that wide (400). Invalid JSON, a body that
    is not an object, and a missing or second input field are left to MLflow's own 400s.
    """
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime != SERVED_CONTENT_TYPE:
        return 415, (
            f"Content-Type {content_type!r} is not served: send {SERVED_CONTENT_TYPE} with one "
            f"of the input fields {', '.join(INPUT_FIELDS)} (text/csv and Parquet are refused)"
        )
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        return 400, (
            f"the request's JSON nests {depth} levels deep, over the limit of {MAX_JSON_DEPTH} "
            f'({{"dataframe_split": {{"columns": ["{FEATURE}"], "data": [[12.8]]}}}} is 4)'
        )
    # MLflow parses the body again, itself twice (mlflow 3.17.2
    # mlflow/pyfunc/scoring_server/__init__.py: `_parse_json_data` decodes it, then
    # `_split_data_and_params` decodes the raw body once more). Its /invocations route takes the
    # bytes from `request.body()` and passes them to `invocations`: a parsed value could reach it
    # only by replacing the private `_decode_json_input`, so this parse is kept. Measured (timeit,
    # one 400 KB dataframe_split body of 50,000 rows): json.loads 33 ms, `_parse_json_data` 92 ms.
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):  # MLflow says so in its own words
        return None
    # An integer over Python's 4,300 digits: a plain ValueError, which MLflow 3.17.2 does not catch
    # (mlflow/pyfunc/scoring_server/__init__.py, `_decode_json_input`): a 500.
    except ValueError as error:
        return (
            400,
            f"the request holds a number that cannot be read ({error}); "
            f"{FEATURE} must be a JSON number (deg F)",
        )
    if not isinstance(request, dict):
        return None
    for field in INPUT_FIELDS:
        if field in request:
            problem = _column_problem(field, request[field], columns)
            if problem is not None:
                return 400, f"{field}: {problem}"
    return None


def _column_problem(field: str, data: object, columns: tuple[str, ...]) -> str | None:
    """What in one input field names a column other than `columns`, or a row wider than them."""
    expected = f"the model reads {len(columns)} column(s): {', '.join(map(repr, columns))}"
    names: list[object] = []
    rows: list[object] = []
    if field == "dataframe_split" and isinstance(data, dict):
        named = data.get("columns")
        if isinstance(named, list):
            names += named
            if len(set(map(str, named))) < len(named):
                return f"a column is named twice in {named!r:.80}; {expected}"
        rows = data.get("data") if isinstance(data.get("data"), list) else []
    elif isinstance(data, dict):  # instances or inputs: one list per column
        names += data
    elif isinstance(data, list):  # records, or instances/inputs as a list of rows
        rows = data
    for row in rows:
        if isinstance(row, dict):
            names += row
        elif isinstance(row, list) and len(row) > len(columns):
            return f"a row has {len(row)} values; {expected}"
    for name in names:
        if name not in columns:
            return f"unknown column {str(name)[:40]!r}; {expected}"
    return None


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
        too_big = [row for row, v in enumerate(values) if isinstance(v, int) and _over_float(v)]
        if too_big:  # 10**400 is a JSON number no float holds: past any range
            raise MlflowException.invalid_parameter_value(
                f"{FEATURE} must be within {_range_text(temp_range)} deg F; row {too_big[0]} is "
                "an integer too large for any float (over 1.8e308)"
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


def _over_float(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return True
    return False


def _range_text(temp_range: tuple[float, float] | None) -> str:
    return "the range of a float" if temp_range is None else "[{:g}, {:g}]".format(*temp_range)


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
