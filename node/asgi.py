"""ASGI plumbing shared by every app a node serves (client and peer API,
Grenache PeerRPC, the standalone registry) and the hypercorn config they run
under.

Theory of operation
-------------------
``serve_asgi`` answers the lifespan protocol and turns each HTTP request into
one ``Response`` from the app's ``respond``. ``_read_body`` reads a request
body up to a limit and raises ``BadRequest`` (413) beyond it, so no app ever
holds more than its limit in memory. ``BadRequest`` is the one error type of
every HTTP surface: status, short error code, human detail.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from hypercorn.config import Config

JSON = b"application/json"


class BadRequest(Exception):
    """A client error: HTTP status, a short error code and a human detail."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


class Request:
    def __init__(self, scope: dict, body: bytes) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.body = body
        # blank values kept: `timeout=` is a mistake to report, not an absent parameter
        self.query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                                    keep_blank_values=True))
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                        for k, v in scope.get("headers", [])}
        client = scope.get("client")
        self.client_host = client[0] if client else "127.0.0.1"


class Response:
    def __init__(self, status: int, body: bytes = b"", content_type: bytes = JSON,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = [(b"content-type", content_type)] + (headers or [])


async def _read_body(receive, limit: int) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest(400, "disconnected", "client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, "too_large", f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def serve_asgi(scope: dict, receive, send, respond) -> None:
    """The ASGI plumbing of every app here: lifespan, then one Response per request."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    response = await respond(scope, receive)
    await send({"type": "http.response.start", "status": response.status,
                "headers": response.headers})
    await send({"type": "http.response.body", "body": response.body})


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def hypercorn_config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = 30.0
    config.include_server_header = False
    return config
