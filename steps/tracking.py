"""MLflow connection for the train, register, promote and deploy steps: bounded retries, one-line
errors."""

from __future__ import annotations

import contextvars
import functools
import http.client
import io
import os
import re
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.cli import CANNOT_WRITE_ERRNOS, BadInput, StepError, TransientError, one_line
from steps.contract import Text
from steps.files import open_regular, what_is_at
from steps.mlflow_env import (
    CLIENT_CERT_PATH,
    HTTP_RETRY_DEFAULTS,
    SERVER_CERT_PATH,
    MlflowBoolean,
)
from steps.redaction import split_url
from steps.settings import MlflowSettings


def http_setting(name: str, env: Any = None) -> float:
    """The MLflow HTTP setting `name` (MLFLOW_HTTP_REQUEST_*) in `env` (default `os.environ`),
    else its HTTP_RETRY_DEFAULTS value."""
    env = os.environ if env is None else env
    return float(env.get(name) or HTTP_RETRY_DEFAULTS[name])


def hanging_server_bound_s(env: dict[str, str] | None = None, uri: str = "") -> float:
    """Seconds one MLflow call waits at most, in all, on a server that accepts connections and
    never answers, or trickles its answer (`answer_deadlines`), with the settings of `env`
    (default `os.environ`; HTTP_RETRY_DEFAULTS where unset): 1 + MAX_RETRIES attempts, each ending
    TIMEOUT seconds after its request was sent, and urllib3's backoff
    between them: none before the first retry, then BACKOFF_FACTOR * 2**(n-1) plus up to
    BACKOFF_JITTER seconds before retry n (urllib3 2.x, urllib3/util/retry.py
    `Retry.get_backoff_time`). The defaults give 4 x 10 + (2 + 1) + (4 + 1) = 48 s; a step fails
    on its first call that gets no answer. For an `https://` URI (`uri`), the TLS check's one
    request (`check_tls`) comes first: one TIMEOUT more (its second handshake follows only an EOF,
    which a server that never answers does not send).
    """

    def setting(name: str) -> float:
        return http_setting(name, env)

    retries = int(setting("MLFLOW_HTTP_REQUEST_MAX_RETRIES"))
    factor = setting("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")
    jitter = setting("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER")
    backoff = sum(factor * 2 ** (n - 1) + jitter for n in range(2, retries + 1))
    attempts = retries + 1 + uri.lower().startswith("https://")
    return attempts * setting("MLFLOW_HTTP_REQUEST_TIMEOUT") + backoff


# MLFLOW_HTTP_REQUEST_TIMEOUT reaches requests and urllib3 as a socket timeout: the wait for each
# read, not for the answer. urllib3 says so (urllib3 2.8.0 src/urllib3/util/timeout.py, the note
# in `Timeout`'s docstring: "the read and total timeouts only measure the time between read
# operations"; `Timeout(total=)` only shortens each read, `read_timeout`), and requests offers no
# total timeout (psf/requests issue 4276). So a server that sent its status line and then one
# byte a second, or an endless chunked body, held a step for ever (a breaker, issue 11). MLflow
# builds its session with no hook for this (mlflow 3.17.2 mlflow/utils/request_utils.py
# `_cached_get_request_session`: a `TCPKeepAliveHTTPAdapter` on a cached `requests.Session`), so
# `answer_deadlines` puts a subclass in that adapter's place, whose connections read each answer
# through `_AnswerReader`. Each read then waits at most what is left of the answer's time.
# A streamed body (stream=True: an artifact download, mlflow/store/artifact/http_artifact_repo.py
# `_download_file`) may take as long as its size needs, but must keep coming at this rate at least,
# measured over each TIMEOUT seconds (curl's CURLOPT_LOW_SPEED_LIMIT/LOW_SPEED_TIME, one rule).
STREAMED_BODY_MIN_BYTES_PER_S = 1024
_STREAMED = contextvars.ContextVar("_STREAMED", default=False)


class _AnswerReader(io.RawIOBase):
    """The bytes of one HTTP answer from `sock`, in time: the head and a body read whole must all
    arrive within the socket's timeout when the answer began (urllib3 sets the read timeout before
    it reads the answer: urllib3/connection.py `getresponse`), counted from then; a streamed body
    (`streamed_body`) must bring STREAMED_BODY_MIN_BYTES_PER_S x that timeout bytes in each such
    span. Else a read raises TimeoutError, as a socket does when its timeout passes, so urllib3
    and requests take it as a read timeout (retried while the head is awaited). With no timeout
    (None), no deadline either."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        # A reference to the socket as http.client's own reader holds one (socket.py `makefile`):
        # the connection may close its socket while the answer is still read.
        self._raw = sock.makefile("rb", buffering=0)
        self._wait = sock.gettimeout()
        self._span_end = None if self._wait is None else time.monotonic() + self._wait
        self._due: int | None = None  # bytes due in the current span; None: the whole answer
        self._got = 0

    def readable(self) -> bool:
        return True

    def streamed_body(self) -> None:
        """From now on, the body is due at the minimum rate, not whole by the deadline."""
        if self._wait is not None:
            self._due = max(1, int(STREAMED_BODY_MIN_BYTES_PER_S * self._wait))
            self._span_end, self._got = time.monotonic() + self._wait, 0

    def _late(self) -> TimeoutError:
        if self._due is None:
            return TimeoutError(f"the answer did not arrive whole within {self._wait:g} s")
        return TimeoutError(
            f"the streamed answer brought under {self._due} bytes in {self._wait:g} s"
        )

    def readinto(self, buffer: Any) -> int | None:
        if self._span_end is None or self._wait is None:
            return self._raw.readinto(buffer)
        now = time.monotonic()
        met = self._due is not None and self._got >= self._due
        if met and now >= self._span_end:
            self._span_end, self._got, met = now + self._wait, 0, False
        left = self._span_end - now
        if left <= 0 and not met:
            raise self._late()
        self._sock.settimeout(self._wait if met else min(self._wait, left))
        try:
            count = self._raw.readinto(buffer)
        except TimeoutError:
            if not met and time.monotonic() >= self._span_end:
                raise self._late() from None
            raise
        finally:
            with suppress(OSError):  # a socket closed meanwhile
                self._sock.settimeout(self._wait)
        self._got += count or 0
        return count

    def close(self) -> None:
        self._raw.close()
        super().close()


class _TimedResponse(http.client.HTTPResponse):
    """http.client's answer, read through `_AnswerReader`."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp.close()
        self._answer = _AnswerReader(sock)
        self.fp = io.BufferedReader(self._answer)

    def begin(self) -> None:
        super().begin()
        if _STREAMED.get():
            self._answer.streamed_body()


@functools.cache
def _timed_pool(pool_class: type) -> type:
    """`pool_class` (a urllib3 connection pool) whose connections read `_TimedResponse`s."""
    connection = pool_class.ConnectionCls
    if connection.response_class is _TimedResponse:
        return pool_class
    timed = type(connection.__name__, (connection,), {"response_class": _TimedResponse})
    return type(pool_class.__name__, (pool_class,), {"ConnectionCls": timed})


def _timed_pools(manager: Any) -> Any:
    """`manager` (a urllib3 PoolManager or ProxyManager), making `_timed_pool`s from now on."""
    manager.pool_classes_by_scheme = {
        scheme: _timed_pool(pool) for scheme, pool in manager.pool_classes_by_scheme.items()
    }
    return manager


@functools.cache
def _timed_adapter(adapter: type) -> type:
    """MLflow's `adapter` class whose pools read `_TimedResponse`s, told which are streamed."""

    class TimedAdapter(adapter):  # type: ignore[misc, valid-type]
        answers_timed = True

        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            _timed_pools(self.poolmanager)

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            return _timed_pools(super().proxy_manager_for(proxy, **kwargs))

        def send(self, request: Any, stream: bool = False, **kwargs: Any) -> Any:
            token = _STREAMED.set(stream)
            try:
                return super().send(request, stream=stream, **kwargs)
            finally:
                _STREAMED.reset(token)

    return TimedAdapter


@contextmanager
def answer_deadlines() -> Iterator[None]:
    """While inside, every MLflow HTTP request in this process has a deadline for its answer:
    the head, and a body read whole (every API call), within the request's timeout
    (MLFLOW_HTTP_REQUEST_TIMEOUT) from the moment the request was sent, per attempt; a streamed
    body (artifact downloads) at STREAMED_BODY_MIN_BYTES_PER_S at least (`_AnswerReader`).
    Late is a read timeout: urllib3 retries it like one while the head is awaited. Undone on
    exit; nested, the outer one stays."""
    from mlflow.utils import request_utils

    adapter = request_utils.TCPKeepAliveHTTPAdapter
    timed = getattr(adapter, "answers_timed", False)
    request_utils.TCPKeepAliveHTTPAdapter = adapter if timed else _timed_adapter(adapter)
    request_utils._cached_get_request_session.cache_clear()  # sessions made before: untimed
    try:
        yield
    finally:
        request_utils.TCPKeepAliveHTTPAdapter = adapter
        if not timed:
            request_utils._cached_get_request_session.cache_clear()


# The URI schemes for which MLflow 3.17.2 builds both a tracking store and a model-registry store
# (mlflow/tracking/_tracking_service/utils.py `_register_tracking_stores`,
# mlflow/tracking/_model_registry/utils.py `_get_store_registry`); the pipeline needs both, from
# one URI. "" is a plain path (a local file store), like a one-letter Windows drive
# (`C:\\mlruns`), and a SQLAlchemy `dialect+driver` scheme counts as its dialect
# (mlflow/utils/uri.py `get_uri_scheme`, `extract_db_type_from_uri`). tests/test_tracking_uri.py
# holds this list to MLflow's registries, less NOT_HERE.
DATABASE_SCHEMES = ("postgresql", "mysql", "sqlite", "mssql")
TRACKING_URI_SCHEMES = (*("http", "https", "file", ""), *DATABASE_SCHEMES)
# Schemes both registries know that the pipeline does not take, and why. `databricks-uc` and `uc`
# (Unity Catalog) are registry URIs only: their tracking-store builder always raises "Setting the
# tracking URI to a Unity Catalog backend is not supported" (_tracking_service/utils.py
# `_get_databricks_uc_rest_store`), and the steps use one URI for both. `databricks` needs a
# Databricks workspace and its credentials, which this project cannot test against: it is not
# offered rather than offered untested (docs/steps.md).
NOT_HERE = {
    "databricks-uc": "is a Unity Catalog model registry, which MLflow 3.17.2 cannot track runs in",
    "uc": "is a Unity Catalog model registry, which MLflow 3.17.2 cannot track runs in",
    "databricks": "is a Databricks workspace, which this pipeline is not tested with",
}
_DRIVER = re.compile(r"[A-Za-z0-9_]+")
# URIs MLflow takes as a whole, not by scheme (`get_store_builder`): no scheme, yet not a path.
_WHOLE_URI_STORES = tuple(NOT_HERE)
# The first 16 bytes of every SQLite database file (https://www.sqlite.org/fileformat.html, 1.3
# "The Database Header", offset 0). A file of 0 bytes is an empty database to SQLite, which
# writes the header at its first table.
SQLITE_HEADER = b"SQLite format 3\x00"


def _file_store_allowed() -> bool:
    """MLflow's own switch for its file store (mlflow/environment_variables.py,
    MLFLOW_ALLOW_FILE_STORE), read as MLflow reads it; a spelling MLflow refuses is off here
    (and refused with its name by `steps.mlflow_env.check_mlflow_environment`)."""
    try:
        return MlflowBoolean().parse(os.environ.get("MLFLOW_ALLOW_FILE_STORE") or "false")
    except ValueError:
        return False


def sqlite_problem(uri: str) -> str | None:
    """What keeps the SQLite database of `sqlite://` URI `uri` from working where the step runs,
    else None: no file (an in-memory database, which each step would start empty), something
    other than a regular file (a directory, a named pipe, a device: MLflow retried for 105 s,
    then a traceback), a file that is not an SQLite database (`SQLITE_HEADER`), or no directory to
    create it in (MLflow would create the missing directories, elsewhere than meant), or a query
    or fragment: SQLAlchemy 2.1's pysqlite dialect ignores an option it does not know (`?mode=ro`,
    with a warning; `sqlalchemy/dialects/sqlite/pysqlite.py` `create_connect_args`) and keeps
    a `#...` in the file name, and `file:` names a file in a folder `file:` unless `?uri=true`.
    A path with no query is checked as SQLAlchemy reads it, `file:/x.db` as that relative path."""
    from sqlalchemy.engine.url import make_url

    url = make_url(uri)
    # SQLAlchemy decodes `%3F`/`%23` into the file name: `x.db%3Fmode=ro` made a new, empty
    # database `x.db?mode=ro` beside the real one (breaker).
    if url.query or any(mark in (url.database or "") for mark in "?#"):
        return "has a query or fragment; give the SQLite file's path alone (sqlite:///<path>)"
    database = url.database
    if not database or database == ":memory:":
        return "is an in-memory SQLite database, which each step would start empty"
    path = Path(database)
    try:
        what = what_is_at(path)
        if what is None:
            parent = path.absolute().parent
            if what_is_at(parent) != "a directory":
                return f"names a database in {str(parent)[:200]!r}, which is no directory here"
            return None
        if what != "a file":
            return f"names {what}, not an SQLite database file"
        with open_regular(path) as handle:
            head = handle.read(len(SQLITE_HEADER))
    except OSError as exc:  # a name too long, a file or folder that may not be read
        return f"names a database that cannot be read here ({exc.strerror or exc})"
    if head and head != SQLITE_HEADER:
        return "names a file that is not an SQLite database (no 'SQLite format 3' header)"
    return None


def driver_problem(uri: str) -> str | None:
    """Why SQLAlchemy cannot load the dialect and database driver of `uri` in this environment
    (the URI's `+driver`, else the dialect's default: `psycopg` for postgresql, `pyodbc` for
    mssql, `MySQLdb` for mysql in SQLAlchemy 2.1), else None; never quoting the URI."""
    from sqlalchemy.engine.url import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(uri)
        dialect = url.get_dialect()
    except NoSuchModuleError:
        return f"names a driver SQLAlchemy does not know ({url.drivername!r})"
    except (ArgumentError, ValueError):
        return "is not a database URL SQLAlchemy can read"
    try:
        dialect.import_dbapi()
    except (ImportError, OSError) as exc:
        missing = getattr(exc, "name", None) or dialect.driver
        return f"needs the database driver {missing!r} ({url.drivername}), not installed here"
    return None


@dataclass(frozen=True)
class TrackingUri:
    """An MLflow tracking URI whose scheme MLflow can build a tracking and a registry store for
    (TRACKING_URI_SCHEMES), checked before any step runs rather than when train first talks to
    MLflow. Stricter than MLflow where MLflow would only fail at the first request: `http(s)://`
    needs a host, and a port must be a number from 1 to 65535.

    `here`: also check what is looked up where the step runs (`looked_up_where_the_step_runs`):
    a database's driver (`driver_problem`) and a SQLite file (`sqlite_problem`). Off for a URI
    rendered into a template for pods elsewhere (`PIPELINE_MLFLOW_TRACKING_URI`)."""

    empty_ok: bool = False
    here: bool = True

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
        whole = text if text in _WHOLE_URI_STORES else None
        if (whole or dialect) in NOT_HERE:
            raise ValueError(
                f"must be {self.describe()}: {whole or scheme!r} {NOT_HERE[whole or dialect]}"
            )
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
        if dialect in ("", "file") and not _file_store_allowed():
            raise ValueError(
                f"must be {self.describe()}: {text[:40]!r} is a file store, which MLflow 3.17.2 "
                "refuses unless MLFLOW_ALLOW_FILE_STORE=true (mlflow/store/tracking/"
                "file_store.py, maintenance mode); use sqlite:///<path>/mlflow.db"
            )
        if scheme in ("http", "https") and not parts.hostname:
            raise ValueError(f"must be {self.describe()}: {scheme}:// needs a host")
        if self.here and dialect in DATABASE_SCHEMES:
            problem = driver_problem(text) or (
                sqlite_problem(text) if dialect == "sqlite" else None
            )
            if problem:
                raise ValueError(f"must be {self.describe()}: it {problem}")
        return text

    def looked_up_where_the_step_runs(self, text: str) -> bool:
        """Whether `text` names what only the machine the step runs on can tell about (a
        database driver, a SQLite file): on a cluster that is the pod (steps.contract
        `check_workflow_parameters`, `paths_here`)."""
        scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", text)
        return bool(scheme) and scheme.group(1).partition("+")[0] in DATABASE_SCHEMES

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


# MLflow's error code for a registered model, version, alias or run it does not have (mlflow
# 3.17.2 mlflow/protos/databricks.proto `RESOURCE_DOES_NOT_EXIST`).
DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
# MLflow error codes that say the request itself is wrong: sending it again gives the same answer.
PERMANENT_ERROR_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE", DOES_NOT_EXIST, "RESOURCE_ALREADY_EXISTS",
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


@contextmanager
def named_by_input(what: str, tracking_uri: str) -> Iterator[None]:
    """Inside, MLflow's DOES_NOT_EXIST is bad input: `what` (a registered model, model version or
    run that a flag names, e.g. "version 7 of registered model 'm'") is not at `tracking_uri`. One
    rule for every stage: a name the registry does not know is exit 2, as a bad flag is
    (docs/steps.md "Exit codes"). Wrap only the look-ups a step makes before it writes or starts
    anything, since exit 2 promises that nothing was changed.

    Raises:
        BadInput: `not_in_registry(what, tracking_uri)`.
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if exc.error_code != DOES_NOT_EXIST:
            raise
        raise not_in_registry(what, tracking_uri) from exc


def not_in_registry(what: str, tracking_uri: str) -> BadInput:
    """The one error line for `what` (a registered model, version, alias or run) that the MLflow
    at `tracking_uri` does not have: bad input, exit 2 (`named_by_input`)."""
    return BadInput(f"{what} does not exist at {tracking_uri}")


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception behind it: MLflow 3.17.2 turns requests' SSLError into
    `MlflowException("API request to <url> failed with exception ...")`, INTERNAL_ERROR, no
    `from` (mlflow/utils/rest_utils.py `http_request`, its last `except Exception`), so OpenSSL's
    ssl.SSLError is found through `__context__`, then requests' SSLError's MaxRetryError and its
    `reason`, urllib3's SSLError (urllib3/connectionpool.py `urlopen`), and their `args`."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        current = todo.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__, getattr(current, "reason", None)]
        todo += list(current.args)


def tls_verification_failure(exc: BaseException) -> str | None:
    """Why the TLS verification of the server failed behind `exc` (OpenSSL's reason: "self-signed
    certificate", "Hostname mismatch, ..."), else None (`_exception_chain`)."""
    for current in _exception_chain(exc):
        if isinstance(current, ssl.SSLCertVerificationError):
            return str(current.verify_message or current.reason or current)
    return None


# Handshakes that fail the same way on every try, by OpenSSL's reason (`ssl.SSLError.reason`, the
# name of OpenSSL's SSL_R_* code; Python's Modules/_ssl.c `fill_and_set_sslerror`), each what
# Python 3.11 with OpenSSL 3.0 reports, seen by experiment (tests/test_tracking_tls.py makes each):
# - WRONG_VERSION_NUMBER: the first bytes back are no TLS record ("HTTP/1.0 400 ..." of a
#   plain-HTTP server); OpenSSL 3.2 and later say "record layer failure" instead, a reason
#   Python 3.11's table does not name (`reason` None, text "[SSL] record layer failure": urllib3
#   pull 3271, cherrypy issue 2026), hence the match on the text too (`_ssl_reason`).
# - TLSV13_ALERT_CERTIFICATE_REQUIRED: a TLS 1.3 server that requires a client certificate got
#   none (RFC 8446 section 4.4.2.4: the `certificate_required` alert).
# - SSLV3_ALERT_HANDSHAKE_FAILURE: the same at TLS 1.2 (OpenSSL's server sends `handshake_failure`
#   below TLS 1.3, `certificate_required` at 1.3, when `SSL_VERIFY_FAIL_IF_NO_PEER_CERT` finds
#   none: ssl/statem/statem_srvr.c `tls_process_client_certificate`), or no version or cipher in
#   common.
# - TLSV1_ALERT_UNKNOWN_CA: the server does not trust the client certificate given.
# A handshake that hangs (a timeout) or is cut (a reset, an EOF) stays transient.
_CLIENT_CERT = f"a PEM file with the certificate and its unencrypted key, in {CLIENT_CERT_PATH}"
_NOT_TLS = "does not speak TLS (a plain-HTTP server?): use http:// if so"
TLS_REFUSALS = {
    "WRONG_VERSION_NUMBER": _NOT_TLS,
    "RECORD_LAYER_FAILURE": _NOT_TLS,
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": (
        f"requires a TLS client certificate and none was sent: give {_CLIENT_CERT}"
    ),
    "SSLV3_ALERT_HANDSHAKE_FAILURE": (
        "refused the TLS handshake (handshake failure): it may require a client certificate "
        f"({_CLIENT_CERT}) or share no TLS version or cipher with this client"
    ),
    "TLSV1_ALERT_UNKNOWN_CA": (
        f"does not trust the TLS client certificate given (unknown CA): check {CLIENT_CERT_PATH}"
    ),
}


def _ssl_reason(error: ssl.SSLError) -> str:
    """OpenSSL's reason name of `error` ("WRONG_VERSION_NUMBER"), else its reason text in that
    form ("[SSL] record layer failure (_ssl.c:1006)" gives "RECORD_LAYER_FAILURE")."""
    text = re.search(r"\] ([a-z0-9 ]+?) \(", str(error))
    return getattr(error, "reason", None) or (
        text.group(1).upper().replace(" ", "_") if text else ""
    )


def tls_refusal(exc: BaseException) -> str | None:
    """Why the server's TLS handshake failed for good behind `exc` (`TLS_REFUSALS`), else None."""
    for current in _exception_chain(exc):
        if isinstance(current, ssl.SSLError) and _ssl_reason(current) in TLS_REFUSALS:
            return TLS_REFUSALS[_ssl_reason(current)]
    return None


def tls_alert_after_handshake(uri: str) -> ssl.SSLError | None:
    """The TLS error of one more handshake with `uri`'s server, then one read, within one
    MLFLOW_HTTP_REQUEST_TIMEOUT, or None (none, no answer, or a proxy in between: then unknown).
    A TLS 1.3 client's handshake ends before the server has checked its certificate (RFC 8446
    section 4.4.2.4): a server that requires one sends its `certificate_required` alert and closes,
    and urllib3, which writes its request at once, mostly sees only `SSLEOFError` (EOF occurred in
    violation of protocol), seen by experiment. Reading before writing gets the alert. The server
    certificate is not verified here (`check_tls`'s request did that); a client certificate is
    sent as MLflow's requests would send it (`cert=` MLFLOW_TRACKING_CLIENT_CERT_PATH)."""
    import socket
    import time
    from urllib.parse import urlsplit

    import requests.utils

    if requests.utils.get_environ_proxies(uri):
        return None
    parts = urlsplit(uri)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client_cert = os.environ.get(CLIENT_CERT_PATH)
    timeout = http_setting("MLFLOW_HTTP_REQUEST_TIMEOUT")
    deadline = time.monotonic() + timeout
    try:
        if client_cert:
            context.load_cert_chain(client_cert)
        with socket.create_connection((parts.hostname, parts.port or 443), timeout) as raw:
            raw.settimeout(max(deadline - time.monotonic(), 0.001))
            with context.wrap_socket(raw, server_hostname=parts.hostname) as tls:
                tls.settimeout(max(deadline - time.monotonic(), 0.001))
                tls.recv(1)
    except ssl.SSLError as exc:
        return exc
    except (OSError, ValueError):
        return None
    return None


def is_transient_mlflow_error(exc: BaseException) -> bool:
    """Whether an MLflow failure may go away on its own (no answer, a 5xx), so a retry makes
    sense; False for answers that reject the request (unknown version, bad name, no permission)
    and for a server certificate that failed verification (`tls_verification_failure`)."""
    if tls_verification_failure(exc) is not None:
        return False
    return getattr(exc, "error_code", None) not in PERMANENT_ERROR_CODES


def describe_mlflow_error(uri: str, exc: BaseException) -> str:
    """One line for an MLflow failure: an unreachable server, a server answering 5xx to every
    retry, or MLflow's own message; each names the tracking URI."""
    reason = tls_verification_failure(exc)
    if reason is not None:
        return (
            f"TLS verification of {uri} failed: {reason}; give its CA in "
            f"{SERVER_CERT_PATH} (a PEM file or a directory of them)"
        )
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
            and not isinstance(current, ConnectionError | ssl.SSLError)  # its errno is OpenSSL's
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
    if tls_verification_failure(exc) is not None:
        return BadInput  # the environment's TLS settings, not the server's state
    talking = isinstance(exc, MlflowException | requests.RequestException | OSError)
    return TransientError if talking and is_transient_mlflow_error(exc) else StepError


def check_tls(uri: str) -> None:
    """For an `https://` tracking URI, one request with no retry (MLflow's own `http_request`,
    so its TLS settings, credentials and proxies, with max_retries=0) whose server certificate
    must verify: urllib3 retries a failed handshake like any error (urllib3/util/retry.py
    `Retry.increment`, the `other` branch, bounded only by `total` = MAX_RETRIES), so without this
    a wrong CA cost 1 + MAX_RETRIES handshakes and their backoff per call. A handshake the server
    refuses for good (`tls_refusal`: no client certificate, not TLS at all) is bad input too; an
    EOF in the handshake is looked into once more (`tls_alert_after_handshake`). Any other outcome
    (an answer of any status, no answer, a reset) is left to the calls that follow, which retry.

    Raises:
        BadInput: the server's certificate failed verification (`describe_mlflow_error`), or the
            server refused the handshake (`tls_refusal`).
    """
    if not uri.lower().startswith("https://"):
        return
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        http_request(
            get_default_host_creds(uri), "/health", "GET", max_retries=0, raise_on_status=False
        )
    except MlflowException as exc:
        if tls_verification_failure(exc) is not None:
            raise BadInput(describe_mlflow_error(uri, exc)) from None
        refusal = tls_refusal(exc)
        if refusal is None and any(isinstance(e, ssl.SSLEOFError) for e in _exception_chain(exc)):
            alert = tls_alert_after_handshake(uri)
            refusal = None if alert is None else tls_refusal(alert)
        if refusal is not None:
            raise BadInput(f"the TLS server at {uri} {refusal}") from None


_NO_URL_PRINT = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


@contextmanager
def mlflow_session(settings: MlflowSettings) -> Iterator[Any]:
    """Point MLflow at `settings.tracking_uri` and yield an `MlflowClient` for it.

    While inside, the HTTP retry defaults above apply (unless set in the environment), each
    answer has its deadline (`answer_deadlines`), and any
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
        with answer_deadlines():
            check_tls(settings.tracking_uri)
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


def tag_value(text: str) -> str:
    """`text` as an MLflow tag value: whole when MLflow takes it, else cut to MLflow's bound and
    ending ` ... (cut: N characters)`, so a long description (fetch's source with every station
    asked for) tags the run instead of failing it after the fit.

    The bound is MLflow's own (mlflow 3.17.2 mlflow/utils/validation.py MAX_TAG_VAL_LENGTH,
    8,000 characters; `_validate_tag_value` refuses longer values as INVALID_PARAMETER_VALUE).
    """
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    if len(text) <= MAX_TAG_VAL_LENGTH:
        return text
    said = f" ... (cut: {len(text)} characters)"
    return text[: MAX_TAG_VAL_LENGTH - len(said)] + said
