"""Files written whole or not at all: write under a temporary name in the target's folder, then
rename it over the target, so a reader never sees half a file and a failure leaves the old one.
And what is at a path, in the words every error line about a path uses; and the one way a
step reads a file a user named: a regular file only, never more bytes than its bound.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

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


# Room given to each reserved file (`ReservedFiles`): an output parameter is a version, a run
# id, a model URI or a one-line reason, far shorter.
RESERVED_BYTES = 4096


class ReservedFiles:
    """Files given their room before a stage changes anything (registers a version, moves an
    alias, serves or stops a model) and their text after, so a full disk fails the stage before
    the change, never after it (promote moved `champion`, then could not write its outputs).

    Entering makes, for each name, a temporary file in `directory` (created if needed; None:
    no files at all, for a stage run without `--outputs-dir`) holding
    `RESERVED_BYTES` allocated with posix_fallocate(3) (glibc writes zeros where the file system
    has no fallocate); `fill` writes each text at its start, cuts the rest and renames every
    file to its name: text that fits is written into blocks the file already has, and a rename
    within one directory needs none. Leaving the `with` block without `fill` removes the
    temporary files and the directories it created, leaving the old files as they were.

    Raises (entering, `fill`):
        StepError: a file cannot be made or written (no space, a quota, a read-only file
            system), naming it; nothing is left behind.
    """

    def __init__(
        self, directory: Path | None, names: Sequence[str], mode: int = ARTIFACT_MODE
    ) -> None:
        self.directory = None if directory is None else Path(directory)
        self.names = tuple(names)
        self.mode = mode
        self._made: dict[str, tuple[int, Path]] = {}  # name -> (descriptor, temporary path)
        self._created: list[Path] = []  # directories made here, deepest last

    def __enter__(self) -> Self:
        if self.directory is None:
            return self
        target = self.directory
        try:
            missing = [p for p in (self.directory, *self.directory.parents) if not p.exists()]
            for folder in reversed(missing):
                target = folder
                folder.mkdir()
                self._created.append(folder)
            for name in self.names:
                target = self.directory / name
                handle, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=target.parent)
                self._made[name] = (handle, Path(tmp))
                os.fchmod(handle, self.mode)  # mkstemp makes it 0600
                os.posix_fallocate(handle, 0, RESERVED_BYTES)
        except OSError as exc:
            self._discard()
            raise StepError(f"cannot write {target}: {one_line(exc)}") from exc
        return self

    def fill(self, texts: Mapping[str, str]) -> None:
        """Write `texts` (UTF-8), one per reserved name, and rename them into place (no
        directory: only the names are checked).

        Raises:
            ValueError: the names of `texts` are not the reserved ones (a bug: the Argo template
                reads each output parameter file).
        """
        if sorted(texts) != sorted(self.names):
            raise ValueError(f"wrote outputs {sorted(texts)}; declared {sorted(self.names)}")
        if self.directory is None:
            return
        target = self.directory
        try:
            for name, text in texts.items():
                target = self.directory / name
                handle, _ = self._made[name]
                data = text.encode("utf-8")
                written = 0
                while written < len(data):
                    written += os.pwrite(handle, data[written:], written)
                os.ftruncate(handle, len(data))
            for name in self.names:
                target = self.directory / name
                handle, tmp = self._made.pop(name)
                try:
                    os.close(handle)
                    tmp.replace(target)
                except OSError:
                    tmp.unlink(missing_ok=True)  # out of `_made`: `_discard` no longer sees it
                    raise
        except OSError as exc:
            raise StepError(f"cannot write {target}: {one_line(exc)}") from exc
        self._created.clear()  # they hold the files now

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._discard()

    def _discard(self) -> None:
        """Close and remove the temporary files left, then the directories made (if empty)."""
        for handle, tmp in self._made.values():
            os.close(handle)
            tmp.unlink(missing_ok=True)
        self._made.clear()
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:
                break  # something else was put there meanwhile: leave it
        self._created.clear()


class ReservedOutputs(ReservedFiles):
    """A stage's output parameter files (`ReservedFiles`), written by `write`."""

    def write(self, outputs: Mapping[str, Any]) -> None:
        """Write each output parameter to its reserved file, then print all of them as one JSON
        line. Booleans are written as `true`/`false` so Argo `when` expressions can compare them.

        Raises:
            ValueError: `outputs` are not exactly the reserved names (`fill`), or one has white
                space at either end (a bug: the next stage takes a value as given, `steps.
                contract.parse_as_given`). None ends in a newline: Argo would drop one (v4.1.2
                workflow/executor/executor.go SaveParameters), not two.
        """
        rendered = {k: _render(v) for k, v in outputs.items()}
        padded = sorted(k for k, v in rendered.items() if v != v.strip())
        if padded:
            raise ValueError(f"outputs {padded} have white space at either end")
        self.fill(rendered)
        print(json.dumps(rendered, sort_keys=True))


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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
    return what_mode(mode)


def blocking_parent(path: Path) -> Path | None:
    """The nearest existing parent of `path` when it is not a directory (so nothing can ever be
    at `path`), else None."""
    for parent in Path(path).parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def write_problem(directory: Path) -> str | None:
    """None when a file can be made in `directory` (or, while it does not exist yet, in the
    nearest existing directory above it, where it would be made); else why not, to follow the
    path in an error line: `cannot be written: <reason>`.

    Tried for real, with a temporary file made and removed at once: permission bits say nothing
    for root, whom only a read-only file system or a place like /proc refuses (os.access(2)
    answers yes for root on /proc/self, where no file can be made). A path whose nearest
    existing parent is no directory is left to `blocking_parent`'s callers: None.
    """
    existing = next((p for p in (Path(directory), *Path(directory).parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        return None
    try:
        handle, name = tempfile.mkstemp(prefix=".write-check-", dir=existing)
    except OSError as exc:
        where = "" if existing == Path(directory) else f" (in {existing}, where it would be made)"
        return f"cannot be written{where}: no file can be made there ({exc.strerror or exc})"
    os.close(handle)
    os.unlink(name)
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


class NotRegularFile(StepError):
    """A path a step was to read holds no regular file (a named pipe, a device, a socket, a
    link to one): reading it would hang (a pipe) or never end (`/dev/zero`)."""


class OverBound(StepError):
    """A file holds more bytes than its bound allows."""


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading in binary, once it is known to be a regular file (links
    followed).

    The file is opened without blocking (O_NONBLOCK) and examined through the open descriptor
    (`fstat`): a named pipe opened normally blocks until a writer comes, and a path checked
    first and opened after could be swapped in between.

    Raises:
        NotRegularFile: what is there is no regular file, naming what it is.
        OSError: the path cannot be opened (missing, no permission).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(f"{path} is {what_mode(mode)}, not a file: only files are read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(handle: BinaryIO, limit: int, name: str) -> bytes:
    """Every byte of `handle`, refusing more than `limit`: the bytes actually read count, not a
    size looked up before (a file that grows, or `/proc`-like files that report size 0).

    Raises:
        OverBound: more than `limit` bytes, naming `name` and the bound; no more is read.
    """
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise OverBound(f"{name}: holds over {limit:,} bytes, the bound for it; not read further")
    return data


def read_regular(path: Path, limit: int, name: str | None = None) -> bytes:
    """The bytes of the regular file at `path` (`open_regular`), at most `limit` of them
    (`read_bounded`; `name` names it in the error, default the path)."""
    with open_regular(path) as handle:
        return read_bounded(handle, limit, name or str(path))


# A JSON record the steps keep (deploy's state, its backend, a model copy's record) is a few
# hundred bytes: more is no record of ours.
JSON_RECORD_MAX_BYTES = 1024 * 1024


def read_json_record(path: Path, limit: int = JSON_RECORD_MAX_BYTES) -> Any:
    """The JSON value in the regular file `path` (`read_regular`: never a named pipe or a device,
    at most `limit` bytes).

    Raises:
        NotRegularFile, OverBound: as `read_regular`.
        OSError: it cannot be opened; ValueError: it is no JSON (UTF-8).
    """
    return json.loads(read_regular(path, limit))


def what_mode(mode: int) -> str:
    """`what_is_at`'s words for a file mode (`os.stat(...).st_mode`)."""
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    return "a socket" if stat.S_ISSOCK(mode) else "a device"
