"""The load clients the redeploy tests count failures with (tests/model_helpers.RequestLoad): a
count that could not see a failure would prove nothing, so each kind is provoked here against
real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.conftest import free_port
from tests.model_helpers import RequestLoad

BODY = {"dataframe_split": {"columns": ["temp"], "data": [[50.0]]}}


class _ClosesUnanswered:
    """A listener on 127.0.0.1 that accepts every connection and closes it at once, without
    reading or answering: what uvicorn does on shutdown to a connection whose request it has not
    read yet (https://github.com/Kludex/uvicorn/discussions/2315)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _ClosesUnanswered:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.close()


def _load(url: str, *, resend_unanswered: bool) -> RequestLoad:
    load = RequestLoad(url, BODY, clients=2, timeout=5.0, resend_unanswered=resend_unanswered)
    with load:
        deadline = time.monotonic() + 30
        while load.closed_unanswered + len(load.failed) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
    return load


def test_a_connection_closed_unanswered_counts_as_failed_unless_resending_is_asked_for() -> None:
    with _ClosesUnanswered() as server:
        url = f"http://127.0.0.1:{server.port}/invocations"
        strict = _load(url, resend_unanswered=False)
        resending = _load(url, resend_unanswered=True)

    assert len(strict.failed) >= 10 and strict.closed_unanswered == 0
    assert strict.answered == 0
    assert resending.failed == [] and resending.closed_unanswered >= 10


@pytest.mark.parametrize("resend_unanswered", [False, True])
def test_a_refused_connection_always_counts_as_failed(resend_unanswered: bool) -> None:
    load = _load(f"http://127.0.0.1:{free_port()}/invocations", resend_unanswered=resend_unanswered)

    assert len(load.failed) >= 10 and load.closed_unanswered == 0
    assert all(f.startswith("ConnectError") for f in load.failed), load.failed[:3]
