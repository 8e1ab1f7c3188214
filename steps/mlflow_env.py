"""The environment MLflow's client reads when a step talks to MLflow, checked once before anything
runs: at the steps that talk to MLflow (`steps.settings.MlflowSettings.from_args`) and at the
local doors that start them (the local runner, `submit.py --local`, the demo:
`workflows/local_runner/runner.py`). MLflow reads these variables only at its first request and
then fails with a traceback (`abc`: `ValueError: Failed to convert 'abc'`) or late with exit 75
(`MLFLOW_HTTP_REQUEST_TIMEOUT=-1`, refused by urllib3 inside the request); here a bad one is one
line `error: <NAME> is '<value>': ...`, exit 2, before any step ran.

Facts about MLflow 3.17.2 (mlflow/environment_variables.py: each variable's type; read in
mlflow/utils/rest_utils.py `http_request` and mlflow/utils/request_utils.py
`_get_request_session`/`_build_socket_options`); tests/test_mlflow_env.py holds the table below to
that module, so a variable MLflow adds is noticed.
"""

from __future__ import annotations

import importlib.util
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from steps.cli import BadInput
from steps.contract import Integer, Kind, Number

# MLflow's HTTP client, left to its defaults, retries 7 times with backoff factor 2 and waits up to
# 120 s for each answer (mlflow 3.17.2, mlflow/environment_variables.py: MLFLOW_HTTP_REQUEST_*):
# a dead server takes minutes to fail, a hanging one (accepts, never answers) about 17 minutes.
# Each call is one urllib3 Retry with total/connect/read/status all set to MAX_RETRIES
# (mlflow/utils/request_utils.py `_cached_get_request_session`), and TIMEOUT is passed to requests
# as the wait for each connect and each read (mlflow/utils/rest_utils.py `http_request`), which
# `steps.tracking.answer_deadlines` makes the wait for each whole answer too. A step
# is retried by Argo anyway, so every step that talks to MLflow (train, register, promote, deploy
# on either target) fails in a bounded time: `steps.tracking.hanging_server_bound_s` says how
# long. A value the user set in the environment wins over these; an empty one is unset.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # MLflow's default (true) has urllib3 sleep as long as a 429/503 answer's Retry-After says,
    # uncapped (urllib3 2.x urllib3/util/retry.py `Retry.sleep_for_retry` -> `get_retry_after`),
    # so `Retry-After: 86400` held a step for a day, past the bound above (breaker). Off, those
    # answers are retried with the same backoff as any other.
    "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
}


@dataclass(frozen=True)
class MlflowBoolean:
    """A boolean as MLflow reads one: `true`, `false`, `1` or `0`, any case, nothing around it
    (mlflow/environment_variables.py `_BooleanEnvironmentVariable.get`, which raises for `yes`,
    which steps.contract.Boolean would take)."""

    empty_ok: bool = False

    def parse(self, text: str) -> bool:
        """True or False; ValueError for anything else."""
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"must be {self.describe()}")
        return text.lower() in ("true", "1")

    def describe(self) -> str:
        """What MLflow takes."""
        return "true, false, 1 or 0 (any case)"


# MLflow's caps on two of them (rest_utils.py `_validate_max_retries`, `_validate_backoff_factor`:
# an MlflowException at the first request), themselves read from internal variables: the cap's
# variable and its default.
_CAPS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": ("_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT", 10),
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": ("_MLFLOW_HTTP_REQUEST_MAX_BACKOFF_FACTOR_LIMIT", 120),
}
_CAP = Integer(0, 1_000_000)
# Linux's bounds for the keep-alive socket options MLflow sets (tcp(7); include/net/tcp.h
# MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL 32767, MAX_TCP_KEEPCNT 127): setsockopt refuses others.
_KEEPALIVE_SECONDS = Integer(1, 32767)

# Every MLFLOW_HTTP_* variable MLflow 3.17.2's client reads (the deployments client's own
# MLFLOW_DEPLOYMENT_CLIENT_HTTP_REQUEST_TIMEOUT is not used by the pipeline) and the values that
# work: as MLflow parses it (int, float or MLflow's boolean), within what the request then takes.
MLFLOW_HTTP_SETTINGS: dict[str, Kind] = {
    # Both at least 0 and at most MLflow's cap (`_CAPS`, checked with the environment's cap).
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": _CAP,
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": _CAP,
    # urllib3 2.x adds up to this many seconds to a backoff, which it caps at
    # Retry.DEFAULT_BACKOFF_MAX = 120 s (urllib3/util/retry.py `get_backoff_time`): NaN waits 120 s.
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": Number(0, 120),
    # urllib3 refuses a timeout <= 0 (urllib3/util/timeout.py `_validate_timeout`); an hour for
    # one answer, as fetch's --http-timeout allows.
    "MLFLOW_HTTP_REQUEST_TIMEOUT": Integer(1, 3600),
    "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": MlflowBoolean(),
    # requests' HTTPAdapter pool: at least one connection.
    "MLFLOW_HTTP_POOL_CONNECTIONS": Integer(1, 10_000),
    "MLFLOW_HTTP_POOL_MAXSIZE": Integer(1, 10_000),
    "MLFLOW_HTTP_TCP_KEEPALIVE": MlflowBoolean(),
    "MLFLOW_HTTP_TCP_KEEPALIVE_IDLE": _KEEPALIVE_SECONDS,
    "MLFLOW_HTTP_TCP_KEEPALIVE_INTERVAL": _KEEPALIVE_SECONDS,
    "MLFLOW_HTTP_TCP_KEEPALIVE_COUNT": Integer(1, 127),
    **{cap: _CAP for cap, _ in _CAPS.values()},
    # Read by TrackingUri too (a file store is refused unless it is true): MLflow raises for `yes`.
    "MLFLOW_ALLOW_FILE_STORE": MlflowBoolean(),
}

# The booleans of the credentials MLflow's client builds for each request (mlflow/utils/
# credentials.py `get_default_host_creds`): `yes` was a ValueError traceback at train's first
# request, after fetch and validate had run (a breaker, issue 11).
MLFLOW_CREDENTIAL_SWITCHES: dict[str, Kind] = {
    "MLFLOW_TRACKING_INSECURE_TLS": MlflowBoolean(),
    "MLFLOW_TRACKING_AWS_SIGV4": MlflowBoolean(),
}
# The TLS files that credentials name, handed to requests as is (rest_utils.py `http_request`:
# `verify=server_cert_path`, a CA bundle file or a directory of certificates; `cert=
# client_cert_path`, a file): a missing one failed every request, retried, then exit 75.
SERVER_CERT_PATH = "MLFLOW_TRACKING_SERVER_CERT_PATH"
CLIENT_CERT_PATH = "MLFLOW_TRACKING_CLIENT_CERT_PATH"


class _EncryptedKey(Exception):
    """Raised by the password callback: the client key needs a password."""


def _no_password() -> bytes:
    raise _EncryptedKey


def tls_file_problem(path: str, client: bool) -> str | None:
    """What keeps the TLS file `path` from doing its job, else None (a directory of CA
    certificates is not read: OpenSSL looks a certificate up in it by its hash, at the handshake).
    The server's CA bundle (`client` False) must hold a PEM certificate; the client certificate
    (`client` True) must also hold its unencrypted private key: requests passes one path as
    `cert=` and urllib3 loads it with `load_cert_chain(path)`, no key file, no password
    (urllib3/util/ssl_.py `ssl_wrap_socket`). Parsed with Python's `ssl` (OpenSSL) as urllib3
    does; otherwise each request failed in the handshake, was retried, then exit 75.
    """
    if os.path.isdir(path):
        return None
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        # OpenSSL 3.0 (Python 3.11's `load_verify_locations`, X509_load_cert_crl_file) says
        # NO_CERTIFICATE_OR_CRL_FOUND for a file with no PEM block, and "PEM lib" (no reason
        # name) when a block cannot be read, even beside good ones: seen by experiment.
        if getattr(exc, "reason", None) == "NO_CERTIFICATE_OR_CRL_FOUND":
            return "holds no PEM certificate"
        return "holds a PEM block that cannot be read (damaged or cut short)"
    except (OSError, ValueError) as exc:
        return f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
    if not client:
        return None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(path, password=_no_password)
    except _EncryptedKey:
        return "holds an encrypted private key; requests cannot give it a password"
    except (ssl.SSLError, OSError, ValueError):
        return "holds no private key that matches its certificate (both go in this one PEM file)"
    return None


# The name of a request auth provider (mlflow/tracking/request_auth/registry.py `fetch_auth`):
# an unknown one was a warning, then every request went without its credentials.
AUTH_PROVIDER = "MLFLOW_TRACKING_AUTH"


def request_auth_providers() -> set[str]:
    """Names of the request auth providers MLflow's client finds in this Python environment
    (its own and its `mlflow.request_auth_provider` entry points; registry.py)."""
    from mlflow.tracking.request_auth.registry import _request_auth_provider_registry

    return {provider.get_name() for provider in _request_auth_provider_registry}


# Credentials MLflow's client sends in a header (rest_utils.py `http_request`): the token as it is
# (`Authorization: Bearer <token>`), so a line break or a non-latin-1 character fails in
# http.client, whose error quotes the whole header value; user name and password as base64 of
# their UTF-8 text, which any text but an undecodable byte (a surrogate escape) survives.
MLFLOW_HEADER_TOKENS = ("MLFLOW_TRACKING_TOKEN",)
MLFLOW_BASIC_AUTH = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def visible_ascii_problem(secret: str) -> str | None:
    """What keeps `secret` out of an HTTP header sent as is (anything but visible ASCII,
    33-126: a control character, a space, a non-ASCII character), else None; never quoting it."""
    for position, char in enumerate(secret, 1):
        if not "\x21" <= char <= "\x7e":
            kind = "a control character" if char < " " or char == "\x7f" else "a space"
            kind = "a non-ASCII character" if char > "\x7f" else kind
            return f"holds {kind} at position {position}; a header takes visible ASCII only"
    return None


def _cap(name: str, env: Mapping[str, str]) -> int | None:
    """MLflow's cap on `name`'s value from `env` (`_CAPS`), or None for an uncapped one (the cap
    variable itself is checked first, as a setting of its own)."""
    if name not in _CAPS:
        return None
    cap_name, default = _CAPS[name]
    raw = env.get(cap_name)
    return _CAP.parse(raw) if raw else default


def check_mlflow_environment(
    env: Mapping[str, str], where: str = "", steps_here: bool = True
) -> None:
    """Refuse what in `env` MLflow's client would fail on at its first request: a variable of
    MLFLOW_HTTP_SETTINGS or MLFLOW_CREDENTIAL_SWITCHES its kind refuses (empty counts, but for
    those with a pipeline default, HTTP_RETRY_DEFAULTS, which the steps set in its place), a value
    over MLflow's cap (the pipeline's default included), a TLS file that is not there (or a server
    certificate with MLFLOW_TRACKING_INSECURE_TLS, which MLflow refuses: rest_utils.py
    MlflowHostCreds), a token that cannot go in a header, a user name or password that is no UTF-8
    text. Values are never stripped: MLflow reads them as they are. `where` starts the line
    (`the steps' environment: `). `steps_here` is False when the steps run elsewhere (in a
    container), where this machine's files and plugins say nothing: then neither the TLS files
    nor MLFLOW_TRACKING_AUTH's provider is looked for.

    Raises:
        BadInput: one line naming the variable (a secret's value never shown).
    """

    def shown(raw: str) -> str:
        return repr(raw[:40] + ("..." if len(raw) > 40 else ""))

    values = {}
    for name, kind in {**MLFLOW_HTTP_SETTINGS, **MLFLOW_CREDENTIAL_SWITCHES}.items():
        raw = env.get(name)
        if raw is None or (raw == "" and name in HTTP_RETRY_DEFAULTS):
            continue
        try:
            values[name] = kind.parse(raw)
        except ValueError as exc:
            raise BadInput(
                f"{where}{name} is {shown(raw)}: {exc} (MLflow 3.17.2 reads it)"
            ) from None
    for name, (cap_name, _) in _CAPS.items():
        raw = env.get(name) or HTTP_RETRY_DEFAULTS.get(name)
        cap = _cap(name, env)
        if raw is not None and cap is not None and _CAP.parse(raw) > cap:
            given = "" if env.get(name) else " (the pipeline's default)"
            raise BadInput(
                f"{where}{name} is {shown(raw)}{given}: MLflow allows at most {cap} ({cap_name})"
            )
    # Empty is not unset: MLflow hands `verify=''` to requests, whose adapters.py `cert_verify`
    # takes a false value as "do not verify", so the credentials went to any server (breaker).
    if env.get(SERVER_CERT_PATH) == "":
        raise BadInput(
            f"{where}{SERVER_CERT_PATH} is empty: MLflow would not verify the server's TLS "
            "certificate at all; unset it, or name a CA bundle"
        )
    for name, directory_ok in ((SERVER_CERT_PATH, True), (CLIENT_CERT_PATH, False)):
        path = env.get(name) if steps_here else None
        if path and not (os.path.isfile(path) or (directory_ok and os.path.isdir(path))):
            what = "a file or directory" if directory_ok else "a file"
            raise BadInput(f"{where}{name} is {shown(path)}: not {what} where the step runs")
        problem = tls_file_problem(path, client=not directory_ok) if path else None
        if problem:
            raise BadInput(f"{where}{name} {path!r} {problem}")
    provider = env.get(AUTH_PROVIDER)
    if steps_here and provider and provider not in request_auth_providers():
        raise BadInput(
            f"{where}{AUTH_PROVIDER} is {shown(provider)}: no such request auth provider here "
            f"(choose one of {', '.join(sorted(request_auth_providers()))})"
        )
    if values.get("MLFLOW_TRACKING_AWS_SIGV4") and (
        steps_here and importlib.util.find_spec("requests_auth_aws_sigv4") is None
    ):
        # rest_utils.py `http_request` imports it at the first request: a traceback there.
        raise BadInput(
            f"{where}MLFLOW_TRACKING_AWS_SIGV4 is true: MLflow then signs requests with the "
            "requests-auth-aws-sigv4 package, which is not installed here"
        )
    if values.get("MLFLOW_TRACKING_INSECURE_TLS") and env.get(SERVER_CERT_PATH) is not None:
        raise BadInput(
            f"{where}MLFLOW_TRACKING_INSECURE_TLS is true and {SERVER_CERT_PATH} is set: "
            "MLflow takes one or the other"
        )
    for name in MLFLOW_HEADER_TOKENS:
        problem = visible_ascii_problem(env.get(name) or "")
        if problem:
            raise BadInput(f"{where}{name} {problem}")
    for name in MLFLOW_BASIC_AUTH:
        try:
            (env.get(name) or "").encode()
        except UnicodeEncodeError as exc:
            raise BadInput(
                f"{where}{name} holds a byte that is no UTF-8 at position {exc.start + 1}"
            ) from None
