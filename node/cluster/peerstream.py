"""Peers' pushes over one WebSocket per peer: the receiving side (``/peer/stream``).

Theory of operation
-------------------
Serving a push as one HTTP request costs the receiver more than merging a
small one: hypercorn, h11 and trio spend about two thirds of it on the
request itself (docs/performance.md, the peers' transport, fifth pass). A
peer that speaks this route keeps one WebSocket open to this node instead
(pushstream.py) and sends each push as one binary message (streamwire.py:
an id, whether a receipt is asked, the body ``/peer/push`` takes).

``serve`` takes the handshake. It refuses, in plain HTTP before the
upgrade, a node that does not serve the route (404, as an older node
would), a peer of another book (409, as ``/peer/push`` does) and a
connection past ``MAX_STREAMS`` (503; every connection also holds one of the
node's connection slots, httpserve.py); otherwise it accepts, naming this
node in ``x-crdtbook-replica``. The upgrade's ``x-crdtbook-replica`` and
``-book`` stand for every push of the connection: each push runs exactly
``PeerAPI.push``, the steps of ``/peer/push`` (decode, its age, the wait
for a push it overtook, the merge, its receipt, the journal's sync), and is
answered, once durable, by one message: its id, the status ``/peer/push``
would give, the signed receipt if asked, the error's JSON for a refusal.

Several pushes of a connection are handled at once (a sender keeps up to
four in flight: one waiting for another here would add their commits'
latency, and rewinds), at most ``IN_FLIGHT``: the reader takes no message
while that many are under way, so a peer sending faster waits in hypercorn's
queue and then in TCP. Answers go out as pushes finish, tagged by id.

Bounds: a message is bounded by hypercorn at ``asgi.PEER_MAX_MESSAGE`` (the
body limit of ``/peer/push``; 1009 beyond, before anything is decoded) and
counts against the node's budget of request bodies from its first frame
until its push is answered (asgi.Charge); a text message closes the
connection with 1003, a push message that is not one (streamwire.py) with
1007, each before anything of it is decoded (pushes already under way are
answered); a connection that sends nothing, not even a pong to hypercorn's
pings, for ``IDLE_S`` is closed, and one that reads no answer for
httpserve's stall time is reset (the WebSocket entry's limits).
"""

from __future__ import annotations

import contextlib

import trio

from .. import httpserve, logs
from ..api import orderentry
from ..api.websocket import IDLE_S
from ..asgi import BODY_GRACE_S, BODY_S_PER_MIB, CHARGE, PARTIAL, BadRequest, dumps, queued_first
from . import peerauth, streamwire

IN_FLIGHT = 8  # pushes of one connection handled at once
# a message must be whole this long after its first frame, plus this per MiB (as a body
# over HTTP must, asgi._read_body); looked at this often
MESSAGE_GRACE_S, MESSAGE_S_PER_MIB, WATCH_EVERY_S = BODY_GRACE_S, BODY_S_PER_MIB, 1.0
MAX_STREAMS = 256  # peer streams served at once (a node has one per peer pushing to it)
FRAME_HEAD = 10  # bytes a server's binary frame head takes (up to 64 KiB: 4), counted as sent
RECEIPT = peerauth.HEADER


async def serve(api, scope: dict, receive, send) -> None:
    """The ASGI websocket scope of ``/peer/stream``: refuse, or run one connection."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    node = api.node
    headers = {k.decode("latin-1").lower(): v.decode("latin-1")
               for k, v in scope.get("headers", ())}
    if not node.config.peer_stream:
        await _refuse(send, 404, "not_found", "this node takes pushes at /peer/push only")
        return
    try:
        api._peer_check_headers(headers)
    except BadRequest as exc:
        await _refuse(send, exc.status, exc.error, exc.detail)
        return
    if node.streams_open >= MAX_STREAMS:
        await _refuse(send, 503, "busy", f"this node serves at most {MAX_STREAMS} peer "
                                         "streams; push over /peer/push")
        return
    node.streams_open += 1
    try:
        guard = httpserve.current()
        if guard is not None:
            guard.idle_after(IDLE_S)
        await send({"type": "websocket.accept",
                    "headers": [(b"x-crdtbook-replica", node.id.encode())]})
        buffer = (scope.get("extensions") or {}).get(PARTIAL, {}).get("buffer")
        await Connection(api, headers, send).run(receive, buffer)
    finally:
        node.streams_open -= 1


class Connection:
    def __init__(self, api, headers: dict[str, str], send) -> None:
        self.api = api
        # what each push's handling reads of its request's headers (PeerAPI.push)
        named = {key: headers[key] for key in ("x-crdtbook-replica", "x-crdtbook-book")
                 if key in headers}
        self.headers = named
        self.receipt_headers = named | {"x-crdtbook-ack": "1"}
        self._send = send
        self.closed = False
        self.watching = trio.CancelScope()  # the watch of messages begun (run)

    async def run(self, receive, buffer=None) -> None:
        receive = queued_first(receive)
        slots = trio.Semaphore(IN_FLIGHT)
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as reading:
                nursery.start_soon(self._watch, buffer, reading)
                while not self.closed:
                    await slots.acquire()  # at the bound: read nothing more until one is answered
                    message: dict | None = None
                    started = False
                    try:
                        message = await receive()
                        started = await self._take(message, nursery, slots)
                    finally:
                        if not started:  # else the push's task releases both
                            _release(message.get(CHARGE) if message else None)
                            slots.release()
            self.closed = True
            self.watching.cancel()

    async def _watch(self, buffer, reading: trio.CancelScope) -> None:
        """End the connection when a message begun does not come whole in time, when
        hypercorn refused one (too large: it sent the 1009 close and hands the app
        nothing more; the connection ends when the app does), or when the node
        stops."""
        stopping = self.api.node.stop_begun
        with self.watching:
            while True:
                with trio.move_on_after(WATCH_EVERY_S):
                    await stopping.wait()
                if stopping.is_set():  # (hypercorn would wait its grace time for it)
                    await self._close(1001, "the node is stopping")
                    reading.cancel()
                    return
                if buffer is None:  # (not hypercorn with asgi.FramesAtOnce)
                    continue
                if buffer.refused:
                    self.closed = True
                    reading.cancel()
                    return
                begun = buffer.partial()
                if begun is not None and trio.current_time() - begun[0] > (
                        MESSAGE_GRACE_S + MESSAGE_S_PER_MIB * begun[1] / (1024 * 1024)):
                    logs.info("peer.stream_too_slow", peer=self.peer, bytes=begun[1])
                    await self._close(1008, "a message did not arrive in time")
                    reading.cancel()
                    return

    async def _take(self, message: dict, nursery: trio.Nursery, slots) -> bool:
        """Start the handling of a push message; False if there was none to handle."""
        kind = message["type"]
        if kind == "websocket.disconnect":
            self.closed = True
            return False
        if kind != "websocket.receive":
            return False
        data = message.get("bytes")
        if data is None:
            await self._close(1003, "send pushes in binary messages")
            return False
        try:
            ident, receipt, body = streamwire.read_push(data)
        except ValueError as exc:
            logs.info("peer.stream_malformed", peer=self.peer, detail=str(exc))
            await self._close(1007, str(exc)[:100])
            return False
        nursery.start_soon(self._one, ident, receipt, body, len(data), message.get(CHARGE),
                           slots)
        return True

    @property
    def peer(self) -> str:
        return self.headers.get("x-crdtbook-replica", "?")[:64]

    async def _one(self, ident: int, receipt: bool, body: bytes, size: int, charge,
                   slots: trio.Semaphore) -> None:
        node = self.api.node
        try:
            try:
                response = await self.api.push(
                    self.receipt_headers if receipt else self.headers, body)
                status, content = response.status, response.body
                signed = next((v for k, v in response.headers if k == RECEIPT.encode()), b"")
            except Exception as exc:
                refused = orderentry.failure(exc)
                if refused is None:  # a bug in the node, never the peer's input
                    logs.error("peer.stream_bug", error=repr(exc)[:300])
                    refused = orderentry.Failure(500, "internal", "the node hit a bug; see "
                                                 "its log", [])
                status, signed = refused.status, b""
                content = dumps({"error": refused.error, "detail": refused.detail})
            frame = streamwire.answer(ident, status, signed, content)
            node.stream_pushes_answered += 1
            node.metrics.exchanged(len(frame) + FRAME_HEAD, size + FRAME_HEAD)
            await self._answer(frame)
        finally:
            _release(charge)
            slots.release()

    async def _answer(self, frame: bytes) -> None:
        if self.closed:
            return  # (hypercorn refuses a send after the close)
        try:
            await self._send({"type": "websocket.send", "bytes": frame})
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True  # the peer is gone: its pushes were taken all the same

    async def _close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._send({"type": "websocket.close", "code": code, "reason": reason})


def _release(charge) -> None:
    if charge is not None:
        charge.release()


async def _refuse(send, status: int, error: str, detail: str) -> None:
    await send({"type": "websocket.http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "websocket.http.response.body",
                "body": dumps({"error": error, "detail": detail})})
