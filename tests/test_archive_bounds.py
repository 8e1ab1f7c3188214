"""Archives are read as streams with a size bound: a decompression bomb (a 4.7 MB .tar.gz holding
one 1 GiB member) is refused from its header, before its bytes are read, with one `error:` line;
so are too many bytes in total, a gzipped `.op` member that expands too far, and an oversized
local file."""

from __future__ import annotations

import gzip
import io
import os
import struct
import subprocess
import sys
import tarfile
import threading
import zlib
from pathlib import Path

import pytest

from steps import gsod_format
from steps.gsod_format import MAX_FILE_BYTES, TooLargeError, iter_directory, iter_tar, parse_op
from tests.conftest import assert_one_line_error
from tests.test_fetch import year_archive
from tests.test_gsod_format import fixture_bytes

REPO = Path(__file__).resolve().parent.parent
GIB = 1 << 30
MIB = 1 << 20


def zero_bomb(
    member_bytes: int, name: str = "2024/01234599999.csv", kind: bytes = tarfile.REGTYPE
) -> bytes:
    """A .tar.gz whose one member (of tar type `kind`) is `member_bytes` zero bytes: a valid
    archive (CRC and size included) that compresses ~230:1. Built by repeating one fully flushed
    deflate segment per MiB, so a 1 GiB bomb takes a second instead of compressing a GiB."""
    info = tarfile.TarInfo(name)
    info.size = member_bytes
    info.type = kind
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    chunk = bytes(MIB)
    deflate = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH)
    segment = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH) == segment
    end = bytes(2 * tarfile.BLOCKSIZE)
    last = deflate.compress(end) + deflate.flush()
    crc = zlib.crc32(header)
    for _ in range(member_bytes // MIB):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(end, crc)
    size = len(header) + member_bytes + len(end)
    body = first + segment * (member_bytes // MIB) + last
    gzip_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return gzip_header + body + struct.pack("<II", crc, size & 0xFFFFFFFF)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "2024.tar.gz"
    path.write_bytes(zero_bomb(GIB))
    return path


class CountingReader(io.RawIOBase):
    """A file that counts how many of its bytes were read."""

    def __init__(self, path: Path):
        self.handle = path.open("rb")
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.handle.readinto(buffer)
        self.read_bytes += n
        return n

    def close(self) -> None:
        self.handle.close()
        super().close()


def test_the_generated_bomb_is_a_real_one(bomb: Path):
    """4.7 MB on disk, 1 GiB once expanded, and readable to the end by tarfile (CRC checked)."""
    assert 4 * 10**6 < bomb.stat().st_size < 5 * 10**6
    with tarfile.open(bomb, "r|gz") as archive:
        (member,) = list(archive)
    assert member.size == GIB


def test_bomb_is_refused_from_its_header_before_its_bytes_are_read(bomb: Path):
    reader = CountingReader(bomb)
    with pytest.raises(TooLargeError) as info:
        list(iter_tar(reader))
    reader.close()
    message = str(info.value)
    assert f"member is {GIB:,} bytes, over the bound of {MAX_FILE_BYTES:,} bytes" in message
    assert "2024/01234599999.csv" in message
    # Refused after the first compressed blocks (the tar header), not after 4.7 MB / 1 GiB.
    assert reader.read_bytes < 256 * 1024, reader.read_bytes


def test_fetch_of_the_bomb_is_one_error_line_and_stays_small(bomb: Path, tmp_path: Path):
    """The real step, as a subprocess: one `error:` line, no dataset, and its peak RSS (measured
    for that child alone, by wait4) far below the 1 GiB it would need to read the member; before
    the bound it reached 2.2 GB."""
    out = tmp_path / "dataset.parquet"
    with (tmp_path / "stderr").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "steps", "fetch", "--source", "gsod", "--path", str(bomb),
             "--output", str(out)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    watchdog = threading.Timer(300, proc.kill)  # a regression must fail, not hang
    watchdog.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, unlike RUSAGE_CHILDREN
    finally:
        watchdog.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = (tmp_path / "stderr").read_text()
    assert_one_line_error(proc.returncode, stderr, "over the bound of", "bytes")
    assert not out.exists()
    peak_bytes = usage.ru_maxrss * 1024  # Linux reports kilobytes
    assert peak_bytes < 512 * MIB, f"peak RSS {peak_bytes:,} bytes"


def test_members_are_bounded_in_total_too():
    csv = fixture_bytes("01234599999.csv")
    archive = year_archive({f"2024/{i:011d}.csv": csv for i in range(4)})
    assert len(list(iter_tar(io.BytesIO(archive), max_archive_bytes=4 * len(csv)))) == 4
    with pytest.raises(TooLargeError, match=r"add up to over .* bytes .* at 2024/00000000003\.csv"):
        list(iter_tar(io.BytesIO(archive), max_archive_bytes=4 * len(csv) - 1))


def test_a_member_that_is_not_gsod_is_bounded_as_well():
    """Skipping a member still means decompressing it: an oversized one is refused too."""
    with pytest.raises(TooLargeError, match=r"README: member is 2,048 bytes"):
        list(iter_tar(io.BytesIO(year_archive({"README": bytes(2048)})), max_file_bytes=1024))


def test_gzipped_op_file_is_decompressed_within_the_bound():
    """A small `.op.gz` that expands past the bound stops decompressing there."""
    packed = gzip.compress(b"STN--- WBAN   YEARMODA" + bytes(64 * 1024))
    assert len(packed) < 1024
    with pytest.raises(TooLargeError, match=r"x\.op\.gz: expands to over 16,384 bytes"):
        parse_op(packed, "x.op.gz", max_file_bytes=16 * 1024)
    with pytest.raises(gsod_format.GsodFormatError, match="broken gzip data"):
        parse_op(packed[: len(packed) // 2], "x.op.gz")


def test_an_oversized_local_file_is_refused_before_it_is_read(tmp_path: Path):
    (tmp_path / "ok.csv").write_bytes(fixture_bytes("01234599999.csv"))
    (tmp_path / "huge.csv").write_bytes(b"x" * 4096)
    with pytest.raises(TooLargeError, match=r"huge\.csv: file is 4,096 bytes"):
        list(iter_directory(tmp_path, max_file_bytes=2048))


@pytest.mark.parametrize(
    "kind",
    [tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE],
    ids=["GNU long name", "GNU long link", "pax header", "pax global header"],
)
def test_a_huge_tar_metadata_record_is_refused_before_it_is_read(kind: bytes, tmp_path: Path):
    """tarfile reads a long-name or pax record whole while looking for the next member: 512 MiB
    of one took fetch to 1.1 GB before any member bound applied. Refused from its header now."""
    path = tmp_path / "2024.tar.gz"
    path.write_bytes(zero_bomb(512 * MIB, "././@LongLink", kind))
    reader = CountingReader(path)
    with pytest.raises(TooLargeError, match=r"tar metadata record is 536,870,912 bytes"):
        list(iter_tar(reader))
    reader.close()
    assert reader.read_bytes < 256 * 1024, reader.read_bytes


def test_a_sparse_member_is_refused():
    archive = zero_bomb(MIB, "2024/01234599999.csv", tarfile.GNUTYPE_SPARSE)
    with pytest.raises(gsod_format.GsodFormatError, match=r"sparse tar member"):
        list(iter_tar(io.BytesIO(archive)))


def test_long_names_within_the_bound_are_read():
    csv = fixture_bytes("01234599999.csv")
    name = "2024/" + "d" * 200 + "/01234599999.csv"  # over 100 characters: a GNU long name
    (item,) = list(iter_tar(io.BytesIO(year_archive({name: csv}))))
    assert item == (name, csv)
