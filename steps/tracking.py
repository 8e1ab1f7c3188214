"""MLflow connection for the train, register, promote and deploy steps: bounded retries, one-line
errors."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from steps.cli import CANNOT_WRITE_ERRNOS, BadInput, StepError, TransientError, one_line
from steps.contract import Text
from steps.mlflow_env import HTTP_RETRY_DEFAULTS
from steps.redaction import split_url
from steps.settings import MlflowSettings


def hanging_server_bound_s(env: dict[str, str] | None = None) -> float:
    """Seconds one MLflow call waits at most, in all, on a server that accepts connections and
    never answers, with the settings of `env` (default `os.environ`; HTTP_RETRY_DEFAULTS where
    unset): 1 + MAX_RETRIES attempts, each ending after TIMEOUT seconds, and urllib3's backoff
    between them: none before the first retry, then BACKOFF_FACTOR * 2**(n-1) plus up to
    BACKOFF_JITTER seconds before retry n (urllib3 2.x, urllib3/util/retry.py
    `Retry.get_backoff_time`). The defaults give 4 x 10 + (2 + 1) + (4 + 1) = 48 s; a step fails
    on its first call that gets no answer.
    """
    env = os.environ if env is None else env

    def setting(name: str) -> float:
        return float(env.get(name) or HTTP_RETRY_DEFAULTS[name])

    retries = int(setting("MLFLOW_HTTP_REQUEST_MAX_RETRIES"))
    factor = setting("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")
    jitter = setting("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER")
    backoff = sum(factor * 2 ** (n - 1) + jitter for n in range(2, retries + 1))
    return (retries + 1) * setting("MLFLOW_HTTP_REQUEST_TIMEOUT") + backoff


# The URI schemes for which MLflow 3.17.2 builds both a tracking store and a model-registry store
# (mlflow/tracking/_tracking_service/utils.py `_register_tracking_stores`,
# mlflow/tracking/_model_registry/utils.py `_get_store_registry`); the pipeline needs both. ""
# is a plain path (a local file store), like a one-letter Windows drive (`C:\\mlruns`), and a
# SQLAlchemy `dialect+driver` scheme counts as its dialect (mlflow/utils/uri.py `get_uri_scheme`,
# `extract_db_type_from_uri`). tests/test_tracking_uri.py holds this list to MLflow's registries.
DATABASE_SCHEMES = ("postgresql", "mysql", "sqlite", "mssql")
TRACKING_URI_SCHEMES = (
    *("http", "https", "file", ""),
    *DATABASE_SCHEMES,
    *("databricks", "databricks-uc", "uc"),
)
_DRIVER = re.compile(r"[A-Za-z0-9_]+")
# URIs MLflow takes as a whole, not by scheme (`get_store_builder`): no scheme, yet not a path.
_WHOLE_URI_STORES = ("databricks", "databricks-uc", "uc")


def _file_store_allowed() -> bool:
    """MLflow's own switch for its file store (mlflow/environment_variables.py,
    MLFLOW_ALLOW_FILE_STORE, a boolean: `true` or `1`, any case)."""
    return os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() in ("true", "1")


@dataclass(frozen=True)
class TrackingUri:
    """An MLflow tracking URI whose scheme MLflow can build a tracking and a registry store for
    (TRACKING_URI_SCHEMES), checked before any step runs rather than when train first talks to
    MLflow. Stricter than MLflow where MLflow would only fail at the first request: `http(s)://`
    needs a host, and a port must be a number from 1 to 65535."""

    empty_ok: bool = False

    def parse(self, text: str) -> str:
        """`text`; ValueError naming the scheme, host or port that MLflow could not use."""
        Text(what=self.describe(), empty_ok=self.empty_ok).parse(text)
        if re.search(r"\s", text):
            raise ValueError(f"must be {self.describe()}: white space (percent-encode it)")
        try:
            parts = split_url(text)  # its port checked too (`url_port`)
        except ValueError as exc:  # "Invalid IPv6 URL", a port that is not a number
            raise ValueError(f"must be {self.describe()}: {exc}") from None
        scheme = "" if re.fullmatch(r"[a-z]", parts.scheme) else parts.scheme
        dialect, plus, driver = scheme.partition("+")
        if plus and not (dialect in DATABASE_SCHEMES and _DRIVER.fullmatch(driver)):
            raise ValueError(
                f"must be {self.describe()}: {scheme!r} is not a database dialect+driver "
                f"({'|'.join(DATABASE_SCHEMES)}+driver)"
            )
        if dialect not in TRACKING_URI_SCHEMES:
            raise ValueError(
                f"must be {self.describe()}: MLflow has no tracking store for the scheme "
                f"{scheme!r} (it knows {', '.join(s + ':' for s in TRACKING_URI_SCHEMES if s)} "
                "and plain paths)"
            )
        if dialect in ("", "file") and text not in _WHOLE_URI_STORES and not _file_store_allowed():
            raise ValueError(
                f"must be {self.describe()}: {text[:40]!r} is a file store, which MLflow 3.17.2 "
                "refuses unless MLFLOW_ALLOW_FILE_STORE=true (mlflow/store/tracking/"
                "file_store.py, maintenance mode); use sqlite:///<path>/mlflow.db"
            )
        if scheme in ("http", "https") and not parts.hostname:
            raise ValueError(f"must be {self.describe()}: {scheme}:// needs a host")
        return text

    def describe(self) -> str:
        """What the kind accepts, for `--help`, error lines and docs/steps.md."""
        what = "an MLflow tracking URI (http://host:port, sqlite:///file.db, ...)"
        return what if self.empty_ok else f"{what} (non-empty)"


def canonical_version(text: object, what: str = "--version") -> str:
    """A registered model version in the one form used everywhere (flags, aliases, outputs, tags):
    the ASCII decimal integer MLflow numbers versions with, no sign, no leading zeros, >= 1.

    `" 02\n"` becomes `"2"`. Non-ASCII digits (`int()` would take `"٣"` or `"1_0"`), signs, `0`
    and anything else raise StepError naming `what`.
    """
    value = str(text).strip()
    if not re.fullmatch(r"[0-9]+", value) or int(value) < 1:
        raise BadInput(f"{what} must be a positive integer in ASCII digits, got {str(text)!r}")
    return str(int(value))


# MLflow error codes that say the request itself is wrong: sending it again gives the same answer.
PERMANENT_ERROR_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "UNAUTHENTICATED", "BAD_REQUEST", "NOT_FOUND",
        "INVALID_STATE", "ENDPOINT_NOT_FOUND", "FEATURE_DISABLED",
    }
)  # fmt: skip


def registered_aliases(client: Any, name: str) -> dict[str, str]:
    """The aliases of registered model `name` (alias -> version, versions in canonical form),
    read from MLflow through `client` (an `MlflowClient`); call inside `mlflow_session`.

    Raises:
        StepError: an alias names a version that is not a canonical integer.
        mlflow.exceptions.MlflowException: the model is not registered, or MLflow failed.
    """
    aliases = client.get_registered_model(name).aliases or {}
    return {alias: canonical_version(v, f"alias {alias!r}") for alias, v in aliases.items()}


def is_transient_mlflow_error(exc: BaseException) -> bool:
    """Whether an MLflow failure may go away on its own (no answer, a 5xx), so a retry makes
    sense; False for answers that reject the request (unknown version, bad name, no permission)."""
    return getattr(exc, "error_code", None) not in PERMANENT_ERROR_CODES


def describe_mlflow_error(uri: str, exc: BaseException) -> str:
    """One line for an MLflow failure: an unreachable server, a server answering 5xx to every
    retry, or MLflow's own message; each names the tracking URI."""
    text = one_line(exc, limit=None)
    status = re.search(r"too many (\d{3}) error responses", text)
    if status:
        retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "?")
        return (
            f"MLflow at {uri} answered HTTP {status.group(1)} to the request and to each of "
            f"{retries} retries; see the MLflow server's log"
        )
    if "Max retries exceeded" in text or "Failed to establish a new connection" in text:
        cause = re.search(r"\[Errno -?\d+\] ([^\"')]+)", text)
        retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "?")
        return (
            f"cannot reach MLflow at {uri} ({cause.group(1) if cause else 'no answer'}) after "
            f"{retries} retries; is the server up? The URI is --tracking-uri, else env "
            "MLFLOW_TRACKING_URI, which the pipeline sets from its parameter mlflow-tracking-uri"
        )
    return f"MLflow at {uri}: {one_line(exc)}"


# How MLflow words an OSError it caught: `[Errno 28] No space left on device: '/path'`.
_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\] ([^:\n'\]]+)(?:: '([^'\n]*)')?")


def local_write_error(exc: BaseException) -> OSError | None:
    """The failed write of a local file (a full disk, a quota, RLIMIT_FSIZE, a read-only or
    forbidden directory) behind `exc`, or None.

    Found in `exc`, its cause or context, or in its text: MLflow 3.17's parallel artifact download
    catches each file's error and raises one MlflowException with their texts only, no cause
    (`ArtifactRepository.download_artifacts`, mlflow/store/artifact/artifact_repo.py).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if (
            isinstance(current, OSError)
            and not isinstance(current, ConnectionError)
            and current.errno in CANNOT_WRITE_ERRNOS
        ):
            return current
        for found in _ERRNO_TEXT.finditer(str(current)):
            code = int(found.group(1))
            if code in CANNOT_WRITE_ERRNOS:
                return OSError(code, found.group(2).strip(), found.group(3))
        current = current.__cause__ or current.__context__
    return None


def error_for(exc: BaseException) -> type[StepError]:
    """The StepError class for a failure caused by `exc`: TransientError (exit 75, retried by
    Argo) when talking to MLflow failed in a way a retry may fix (no answer, a timeout, a 5xx),
    else StepError (exit 1). Other exceptions (a broken model, a bug, a local file that cannot
    be written: `local_write_error`) are never transient."""
    import requests
    from mlflow.exceptions import MlflowException

    if local_write_error(exc) is not None:
        return StepError
    talking = isinstance(exc, MlflowException | requests.RequestException | OSError)
    return TransientError if talking and is_transient_mlflow_error(exc) else StepError


_NO_URL_PRINT = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


@contextmanager
def mlflow_session(settings: MlflowSettings) -> Iterator[Any]:
    """Point MLflow at `settings.tracking_uri` and yield an `MlflowClient` for it.

    While inside, the HTTP retry defaults above apply (unless set in the environment), and any
    MLflow or connection error becomes a one-line `StepError` naming the tracking URI (a
    `TransientError`, exit 75, when a retry may pass: see `is_transient_mlflow_error`). Both are
    undone on exit, so tests and callers in one process do not leak settings into each other.
    """
    import mlflow
    import requests
    from mlflow.exceptions import MlflowException

    saved_env = {
        k: os.environ.get(k) for k in (*HTTP_RETRY_DEFAULTS, "MLFLOW_TRACKING_URI", _NO_URL_PRINT)
    }
    os.environ.update({k: v for k, v in HTTP_RETRY_DEFAULTS.items() if not saved_env[k]})
    # MLflow prints "View run ... at: <tracking URI>/#/..." to stdout when a run ends, login and
    # all (mlflow 3.17.2 mlflow/tracking/_tracking_service/client.py `_log_url`): a login would
    # reach the step's and the pod's log, and any such line breaks the step's promise of one JSON
    # line on stdout (docs/steps.md). The run's id is in the step's outputs.
    os.environ[_NO_URL_PRINT] = "true"
    try:
        # The registry URI is left unset, so it follows the tracking URI (one server for both).
        mlflow.set_tracking_uri(settings.tracking_uri)
        yield mlflow.MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    except (MlflowException, requests.RequestException) as exc:
        raise error_for(exc)(describe_mlflow_error(settings.tracking_uri, exc)) from exc
    finally:
        # set_tracking_uri also exports MLFLOW_TRACKING_URI, so clearing the global and restoring
        # the variable gives back exactly what the caller resolved before.
        mlflow.set_tracking_uri(None)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
