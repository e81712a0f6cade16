"""Attacks on the node-wide budget of request and message bytes in flight
(``asgi._InFlight``: ``_read_body`` for HTTP bodies, ``Charge`` and
``_ChargedBuffer`` for the peer stream's messages), against real nodes on
loopback: it must come back to 0 whatever a stranger or a peer does (hang-ups
at every point, fragments, compressed messages, pings between fragments, text,
many connections, a refused upgrade, bodies cut off, chunked or slow, a node
stopping with streams open), never pass ``MAX_BODIES_IN_FLIGHT``, and charge
what a message really takes.
"""

from __future__ import annotations

import contextlib
import socket
import zlib

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol

from node import asgi
from node.cluster import peerstream, streamwire
from node.cluster.peerapi import PeerAPI

from .nodes import LIVENESS_S, client, eventually
from .test_attacks18 import Raw, held_blocks, live, membership, named, start, track_pushes


def port(running) -> int:
    return int(running.url.rsplit(":", 1)[1])


async def settled(running) -> None:
    """No stream open, nothing charged: what every attack must leave."""
    await eventually(lambda: running.node.streams_open == 0 and asgi._InFlight.held == 0)


async def synced(raw: Raw, payload: bytes = b"sync") -> None:
    """Once this returns, the node handled every byte sent before: a ping's pong
    comes after what preceded it (hypercorn handles a connection's frames in order)."""
    await raw.send(Ping(payload=payload))
    while True:
        with trio.fail_after(LIVENESS_S * 5):
            event = await raw.next()
        assert event is not None and not isinstance(event, CloseConnection), event
        if isinstance(event, Pong) and event.payload == payload:
            return


def client_frame(opcode: int, payload: bytes, fin: bool = False, rsv1: bool = False) -> bytes:
    """A client's frame by hand (its mask all zeros: the payload as it is)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    size = len(payload)
    if size < 126:
        head = bytes([first, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([first, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([first, 0x80 | 127]) + size.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


async def open_deflate(running) -> Raw:
    """A peer stream with permessage-deflate (hypercorn's handshake offers it)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port(running))
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host="127.0.0.1", target=asgi.PEER_STREAM,
                                          extra_headers=named("deflate"),
                                          extensions=[PerMessageDeflate()])))
    raw = Raw(stream, ws)
    event = await raw.next()
    assert isinstance(event, AcceptConnection) and event.extensions, event
    return raw


# -- what a message is charged -------------------------------------------------------
async def test_a_text_message_is_charged_for_what_it_takes_not_its_characters(nursery):
    """hypercorn's buffer counts a text message in characters: one of four-byte
    characters was charged a quarter of its bytes, and passed ``PEER_MAX_MESSAGE``
    four times over (its bound is in characters too)."""
    a = await start(nursery)
    raw = await Raw.open(a)
    text = "\U0001F600" * 65_536  # 256 KiB of UTF-8, 256 KiB as a str (UCS-4)
    await raw.send(TextMessage(data=text, message_finished=False))
    await synced(raw)
    assert asgi._InFlight.held >= len(text.encode()), asgi._InFlight.held
    await raw.abort()
    await settled(a)


async def test_a_text_message_past_the_bound_in_bytes_is_refused():
    buffer = asgi._ChargedBuffer(asgi.PEER_MAX_MESSAGE)
    chunk = "\U0001F600" * (1 << 20)  # 4 MiB of UTF-8 each, a million characters
    refused = False
    try:
        for _ in range(5):  # 20 MiB: past the bound, though 5 M characters are not
            buffer.extend(TextMessage(data=chunk, message_finished=False))
    except asgi.ws_stream.FrameTooLargeError:
        refused = True
    assert refused and buffer.refused
    assert asgi._InFlight.held == 0
    buffer.release_all()


async def test_a_compressed_message_is_charged_inflated_and_given_back(nursery):
    a = await start(nursery)
    raw = await open_deflate(a)
    # (wsproto's client holds back what it compresses until a message ends: these
    # frames are compressed and flushed each, as permessage-deflate allows)
    compress = zlib.compressobj(wbits=-15)
    for i in range(20):  # 60,000 zeros each: a few dozen bytes on the wire
        data = compress.compress(b"\0" * 60_000) + compress.flush(zlib.Z_SYNC_FLUSH)
        await raw.stream.send_all(client_frame(0 if i else 2, data, rsv1=not i))
    await synced(raw)
    assert asgi._InFlight.held >= 20 * 60_000, asgi._InFlight.held
    await raw.abort()
    await settled(a)


# -- hang-ups at every point -----------------------------------------------------------
async def test_hang_ups_at_every_point_of_a_message_leave_nothing_held(nursery):
    a = await start(nursery)
    small = await held_blocks(a, 1)
    message = streamwire.push(7, False, small + b"\0" * 300_000)
    before = membership(a.node)

    async def mid_frame(raw: Raw) -> None:  # a frame's head, half its payload
        frame = raw.ws.send(BytesMessage(data=message))
        await raw.stream.send_all(frame[: len(frame) // 2])

    async def mid_message(raw: Raw) -> None:  # whole frames, the last one not sent
        for start_at in range(0, 200_000, 50_000):
            await raw.send(BytesMessage(data=message[start_at:start_at + 50_000],
                                        message_finished=False))

    async def pings_between_fragments(raw: Raw) -> None:
        for start_at in range(0, 200_000, 50_000):
            await raw.send(BytesMessage(data=message[start_at:start_at + 50_000],
                                        message_finished=False))
            await synced(raw, b"%d" % start_at)

    async def closing_mid_message(raw: Raw) -> None:  # its close, never its end
        await raw.send(BytesMessage(data=message[:200_000], message_finished=False))
        await raw.send(CloseConnection(code=1000))

    async def after_a_refused_one(raw: Raw) -> None:  # 1009, then more of it
        await raw.send(BytesMessage(data=b"\xff" * (asgi.PEER_MAX_MESSAGE + 1)))
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await raw.send(BytesMessage(data=message[:200_000], message_finished=False))

    async def whole_then_gone(raw: Raw) -> None:  # the last frame, the app to take it
        await raw.push(1, small)
        await raw.send(BytesMessage(data=message))

    for attack in (mid_frame, mid_message, pings_between_fragments, closing_mid_message,
                   after_a_refused_one, whole_then_gone):
        for hang_up in ("abort", "close"):
            raw = await Raw.open(a)
            await attack(raw)
            if attack in (mid_frame, mid_message, pings_between_fragments):
                await eventually(lambda: asgi._InFlight.held > 0)  # (charged as it came)
            if hang_up == "abort":
                await raw.abort()
            else:
                await raw.stream.aclose()
            try:
                await settled(a)
            except AssertionError as exc:
                raise AssertionError(f"{attack.__name__}, {hang_up}: {exc}") from None
    assert membership(a.node) == before


def held_pushes(monkeypatch, started: list[int] | None = None) -> trio.Event:
    """Every push the app handles waits, once begun, until the event returned is set
    (its body's size appended to ``started``, if given)."""
    gate = trio.Event()
    real_push = PeerAPI.push

    async def blocked(self, headers, body):
        if started is not None:
            started.append(len(body))
        await gate.wait()
        return await real_push(self, headers, body)

    monkeypatch.setattr(PeerAPI, "push", blocked)
    return gate


async def test_messages_held_by_the_app_and_queued_are_given_back_when_the_peer_goes(
        nursery, monkeypatch):
    """Pushes under way (blocked in the app) and messages whole in hypercorn's queue,
    never taken, when the sender resets: all given back once the pushes end."""
    a = await start(nursery)
    started: list[int] = []
    gate = held_pushes(monkeypatch, started)
    raw = await Raw.open(a)
    body = b"\0" * 100_000
    for ident in range(peerstream.IN_FLIGHT + 5):  # 8 under way, the rest queued
        await raw.push(ident, body)
    await raw.send(BytesMessage(data=streamwire.push(99, False, body), message_finished=False))
    await eventually(lambda: len(started) == peerstream.IN_FLIGHT)
    await synced(raw)
    assert asgi._InFlight.held >= (peerstream.IN_FLIGHT + 5) * len(body)
    await raw.abort()
    gate.set()
    await settled(a)


async def test_messages_the_app_never_took_go_with_it(nursery, monkeypatch):
    """The app ends (here a malformed message, 1007) while hypercorn's queue is full
    of messages it never took and its reader waits to put one more: the app's
    end gave their charges back, but nobody would ever take them, so the reader
    waited for ever, read nothing (not the peer's close, not its hang-up), and
    the connection kept them all in memory, uncharged: a peer could repeat it
    on connection after connection (the cap of streams counts only apps)."""
    a = await start(nursery)
    gate = held_pushes(monkeypatch)
    raw = await Raw.open(a)
    raw.pongs = False  # (two tasks send)
    for ident in range(peerstream.IN_FLIGHT):  # every slot taken, the pushes under way
        await raw.push(ident, b"x")
    await raw.send(BytesMessage(data=b"short"))  # malformed: 1007 once taken
    big = b"\0" * 200_000
    queued = 12  # the queue's 10 (the malformed one first), one being put, one in TCP

    async def send_big() -> None:
        for ident in range(queued):
            await raw.push(100 + ident, big)

    nursery.start_soon(send_big)
    await eventually(lambda: asgi._InFlight.held >= 10 * len(big))
    gate.set()
    with trio.fail_after(LIVENESS_S * 5):
        while raw.closed is None:
            assert await raw.next() is not None
    assert raw.closed.code == 1007
    await raw.send(raw.closed.response())  # the close handshake, completed
    await settled(a)
    # the node ends the connection: it read the close (nothing left unread, unfreed)
    with trio.fail_after(LIVENESS_S * 5):
        while await raw.next() is not None:
            pass
    await raw.stream.aclose()


async def test_a_peer_that_never_reads_holds_bounded_state_and_charges(nursery, monkeypatch):
    """Thousands of pushes, small and large, from a peer that reads no answer and
    no ping: the node's answers back up, its slots fill, then hypercorn's queue,
    then TCP. The buffer's list of charges, the bytes charged and the pushes
    under way stay bounded; the node stays live; its reset gives all back."""
    a = await start(nursery)
    small = await held_blocks(a, 2)
    seen = track_pushes(monkeypatch)
    most = {"charges": 0}
    real_extend = asgi._ChargedBuffer.extend

    def extend(self, event):
        most["charges"] = max(most["charges"], len(self.charges))
        return real_extend(self, event)

    monkeypatch.setattr(asgi._ChargedBuffer, "extend", extend)
    raw = await Raw.open(a)
    raw.pongs = False
    raw.stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # backs up soon
    large = b"\xff" * 300_000
    async with client() as http:
        with trio.move_on_after(LIVENESS_S * 2):
            async with trio.open_nursery() as flood:
                async def send_all() -> None:
                    for ident in range(20_000):
                        most["sent"] = ident
                        await raw.push(ident, large if ident % 50 == 0 else small,
                                       receipt=True)
                flood.start_soon(send_all)
                for _ in range(5):
                    await live(http, a)
                    await trio.sleep(0.2)
        await live(http, a)
    bound = peerstream.IN_FLIGHT + 10 + 1  # under way, queued, begun
    assert most["sent"] < 20_000 - 1, most  # it backed up: the node stopped reading
    assert most["charges"] <= 64 + bound, most
    assert seen["most"] <= peerstream.IN_FLIGHT
    assert seen["held"] <= bound * (len(large) + 9), seen
    await raw.abort()
    await settled(a)


async def test_a_refused_or_abandoned_message_leaves_no_bytes_behind(nursery, monkeypatch):
    """A message refused (too large: 1009) or cut off by the node (too slow: 1008)
    gives its charge back at once, but hypercorn's buffer kept its bytes until
    the connection ended: a peer that then stays silent keeps them a minute
    (``IDLE_S``), uncharged, on as many connections as it opens one after the
    other. The buffer drops them with the charge."""
    monkeypatch.setattr(asgi, "PEER_MAX_MESSAGE", 1 << 20)
    monkeypatch.setattr(peerstream, "MESSAGE_GRACE_S", 0.5)
    monkeypatch.setattr(peerstream, "WATCH_EVERY_S", 0.1)
    buffers: list = []
    real_init = asgi._ChargedBuffer.__init__

    def init(self, max_length):
        real_init(self, max_length)
        buffers.append(self)

    monkeypatch.setattr(asgi._ChargedBuffer, "__init__", init)
    a = await start(nursery)
    for refused, code in ((True, 1009), (False, 1008)):
        raw = await Raw.open(a)
        raw.pongs = False  # silent from now on, but for what it sends here
        size = (1 << 20) + 1 if refused else 900_000
        await raw.send(BytesMessage(data=b"\0" * size, message_finished=False))
        with trio.fail_after(LIVENESS_S * 5):
            while raw.closed is None:
                assert await raw.next() is not None
        assert raw.closed.code == code
        await settled(a)  # its app ended, its charge given back; the connection is open
        assert buffers[-1].length == 0 and buffers[-1].value is None, (code, buffers[-1].length)
        await raw.abort()


# -- many at once --------------------------------------------------------------------
async def test_many_connections_never_charge_past_the_budget_and_give_it_all_back(
        nursery, monkeypatch):
    a = await start(nursery)
    seen = track_pushes(monkeypatch)
    raws = [await Raw.open(a) for _ in range(10)]
    part = b"\xff" * (8 * 1024 * 1024)  # 10 x 8 MiB begun: 80 MiB, past the 64 MiB budget
    refused = 0
    for raw in raws:
        try:
            await raw.send(BytesMessage(data=part, message_finished=False))
            await synced(raw)
        except (AssertionError, trio.BrokenResourceError, trio.ClosedResourceError):
            refused += 1  # (1009: it would have passed the budget)
    assert refused >= 2, refused
    assert seen["held"] <= asgi.MAX_BODIES_IN_FLIGHT
    async with client() as http:
        await live(http, a)
    for raw in raws:
        await raw.abort()
    await settled(a)


# -- the upgrade refused ---------------------------------------------------------------
async def test_frames_sent_with_a_refused_upgrade_charge_nothing(nursery):
    a = await start(nursery)
    for book in ("another", "default"):  # 409 before the upgrade; then accepted, for contrast
        stream = await trio.open_tcp_stream("127.0.0.1", port(a))
        ws = WSConnection(ConnectionType.CLIENT)
        head = ws.send(Request(host="127.0.0.1", target=asgi.PEER_STREAM,
                               extra_headers=named("early", book)))
        # frames at once, before any answer: framed as a client frames them
        frames = FrameProtocol(client=True, extensions=[])
        await stream.send_all(head + frames.send_data(b"\0" * 200_000, fin=False))
        with contextlib.suppress(trio.BrokenResourceError):
            with trio.move_on_after(1):
                await stream.receive_some(1 << 16)
        await stream.aclose()
        await settled(a)


# -- HTTP bodies -----------------------------------------------------------------------
async def http_body_attack(running, head: bytes, body: bytes, hang_up: bool) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port(running))
    await stream.send_all(head + body)
    answer = b""
    if not hang_up:
        with trio.move_on_after(LIVENESS_S * 5):
            while True:
                data = await stream.receive_some(1 << 16)
                if not data:
                    break
                answer += data
    await stream.aclose()
    return answer


async def test_http_bodies_cut_off_chunked_or_slow_give_back_what_they_held(nursery):
    a = await start(nursery)
    token = a.token.encode()

    def head(length: int | None) -> bytes:
        framing = b"transfer-encoding: chunked\r\n" if length is None else \
            b"content-length: %d\r\n" % length
        return (b"POST /peer/push HTTP/1.1\r\nhost: x\r\nauthorization: Bearer " + token
                + b"\r\nx-crdtbook-replica: r\r\nx-crdtbook-book: default\r\n"
                b"content-type: application/cbor\r\n" + framing + b"\r\n")

    chunked = b"".join(b"%x\r\n" % 100_000 + b"\0" * 100_000 + b"\r\n" for _ in range(5))
    for body_head, body in ((head(2_000_000), b"\0" * 500_000),  # cut off mid-way
                            (head(None), chunked),  # chunked, cut off
                            (head(None), chunked + b"5\r\n\0\0")):  # mid-chunk
        await http_body_attack(a, body_head, body, hang_up=True)
        await settled(a)
    # one that stops sending: 408 in time, and nothing held
    answer = await http_body_attack(a, head(2_000_000), b"\0" * 500_000, hang_up=False)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    await settled(a)


# -- a node stopping -------------------------------------------------------------------
async def test_a_node_stopping_with_streams_mid_message_and_pushes_under_way_holds_nothing(
        nursery, monkeypatch):
    a = await start(nursery)
    held_pushes(monkeypatch)  # never let go: the node stops with them under way
    raws = [await Raw.open(a) for _ in range(3)]
    body = b"\0" * 200_000
    for raw in raws:
        for ident in range(peerstream.IN_FLIGHT + 3):
            await raw.push(ident, body)
        await raw.send(BytesMessage(data=streamwire.push(99, False, body),
                                    message_finished=False))
        await synced(raw)
    assert asgi._InFlight.held >= 3 * (peerstream.IN_FLIGHT + 4) * len(body)
    await a.stop()  # the pushes never end: hypercorn's grace, then cancelled
    assert asgi._InFlight.held == 0
    for raw in raws:
        await raw.abort()
