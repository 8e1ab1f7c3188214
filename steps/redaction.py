"""Credentials never leave in clear: the one redaction of URLs' `user:password@` and of signed or
token-bearing query strings, applied wherever the pipeline writes text others read (error lines,
the dataset's Parquet metadata, MLflow tags and inputs, run records, the report).

Signed URLs, by the names their query parameters carry the secret in: AWS SigV4
(`X-Amz-Signature`, `X-Amz-Credential`, `X-Amz-Security-Token`), Google Cloud Storage V4
(`X-Goog-Signature`, `X-Goog-Credential`), Azure SAS (`sig`), and the usual `token=`,
`access_token=`, `key=`, `password=`, `sslpassword=`, `secret=`, in the query, the fragment or as
a path parameter (`/db;token=...`); also a connection string carried in a value (SQLAlchemy's
`mssql+pyodbc:///?odbc_connect=...PWD%3D...`). The parameter stays, its value is masked, so a
reader still sees which table or server was meant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

MASK = "***"
_ENCODE = "a '/', '#', '?' or '@' in a password must be percent-encoded"
# A query parameter whose name, lower-cased, holds one of the long words anywhere (`sslpassword`,
# `client_secret`, `X-Amz-Security-Token`), or a short one as a word or at its end (`sig`,
# `x-key-id`, `sslkey`, `oauth`; not inside a word: `X-Amz-SignedHeaders` names no secret), or
# is `odbc_connect` (SQLAlchemy's whole ODBC connection string, password included:
# sqlalchemy/connectors/pyodbc.py, SQLAlchemy 2.1.9), carries a credential.
_SECRET_NAME = re.compile(
    r"password|passwd|pwd|secret|token|signature|credential|apikey|api-key|api_key|authorization"
    r"|(^|[-_.])(sig|key|auth)([-_.]|$)|(sig|key|auth)$|^odbc_connect$"
)
# A value holding a connection string with a password (`PWD=`, `Password=`), however encoded.
_PASSWORD_IN_VALUE = re.compile(r"(pwd|passwd|password)\s*=", re.IGNORECASE)
# A URL inside free text: scheme://... up to white space or a quote/bracket around it.
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()\[\]{}`]+")
# `user:password@` left after that: a URI typed without its scheme (`alice:pw@host:5000`, which
# MLflow quotes back in its "unsupported URI" error) or with an unencoded '/' in the password,
# which ends a URL's authority early. A secret starting with '/' is a path: `models:/name@alias`.
# It starts where a word does, and never right after the `://***@` of a login `redact_url` masked:
# what follows there is the host (`http://u:pw@h:5000/path@x` lost `h:5000/path` to it).
_USERINFO_IN_TEXT = re.compile(
    r"(?<![^\s'\"<>()\[\]{}`@/:])(?<!://\*\*\*@)"
    r"[^\s'\"<>()\[\]{}`@/:]+:[^\s'\"<>()\[\]{}`@/][^\s'\"<>@]*@"
)


def is_secret_parameter(name: str) -> bool:
    """True if a query parameter called `name` carries a credential (see the module docstring)."""
    return bool(_SECRET_NAME.search(unquote(name).lower()))


def _holds_password(value: str) -> bool:
    """True if `value`, percent-decoded (as often as it is encoded), holds `pwd=`/`password=`."""
    for _ in range(4):
        if _PASSWORD_IN_VALUE.search(value):
            return True
        decoded = unquote(value)
        if decoded == value:
            return False
        value = decoded
    return True  # encoded deeper than anyone writes by hand: take it for a secret


def url_port(parts: SplitResult) -> int | None:
    """`parts.port` (None if the URL names none), else a ValueError that never quotes the URL:
    for a port that is not a number, outside 1-65535 (0 included: no server listens there), or
    empty (`http://h:/`, which urllib reads as no port).

    urllib's own error quotes what it took for the port (`Port could not be cast to integer
    value as 'hunter2'`), and a password with an unencoded '/', '#' or '?' ends the authority
    early, so what it quotes is part of the password.
    """
    try:
        port = parts.port
    except ValueError as exc:
        if str(exc) == "Port out of range 0-65535":  # urllib's, quoting nothing
            raise ValueError("its port is not from 1 to 65535") from None
        raise ValueError(f"its port is not a number ({_ENCODE})") from None
    if port == 0 or (port is None and parts.netloc.rpartition("@")[2].endswith(":")):
        raise ValueError("its port is not from 1 to 65535")
    return port


def split_url(text: str) -> SplitResult:
    """`urlsplit(text)` with its port checked (`url_port`); ValueError that never quotes the
    URL for a broken IPv6 host, a port that is not a number, or a login whose password holds an
    unencoded '/', '#' or '?' (which ends the authority early: `http://u:/pw@h` splits as host
    `u`, an empty port and the path `/pw@h`)."""
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ValueError("it is not a URL urllib can split (a broken [IPv6] host?)") from None
    url_port(parts)
    if _split_password(parts):
        raise ValueError(
            f"it reads as a login cut short by its password ({_ENCODE}; an '@' in the path of "
            "a URL with a port as %40)"
        )
    return parts


def split_http_url(text: str) -> SplitResult:
    """`split_url(text)` of an http(s) URL that names a host; ValueError that never quotes the
    URL for another scheme or no host (`http:///x`), besides what `split_url` refuses."""
    parts = split_url(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("it is not an http(s) URL")
    if not parts.hostname:
        raise ValueError("it names no host")
    return parts


def _split_password(parts: SplitResult) -> bool:
    """Whether `parts` look like a `user:password@` cut short: a ':' in the authority, no '@'
    in it, and an '@' after it."""
    rest = parts.path + parts.query + parts.fragment
    return ":" in parts.netloc and "@" not in parts.netloc and "@" in rest


def redact_url(url: str) -> str:
    """`url` with its user info and the values of secret query parameters replaced by `***`.

    `https://u:pw@host/t.csv?X-Amz-Signature=ab&v=1` -> `https://***@host/t.csv?X-Amz-Signature=***&v=1`.
    Anything that is not a URL with a scheme comes back unchanged, and the scheme as written
    (`HTTP://`; urlsplit lower-cases it), so an error line quotes what the user gave.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a broken IPv6 host: mask by pattern instead
        return _redact_pieces(url)
    if not parts.scheme or not (parts.netloc or parts.query or parts.fragment or ";" in parts.path):
        return url
    netloc = parts.netloc
    if "@" in netloc and _port_is_valid(parts):
        netloc = MASK + "@" + netloc.rpartition("@")[2]
    elif "@" in netloc or _split_password(parts):
        # `u:S3C/pw@h`: a '/', '#' or '?' in the password ended the authority early, so the
        # password's tail and the host are in the path: mask up to the last '@' (and the
        # secret parameters after it: `http://u:pw@h:0/?token=...`).
        return _redact_pieces(f"{url[: len(parts.scheme)]}://{MASK}@{url.rpartition('@')[2]}")
    rebuilt = urlunsplit(
        (
            parts.scheme,
            netloc,
            _redact_parameters(parts.path, _PATH_PARAMETER),
            _redact_parameters(parts.query),
            _redact_parameters(parts.fragment),
        )
    )
    # urlunsplit drops an empty authority's `//` for a scheme urllib does not know to have one
    # (`sqlite:///x.db` came back `sqlite:/x.db`, `sqlite:////tmp/x.db?mode=ro` as
    # `sqlite://tmp/x.db?mode=ro`, another file): put back the slashes as they were given.
    after = len(parts.scheme) + 1
    lost = _leading_slashes(url[after:]) - _leading_slashes(rebuilt[after:])
    rebuilt = rebuilt[:after] + "/" * max(lost, 0) + rebuilt[after:]
    # The scheme as given (schemes are case-insensitive, RFC 3986 3.1; urlsplit lower-cases it).
    return url[: len(parts.scheme)] + rebuilt[len(parts.scheme) :]


def _port_is_valid(parts: SplitResult) -> bool:
    """Whether the authority of `parts` ends in a port `url_port` takes (or none): then it is the
    host after its last '@', else an unencoded '/', '#' or '?' in the password cut it short."""
    try:
        url_port(parts)
    except ValueError:
        return False
    return True


def _leading_slashes(text: str) -> int:
    return len(text) - len(text.lstrip("/"))


def redact(text: str) -> str:
    """`text` with every URL in it passed through `redact_url` (for messages and free text), and
    any `user:password@` still left masked as `***@`."""
    text = _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)
    return _USERINFO_IN_TEXT.sub(MASK + "@", text)


def redact_value(value: str) -> str:
    """`value` (a whole flag or setting value that may be a URL) passed through `redact`, and if
    it has `://` and an `@`, everything between them masked: the login of a malformed URL (a space
    in the password) that the patterns of `redact` do not see."""
    text = redact(value)
    scheme, sep, rest = text.partition("://")
    if sep and "@" in rest:
        text = f"{scheme}{sep}{MASK}@{rest.rpartition('@')[2]}"
    return text


def redact_values(data: Any) -> Any:
    """A copy of `data` (JSON-like: dicts, lists, strings) with `redact` applied to every string."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, Mapping):
        return {key: redact_values(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [redact_values(value) for value in data]
    return data


# A `name=value` parameter: in a query or fragment after `&` (or `;`, which some servers take
# for `&`), the value running to the next separator ('/' is data there, RFC 3986 3.4:
# `token=ab/cd` showed `/cd`); in a path after `;` (RFC 3986 3.3 path parameters:
# `/db;token=...`, as JDBC-style and Databricks-style URLs carry credentials), the value ending
# at the next separator or `/`.
_PARAMETER = re.compile(r"(^|[;&])([^;&=]+)=([^;&]*)")
_PATH_PARAMETER = re.compile(r"(^|[;&])([^;&=/]+)=([^;&/]*)")


def _redact_parameters(text: str, parameter: re.Pattern[str] = _PARAMETER) -> str:
    """`text` (a URL's query or fragment; its path with `_PATH_PARAMETER`) with the value of each
    secret parameter (`is_secret_parameter`) or of one holding a password (`_holds_password`)
    masked."""
    return parameter.sub(
        lambda m: (
            f"{m[1]}{m[2]}={MASK}" if is_secret_parameter(m[2]) or _holds_password(m[3]) else m[0]
        ),
        text,
    )


def _redact_pieces(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:  # the login ends at the authority's last '@', as urllib reads it
        rest = MASK + "@" + rest[authority.rindex("@") + 1 :]
    rest, fsep, fragment = rest.partition("#")
    base, qsep, query = rest.partition("?")
    return (
        scheme
        + sep
        + _redact_parameters(base, _PATH_PARAMETER)
        + qsep
        + _redact_parameters(query)
        + fsep
        + _redact_parameters(fragment)
    )
