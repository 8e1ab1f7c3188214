"""TLS settings that cannot work are bad input (exit 2, one line), not an unreachable server
(exit 75, which Argo retries): a certificate file that holds no certificate, and a server whose
certificate does not verify against the CA given. Against a real HTTPS server on 127.0.0.1 with a
self-signed certificate made by the `openssl` CLI (the `cryptography` package is no declared
dependency), through the register stage's CLI."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from steps.cli import EXIT_BAD_INPUT, BadInput
from steps.tracking import (
    describe_mlflow_error,
    error_for,
    hanging_server_bound_s,
    is_transient_mlflow_error,
    tls_verification_failure,
)
from tests.model_helpers import error_line, run_step, step_env

RUN_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for IP 127.0.0.1 and its key (PEM files)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI to make a self-signed certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@dataclass
class Seen:
    """What the server saw: TCP connections (each a TLS handshake) and HTTP requests."""

    connections: int = 0
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def https_server(self_signed: tuple[Path, Path]) -> Iterator[tuple[str, Seen]]:
    """An HTTPS server on 127.0.0.1 answering every request 404 RESOURCE_DOES_NOT_EXIST."""
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

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed)
    server = Server(("127.0.0.1", 0), Handler)
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
        env=step_env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="3", **env), timeout=120,
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
