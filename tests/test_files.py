"""steps/files.py: every output is written whole or not at all, with the same permissions, and a
full disk is one `error:` line that leaves the previous file and no temporary file behind."""

from __future__ import annotations

import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from steps.cli import StepError
from steps.files import write_atomically, write_text_atomically
from tests.conftest import assert_one_line_error

REPO = Path(__file__).resolve().parent.parent


def test_write_is_whole_with_artifact_permissions_and_nothing_left_over(tmp_path: Path):
    target = tmp_path / "new" / "dir" / "report.json"
    assert write_text_atomically(target, '{"ok": true}\n') == target
    assert target.read_text() == '{"ok": true}\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]
    write_text_atomically(target, "private\n", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    target = tmp_path / "dataset.parquet"
    target.write_text("previous")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        write_atomically(target, half_then_fail)
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["dataset.parquet"]


def test_a_directory_in_the_way_is_a_step_error_naming_it(tmp_path: Path):
    (tmp_path / "out").mkdir()
    with pytest.raises(StepError, match=rf"cannot write {tmp_path / 'out'}: .*directory"):
        write_text_atomically(tmp_path / "out", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize(
    ("stage", "args", "written"),
    [
        (
            "fetch",
            ["--source", "synthetic", "--output", "{out}/dataset.parquet"],
            "dataset.parquet",
        ),
        ("render", ["--render", "{out}"], "workflow-template.yaml"),
    ],
)
def test_a_full_disk_is_one_error_line_and_leaves_the_previous_output(
    tmp_path: Path, stage: str, args: list[str], written: str
):
    """A real step (and submit --render) under a 4 KiB file-size limit, the way a full disk
    fails a write: one `error:` line naming the file, the previous output intact, no temp file."""
    out = tmp_path / "out"
    out.mkdir()
    (out / written).write_text("previous")
    command = (
        [sys.executable, "-m", "steps", "fetch"]
        if stage == "fetch"
        else [
            sys.executable,
            str(REPO / "workflows" / "submit.py"),
        ]
    )
    proc = subprocess.run(
        [*command, *(a.format(out=out) for a in args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        preexec_fn=_limit_file_size(4096),
        check=False,
        timeout=300,
    )
    assert_one_line_error(proc.returncode, proc.stderr, "cannot write", str(out))
    assert (out / written).read_text() == "previous"
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
