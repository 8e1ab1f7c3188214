"""Which source code is running: its git commit and whether the work tree had uncommitted changes.

Recorded on every training run and model version (tags below) and on the images and rendered Argo
resources, so a served model can be traced back to the code that trained it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Set in the step image from `make images` (docker/Dockerfile): the image has no .git.
ENV_COMMIT = "DEWPOINT_GIT_COMMIT"
ENV_DIRTY = "DEWPOINT_GIT_DIRTY"
# Tags on the training run and the model version.
TAG_GIT_COMMIT = "code.git_commit"
TAG_GIT_DIRTY = "code.git_dirty"
# MLflow's own run tag for the commit: its UI shows it on the run page (mlflow 3.17.2
# mlflow/utils/mlflow_tags.py MLFLOW_GIT_COMMIT; not imported: this module stays light).
MLFLOW_GIT_COMMIT_TAG = "mlflow.source.git.commit"
UNKNOWN = "unknown"
_GIT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SourceRevision:
    """A git commit (40 hex digits, or `unknown`) and whether the tree was dirty (None: unknown)."""

    commit: str = UNKNOWN
    dirty: bool | None = None

    def tags(self) -> dict[str, str]:
        """`code.git_commit` and `code.git_dirty` (`true`, `false` or `unknown`)."""
        dirty = UNKNOWN if self.dirty is None else str(self.dirty).lower()
        return {TAG_GIT_COMMIT: self.commit, TAG_GIT_DIRTY: dirty}


def source_revision(
    environ: Mapping[str, str] | None = None, source_dir: Path | None = None
) -> SourceRevision:
    """The revision of the code running now.

    Order: `DEWPOINT_GIT_COMMIT` / `DEWPOINT_GIT_DIRTY` from the environment (the images set them);
    else git, if this package is tracked in a git work tree (a checkout or an editable install:
    `git rev-parse HEAD`, and dirty when `git status --porcelain` lists anything, untracked files
    included, ignored ones not); else `unknown`. Never raises.

    Args:
        environ: the environment to read (default `os.environ`).
        source_dir: the directory holding the `steps` package (default: this package's parent).
    """
    env = os.environ if environ is None else environ
    if env.get(ENV_COMMIT):
        dirty = env.get(ENV_DIRTY, "").strip().lower()
        return SourceRevision(env[ENV_COMMIT].strip(), {"true": True, "false": False}.get(dirty))
    root = (source_dir or Path(__file__).resolve().parent.parent).resolve()
    toplevel = _git(root, "rev-parse", "--show-toplevel")
    # Only a tree that holds this very package: a wheel installed in a venv that happens to sit
    # inside some repository must not report that repository's commit.
    if toplevel is None or Path(toplevel).resolve() != root:
        return SourceRevision()
    if _git(root, "ls-files", "--error-unmatch", "steps/__init__.py") is None:
        return SourceRevision()
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain")
    if commit is None:
        return SourceRevision()
    return SourceRevision(commit, None if status is None else bool(status))


def _git(cwd: Path, *args: str) -> str | None:
    """Output of one git command in `cwd`, stripped; None if git is missing or it fails."""
    try:
        result = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def code_fingerprint(package: Path | None = None) -> str:
    """The first 16 hex digits of SHA-256 over the Python source of the `steps` package (each
    `*.py` below it, in path order, as its relative path, a NUL, its bytes and a NUL): it changes
    with any edit of the code a step runs, committed or not, released or not, and is the same in
    a checkout and in the step image built from it (which installs the same files).

    Args:
        package: the package directory; default the `steps` package this module belongs to.
    """
    root = package or Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
