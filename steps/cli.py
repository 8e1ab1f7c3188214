"""Shared CLI plumbing for the steps: exit codes, env fallbacks, output parameters, one-line errors.

Exit codes (docs/steps.md, "Exit codes"; the Argo retry strategy in workflows/pipeline.py reads
them): 0 done; 1 failed for a reason a retry will not change; 2 bad input (a flag, environment
variable or workflow parameter the step cannot use; nothing was read or written); 75 transient (a
service was unreachable, timed out or answered 5xx: a retry may succeed).
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Callable

from steps.redaction import redact

# The detail an error line quotes from an exception or a server's answer, in characters.
ERROR_DETAIL_CHARS = 300

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2  # argparse's own code for a usage error
# EX_TEMPFAIL in BSD sysexits.h: a temporary failure; "the user is invited to retry".
EXIT_TRANSIENT = 75

# Write errors that mean "no room" rather than "no right": a full disk, a quota, RLIMIT_FSIZE.
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Write errors of a local file (no room, or no right to write there): a retry will not pass.
CANNOT_WRITE_ERRNOS = frozenset({*_NO_SPACE, errno.EROFS, errno.EACCES, errno.EPERM})


class StepError(Exception):
    """A failure the user can act on. Its message is printed as one line; the step exits 1."""

    exit_code = EXIT_FAILED


class BadInput(StepError):
    """A flag, environment variable or workflow parameter has a value the step cannot use."""

    exit_code = EXIT_BAD_INPUT


class TransientError(StepError):
    """A service was unreachable, timed out or answered 5xx: the same call may succeed later."""

    exit_code = EXIT_TRANSIENT


def one_line(error: BaseException | str, limit: int | None = ERROR_DETAIL_CHARS) -> str:
    """The text of `error` (an exception or a string) for an error line: white space collapsed to
    single spaces, control characters left escaped (`\x1b`), credentials in URLs redacted
    (`steps.redaction`), cut at `limit` characters
    with `...` (None: not cut). An exception without text gives its type name.
    """
    text = _CONTROL.sub(_escaped, redact(" ".join(str(error).split())))
    if not text and isinstance(error, BaseException):
        text = type(error).__name__
    if limit is None or len(text) <= limit:
        return text
    return text[: limit - 3] + "..."


# What is left to escape once white space is collapsed: C0 controls (ESC), DEL and C1 controls,
# which a terminal would act on rather than show.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escaped(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group(0)):02x}"


def env_default(name: str, default: str | None = None) -> str | None:
    """Default for a flag: the environment variable `name` if set and non-empty, else `default`."""
    value = os.environ.get(name)
    return value if value else default


def run(main: Callable[[], int | None]) -> int:
    """Run a step body; print a failure as `error: <message>` on one stderr line (credentials
    redacted).

    Returns the step's exit code: the error's `exit_code` for a StepError, EXIT_TRANSIENT for a
    connection that failed or timed out, EXIT_FAILED for a file that could not be read or written
    (a full disk included).
    """
    try:
        return main() or EXIT_OK
    except StepError as exc:
        return _fail(str(exc), exc.exit_code)
    except (ConnectionError, TimeoutError) as exc:
        return _fail(f"{type(exc).__name__}: {exc}", EXIT_TRANSIENT)
    except OSError as exc:
        # Raised by a write to a full disk, a read-only or missing directory, a file too large
        # for RLIMIT_FSIZE: name the file and the reason, never a traceback.
        return _fail(describe_os_error(exc), EXIT_FAILED)
    except RecursionError:
        # An input nested deeper than a recursive parser can follow (a YAML file of 5,000 '[',
        # an expression of 3,000 '('): bad input, never a traceback of thousands of lines.
        return _fail("the input is nested too deeply to read", EXIT_BAD_INPUT)


def describe_os_error(exc: OSError) -> str:
    """`no space left to write <file>: <reason>` (a full disk, a quota, RLIMIT_FSIZE), else
    `cannot read or write <file>: <reason>`."""
    where = f" {exc.filename}" if exc.filename else ""
    what = "no space left to write" if exc.errno in _NO_SPACE else "cannot read or write"
    return f"{what}{where}: {exc.strerror or exc}"


def _fail(message: str, code: int) -> int:
    print(f"error: {one_line(message, limit=None)}", file=sys.stderr)
    return code
