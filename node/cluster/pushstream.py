"""Peers' pushes over one WebSocket per peer: the sending side.

Theory of operation
-------------------
A node pushes every commit to every peer; as an HTTP request each, a push
costs the receiver's HTTP server most of what it costs it at all
(peerstream.py says why). A ``PushStream`` is one peer's way to send them
instead: one WebSocket to the peer's ``/peer/stream``, opened by the first
push that needs it (wsproto over a trio TCP stream: wsproto writes and
parses the upgrade and the frames; nothing here reads HTTP or WebSocket
bytes), kept open and shared by the pushes in flight (the sender keeps up
to four, gossip.py). Each push is one binary message (streamwire.py) under
an id of its own; one reader task per connection, in the nursery the
PushStream was given (the peer's sender's: the node's shutdown, or the
peer being forgotten, cancels it), routes each answer to the push waiting
for that id, and answers hypercorn's pings.

``push`` is called inside the push's time bound (gossip.py:
``request_timeout_s``) and every wait of it (the connect, the upgrade, the
write, the answer) is too. A timeout, a cancellation or any error of a push
closes the connection: its other pushes in flight fail as an HTTP push
fails (``StreamFailed``; the sender drops them, pull repairs), and the next
push opens a new one. A peer that answers the upgrade with anything but
101 does not speak the route (an older node, or one with it off): ``push``
raises ``NotSpoken``, the caller pushes over HTTP instead, and the stream is
tried again ``RETRY_S`` later. So does a peer whose answer is no sound
upgrade (a 101 without its key, a close and no answer), and one whose
connection ends before it answered a single push (one that accepts and
closes at once, or never answers: a broken peer or something between):
were it reconnected, every push would fail there, and the peer be backed
off, with no push arriving at all. The push that found it out goes over
HTTP at once (a push taken twice is taken once), unless its time was up.
Pushes waiting for the connection to open see that verdict and go over
HTTP too: one upgrade per ``RETRY_S`` at most, however many pushes are in
flight. An answer is read up to ``MAX_ANSWER`` bytes (a refusal's JSON and
a receipt are small); a text message, a malformed answer or one for an id
nobody waits for ends the connection.
"""

from __future__ import annotations

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
)
from wsproto.utilities import RemoteProtocolError

from ..asgi import PEER_STREAM
from . import peerauth, streamwire
from .peerhttp import RECEIVE, Answer, _target

RETRY_S = 30.0  # a peer that refused the upgrade is pushed to over HTTP this long
MAX_ANSWER = 64 * 1024  # bytes of one answer message
FRAME_HEAD = 2  # bytes of an answer frame's head (a server's frame under 126 bytes), counted


class StreamFailed(Exception):
    """The push got no answer: the connection failed, or was closed under it."""


class NotSpoken(Exception):
    """The peer refused the upgrade (``status``), answered it with nothing sound (0),
    or its stream answered no push (101): push over HTTP instead."""

    def __init__(self, status: int, why: str | None = None) -> None:
        super().__init__(why or (f"the peer refused {PEER_STREAM} ({status})" if status != 101
                                 else f"the peer's {PEER_STREAM} ended before it answered a push"))
        self.status = status


class _Waiter:
    __slots__ = ("done", "answer", "failure")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.answer: Answer | None = None
        self.failure: str | None = None


class _Link:
    """One open connection: its pushes waiting for answers, by id."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection, replica: str) -> None:
        self.stream = stream
        self.ws = ws
        self.replica = replica
        self.waiting: dict[int, _Waiter] = {}
        self.next_id = 1
        self.writing = trio.Lock()  # a trio stream takes one send at a time
        self.closed: str | None = None
        self.reader: trio.CancelScope | None = None
        self.sent = self.received = 0  # bytes of the upgrade
        self.answered = 0  # answers routed (PushStream: a link that ends with none)

    def close(self, why: str) -> None:
        """End the connection (synchronously: also from a cancelled scope) and fail
        every push waiting on it."""
        if self.closed is not None:
            return
        self.closed = why
        self.stream.socket.close()
        if self.reader is not None:
            self.reader.cancel()
        for waiter in self.waiting.values():
            waiter.failure = why
            waiter.done.set()
        self.waiting.clear()

    async def write(self, data: bytes) -> None:
        async with self.writing:
            await self.stream.send_all(data)

    async def exchange(self, body: bytes, receipt: bool) -> Answer:
        ident = self.next_id
        self.next_id += 1
        waiter = self.waiting[ident] = _Waiter()
        try:
            data = self.ws.send(BytesMessage(data=streamwire.push(ident, receipt, body)))
            await self.write(data)
            await waiter.done.wait()
        except BaseException as exc:  # a timeout, a cancellation, a broken connection
            self.close(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            raise
        finally:
            self.waiting.pop(ident, None)
        if waiter.answer is None:
            raise StreamFailed(waiter.failure or "the connection closed")
        waiter.answer.sent = len(data)
        return waiter.answer

    async def read(self) -> None:
        """Route answers to their pushes until the connection ends (never raises but
        a cancellation: whatever ends it fails the pushes waiting)."""
        why = "the peer closed the connection"
        try:
            with trio.CancelScope() as self.reader:
                if self.closed is not None:
                    return
                pending = bytearray()
                while True:
                    data = await self.stream.receive_some(RECEIVE)
                    if not data:
                        break
                    self.ws.receive_data(data)
                    for event in self.ws.events():
                        if isinstance(event, BytesMessage):
                            pending += event.data
                            if len(pending) > MAX_ANSWER:
                                raise ValueError(f"an answer larger than {MAX_ANSWER} bytes")
                            if event.message_finished:
                                self._deliver(bytes(pending))
                                pending = bytearray()
                        elif isinstance(event, Ping):
                            await self.write(self.ws.send(event.response()))
                        elif isinstance(event, Pong):
                            pass  # (unasked for: RFC 6455 allows one)
                        elif isinstance(event, CloseConnection):
                            why = f"the peer closed the stream ({event.code})"
                            raise EOFError
                        else:  # a text message, or anything else
                            raise ValueError(f"unexpected {type(event).__name__}")
        except EOFError:
            pass
        except Exception as exc:  # a peer's bytes never crash the node: it ends this
            why = f"{type(exc).__name__}: {exc}"
        finally:
            self.close(why)

    def _deliver(self, message: bytes) -> None:
        ident, status, receipt, body = streamwire.read_answer(message)
        waiter = self.waiting.get(ident)
        if waiter is None:
            raise ValueError(f"an answer to push {ident}, which nobody waits for")
        headers = {"x-crdtbook-replica": self.replica}
        if receipt:
            headers[peerauth.HEADER] = receipt.decode("ascii")
        waiter.answer = Answer(status, headers, body, 0, len(message) + FRAME_HEAD)
        waiter.done.set()
        self.answered += 1


async def connect(url: str, replica: str, book: str) -> _Link:
    """A connection to the ``/peer/stream`` of the node at ``url``, upgraded (its
    ``read`` is for the caller to run); NotSpoken if the node refused the upgrade."""
    address, host, _ = _target(url)
    stream = await trio.open_tcp_stream(*address)
    try:
        ws = WSConnection(ConnectionType.CLIENT)
        headers = [(b"x-crdtbook-replica", replica.encode()),
                   (b"x-crdtbook-book", book.encode("utf-8", "replace"))]
        data = ws.send(Request(host=host.decode("ascii"), target=PEER_STREAM,
                               extra_headers=headers))
        await stream.send_all(data)
        sent, received = len(data), 0
        while True:
            data = await stream.receive_some(RECEIVE)
            if not data:  # (as a server that takes no upgrade may)
                raise NotSpoken(0, "the peer closed the connection in the upgrade")
            received += len(data)
            try:
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        named = dict(event.extra_headers)
                        link = _Link(stream, ws, named.get(b"x-crdtbook-replica",
                                                           b"").decode("latin-1"))
                        link.sent, link.received = sent, received
                        return link
                    if isinstance(event, RejectConnection):
                        raise NotSpoken(event.status_code)
            except RemoteProtocolError as exc:  # a 101 without its key, not HTTP, ...
                raise NotSpoken(0, f"a broken answer to the upgrade: {exc}"[:200]) from None
    except BaseException:
        stream.socket.close()
        raise


class PushStream:
    """Pushes to one peer over its ``/peer/stream``; see the module's docstring."""

    def __init__(self, node, url: str, nursery: trio.Nursery) -> None:
        self.node = node
        self.url = url
        self._nursery = nursery
        self._link: _Link | None = None
        self._opening = trio.Lock()
        self.http_until = -1.0  # monotonic: push over HTTP until then (NotSpoken)

    def ready(self, now: float) -> bool:
        return now >= self.http_until

    async def push(self, body: bytes, receipt: bool) -> Answer:
        """One push and its answer (call it within the push's time bound); NotSpoken
        if the peer does not speak the stream (module docstring)."""
        link = self._link
        if link is None or link.closed is not None:
            async with self._opening:  # the pushes in flight wait for one connection
                if self._link is not None and self._link.closed is not None:
                    self._ended(self._link)
                if not self.ready(self.node.monotonic()):
                    raise NotSpoken(0, f"{PEER_STREAM} found not spoken there meanwhile")
                link = self._link
                if link is None:
                    link = self._link = await self._open()
        try:
            return await link.exchange(body, receipt)
        except BaseException as exc:  # (a timeout too: the link is closed by now)
            self._ended(link)
            if isinstance(exc, StreamFailed) and not link.answered:
                raise NotSpoken(101) from None
            raise

    def _ended(self, link: _Link) -> None:
        """``link`` is closed: forget it, and if it never answered a push, push over
        HTTP for ``RETRY_S`` (once per link)."""
        if self._link is link:
            self._link = None
            if not link.answered:
                self.http_until = self.node.monotonic() + RETRY_S

    async def _open(self) -> _Link:
        node = self.node
        try:
            link = await connect(self.url, node.id, node.config.book)
        except NotSpoken:
            self.http_until = node.monotonic() + RETRY_S
            raise
        node.stats["wire_bytes"] += link.sent + link.received
        node.metrics.exchanged(link.sent, link.received)
        self._nursery.start_soon(link.read)
        return link

    def close(self) -> None:
        if self._link is not None:
            self._link.close("closed")
            self._link = None

