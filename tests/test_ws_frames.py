"""The WebSocket's outgoing frames: ``asgi.FramesAtOnce`` writes every text of one
``SEND_MANY`` message as its own frame, in one write; trio-websocket (the CLI's and
the tests' client) survives a ping that arrives while it closes."""

from __future__ import annotations

import trio
from hypercorn.config import Config
from hypercorn.protocol.events import Data, Request, Response
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app
from trio_websocket import open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import AcceptConnection, CloseConnection, TextMessage
from wsproto.events import Request as WsRequest

from node import asgi, httpserve
from node.cli import wsclient  # noqa: F401  (the fix under test)

HANDSHAKE = [(b"host", b"node"), (b"upgrade", b"websocket"), (b"connection", b"upgrade"),
             (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
             (b"sec-websocket-version", b"13")]
PING = b"\x89\x04late"  # a server's ping frame (unmasked), payload "late"


async def _stream_of(app) -> tuple[asgi.FramesAtOnce, list, httpserve.QueuedTaskGroup]:
    """A WebSocket stream as hypercorn's HTTP/1 connection makes it, upgraded, its writes
    recorded; ``app`` runs in the returned task group, which the caller exits."""
    written: list = []

    async def send(event) -> None:
        written.append(event)

    group = httpserve.QueuedTaskGroup()
    await group.__aenter__()
    stream = asgi.FramesAtOnce(wrap_app(app, None, "asgi"), Config(), WorkerContext(None),
                               group, False, None, None, send, 1)
    await stream.handle(Request(stream_id=1, headers=HANDSHAKE, http_version="1.1",
                                method="GET", raw_path=b"/ws", state={}))
    return stream, written, group


def _frames(data: bytes) -> list[str]:
    """The text frames in ``data``, as a client reads them."""
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(data)
    return [e.data for e in client.events() if isinstance(e, TextMessage)]


async def test_send_many_writes_each_text_as_its_own_frame_in_one_write():
    scopes: list[dict] = []
    done = trio.Event()

    async def app(scope, receive, send) -> None:
        scopes.append(scope)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": asgi.SEND_MANY, "texts": ['{"a":1}', "", "é" * 200, "x"]})
        await send({"type": "websocket.close", "code": 1000})
        await send({"type": asgi.SEND_MANY, "texts": ["after the close"]})
        done.set()

    stream, written, group = await _stream_of(app)
    await done.wait()
    await group.__aexit__(None, None, None)
    assert asgi.SEND_MANY in scopes[0]["extensions"]  # offered to the app
    assert isinstance(written[0], Response) and written[0].status_code == 101
    data = [e for e in written[1:] if isinstance(e, Data)]
    # the accept's first ping (hypercorn's pinger) may come between: leave it out
    data = [e for e in data if _frames(e.data) or e.data[:1] == b"\x88"]
    assert _frames(data[0].data) == ['{"a":1}', "", "é" * 200, "x"]  # one write, four frames
    assert data[1].data[:1] == b"\x88"  # the close; nothing after it
    assert len(data) == 2


async def test_a_ping_during_the_clients_close_ends_nothing_but_the_connection():
    """A node's ping that crosses the client's close frame: trio-websocket answered it
    with a pong wsproto refuses, and a stray Cancelled ended the caller's nursery."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]

    async def server() -> None:
        stream = await listener.accept()
        ws = WSConnection(ConnectionType.SERVER)
        closing = False
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, WsRequest):
                    await stream.send_all(ws.send(AcceptConnection()))
                elif isinstance(event, CloseConnection) and not closing:
                    closing = True  # the ping was sent before the close came (wsproto, as
                    # hypercorn's, would refuse it now: written as the node's own frame)
                    await stream.send_all(PING + ws.send(event.response()))
            if ws.state is ConnectionState.CLOSED:
                await stream.aclose()
                return

    after = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        with trio.fail_after(10):
            async with open_websocket_url(f"ws://127.0.0.1:{port}/ws"):
                pass  # closes at once
        after.append("the block after the connection ran")
    await listener.aclose()
    assert after == ["the block after the connection ran"]
