"""Files written whole or not at all: write under a temporary name in the target's folder, then
rename it over the target, so a reader never sees half a file and a failure leaves the old one.
And what is at a path, in the words every error line about a path uses.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from steps.cli import StepError, one_line

# Artifacts are read by the next step, as another user under the local runner's docker backend.
ARTIFACT_MODE = 0o644


def write_atomically(
    path: Path, write: Callable[[Path], None], *, mode: int = ARTIFACT_MODE
) -> Path:
    """Call `write(tmp)` on a new temporary file beside `path`, then rename it to `path`.

    Args:
        path: the file to create or replace; its folder is created if needed.
        write: writes the whole content to the path it is given.
        mode: permission bits of the result (default 0o644; 0o600 for private state).

    Returns:
        `path`.

    Raises:
        StepError: the folder cannot be written, or the disk filled up (any OSError while
            writing or renaming), naming `path`; `path` is untouched and nothing is left behind.
        Anything else `write` raises, after removing the temporary file.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(handle)
        tmp = Path(name)
        tmp.chmod(mode)  # mkstemp makes it 0600
        write(tmp)
        tmp.replace(path)
        tmp = None
    except OSError as exc:
        raise StepError(f"cannot write {path}: {one_line(exc)}") from exc
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return path


def write_text_atomically(path: Path, text: str, *, mode: int = ARTIFACT_MODE) -> Path:
    """`write_atomically` for text (UTF-8)."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), mode=mode)


def what_is_at(path: Path) -> str | None:
    """What is at `path`, links followed: `a file`, `a directory`, `a named pipe`, `a socket` or
    `a device`; None when nothing is (a dangling link included).

    Raises:
        OSError: `path` cannot be examined (a name too long, a parent that may not be searched).
    """
    try:
        mode = Path(path).stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    return "a socket" if stat.S_ISSOCK(mode) else "a device"


def blocking_parent(path: Path) -> Path | None:
    """The nearest existing parent of `path` when it is not a directory (so nothing can ever be
    at `path`), else None."""
    for parent in Path(path).parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def path_problem(path: Path, accept: tuple[str, ...] = ("a file",), where: str = "") -> str | None:
    """None when what is at `path` is one of `accept` (`what_is_at`'s words); else what is wrong,
    to follow the path in an error line: `does not exist<where>`, with `(<parent> is not a
    directory)` when that is why, or `is a directory, not a file` (what is there, and what
    would do)."""
    what = what_is_at(path)
    if what in accept:
        return None
    if what is None:
        parent = blocking_parent(path)
        return f"does not exist{where}" + (f" ({parent} is not a directory)" if parent else "")
    wanted = " or ".join(a.removeprefix("a ") for a in accept)
    return f"is {what}, not a {wanted}"


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file at `path`, at most `max_bytes` of them.

    Opened without blocking and examined before it is read, so a named pipe (which would wait
    for a writer for ever) or a device (`/dev/zero`, which never ends) is refused, never read;
    a file longer than `max_bytes` is refused after reading one byte more than that, never
    read whole into memory.

    Raises:
        ValueError: not a regular file (`is a named pipe, not a file`), or longer than
            `max_bytes` (`is larger than N bytes`): words to follow the path in an error line.
        OSError: it cannot be opened or read.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(descriptor, "rb") as file:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            found = "a directory" if stat.S_ISDIR(mode) else what_is_at(path) or "not a file"
            raise ValueError(f"is {found}, not a file")
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"is larger than {max_bytes} bytes")
    return data
