"""MLflow connection for the train, register and promote steps: bounded retries, one-line errors."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from steps.cli import StepError
from steps.settings import MlflowSettings

# MLflow's HTTP client retries 7 times with backoff factor 2 and a 120 s timeout: a dead server
# takes minutes to fail. A step is retried by Argo anyway, so fail in seconds (about 0 + 2 + 4 s of
# backoff for 3 retries); a value the user set in the environment wins over these.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def one_line(exc: BaseException, limit: int = 400) -> str:
    """An exception's message on one line (whitespace collapsed), cut at `limit` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_mlflow_error(uri: str, exc: BaseException) -> str:
    """One line for an MLflow failure; an unreachable server gets a short, actionable message."""
    text = one_line(exc, limit=2000)
    if "Max retries exceeded" in text or "Failed to establish a new connection" in text:
        cause = re.search(r"\[Errno -?\d+\] ([^\"')]+)", text)
        retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "?")
        return (
            f"cannot reach MLflow at {uri} ({cause.group(1) if cause else 'no answer'}) after "
            f"{retries} retries; is the server up? check --tracking-uri / MLFLOW_TRACKING_URI"
        )
    return f"MLflow at {uri}: {one_line(exc)}"


@contextmanager
def mlflow_session(settings: MlflowSettings) -> Iterator[Any]:
    """Point MLflow at `settings.tracking_uri` and yield an `MlflowClient` for it.

    While inside, the HTTP retry defaults above apply (unless set in the environment), and any
    MLflow or connection error becomes a one-line `StepError` naming the tracking URI. Both are
    undone on exit, so tests and callers in one process do not leak settings into each other.
    """
    import mlflow
    import requests
    from mlflow.exceptions import MlflowException

    saved_env = {k: os.environ.get(k) for k in (*HTTP_RETRY_DEFAULTS, "MLFLOW_TRACKING_URI")}
    os.environ.update({k: v for k, v in HTTP_RETRY_DEFAULTS.items() if not saved_env[k]})
    try:
        # The registry URI is left unset, so it follows the tracking URI (one server for both).
        mlflow.set_tracking_uri(settings.tracking_uri)
        yield mlflow.MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    except (MlflowException, requests.RequestException) as exc:
        raise StepError(describe_mlflow_error(settings.tracking_uri, exc)) from exc
    finally:
        # set_tracking_uri also exports MLFLOW_TRACKING_URI, so clearing the global and restoring
        # the variable gives back exactly what the caller resolved before.
        mlflow.set_tracking_uri(None)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
