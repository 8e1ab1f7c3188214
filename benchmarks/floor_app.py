"""The serving floor: a bare ASGI app that answers `/invocations` like MLflow, and nothing else.

`benchmarks/bench_serving.py` serves it with uvicorn to show how fast any Python server can be.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Read lazily on the first request so importing this module has no side effects.
_COEFFICIENTS_ENV = "FLOOR_COEFFICIENTS"
_coefficients: tuple[str, float, float] | None = None


def _load_coefficients() -> tuple[str, float, float]:
    global _coefficients
    if _coefficients is None:
        with open(os.environ[_COEFFICIENTS_ENV], encoding="utf-8") as handle:
            data = json.load(handle)
        _coefficients = (data["feature"], float(data["coef"]), float(data["intercept"]))
    return _coefficients


def predict_dataframe_split(body: bytes) -> bytes:
    """Answer a `{"dataframe_split": {"columns": [...], "data": [[...]]}}` body like MLflow.

    Returns `{"predictions": [...]}` as bytes: feature * coef + intercept for every row.
    """
    feature, coef, intercept = _load_coefficients()
    split = json.loads(body)["dataframe_split"]
    column = split["columns"].index(feature)
    temp = np.array([row[column] for row in split["data"]], dtype=np.float64)
    return json.dumps({"predictions": (temp * coef + intercept).tolist()}).encode()


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI entry point: POST /invocations predicts, GET /ping answers 200, anything else 404."""
    if scope["type"] != "http":
        return
    status, payload = 404, b"{}"
    if scope["path"] == "/invocations" and scope["method"] == "POST":
        try:
            status, payload = 200, predict_dataframe_split(await _read_body(receive))
        except (KeyError, ValueError, TypeError) as exc:
            status, payload = 400, json.dumps({"error": str(exc)}).encode()
    elif scope["path"] == "/ping":
        status, payload = 200, b"\n"
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
