"""The local target's front: a small HTTP proxy on the serve port that forwards each request to the
model server named in a backend file, so a redeploy switches servers between two requests and no
connection is ever refused (issue 10).

`python -m steps.deploy_targets.front HOST PORT BACKEND_FILE`, started by the local target only
(no flags of its own). Deploy writes BACKEND_FILE (`{"url": ...}`, atomically); the front reads it
again whenever it changed. Every call of the model server is free of side effects (`/ping`,
`/health`, `/version`, `/invocations`), so a request whose connection to the model server failed
is sent again, to the server the file names then (for one that could not connect, nothing was
sent at all).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.datastructures import Headers

# The model server's own request size limit and its 413, said once in the served model: the front
# must not hold more of a body in memory than the server behind it would (issue 10).
from steps.files import read_json_record
from steps.served_model import MAX_REQUEST_BODY_BYTES, _too_large
from steps.serving import REQUEST_TIMEOUT_S

# Headers that belong to one connection, not to the request (RFC 9110 section 7.6.1), plus the
# ones httpx and uvicorn set themselves.
HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
        b"trailer", b"transfer-encoding", b"upgrade", b"host", b"content-length",
    }
)  # fmt: skip
# How long a request may wait for a model server to accept it (a swap that is under way), seconds.
RETRY_FOR_S = 10.0
RETRY_PAUSE_S = 0.05
# The model server answers within its own --timeout (steps/serving.py); a little more here.
UPSTREAM_TIMEOUT = httpx.Timeout(REQUEST_TIMEOUT_S + 15.0, connect=2.0)
# The number of an inherited file descriptor listening on the front's port, set only by the local
# target when the front takes the port over from a server that listens there (steps/deploy_targets/
# local.py `_switch`).
LISTEN_FD_ENV = "DEWPOINT_FRONT_LISTEN_FD"


class Front:
    """ASGI app: forward every HTTP request to the backend named in `backend_file`."""

    def __init__(self, backend_file: Path) -> None:
        self.backend_file = backend_file
        self._stamp: tuple[int, int, int] | None = None
        self._backend = ""
        self._clients: dict[str, httpx.AsyncClient] = {}

    def backend(self) -> str:
        """The backend's base URL, read again when the file changed (one stat per request)."""
        stat = os.stat(self.backend_file)
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._backend = read_json_record(self.backend_file)["url"]
            self._stamp = stamp
        return self._backend

    def _client(self, base: str) -> httpx.AsyncClient:
        """One connection pool per backend: a new backend never gets a connection of the old
        one. The pools of backends two switches back are closed."""
        if base not in self._clients:
            for stale in list(self._clients)[:-1]:
                asyncio.get_running_loop().create_task(self._clients.pop(stale).aclose())
            self._clients[base] = httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT)
        return self._clients[base]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.backend()  # fail at start-up, not on the first request
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    for client in self._clients.values():
                        await client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = await _body_within_limit(scope, receive)
        if body is None:
            await _too_large(MAX_REQUEST_BODY_BYTES, Headers(scope=scope))(scope, receive, send)
            return
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETRY_FOR_S
        while True:
            base = self.backend()
            try:
                response = await self._client(base).request(
                    scope["method"], base + target.decode("latin-1"), headers=headers,
                    content=bytes(body),
                )  # fmt: skip
                break
            except httpx.TransportError as exc:
                if loop.time() >= deadline:
                    message = f"model server {base} unreachable: {type(exc).__name__}".encode()
                    await _answer(send, 502, message)
                    return
                await asyncio.sleep(RETRY_PAUSE_S)
        out = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
        out.append((b"content-length", str(len(response.content)).encode()))
        await send({"type": "http.response.start", "status": response.status_code, "headers": out})
        await send({"type": "http.response.body", "body": response.content})


async def _body_within_limit(scope: dict[str, Any], receive: Any) -> bytearray | None:
    """The request body, or None as soon as it is known to be over MAX_REQUEST_BODY_BYTES (from
    its Content-Length, before reading any of it, or once the bytes read pass it)."""
    declared = Headers(scope=scope).get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REQUEST_BODY_BYTES:
        return None
    body = bytearray()
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > MAX_REQUEST_BODY_BYTES:
            return None
        more = message.get("more_body", False)
    return body


async def _answer(send: Any, status: int, text: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(text)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})


def main(argv: list[str] | None = None) -> None:
    """Serve the front until SIGTERM (uvicorn finishes the requests under way first).

    With LISTEN_FD_ENV set, it accepts on that inherited socket (already listening on HOST:PORT,
    a copy of an older server's: `steps.processes.take_listening_socket`) instead of binding.
    """
    import socket
    import sys

    host, port, backend_file = sys.argv[1:] if argv is None else argv
    config = uvicorn.Config(
        Front(Path(backend_file)), host=host, port=int(port), log_level="warning",
        lifespan="on", timeout_graceful_shutdown=30,
    )  # fmt: skip
    inherited = os.environ.pop(LISTEN_FD_ENV, "")
    sockets = [socket.socket(fileno=int(inherited))] if inherited else None
    uvicorn.Server(config).run(sockets=sockets)


if __name__ == "__main__":
    main()
