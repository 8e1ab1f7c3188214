"""Every MLflow answer in time (steps.tracking.answer_deadlines): a server on 127.0.0.1 that
trickles its answer fails the request about MLFLOW_HTTP_REQUEST_TIMEOUT after it was sent, while a
streamed body (an artifact download) may take longer at a fair rate. The steps against such a
server: tests/test_faults.py."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import urllib3
from mlflow.exceptions import MlflowException
from mlflow.utils import request_utils
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request

from steps.tracking import STREAMED_BODY_MIN_BYTES_PER_S, answer_deadlines

TIMEOUT = 1  # MLFLOW_HTTP_REQUEST_TIMEOUT here, in seconds
SLACK = 1.5  # seconds a failed request may end after its deadline (threads, a loaded machine)


def _answer(conn: socket.socket, head: bytes, pieces: list[bytes], pause: float) -> None:
    """After each request head on `conn`, send `head`, then each of `pieces` after `pause` s."""
    data = b""
    with contextlib.suppress(OSError):
        while chunk := conn.recv(65536):
            data += chunk
            while b"\r\n\r\n" in data:
                _, data = data.split(b"\r\n\r\n", 1)
                conn.sendall(head)
                for piece in pieces:
                    time.sleep(pause)
                    conn.sendall(piece)


@contextlib.contextmanager
def _server(head: bytes, pieces: list[bytes], pause: float) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering every request so (`_answer`); yields its URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = sock.accept()
                held.append(conn)
                answer = threading.Thread(target=_answer, args=(conn, head, pieces, pause))
                answer.daemon = True
                answer.start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
        for conn in held:
            conn.close()


def _sized(length: int) -> bytes:
    """An answer's head for a JSON body of `length` bytes."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % length


# Each trickle lasts 25 x 0.2 s = 5 x TIMEOUT, for ever as far as the deadline can tell; so
# without one the request fails late (the piece after the last one never comes), not never.
ENDLESS = 25
TRICKLES = {
    "headers that never end": (b"HTTP/1.1 200 OK\r\n", [b"X"] * ENDLESS, 0.2),
    "an endless chunked body": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        [b"1\r\n \r\n"] * ENDLESS,
        0.2,
    ),
    "a body a byte at a time": (_sized(ENDLESS), [b" "] * ENDLESS, 0.2),
}
# A body that takes 3 x TIMEOUT, at twice the least rate a streamed body must keep.
_PIECE = 2 * STREAMED_BODY_MIN_BYTES_PER_S * TIMEOUT // 4
SLOW_BODY = (_sized(12 * _PIECE), [b"x" * _PIECE] * 12, TIMEOUT / 4)


@pytest.fixture
def fast_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's HTTP settings for quick tests: TIMEOUT, no retry."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", str(TIMEOUT))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def _get(url: str, stream: bool) -> int:
    """GET `url` with MLflow's own `http_request`; the body's length, read as MLflow reads it
    (whole, or streamed in 1 MB pieces as http_artifact_repo.py `_download_file` does)."""
    response = http_request(get_default_host_creds(url), "/x", "GET", stream=stream)
    if stream:
        return sum(len(piece) for piece in response.iter_content(chunk_size=1024 * 1024))
    return len(response.content)


def test_urllib3s_total_timeout_is_no_deadline_for_a_slow_body() -> None:
    """The upstream fact the workaround rests on (urllib3 2.8.0 src/urllib3/util/timeout.py,
    `Timeout`'s note): `Timeout(total=)` bounds each read, not the answer. If this fails, urllib3
    has a real deadline now and `answer_deadlines` may be replaced by it."""
    with _server(*SLOW_BODY) as url:
        start = time.monotonic()
        response = requests.get(url, timeout=urllib3.Timeout(total=TIMEOUT))
        assert len(response.content) == 12 * _PIECE
        assert time.monotonic() - start > 2 * TIMEOUT


@pytest.mark.usefixtures("fast_settings")
@pytest.mark.parametrize("trickle", sorted(TRICKLES))
@pytest.mark.parametrize("stream", [False, True], ids=["read whole", "streamed"])
def test_a_trickled_answer_fails_at_its_deadline(trickle: str, stream: bool) -> None:
    """Each trickle, read whole or streamed: a MlflowException or requests' error (a streamed
    body fails where it is read, as in MLflow's artifact download), about TIMEOUT after the
    request; not for ever."""
    with _server(*TRICKLES[trickle]) as url, answer_deadlines():
        start = time.monotonic()
        with pytest.raises((MlflowException, requests.RequestException), match="timed out"):
            _get(url, stream)
        assert time.monotonic() - start < TIMEOUT + SLACK


@pytest.mark.usefixtures("fast_settings")
def test_a_streamed_body_may_take_longer_than_the_timeout_at_a_fair_rate() -> None:
    """An artifact download (streamed) that takes 3 x TIMEOUT at twice the least rate is read
    whole; the same answer read whole (an API call) is late."""
    with _server(*SLOW_BODY) as url, answer_deadlines():
        assert _get(url, stream=True) == 12 * _PIECE
        with pytest.raises(MlflowException, match="timed out"):
            _get(url, stream=False)


@pytest.mark.usefixtures("fast_settings")
def test_answers_in_time_pass_and_the_deadlines_go_with_the_block() -> None:
    """Quick answers pass, one after another on one kept-alive connection; MLflow's sessions made
    before the block are not used inside it; after it, MLflow's adapter is its own again."""
    original = request_utils.TCPKeepAliveHTTPAdapter
    body = b'{"ok": true}'
    with _server(_sized(len(body)) + body, [], 0) as url:
        before = request_utils._get_request_session(0, 1, 1, (), True, True)
        with answer_deadlines(), answer_deadlines():  # nested: one set of deadlines
            inside = request_utils._get_request_session(0, 1, 1, (), True, True)
            assert inside is not before
            assert getattr(inside.get_adapter(url), "answers_timed", False)
            assert [_get(url, stream) for stream in (False, True, False)] == [len(body)] * 3
        assert request_utils.TCPKeepAliveHTTPAdapter is original
        after = request_utils._get_request_session(0, 1, 1, (), True, True)
        assert not getattr(after.get_adapter(url), "answers_timed", False)
