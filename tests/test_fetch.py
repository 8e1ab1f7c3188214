"""The fetch step end to end: local GSOD files, a real HTTP server on 127.0.0.1, and bad input."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from steps import fetch, gsod_format
from steps.cli import EXIT_TRANSIENT
from steps.dataset import SCHEMA, data_hash, read_dataset
from tests.conftest import assert_bad_input, assert_one_line_error, free_port
from tests.test_gsod_format import FIXTURES, broken, fixture_bytes

# A route answers with one of these behaviours per request, in order; the last one repeats.
Behaviour = tuple[str, bytes]  # ("ok" | "status:<code>" | "reset" | "stall", body)


class GsodServer:
    """A real HTTP server on 127.0.0.1 that serves GSOD-like paths with scripted failures."""

    def __init__(self) -> None:
        self.routes: dict[str, list[Behaviour]] = {}
        self.hits: dict[str, int] = {}
        self.stall_seconds = 3.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                hit = server.hits.get(self.path, 0)
                server.hits[self.path] = hit + 1
                script = server.routes.get(self.path, [("status:404", b"not found")])
                kind, body = script[min(hit, len(script) - 1)]
                if kind.startswith("status:"):
                    self.send_response(int(kind.split(":")[1]))
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                if (
                    kind == "undeclared"
                ):  # no Content-Length: the body ends when the connection does
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if kind == "ok":
                    self.wfile.write(body)
                    return
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                if kind == "stall":
                    time.sleep(server.stall_seconds)
                # "reset" (and a stall that outlived the client): drop the connection with RST.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                self.connection.close()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> GsodServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[GsodServer]:
    with GsodServer() as running:
        yield running


def year_archive(files: dict[str, bytes]) -> bytes:
    """A NCEI-style `{year}.tar.gz` holding `files` at the top level."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def fixture_csvs() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(FIXTURES.glob("*.csv"))}


RunFetch = Callable[..., tuple[int, dict[str, str], str]]


@pytest.fixture
def run_fetch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> RunFetch:
    """Call `steps.fetch.main` like the CLI; returns (exit code, outputs, stderr)."""

    def call(*args: str, output: Path | None = None) -> tuple[int, dict[str, str], str]:
        output = output or tmp_path / "out" / "dataset.parquet"
        code = fetch.main([*args, "--output", str(output), "--outputs-dir", str(tmp_path / "o")])
        captured = capsys.readouterr()
        lines = captured.out.strip().splitlines()
        return code, (json.loads(lines[-1]) if code == 0 else {}), captured.err

    return call


def test_local_directory_writes_dataset_outputs_and_metadata(
    tmp_path: Path, run_fetch: RunFetch
) -> None:
    code, outputs, _ = run_fetch("--source", "gsod", "--path", str(FIXTURES))
    assert code == 0
    table, source = read_dataset(tmp_path / "out" / "dataset.parquet")
    assert table.schema.equals(SCHEMA)
    expected = gsod_format.parse_files(gsod_format.iter_directory(FIXTURES))
    assert outputs == {"row-count": "11", "data-hash": data_hash(expected)}
    assert (tmp_path / "o" / "row-count").read_text() == "11"
    assert (tmp_path / "o" / "data-hash").read_text() == data_hash(table)
    assert source["name"] == "gsod" and source["files"] == 4 and source["path"] == str(FIXTURES)
    raw = pq.read_schema(tmp_path / "out" / "dataset.parquet").metadata
    assert json.loads(raw[b"dewpoint.source"])["rows"] == 11
    # Nothing but the dataset is left next to it (scratch space is cleaned up).
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["dataset.parquet"]


def test_local_filters_apply_only_when_given(run_fetch: RunFetch) -> None:
    _, by_year, _ = run_fetch("--path", str(FIXTURES), "--years", "2024")
    _, by_station, _ = run_fetch("--path", str(FIXTURES), "--stations", "01234599999,12345099999")
    assert (by_year["row-count"], by_station["row-count"]) == ("2", "6")


def test_a_per_year_fetch_of_year_folders_reads_only_that_years_folder(
    tmp_path: Path, run_fetch: RunFetch
) -> None:
    # Argo's per-year fetch passes the whole gsod-path with `--years Y`: a broken file in another
    # year's folder fails the parse if it is read, so success proves it was skipped unread.
    tree = tmp_path / "gsod"
    for name, data in fixture_csvs().items():
        (tree / "2024").mkdir(parents=True, exist_ok=True)
        (tree / "2024" / name).write_bytes(data)
    (tree / "2023").mkdir()
    (tree / "2023" / "01234599999.csv").write_bytes(broken("truncated"))
    code, by_year, err = run_fetch("--path", str(tree), "--years", "2024")
    assert code == 0, err
    _, expected, _ = run_fetch("--path", str(FIXTURES), "--years", "2024")
    assert by_year == expected
    # Without --years every folder is read, so the broken file fails the fetch.
    code, _, err = run_fetch("--path", str(tree))
    assert code != 0 and "01234599999.csv" in err


def test_http_station_files(server: GsodServer, run_fetch: RunFetch) -> None:
    for name, data in fixture_csvs().items():
        server.routes[f"/access/2023/{name}"] = [("ok", data)]
    code, outputs, err = run_fetch(
        "--base-url", server.url, "--years", "2023", "--stations", "01234599999,99999912345"
    )
    assert code == 0, err
    assert outputs["row-count"] == "7"


@pytest.mark.parametrize("what", ["station", "archive"])
@pytest.mark.parametrize("behaviour", ["ok", "undeclared"])
def test_a_download_over_the_readers_bound_is_stopped_once_and_not_kept(
    what: str,
    behaviour: str,
    tmp_path: Path,
    server: GsodServer,
    run_fetch: RunFetch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A station file or a year's archive past the bound its reader keeps (MAX_FILE_BYTES,
    MAX_ARCHIVE_BYTES) is stopped there, with a Content-Length or without one: one error line,
    exit 1, one request (no retry brings fewer bytes), no file left (it was written whole
    first, however large)."""
    monkeypatch.setattr(gsod_format, "MAX_FILE_BYTES", 1000)
    monkeypatch.setattr(gsod_format, "MAX_ARCHIVE_BYTES", 1000)
    big = year_archive(fixture_csvs()) + bytes(2000)
    route = "/access/2023/01234599999.csv" if what == "station" else "/archive/2023.tar.gz"
    server.routes[route] = [(behaviour, big)]
    stations = ["--stations", "01234599999"] if what == "station" else []
    code, _, err = run_fetch("--base-url", server.url, "--years", "2023", *stations)
    assert_one_line_error(code, err, route, "over the bound of 1,000 bytes")
    assert server.hits[route] == 1
    assert not [p for p in tmp_path.rglob("*") if p.suffix in {".csv", ".gz"}]


def test_http_year_archive_with_500_then_200_retries(
    server: GsodServer, run_fetch: RunFetch
) -> None:
    archive = year_archive(fixture_csvs())
    server.routes["/archive/2023.tar.gz"] = [
        ("status:500", b"busy"),
        ("status:503", b""),
        ("ok", archive),
    ]
    code, outputs, err = run_fetch(
        "--base-url", server.url, "--years", "2023", "--http-retries", "3"
    )
    assert code == 0, err
    assert outputs["row-count"] == "9"
    assert server.hits["/archive/2023.tar.gz"] == 3


def test_http_connection_reset_mid_download_is_retried(
    server: GsodServer, run_fetch: RunFetch
) -> None:
    archive = year_archive(fixture_csvs())
    server.routes["/archive/2023.tar.gz"] = [("reset", archive), ("ok", archive)]
    code, outputs, err = run_fetch("--base-url", server.url, "--years", "2023")
    assert code == 0, err
    assert outputs["row-count"] == "9"
    assert server.hits["/archive/2023.tar.gz"] == 2


@pytest.mark.parametrize(
    ("behaviour", "needle"),
    [
        ("reset", "connection broken mid-download"),
        ("stall", "timed out"),
        ("status:503", "HTTP 503"),
    ],
)
def test_http_gives_up_after_retries_and_leaves_nothing(
    tmp_path: Path, server: GsodServer, run_fetch: RunFetch, behaviour: str, needle: str
) -> None:
    server.stall_seconds = 2.0
    server.routes["/archive/2023.tar.gz"] = [(behaviour, year_archive(fixture_csvs()))]
    output = tmp_path / "out" / "dataset.parquet"
    output.parent.mkdir()
    output.write_bytes(b"the previous good dataset")
    code, _, err = run_fetch(
        "--base-url", server.url, "--years", "2023", "--http-retries", "1",
        "--http-timeout", "0.5", output=output,
    )  # fmt: skip
    assert_one_line_error(  # exit 75: Argo retries the step later
        code, err, needle, "after 2 attempt(s)", "/archive/2023.tar.gz", exit_code=EXIT_TRANSIENT
    )
    assert server.hits["/archive/2023.tar.gz"] == 2
    assert output.read_bytes() == b"the previous good dataset"
    assert [p.name for p in output.parent.iterdir()] == ["dataset.parquet"]


def test_http_404_is_a_clear_error_without_retries(server: GsodServer, run_fetch: RunFetch) -> None:
    code, _, err = run_fetch(
        "--base-url", server.url, "--years", "2023", "--stations", "00000000000"
    )
    assert_one_line_error(code, err, "404", "/access/2023/00000000000.csv")
    assert server.hits["/access/2023/00000000000.csv"] == 1


def test_unreachable_base_url(tmp_path: Path, run_fetch: RunFetch) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    code, _, err = run_fetch("--base-url", closed, "--years", "2023", "--http-retries", "1")
    assert_one_line_error(code, err, "cannot connect", closed, exit_code=EXIT_TRANSIENT)
    assert not (tmp_path / "out" / "dataset.parquet").exists()


@pytest.mark.parametrize("kind", ["truncated", "wrong-header", "non-utf8", "non-numeric"])
def test_bad_file_in_a_directory_fails_the_fetch_naming_it(
    tmp_path: Path, run_fetch: RunFetch, kind: str
) -> None:
    # Policy: one bad file fails the whole fetch (see steps.gsod_format.parse_files): a broken file
    # means a broken download or archive, and the champion model keeps serving meanwhile.
    folder = tmp_path / "gsod"
    folder.mkdir()
    (folder / "A0000212345.csv").write_bytes(fixture_bytes("A0000212345.csv"))
    (folder / "01234599999.csv").write_bytes(broken(kind))
    code, _, err = run_fetch("--path", str(folder))
    assert_one_line_error(code, err, "bad GSOD file", "01234599999.csv")
    assert not (tmp_path / "out" / "dataset.parquet").exists()


def test_bad_member_in_an_archive_fails_naming_it(tmp_path: Path, run_fetch: RunFetch) -> None:
    archive = tmp_path / "2023.tar.gz"
    archive.write_bytes(year_archive({"good.csv": fixture_bytes("A0000212345.csv"),
                                      "bad.csv": broken("truncated")}))  # fmt: skip
    code, _, err = run_fetch("--path", str(archive))
    assert_one_line_error(code, err, "bad.csv")


def test_year_with_no_rows_is_an_empty_dataset_error(tmp_path: Path, run_fetch: RunFetch) -> None:
    folder = tmp_path / "2031"
    folder.mkdir()
    for station in ("01234599999", "A0000212345"):
        (folder / f"{station}.csv").write_bytes(gsod_format.GSOD_HEADER + b"\n")
    code, _, err = run_fetch("--path", str(folder))
    assert_one_line_error(code, err, "returned no rows", "files=2")


def test_station_with_every_value_missing_is_fetched_as_nulls(
    tmp_path: Path, run_fetch: RunFetch
) -> None:
    data = fixture_bytes("99999912345.csv")
    for value in (b'"  77.2"', b'"  79.9"', b'"  61.0"', b'"  60.4"', b'"  64.6"'):
        data = data.replace(value, b'"9999.9"')
    folder = tmp_path / "gsod"
    folder.mkdir()
    (folder / "99999912345.csv").write_bytes(data)
    code, outputs, _ = run_fetch("--path", str(folder))
    assert code == 0 and outputs["row-count"] == "3"
    table, _ = read_dataset(tmp_path / "out" / "dataset.parquet")
    assert table.column("temp").null_count == table.column("dewp").null_count == 3


def test_missing_path(tmp_path: Path, run_fetch: RunFetch) -> None:
    code, _, err = run_fetch("--path", str(tmp_path / "nowhere"))
    assert_bad_input(code, err, "--path", "does not exist")


def test_bad_years(run_fetch: RunFetch) -> None:
    code, _, err = run_fetch("--source", "synthetic", "--years", "last year")
    assert_bad_input(code, err, "--years", "'last year'", "a year from 1901 to this year")


def test_unknown_source_via_python_m(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "steps",
            "fetch",
            "--source",
            "ftp",
            "--output",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_bad_input(
        result.returncode,
        result.stderr,
        "--source 'ftp'",
        "one of gsod, bigquery, table, synthetic",
    )


def test_existing_dataset_survives_a_failed_fetch(tmp_path: Path, run_fetch: RunFetch) -> None:
    output = tmp_path / "out" / "dataset.parquet"
    assert run_fetch("--source", "synthetic", "--rows", "50", output=output)[0] == 0
    before = output.read_bytes()
    code, _, _ = run_fetch("--path", str(tmp_path / "nowhere"), output=output)
    assert code == 2 and output.read_bytes() == before  # bad input, refused before any read


def test_truncated_archive_is_a_clear_error(tmp_path: Path, run_fetch: RunFetch) -> None:
    archive = tmp_path / "2023.tar.gz"
    whole = year_archive({f"{i:011d}.csv": fixture_bytes("01234599999.csv") for i in range(5)})
    archive.write_bytes(whole[: len(whole) // 2])
    code, _, err = run_fetch("--path", str(archive))
    assert_one_line_error(code, err, "2023.tar.gz", "not a readable .tar.gz")


def test_base_url_without_a_scheme(run_fetch: RunFetch) -> None:
    code, _, err = run_fetch("--base-url", "ncei.example/gsod", "--years", "2023")
    assert_bad_input(code, err, "--base-url 'ncei.example/gsod'", "http(s) URL")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--stations", "725300,../../etc"], "item '725300' must be an 11-character station id"),
        (["--http-retries", "-1"], "--http-retries '-1': must be an integer from 0 to 100"),
        (["--http-timeout", "soon"], "--http-timeout 'soon': must be a number > 0"),
    ],
)
def test_bad_fetch_flags(run_fetch: RunFetch, args: list[str], needle: str) -> None:
    code, _, err = run_fetch("--years", "2023", *args)
    assert_bad_input(code, err, needle)


def test_empty_path_means_download(server: GsodServer, run_fetch: RunFetch) -> None:
    server.routes["/archive/2023.tar.gz"] = [("ok", year_archive(fixture_csvs()))]
    code, outputs, err = run_fetch("--path", "", "--base-url", server.url, "--years", "2023")
    assert code == 0, err
    assert outputs["row-count"] == "9"
