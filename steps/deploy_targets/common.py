"""What every deploy target shares: the request, the result and the `/invocations` smoke test."""

from __future__ import annotations

import math
from dataclasses import dataclass

import httpx

from steps.cli import StepError

# MLflow 3 wants the `dataframe_split` body; the old `format=pandas-split` content type is a 415.
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
