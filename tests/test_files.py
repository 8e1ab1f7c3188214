"""steps/files.py: every output is written whole or not at all, with the same permissions, and a
full disk is one `error:` line that leaves the previous file and no temporary file behind."""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from steps.cli import StepError
from steps.files import ReservedFiles, ReservedOutputs, write_atomically, write_text_atomically
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


@pytest.mark.parametrize("failing", ["outputs.json", "version"])
def test_a_rename_that_fails_in_fill_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
):
    """The rename into place refused (EPERM: an immutable target), for the first name or a
    later one: one StepError naming the file, and no `.<name>.*.tmp` left in the directory."""
    rename = os.replace

    def refuse(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        if Path(target).name == failing:
            raise PermissionError(1, "Operation not permitted", str(target))
        rename(source, target)

    with ReservedFiles(tmp_path, ["outputs.json", "version"]) as files:
        monkeypatch.setattr(os, "replace", refuse)
        with pytest.raises(StepError, match=f"cannot write {tmp_path / failing}: "):
            files.fill({"outputs.json": "{}", "version": "3"})
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("where", ["a directory", "none"])
def test_reserved_outputs_write_their_files_or_none_and_print_one_json_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
):
    """Without a directory (a stage run without --outputs-dir) nothing is made, not even on
    entering; the names are checked and the outputs printed all the same."""
    directory = tmp_path / "o" if where == "a directory" else None
    with ReservedOutputs(directory, ["version", "moved"]) as outputs:
        reserved = sorted(p.name.split(".")[1] for p in tmp_path.rglob(".*.tmp"))
        assert reserved == (["moved", "version"] if directory else [])
        with pytest.raises(ValueError, match=r"wrote outputs \['version'\]; declared"):
            outputs.write({"version": 3})
        outputs.write({"version": 3, "moved": True})
    assert capsys.readouterr().out == '{"moved": "true", "version": "3"}\n'
    written = {p.name: p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    assert written == ({"version": "3", "moved": "true"} if directory else {})


# ---- reading what a user named: regular files only, bounded by the bytes read ------------------


def _fetch_gsod_path(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "steps", "fetch", "--path", str(path), "--years", "2024",
         "--output", str(tmp_path / "out" / "d.parquet")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip


@pytest.mark.parametrize("occupant", ["a link to /dev/zero", "a named pipe"])
def test_a_gsod_directory_entry_that_is_no_file_is_refused_not_read(occupant: str, tmp_path: Path):
    """`--path DIR` whose `x.csv` is a link to /dev/zero read without end (past the 64 MiB
    bound, which looked at the size the link's target reports: 0); a named pipe `x.csv` hung
    fetch for ever (issue 11). One line naming it, exit 1, no dataset."""
    folder = tmp_path / "gsod"
    folder.mkdir()
    if occupant == "a named pipe":
        os.mkfifo(folder / "x.csv")
    else:
        (folder / "x.csv").symlink_to("/dev/zero")
    result = _fetch_gsod_path(folder, tmp_path)
    what = "a named pipe" if occupant == "a named pipe" else "a device"
    assert_one_line_error(result.returncode, result.stderr, "x.csv", f"is {what}")
    assert not (tmp_path / "out" / "d.parquet").exists()


def test_the_gsod_file_bound_counts_the_bytes_read_not_the_size_reported(tmp_path: Path):
    """/proc files are regular and report size 0 whatever they hold: the bound of one GSOD file
    applies to what is read (a file may also grow between its stat and its read)."""
    from steps.gsod_format import TooLargeError, iter_directory, read_file

    assert Path("/proc/self/maps").stat().st_size == 0
    with pytest.raises(TooLargeError, match="holds over 16 bytes"):
        read_file(Path("/proc/self/maps"), max_file_bytes=16)
    (tmp_path / "x.csv").symlink_to("/proc/self/maps")
    with pytest.raises(TooLargeError, match=r"x\.csv: holds over 16 bytes"):
        list(iter_directory(tmp_path, max_file_bytes=16))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_the_table_reader_never_opens_a_named_pipe(suffix: str, tmp_path: Path):
    """A table path that became a named pipe after the flag was checked: one StepError at once,
    never a read that waits for a writer."""
    from steps.sources.table import read_table

    pipe = tmp_path / f"t{suffix}"
    os.mkfifo(pipe)
    with pytest.raises(StepError, match="is a named pipe, not a file"):
        read_table(pipe, str(pipe))


def test_open_regular_refuses_what_is_no_file_through_the_open_descriptor(tmp_path: Path):
    from steps.files import NotRegularFile, OverBound, open_regular, read_regular

    os.mkfifo(tmp_path / "pipe")
    for path, what in ((tmp_path / "pipe", "a named pipe"), (Path("/dev/zero"), "a device"),
                       (tmp_path, "a directory")):  # fmt: skip
        with pytest.raises(NotRegularFile, match=f"is {what}, not a file"):
            open_regular(path)
    (tmp_path / "f").write_bytes(b"12345")
    assert read_regular(tmp_path / "f", 5) == b"12345"
    with pytest.raises(OverBound, match="f: holds over 4 bytes"):
        read_regular(tmp_path / "f", 4)
