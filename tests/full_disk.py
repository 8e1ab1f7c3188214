"""Run a stage as if the disk under one directory were full, without root or a small file system.

`python -m tests.full_disk DIR STAGE ARGS...` runs `python -m steps STAGE ARGS...` with every
way the steps grow a file failing with ENOSPC for files under DIR: a write (os.write,
os.pwrite), an allocation (os.posix_fallocate), and opening for writing through `open` /
`io.open` (what Path.write_text uses). Making an empty file or a directory still works there, as
on a real full disk, where an inode and a directory entry may still be free. Files elsewhere
(MLflow's downloads, the holdout) are untouched.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import runpy
import sys
from pathlib import Path
from typing import Any

FULL = Path(os.path.realpath(sys.argv[1]))


def _under(path: str | os.PathLike[str]) -> bool:
    real = Path(os.path.realpath(path))
    return real == FULL or FULL in real.parents


def _fd_under(fd: int) -> bool:
    try:
        return _under(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return False


def _no_space(where: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))


def _by_fd(real: Any) -> Any:
    def faulty(fd: int, *args: Any) -> Any:
        if _fd_under(fd):
            raise _no_space(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd, *args)

    return faulty


_real_open = io.open


def _open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
    if isinstance(file, str | os.PathLike) and set(mode) & set("wax+") and _under(file):
        raise _no_space(file)
    return _real_open(file, mode, *args, **kwargs)


for _name in ("write", "pwrite", "posix_fallocate"):
    setattr(os, _name, _by_fd(getattr(os, _name)))
io.open = builtins.open = _open

sys.argv = ["steps", *sys.argv[2:]]
runpy.run_module("steps", run_name="__main__")
