"""HTTP/1.1 only: the node never lets a connection turn into HTTP/2.

Theory of operation
-------------------
hypercorn turns a plain connection into an HTTP/2 one when the client opens
it with HTTP/2's preface ("prior knowledge") or asks for it with an
``Upgrade: h2c`` request. One HTTP/2 connection carries up to 100 requests
at once, each its own app task, while the node's bounds count connections:
the cap on open connections (httpserve.py), the keep-alive and header
timeouts (``KeepAlive``, asgi.py) were built for HTTP/1, where a connection
holds one request at a time. Served as HTTP/2, one connection of the cap
ran 50 requests at once. Nothing the node serves needs HTTP/2 (its CLI, its
peers and the web page speak HTTP/1.1 and WebSocket over it), so it speaks
HTTP/1.1 only.

h11 parses any ``HTTP/d.d`` on a request line, and hypercorn applies HTTP/2's
rules to a version it does not know as 1.1 or older: ``GET /ws HTTP/2.0``
with no WebSocket key was accepted with a ``200`` whose chunked body was raw
WebSocket frames. So the version is checked, not only the preface's line.

Rules this module keeps
-----------------------
* A request line of any version but HTTP/1.0 and HTTP/1.1 (HTTP/2's preface
  ``PRI * HTTP/2.0`` among them, wherever it comes on a connection) is
  answered ``505 HTTP Version Not Supported`` over HTTP/1.1 and the
  connection closed: no HTTP/2 frame is read or written, no request reaches
  the app.
* ``Upgrade: h2c`` is ignored (a server may ignore an upgrade it does not
  want): the request is answered over HTTP/1.1 like any other. WebSocket
  upgrades are not touched.
* ``install()`` (httpserve.py calls it when it is imported) puts both
  classes in hypercorn's place, so every connection of every server of the
  node gets them.
"""

from __future__ import annotations

import hypercorn.protocol
from hypercorn.events import Closed
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio import tcp_server

HTTP_VERSIONS = (b"1.1", b"1.0")  # h11 frames these; hypercorn gives them HTTP/1's rules


class VersionRefused(Exception):
    """A request line of another HTTP version (HTTP/2's preface among them); it was
    answered and its connection closed."""


class Http1Protocol(H11Protocol):
    async def _check_protocol(self, event) -> None:
        if event.http_version not in HTTP_VERSIONS:
            await self._send_error_response(505)
            await self.send(Closed())
            raise VersionRefused()
        # Anything else, ``Upgrade: h2c`` included, is served as HTTP/1.1.


class Http1Wrapper(hypercorn.protocol.ProtocolWrapper):
    """hypercorn's protocol switch, without its switches to HTTP/2."""

    async def handle(self, event) -> None:
        try:
            return await self.protocol.handle(event)
        except VersionRefused:
            return


def install() -> None:
    tcp_server.ProtocolWrapper = Http1Wrapper  # what each connection's run builds
    hypercorn.protocol.H11Protocol = Http1Protocol  # what ProtocolWrapper builds
