"""HTTP downloads for the sources: streamed to disk, retried with backoff on transient failures."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from steps.cli import StepError, TransientError, one_line
from steps.redaction import redact_value

# Server-side hiccups worth another try; 4xx (404 above all) are final.
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts = retries + 1; wait backoff * 2**attempt (capped) between them."""

    retries: int = 4
    timeout: float = 60.0
    backoff: float = 0.5
    max_wait: float = 8.0

    def wait(self, attempt: int) -> float:
        """Seconds to sleep after failed attempt number `attempt` (0-based)."""
        return min(self.backoff * 2**attempt, self.max_wait)


class DownloadTooLarge(StepError):
    """A download declared or sent more bytes than its bound: no retry brings fewer."""


def download(
    url: str,
    dest: Path,
    policy: RetryPolicy,
    client: httpx.Client | None = None,
    *,
    max_bytes: int,
) -> Path:
    """Stream `url` into the file `dest`, retrying timeouts, dropped connections and 5xx, and
    writing at most `max_bytes` bytes (what the reader of that file would accept at most).

    A partial file from a failed attempt is removed; a final failure raises a one-line StepError
    (404 and other 4xx at once, without retrying).

    Raises:
        DownloadTooLarge: the answer's Content-Length is over `max_bytes` (nothing is read), or
            its body goes past it (chunked or undeclared: stopped one chunk past the bound).
        StepError / TransientError: as above.
    """
    own = client is None
    client = client or httpx.Client(timeout=policy.timeout, follow_redirects=True)
    try:
        last = ""
        for attempt in range(policy.retries + 1):
            if attempt:
                time.sleep(policy.wait(attempt - 1))
            try:
                with client.stream("GET", url) as response:
                    if response.status_code == 404:
                        raise StepError(f"not found (HTTP 404): {url}")
                    if response.status_code in RETRY_STATUS:
                        last = f"HTTP {response.status_code}"
                        continue
                    if response.status_code >= 400:
                        raise StepError(f"HTTP {response.status_code} from {url}")
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > max_bytes:
                        raise _too_large(url, f"declares {int(declared):,} bytes,", max_bytes)
                    written = 0
                    with dest.open("wb") as out:
                        for chunk in response.iter_bytes(CHUNK_BYTES):
                            written += len(chunk)
                            if written > max_bytes:
                                raise _too_large(url, "goes", max_bytes)
                            out.write(chunk)
                return dest
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                # httpx quotes a piece of the URL ("Invalid port: 'Pa'"), which may be part of
                # a password whose '/', '#' or '?' was not encoded: never quote it back.
                said = re.sub(r"'[^']*'", "'***'", one_line(exc))
                raise StepError(f"bad URL {redact_value(url)!r}: {said}") from exc
            except httpx.TimeoutException as exc:
                last = f"timed out after {policy.timeout:g}s ({type(exc).__name__})"
            except httpx.ConnectError as exc:
                last = f"cannot connect ({one_line(exc)})"
            except httpx.TransportError as exc:
                # Connection reset or closed mid-body (RemoteProtocolError, ReadError).
                last = f"connection broken mid-download ({one_line(exc)})"
            dest.unlink(missing_ok=True)
        dest.unlink(missing_ok=True)
        # Timeouts, dropped connections and 5xx all the way: the server may be back later.
        raise TransientError(
            f"download failed after {policy.retries + 1} attempt(s): {url}: {last}"
        )
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    finally:
        if own:
            client.close()


def _too_large(url: str, what: str, max_bytes: int) -> DownloadTooLarge:
    """`url`'s answer `what` ("declares N bytes," or "goes") over the bound, as one line."""
    return DownloadTooLarge(
        f"{redact_value(url)}: the answer {what} over the bound of {max_bytes:,} bytes for it; "
        "not downloaded"
    )
