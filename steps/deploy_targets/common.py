"""What every deploy target shares: the request, the result and the `/invocations` smoke test."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from steps.cli import StepError

# MLflow 3 wants the `dataframe_split` body; the old `format=pandas-split` content type is a 415
# (mlflow 3.17.2 mlflow/pyfunc/scoring_server/__init__.py `invocations`: unrecognized parameters).
SMOKE_BODY = {"dataframe_split": {"columns": ["temp"], "data": [[12.8], [50.0], [80.0]]}}


class ServerUnreachable(StepError):
    """The smoke test could not connect at all (as opposed to getting a wrong answer)."""


@dataclass(frozen=True)
class DeployRequest:
    """Which registered model version to serve, and the provenance to record next to it."""

    model_name: str
    version: str
    tracking_uri: str
    run_id: str = ""
    workflow_uid: str = ""

    @property
    def model_uri(self) -> str:
        """The `models:/<name>/<version>` URI the model server loads."""
        return f"models:/{self.model_name}/{self.version}"


@dataclass(frozen=True)
class DeployResult:
    """The deploy step's outputs: the version now served and whether this run changed it."""

    served_version: str
    changed: bool


@contextmanager
def _looking_up(request: DeployRequest) -> Iterator[None]:
    """Inside, MLflow's failures become one line about `request`'s version: bad input when the
    registry lacks its model or version (`steps.tracking.named_by_input`), else
    `steps.tracking.error_for`'s class (exit 75 when a retry may pass)."""
    from mlflow.exceptions import MlflowException

    from steps.tracking import describe_mlflow_error, error_for, named_by_input

    what = f"version {request.version} of registered model {request.model_name!r}"
    try:
        with named_by_input(what, request.tracking_uri):
            yield
    except MlflowException as exc:
        why = describe_mlflow_error(request.tracking_uri, exc)
        raise error_for(exc)(f"cannot look up {request.model_uri}: {why}") from exc


def check_registered(request: DeployRequest) -> None:
    """Look `request`'s version up in the registry, downloading nothing: the first thing a deploy
    does, before it takes a lock, creates a directory or stops anything.

    Raises:
        BadInput: the registry knows no such version (or no such model): exit 2, as for a bad flag.
        TransientError: MLflow unreachable, timing out or answering 5xx (exit 75).
    """
    from mlflow import MlflowClient

    with _looking_up(request):
        client = MlflowClient(tracking_uri=request.tracking_uri)
        client.get_model_version(request.model_name, request.version)


def fetch_verified_model(request: DeployRequest, dst: Path) -> Path:
    """Look `request`'s version up in the registry, download it into `dst` and check that it is
    this project's served model (steps/model_trust.py); return the model directory.

    Raises:
        BadInput: the registry knows no such version (or no such model), as `check_registered`.
        StepError: the version is not our served model.
        TransientError: MLflow unreachable, timing out or answering 5xx (exit 75).
    """
    from mlflow import MlflowClient

    from steps.model_trust import verified_model_dir

    with _looking_up(request):
        client = MlflowClient(tracking_uri=request.tracking_uri)
        return verified_model_dir(client, request.model_name, request.version, dst, role="version")


def smoke_test(base_url: str, timeout: float = 30.0) -> list[float]:
    """POST a three-row `temp` frame to `<base_url>/invocations` and check the answer.

    Args:
        base_url: the model server, e.g. `http://127.0.0.1:5001`.
        timeout: seconds to wait for the answer.

    Returns:
        The three predictions.

    Raises:
        ServerUnreachable: no connection (refused, timed out).
        StepError: not a 200, not JSON, or not a `predictions` list of three finite numbers.
    """
    url = base_url.rstrip("/") + "/invocations"
    try:
        response = httpx.post(url, json=SMOKE_BODY, timeout=timeout)
    except httpx.TransportError as exc:
        raise ServerUnreachable(f"smoke test: POST {url} failed: {exc!r}") from exc
    if response.status_code != 200:
        raise StepError(f"smoke test: POST {url} answered {response.status_code}: {response.text}")
    try:
        predictions = response.json()["predictions"]
    except (ValueError, KeyError, TypeError) as exc:
        raise StepError(f"smoke test: {url} answered without a predictions list") from exc
    expected = len(SMOKE_BODY["dataframe_split"]["data"])
    if not isinstance(predictions, list) or len(predictions) != expected:
        raise StepError(
            f"smoke test: expected {expected} predictions from {url}, got {predictions}"
        )
    if not all(_is_finite_number(p) for p in predictions):
        raise StepError(
            f"smoke test: non-numeric or non-finite predictions from {url}: {predictions}"
        )
    return [float(p) for p in predictions]


def _is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
