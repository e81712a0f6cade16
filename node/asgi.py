"""ASGI plumbing shared by every app a node serves (client and peer API,
Grenache PeerRPC, the standalone registry) and the hypercorn config they run
under.

Theory of operation
-------------------
``serve_asgi`` answers the lifespan protocol, refuses a WebSocket handshake
(404: its apps serve none) and turns each HTTP request into one ``Response``
from the app's ``respond``; an answer given before the
request's body was read to its end says ``Connection: close`` (hypercorn
ends that connection, and a keep-alive client must not reuse it). ``_read_body`` reads a request
body up to a limit and raises ``BadRequest`` (413) beyond it, so no app ever
holds more than its limit in memory; it also bounds the time a body may take
(``BODY_GRACE_S``, plus a second per MiB received): a client that trickles a
body gets 408 after a few seconds. ``BadRequest`` is the one error type of
every HTTP surface: status, short error code, human detail (cut to
``MAX_DETAIL`` characters, so nothing a client sent is echoed back whole).

WebSocket messages are bounded by hypercorn (``websocket_max_message_size``)
after they are inflated, except on ``PEER_STREAM``, where a message is a
peer's push and may be as large as one over HTTP (``PEER_MAX_MESSAGE``):
there every byte of a message counts against the node-wide budget of
request bodies (``MAX_BODIES_IN_FLIGHT``, as a push's body over HTTP does)
from its first frame until the app is done with it (``Charge``), so many
peers' connections each filling hypercorn's queue with large messages hold
that budget at most; a message that would pass it ends its connection
(1009). hypercorn's permessage-deflate (wsproto's) inflates each
chunk without a bound first, so 64 KiB on the wire could become tens of
MiB in memory before the size check. ``BoundedDeflate`` takes its place in
hypercorn's handshake: a chunk that inflates past ``WS_MAX_MESSAGE`` ends
the connection at once.

hypercorn handles every frame of a read (64 KiB) before it next yields,
unless a message ends among them: a peer stream's message may hold at most
``PEER_MAX_FRAMES`` frames (a node's sender sends one; 1009 beyond), or
a message in one-byte frames would hold the event loop a third of a second
per read. Once this side's close frame is out (a 1009, or the app's close),
what the peer sends is dropped: its first ``WS_AFTER_CLOSE`` bytes (what was
in flight) are looked at for its close (at most ``WS_CLOSE_EVENTS`` frames a
read), which ends the connection, and the rest unread; a peer that sends on
past them is cut off ``WS_CLOSE_GRACE_S`` later (time to read the close).
hypercorn, after its own 1009, took one frame per read and kept the rest, so
a peer that went on sending grew the node's memory without bound. Once the
app is done, what hypercorn would put in its queue is dropped, and so is
what the queue holds unread (``FramesAtOnce._end_puts``): hypercorn's
reader, waiting for room in a queue the app filled and will never empty,
read nothing more for ever (the peer's close neither) and kept every message
in it, their charges given back.

Limits on what comes before the body are hypercorn's, set in
``hypercorn_config``: request line and headers at most ``MAX_HEADER_BYTES``
(h11's incomplete-event limit: beyond it the connection gets 400), and
complete within ``HEADER_TIMEOUT_S`` of the connection going idle (the
keep-alive timer runs until a request's headers are in).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import zlib
from urllib.parse import parse_qsl

import orjson
import trio
from hypercorn.config import Config
from hypercorn.protocol import h11 as h11_protocol
from hypercorn.protocol import ws_stream
from hypercorn.protocol.events import Data, StreamClosed
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from . import httpserve

JSON = b"application/json"
MAX_DETAIL = 400  # characters of an error's detail, at most
MAX_HEADER_BYTES = 16 * 1024  # request line and headers
HEADER_TIMEOUT_S = 5.0  # from an idle (or new) connection to a request's complete headers
BODY_GRACE_S = 5.0  # a body must arrive within this, plus BODY_S_PER_MIB per MiB received
BODY_S_PER_MIB = 1.0
MAX_BODIES_IN_FLIGHT = 64 * 1024 * 1024  # bytes of request bodies held at once, node-wide
WS_MAX_MESSAGE = 64 * 1024  # bytes of one WebSocket message from a client (1009 beyond)
WS_PING_EVERY_S = 20.0  # hypercorn pings WebSocket clients; their pongs keep them alive
PEER_STREAM = "/peer/stream"  # peers' pushes over one WebSocket (cluster/peerstream.py)
# bytes of one message there: a push's body limit (gossip.PUSH_BODY_LIMIT, what /peer/push
# reads) and the message's head (streamwire.PUSH_HEAD): a body HTTP takes, a stream takes
PEER_MAX_MESSAGE = 16 * 1024 * 1024 + 9
PEER_MAX_FRAMES = 64  # frames of one message there (1009 beyond; see the module docstring)
# after this side's close frame: bytes of the peer looked at for its close, frames looked
# at per read, and how long a peer that sends on is given (module docstring)
WS_AFTER_CLOSE, WS_CLOSE_EVENTS, WS_CLOSE_GRACE_S = 64 * 1024, 64, 1.0
# Bodies of at most 4 digits of Content-Length (under 10,000 bytes: an order, a command)
# are taken as queued; larger ones (a peer's push) checkpoint at every chunk, as before,
# so that many large bodies read at once leave their turn to other requests.
SMALL_BODY_DIGITS = 4


def dumps(data: object) -> bytes:
    """Compact JSON (orjson: a tenth of json.dumps's time for an order's answer); UTF-8
    as it is, not \\u escapes. Integers past 64 bits (orjson's limit) and anything
    else it refuses go through json.dumps."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return json.dumps(data, separators=(",", ":")).encode()


class BadRequest(Exception):
    """A client error: HTTP status, a short error code and a human detail."""

    def __init__(self, status: int, error: str, detail: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        if len(detail) > MAX_DETAIL:
            detail = detail[:MAX_DETAIL] + "... (truncated)"
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or []  # sent with the answer (a 405's Allow, for one)


class Request:
    """One HTTP request: its line and headers from the ASGI scope (decoded once), and
    its body once read (``body`` is set then; b"" until)."""

    __slots__ = ("method", "path", "body", "query", "headers", "client_host", "who")

    def __init__(self, scope: dict, body: bytes = b"") -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.body = body
        raw = scope.get("query_string", b"")
        # blank values kept: `timeout=` is a mistake to report, not an absent parameter
        self.query = dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True)) \
            if raw else {}
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                        for k, v in scope.get("headers", ())}
        client = scope.get("client")
        self.client_host = client[0] if client else "127.0.0.1"
        self.who = None  # who it acts for, once authenticated (node/api/auth.py)


class Response:
    def __init__(self, status: int, body: bytes = b"", content_type: bytes = JSON,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = [(b"content-type", content_type)] + (headers or [])


class _InFlight:
    """Bytes of request bodies being read, over every connection: one budget, so many
    large bodies at once cannot together take the memory no single one may."""

    held = 0


async def _read_body(receive, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (else 413), read in time (else 408),
    while the node-wide budget of bodies in flight allows (else 503)."""
    reader = getattr(receive, "__self__", None)
    if type(reader) is _BodyRead:
        queued = reader.queued_body(limit)
        if queued is not None:  # all of it was there: no timer, no checkpoint
            return queued
    body = bytearray()  # one buffer: no list of chunks joined into a second copy
    try:
        with trio.move_on_after(BODY_GRACE_S) as scope:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise BadRequest(400, "disconnected", "client went away")
                chunk = message.get("body", b"")
                if len(body) + len(chunk) > limit:
                    raise BadRequest(413, "too_large", f"request body exceeds {limit} bytes")
                if _InFlight.held + len(chunk) > MAX_BODIES_IN_FLIGHT:
                    raise BadRequest(503, "busy", "the node is reading too many large "
                                     "request bodies at once; retry shortly")
                body += chunk
                _InFlight.held += len(chunk)
                scope.deadline += BODY_S_PER_MIB * len(chunk) / (1024 * 1024)
                if not message.get("more_body", False):
                    return bytes(body)
        raise BadRequest(408, "too_slow", f"the request body did not arrive in time "
                         f"({len(body)} bytes came)")
    finally:
        _InFlight.held -= len(body)


async def serve_asgi(scope: dict, receive, send, respond) -> None:
    """The ASGI plumbing of every app here: lifespan, then one Response per request."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] == "websocket":  # an app of no WebSocket (PeerRPC, a registry)
        await _no_websocket(scope, send)
        return
    if scope["type"] != "http":
        return
    head = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    bodyless = True  # no Content-Length (or 0) and no Transfer-Encoding
    small = True  # no body, or one of a chunk or so: read as queued (queued_first)
    for name, value in scope.get("headers", ()):
        head += len(name) + len(value) + 4
        if name == b"content-length":
            bodyless = bodyless and value == b"0"
            small = len(value) <= SMALL_BODY_DIGITS
        elif name == b"transfer-encoding":
            bodyless = small = False
    read = _BodyRead(queued_first(receive) if small else receive, bodyless,
                     _nowait(receive) if small else None)
    if head > MAX_HEADER_BYTES:  # h11 bounds incomplete headers; complete ones are bounded here
        response = Response(431, json.dumps({"error": "headers_too_large", "detail": (
            f"request line and headers exceed {MAX_HEADER_BYTES} bytes")}).encode())
    else:
        response = await respond(scope, read.receive)
    headers = response.headers
    if response.status not in (204, 304):
        # A length, not chunks: hypercorn then writes the head and the body and
        # no closing chunk (a send, a syscall, less), and the client knows at once
        # where the answer ends.
        headers.append((b"content-length", b"%d" % len(response.body)))
    if response.status in (408, 413) or not read.done:
        # Refused before its body was read (401, 404, 405, 408, 413, ...): hypercorn
        # ends such a connection after the answer. Saying so keeps a keep-alive
        # client from sending its next request into a closing connection.
        headers.append((b"connection", b"close"))
    # HTTP/1 writes nothing else on this connection meanwhile: its head can wait
    # for its body (httpserve.Guarded), one write to the client instead of two
    guard = httpserve.current() if scope.get("http_version") in ("1.1", "1.0") else None
    if guard is not None:
        guard.hold_answer()
    await send({"type": "http.response.start", "status": response.status,
                "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
    if guard is not None:
        await guard.flush()  # (nothing left to send, unless hypercorn wrote no body)


async def _no_websocket(scope: dict, send) -> None:
    """Refuse a WebSocket handshake with a client error: returning without a word,
    the app had hypercorn answer a bare 500, as if the node had failed."""
    detail = f"no WebSocket endpoint {scope.get('path')!r:.60} on this server"
    await send({"type": "websocket.http.response.start", "status": 404,
                "headers": [(b"content-type", JSON)]})
    await send({"type": "websocket.http.response.body",
                "body": dumps({"error": "not_found", "detail": detail})})


def _nowait(receive):
    """The ``receive_nowait`` of the channel behind ``receive`` (None if it has none)."""
    return getattr(getattr(receive, "__self__", None), "receive_nowait", None)


def queued_first(receive):
    """``receive`` that takes a message already queued without a checkpoint.

    hypercorn's trio worker hands the app a memory channel's ``receive``,
    which checkpoints (a trip through the scheduler) even when a message is
    there: a request's body is usually queued whole (its chunk and its end)
    before the app runs, WebSocket frames come in runs. ``receive_nowait``
    takes those; when nothing is queued, or ``receive`` is not a channel's, it
    is awaited. (The channel holds a few messages at most, hypercorn's
    ``max_app_queue_size``: a loop over it reaches a checkpoint soon.)"""
    nowait = _nowait(receive)
    if nowait is None:
        return receive

    async def receive_queued() -> dict:
        try:
            return nowait()
        except trio.WouldBlock:
            return await receive()
    return receive_queued


class _BodyRead:
    """``receive`` for the app, noting whether the request body was read to its end.

    ``queued_body`` takes a body that is queued whole (a small request's chunk
    and its end usually are when the app starts) without awaiting: no
    checkpoint, and none of ``_read_body``'s timer. What it took without
    reaching the body's end is handed to ``receive`` first."""

    __slots__ = ("_receive", "_nowait", "_pending", "done")

    def __init__(self, receive, bodyless: bool, nowait=None) -> None:
        self._receive = receive
        self._nowait = nowait
        self._pending: list[dict] = []
        self.done = bodyless

    def queued_body(self, limit: int) -> bytes | None:
        nowait = self._nowait
        if nowait is None or self._pending:
            return None
        taken: list[dict] = []
        size = 0
        while True:
            try:
                message = nowait()
            except trio.WouldBlock:
                break
            taken.append(message)
            if message.get("type") != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                break  # (receive refuses it, in _read_body's words)
            if not message.get("more_body", False):
                self.done = True
                return b"".join(m.get("body", b"") for m in taken)
        self._pending = taken
        return None

    async def receive(self) -> dict:
        if self._pending:
            message = self._pending.pop(0)
        else:
            message = await self._receive()
        if message.get("type") != "http.request" or not message.get("more_body", False):
            self.done = True  # the last chunk, or the client is gone
        return message


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate whose inflate of one chunk stops past ``WS_MAX_MESSAGE``."""

    def frame_inbound_payload_data(self, proto, data: bytes):
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        try:
            out = self._decompressor.decompress(bytes(data), WS_MAX_MESSAGE + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if len(out) > WS_MAX_MESSAGE or self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out


ws_stream.PerMessageDeflate = BoundedDeflate  # what hypercorn's handshake offers clients

# A node-private ASGI message of a WebSocket connection: {"type": SEND_MANY, "texts":
# [str, ...]}, each text its own frame, as many ``websocket.send`` would make them.
SEND_MANY = "crdtbook.websocket.send_many"


class FramesAtOnce(ws_stream.WSStream):
    """hypercorn's WebSocket stream, which also takes ``SEND_MANY``: every text is
    framed by wsproto as ``websocket.send`` frames it, and the frames are written
    in one pass through the connection's send lock (one write, one checkpoint),
    not one each. Offered to the app in its scope's ``extensions`` (``SEND_MANY``)."""

    @property
    def scope(self) -> dict:
        return self._scope

    @scope.setter
    def scope(self, scope: dict) -> None:
        scope.setdefault("extensions", {})[SEND_MANY] = {}
        self._scope = scope
        if scope.get("path") == PEER_STREAM:  # (set before the app is started)
            self.buffer = _ChargedBuffer(PEER_MAX_MESSAGE)
            scope["extensions"][PARTIAL] = {"buffer": self.buffer}

    after_close = 0  # bytes come since this side's close frame went out
    dropping_since: float | None = None  # when the first of them came

    async def handle(self, event) -> None:
        if isinstance(event, Data) and self.state in _ACCEPTED \
                and self.connection.state is ConnectionState.LOCAL_CLOSING:
            await self._after_close(event.data)
            return
        await super().handle(event)

    async def _after_close(self, data: bytes) -> None:
        """Drop what the peer sends after this side's close; end the connection at
        its close, or once it sent on for long (module docstring)."""
        now = trio.current_time()
        if self.dropping_since is None:
            self.dropping_since = now
        self.after_close += len(data)
        ended = False
        if self.after_close <= WS_AFTER_CLOSE:  # (else not even parsed: dropped)
            self.connection.receive_data(data)
            for event in itertools.islice(self.connection.events(), WS_CLOSE_EVENTS):
                if isinstance(event, CloseConnection):
                    ended = True
                    break
        elif now - self.dropping_since > WS_CLOSE_GRACE_S:
            ended = True
        if ended and not self.closed:
            await self.send(StreamClosed(stream_id=self.stream_id))

    _put = None  # hypercorn's put of a message to the app (its channel's send), till its end
    _started = False  # hypercorn gave its put: the app is started

    @property
    def app_put(self):
        # What hypercorn calls instead, made at each call: the bound method kept on
        # the stream would be a reference cycle per connection (tests/test_attacks21).
        return self._put_while_app_runs if self._started else None

    @app_put.setter
    def app_put(self, put) -> None:
        self._put = put
        self._started = put is not None

    async def _put_while_app_runs(self, message: dict) -> None:
        """hypercorn's put to the app, until the app ends: then it is dropped, and so
        is a put waiting for room (nobody will ever take it: the queue was full,
        the app gone; the reader waited for ever, reading nothing, not even the
        peer's close, and held every message queued, their charges given back)."""
        put = self._put
        if put is None:
            return
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            await put(message)

    def _end_puts(self) -> None:
        """The app is done: close hypercorn's side of its channel (a put waiting is
        woken, and dropped) and let go of it, so that what it holds unread is
        freed with the app's side (nothing else refers to it then)."""
        put, self._put = self._put, None
        close = getattr(getattr(put, "__self__", None), "close", None)
        if close is not None:
            close()

    async def app_send(self, message) -> None:
        if message is None:
            if type(self.buffer) is _ChargedBuffer:
                self.buffer.release_all()  # the app is done: what it never took counts no more
            self._end_puts()
        if message is None or message["type"] != SEND_MANY:
            await super().app_send(message)
            return
        if self.closed or self.state != ws_stream.ASGIWebsocketState.CONNECTED:
            return  # (as hypercorn drops what comes after a close)
        frame = self.connection.send
        try:
            data = b"".join([frame(TextMessage(data=text)) for text in message["texts"]])
        except LocalProtocolError:  # closing: as hypercorn drops a frame then
            return
        await self.send(Data(stream_id=self.stream_id, data=data))


_ACCEPTED = (ws_stream.ASGIWebsocketState.CONNECTED, ws_stream.ASGIWebsocketState.CLOSED)

# The key of a peer stream's message that holds its ``Charge``, and the scope extension
# that shows its app the message being received (``_ChargedBuffer``).
CHARGE = "crdtbook.charge"
PARTIAL = "crdtbook.partial_message"


class Charge:
    """Bytes of one WebSocket message held against ``MAX_BODIES_IN_FLIGHT``."""

    __slots__ = ("size",)

    def __init__(self) -> None:
        self.size = 0

    def add(self, size: int) -> bool:
        if _InFlight.held + size > MAX_BODIES_IN_FLIGHT:
            return False
        self.size += size
        _InFlight.held += size
        return True

    def release(self) -> None:
        """(Again: nothing more.)"""
        _InFlight.held -= self.size
        self.size = 0


class _ChargedBuffer(ws_stream.WebsocketBuffer):
    """hypercorn's buffer of the message being received, charging its bytes (module
    docstring). The message handed to the app carries its ``Charge`` (``CHARGE``);
    the app releases it when done, and ``release_all`` whatever it never took.

    A text message (refused by the app once whole, 1003) is charged, and bounded, at
    4 bytes a character: the most one takes in UTF-8 on the wire and in the str
    hypercorn builds (hypercorn's own bound counts characters, so one of
    ``PEER_MAX_MESSAGE`` four-byte characters took 4 times the bytes it was
    charged, and passed that bound as many times).

    Past its bound (the size, or the budget) it raises hypercorn's
    FrameTooLargeError (hypercorn sends a 1009 close) and is ``refused`` from
    then on: its bytes are given back at once and nothing more is charged
    (a peer that never completes the close, and sends on, could otherwise
    hold the budget), and the app, which hypercorn does not tell, ends the
    connection when it sees that (peerstream.py). Its bytes go with its charge
    (so do those of a message begun when the app ends, ``release_all``):
    hypercorn kept them until the connection ended, a minute (``IDLE_S``) for
    a peer silent after the close, uncharged, on connection after connection."""

    def __init__(self, max_length: int) -> None:
        super().__init__(max_length)
        self.charge: Charge | None = None  # of the message begun, if any
        self.began = 0.0  # when its first frame came
        self.charges: list[Charge] = []  # handed over and maybe not released yet
        self.refused = False
        self.frames = 0  # of the message begun

    def partial(self) -> tuple[float, int] | None:
        """(when its first frame came, bytes so far) of a message begun and not yet
        whole: the app ends a connection whose message takes too long (a peer
        that stalls mid-message would hold its charge for ever; its pongs keep
        the connection from going idle)."""
        return None if self.charge is None else (self.began, self.length)

    def extend(self, event) -> None:
        if self.refused:
            raise ws_stream.FrameTooLargeError()
        if self.charge is None:
            self.began = trio.current_time()
            if len(self.charges) >= 64:  # forget those released (size 0)
                # (before the new one goes in: it has size 0 until its bytes are
                # added, and one forgotten here would never be released)
                self.charges = [c for c in self.charges if c.size]
            self.charge = Charge()
            self.charges.append(self.charge)
            self.frames = 0
        self.frames += event.frame_finished  # (a large frame comes in several reads)
        # a text's characters: up to 4 bytes each, in UTF-8 and in the str hypercorn
        # joins (one of them widens the whole), where its own bound counts characters
        size = len(event.data) * (4 if isinstance(event.data, str) else 1)
        try:
            if self.frames > PEER_MAX_FRAMES or self.charge.size + size > self.max_length \
                    or not self.charge.add(size):
                raise ws_stream.FrameTooLargeError()
            super().extend(event)
        except ws_stream.FrameTooLargeError:
            self.refused = True
            self.charge.release()
            self.charge = None
            self.clear()  # (its bytes with its charge: nobody will ever take them)
            raise

    def to_message(self) -> dict:
        message = super().to_message()
        message[CHARGE] = self.charge
        self.charge = None
        return message

    def release_all(self) -> None:
        self.refused = True
        for charge in self.charges:
            charge.release()
        self.charges = []
        self.charge = None
        self.clear()  # the message begun, if any: never handed to anyone now


# what hypercorn's HTTP/1 connections create for an upgrade (the node speaks no
# HTTP/2: http1.py)
h11_protocol.WSStream = FramesAtOnce


def hypercorn_config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = HEADER_TIMEOUT_S  # also the time to send a request's headers
    config.h11_max_incomplete_size = MAX_HEADER_BYTES
    config.h2_max_header_list_size = MAX_HEADER_BYTES
    config.include_server_header = False
    config.websocket_max_message_size = WS_MAX_MESSAGE
    config.websocket_ping_interval = WS_PING_EVERY_S
    return config
