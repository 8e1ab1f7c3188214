"""TLS settings that cannot work are bad input (exit 2, one line), not an unreachable server
(exit 75, which Argo retries): a certificate file that holds no certificate (or a damaged block),
a server whose certificate does not verify against the CA given, a server that requires a client
certificate not given, an https:// URI to a plain-HTTP server. A handshake that hangs or is cut
off stays transient. Against a real HTTPS server on 127.0.0.1 with a
self-signed certificate made by the `openssl` CLI (the `cryptography` package is no declared
dependency), through the register stage's CLI."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from steps.cli import EXIT_BAD_INPUT, EXIT_TRANSIENT, BadInput
from steps.mlflow_env import CLIENT_CERT_PATH, SERVER_CERT_PATH, tls_file_problem
from steps.tracking import (
    TLS_REFUSALS,
    describe_mlflow_error,
    error_for,
    hanging_server_bound_s,
    is_transient_mlflow_error,
    tls_refusal,
    tls_verification_failure,
)
from tests.model_helpers import error_line, run_step, step_env

RUN_ID = "0123456789abcdef0123456789abcdef"
# One retry, 2 s a request: the transient cases end in seconds.
FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}


def _self_signed(where: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for IP 127.0.0.1 and its key (PEM files) in `where`."""
    cert, key = where / f"{name}.crt", where / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for IP 127.0.0.1 and its key (PEM files)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI to make a self-signed certificate")
    return _self_signed(tmp_path_factory.mktemp("tls"), "server")


@pytest.fixture(scope="module")
def client_pem(self_signed: tuple[Path, Path]) -> Path:
    """A client certificate and its key in one PEM file (as MLflow's requests takes it), from a
    CA the server does not trust."""
    cert, key = _self_signed(self_signed[0].parent, "client")
    both = cert.parent / "client.pem"
    both.write_text(cert.read_text() + key.read_text())
    return both


@dataclass
class Seen:
    """What the server saw: TCP connections (each a TLS handshake) and HTTP requests."""

    connections: int = 0
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def https_server(self_signed: tuple[Path, Path]) -> Iterator[tuple[str, Seen]]:
    """An HTTPS server on 127.0.0.1 answering every request 404 RESOURCE_DOES_NOT_EXIST."""
    yield from _serve(self_signed)


def _serve(
    self_signed: tuple[Path, Path] | None,
    client_ca: Path | None = None,
    version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> Iterator[tuple[str, Seen]]:
    """An HTTP server on 127.0.0.1 answering every request 404 RESOURCE_DOES_NOT_EXIST: HTTPS with
    `self_signed` (at most TLS `version`; requiring a client certificate of `client_ca` if given),
    plain HTTP if None. Yields its https:// URI either way."""
    seen = Seen()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.requests.append(self.path)
            body = json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no run"})
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def get_request(self):  # type: ignore[no-untyped-def]
            seen.connections += 1
            return super().get_request()

    server = Server(("127.0.0.1", 0), Handler)
    if self_signed is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self_signed)
        context.maximum_version = version
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(client_ca)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _register(uri: str, **env: str):  # type: ignore[no-untyped-def]
    return run_step(
        "register", "--run-id", RUN_ID, "--tracking-uri", uri,
        env=step_env(**{"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", **env}), timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    "name", ["MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_TRACKING_CLIENT_CERT_PATH"]
)
@pytest.mark.parametrize("content", ["not a certificate\n", "", "key"])
def test_a_certificate_file_holding_no_certificate_is_bad_input_before_any_request(
    name, content, https_server, self_signed, tmp_path
):
    """It had failed every request's handshake, each retried, then exit 75 (Argo retried)."""
    uri, seen = https_server
    bad = tmp_path / "bad.pem"
    bad.write_text(self_signed[1].read_text() if content == "key" else content)
    line = error_line(_register(uri, **{name: str(bad)}), EXIT_BAD_INPUT)
    assert f"{name} {str(bad)!r} holds no PEM certificate" in line
    assert seen.connections == 0 and seen.requests == []


def test_a_client_certificate_without_its_key_is_bad_input(https_server, self_signed):
    """requests hands urllib3 one file for certificate and key (`load_cert_chain(path)`)."""
    uri, seen = https_server
    line = error_line(
        _register(uri, MLFLOW_TRACKING_CLIENT_CERT_PATH=str(self_signed[0])), EXIT_BAD_INPUT
    )
    assert "holds no private key" in line
    assert seen.connections == 0


def test_a_server_certificate_that_does_not_verify_is_bad_input_after_one_handshake(https_server):
    """A self-signed server and no CA: MLflow's urllib3 retried the handshake, register retried
    the call, then exit 75 ("cannot reach MLflow"), which Argo retried."""
    uri, seen = https_server
    line = error_line(_register(uri), EXIT_BAD_INPUT)
    assert line.startswith(f"error: TLS verification of {uri} failed: self-signed certificate; ")
    assert "MLFLOW_TRACKING_SERVER_CERT_PATH" in line
    assert seen.connections == 1 and seen.requests == []  # no retry


def test_the_servers_ca_passes_the_tls_check(https_server, self_signed):
    """With the CA given, the requests get through (the server's 404 is what register reports)."""
    uri, seen = https_server
    done = _register(uri, MLFLOW_TRACKING_SERVER_CERT_PATH=str(self_signed[0]))
    assert "TLS" not in done.stderr and "holds no" not in done.stderr
    assert seen.requests[0] == "/health" and len(seen.requests) > 1


def test_mlflows_wrapped_verification_error_is_bad_input_not_transient(https_server):
    """What reaches the steps when a call fails verification (not only at `check_tls`): MLflow's
    MlflowException (INTERNAL_ERROR) with requests' SSLError as context, read as exit 2."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    uri, _ = https_server
    with pytest.raises(MlflowException) as caught:
        http_request(get_default_host_creds(uri), "/api/2.0/mlflow/experiments/list", "GET",
                     max_retries=0)  # fmt: skip
    assert caught.value.error_code == "INTERNAL_ERROR"
    assert tls_verification_failure(caught.value) == "self-signed certificate"
    assert not is_transient_mlflow_error(caught.value)
    assert error_for(caught.value) is BadInput
    assert describe_mlflow_error(uri, caught.value).startswith(f"TLS verification of {uri} ")


def test_the_tls_checks_request_is_in_the_hanging_server_bound():
    env = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    assert hanging_server_bound_s(env, "https://h") == hanging_server_bound_s(env, "http://h") + 10


def test_a_bundle_with_a_damaged_block_is_refused_for_what_it_is(self_signed, tmp_path):
    """A good certificate beside a damaged block (either order): OpenSSL refuses the whole file
    ("PEM lib"); it had read 'holds no PEM certificate', which sent the user to the wrong fault
    (breaker 55). A file with no block at all still reads so."""
    junk = "-----BEGIN CERTIFICATE-----\nMIIBjunkjunkjunk\n-----END CERTIFICATE-----\n"
    good = self_signed[0].read_text()
    for content in (good + junk, junk + good, good[:-40]):
        (tmp_path / "bundle.pem").write_text(content)
        for client in (False, True):
            problem = tls_file_problem(str(tmp_path / "bundle.pem"), client=client)
            assert problem == "holds a PEM block that cannot be read (damaged or cut short)"
    (tmp_path / "bundle.pem").write_text("no block\n")
    assert (
        tls_file_problem(str(tmp_path / "bundle.pem"), client=False) == "holds no PEM certificate"
    )


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=str)
def test_a_server_that_requires_a_client_certificate_none_given_is_bad_input(self_signed, version):
    """It had read 'cannot reach MLflow (no answer) ... is the server up?', exit 75, which Argo
    retried (breaker 55). At TLS 1.3 the client sees only an EOF after its handshake: check_tls
    reads the server's alert in a second handshake (`tls_alert_after_handshake`)."""
    for uri, seen in _serve(self_signed, client_ca=self_signed[0], version=version):
        done = _register(uri, **FAST, **{SERVER_CERT_PATH: str(self_signed[0])})
        line = error_line(done, EXIT_BAD_INPUT)
        assert line.startswith(f"error: the TLS server at {uri} ")
        assert CLIENT_CERT_PATH in line and "client certificate" in line
        assert seen.requests == [] and seen.connections <= 2


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=str)
def test_a_client_certificate_the_server_does_not_trust_is_bad_input(
    self_signed, client_pem, version
):
    for uri, seen in _serve(self_signed, client_ca=self_signed[0], version=version):
        env = {SERVER_CERT_PATH: str(self_signed[0]), CLIENT_CERT_PATH: str(client_pem)}
        line = error_line(_register(uri, **FAST, **env), EXIT_BAD_INPUT)
        assert line.endswith(f"{TLS_REFUSALS['TLSV1_ALERT_UNKNOWN_CA']}")
        assert CLIENT_CERT_PATH in line
        assert seen.requests == []


def test_the_client_certificate_the_server_trusts_passes_the_tls_check(self_signed, client_pem):
    for uri, seen in _serve(self_signed, client_ca=client_pem):
        env = {SERVER_CERT_PATH: str(self_signed[0]), CLIENT_CERT_PATH: str(client_pem)}
        done = _register(uri, **FAST, **env)
        assert "TLS" not in done.stderr and seen.requests[0] == "/health"


def test_an_https_uri_to_a_plain_http_server_is_bad_input(self_signed):
    """Every handshake fails (wrong version number): it had read 'no answer', exit 75."""
    for uri, seen in _serve(None):
        done = _register(uri, **FAST, **{SERVER_CERT_PATH: str(self_signed[0])})
        line = error_line(done, EXIT_BAD_INPUT)
        assert line == (
            f"error: the TLS server at {uri} does not speak TLS (a plain-HTTP server?): "
            "use http:// if so"
        )
        assert seen.requests == []  # its 400 to the handshake's bytes is no request


def test_openssl_3_2s_record_layer_failure_is_read_as_no_tls():
    """Newer OpenSSL words the plain-HTTP answer so, a reason Python 3.11 has no name for."""
    unnamed = ssl.SSLError(1, "[SSL] record layer failure (_ssl.c:1033)")
    assert tls_refusal(unnamed) == TLS_REFUSALS["WRONG_VERSION_NUMBER"]
    assert tls_refusal(ssl.SSLError(1, "[SSL] unknown thing (_ssl.c:1)")) is None


@pytest.fixture(params=["hangs", "resets", "closes"])
def cut_handshake(request: pytest.FixtureRequest) -> Iterator[str]:
    """A TCP server that reads the TLS ClientHello, then never answers, resets the connection
    (RST), or closes it (FIN, an EOF in the handshake)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn = sock.accept()[0]
            except OSError:
                continue
            held.append(conn)
            if request.param != "hangs":
                conn.recv(65536)
                if request.param == "resets":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()


def test_a_handshake_that_hangs_or_is_cut_off_stays_transient_within_the_bound(
    cut_handshake, self_signed
):
    """No setting fixes these; the server may be starting or overloaded: exit 75, Argo retries."""
    start = time.monotonic()
    done = _register(cut_handshake, **FAST, **{SERVER_CERT_PATH: str(self_signed[0])})
    error_line(done, EXIT_TRANSIENT)
    assert time.monotonic() - start <= hanging_server_bound_s(FAST, cut_handshake) + 10
