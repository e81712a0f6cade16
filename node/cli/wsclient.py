"""trio-websocket, the WebSocket client of the CLI (and of the bench and the tests),
with one known bug of it worked around.

Theory of operation
-------------------
A client that has sent its close frame may still receive a ping the node sent
before it saw the close (hypercorn pings every connection at once on accept,
then every ``WS_PING_EVERY_S``: a short-lived client, the CLI's ``book``
without ``--watch``, closes while the first one is on its way). trio-websocket
answers every ping with a pong, which wsproto refuses once the close is sent
(``LocalProtocolError``: "Pong cannot be sent in state LOCAL_CLOSING"); its
reader task dies of it, and ``open_websocket``'s close then raises a
``trio.Cancelled`` of its own, already exited, nursery in place of that error
(python-trio/trio-websocket#184, still open; a fix is proposed in #198). That
stray ``Cancelled`` cancels whatever nursery it reaches: a test's nursery
ended silently before its last lines.

Importing this module makes trio-websocket answer a ping only while the
connection is open, which is what RFC 6455 asks of an endpoint that sent its
close: nothing more is sent after it. Everything else is trio-websocket's.
"""

from __future__ import annotations

from trio_websocket import WebSocketConnection
from wsproto.connection import ConnectionState

_handle_ping = WebSocketConnection._handle_ping_event


async def _pong_while_open(self: WebSocketConnection, event) -> None:
    if self._wsproto.state == ConnectionState.OPEN:
        await _handle_ping(self, event)


if getattr(_handle_ping, "__name__", "") != "_pong_while_open":  # (imported once)
    WebSocketConnection._handle_ping_event = _pong_while_open
