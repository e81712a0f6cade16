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

Rules this module keeps
-----------------------
* A connection that opens with HTTP/2's preface is answered
  ``505 HTTP Version Not Supported`` over HTTP/1.1 and closed: no HTTP/2
  frame is read or written, no request reaches the app.
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


class Http2Refused(Exception):
    """The connection opened with HTTP/2's preface; it was answered and closed."""


class Http1Protocol(H11Protocol):
    async def _check_protocol(self, event) -> None:
        if event.method == b"PRI" and event.target == b"*" and event.http_version == b"2.0":
            await self._send_error_response(505)
            await self.send(Closed())
            raise Http2Refused()
        # Anything else, ``Upgrade: h2c`` included, is served as HTTP/1.1.


class Http1Wrapper(hypercorn.protocol.ProtocolWrapper):
    """hypercorn's protocol switch, without its switches to HTTP/2."""

    async def handle(self, event) -> None:
        try:
            return await self.protocol.handle(event)
        except Http2Refused:
            return


def install() -> None:
    tcp_server.ProtocolWrapper = Http1Wrapper  # what each connection's run builds
    hypercorn.protocol.H11Protocol = Http1Protocol  # what ProtocolWrapper builds
