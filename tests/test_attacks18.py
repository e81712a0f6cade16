"""Attacks on the peer stream (``/peer/stream``: peers' pushes over one WebSocket per
peer), against real nodes on loopback.

The stream (node/cluster/peerstream.py receives, pushstream.py sends,
streamwire.py frames) must keep every promise ``/peer/push`` keeps: a forged
or altered push is refused with HTTP's very answer and leaves no trace, every
input is bounded (per message, per connection, node-wide), an answer means
durable, a peer's bytes never crash a node, and a peer that does not speak
the stream well still gets its pushes (over HTTP) without a reconnect loop.

A hostile receiver is a real node whose ``/peer/stream`` handler a test
replaces (``hostile``): the rest of it, ``/peer/push`` and pulls included,
stays real. A hostile sender is a raw WebSocket client (wsproto over a trio
socket, ``Raw``) that sends whatever a test wants.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, Request
from wsproto.events import Request as WsRequest

from crdtbook.feedwire import decode_blocks, encode_blocks, encode_body
from crdtbook.keys import Signer
from node import asgi
from node.api.requests import OrderRequest
from node.cluster import gossip, peerauth, peerstream, pushstream, streamwire
from node.cluster.peerapi import PeerAPI

from .fakepeer import Fake
from .nodes import LIVENESS_S, client, converged, eventually, trading_events
from .nodes import start as start_node
from .peers import SignedPeer
from .procs import NodeProcess, get
from .test_attacks import stranger_block
from .test_attacks14 import Traders, members


async def start(nursery, *peers: str, **settings):
    """A node (tests/nodes.py) with the peer stream on: the route under attack (off
    by default, NodeConfig.peer_stream)."""
    settings.setdefault("peer_stream", True)
    return await start_node(nursery, *peers, **settings)


async def submit(http, url: str, side: str, qty: str, price: str) -> None:
    response = await http.post(f"{url}/orders", json={"side": side, "qty": qty, "price": price})
    assert response.status_code == 201, response.text


def hostile(monkeypatch, honest: tuple, handler) -> list:
    """The ``/peer/stream`` of every node but the ``honest`` ones (those started from
    now on) served by ``handler(api, scope, receive, send)`` instead; returns the list
    of upgrades it got (one item each). (Installed before the hostile node starts:
    its peers' streams to it are opened as it joins, and kept.)"""
    real = peerstream.serve
    opened: list = []

    async def serve(api, scope, receive, send):
        if any(api.node is r.node for r in honest):
            return await real(api, scope, receive, send)
        opened.append(scope)
        return await handler(api, scope, receive, send)

    monkeypatch.setattr(peerstream, "serve", serve)
    return opened


async def _accept(api, receive, send) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept",
                "headers": [(b"x-crdtbook-replica", api.node.id.encode())]})


async def accept_then_close(api, scope, receive, send) -> None:
    await _accept(api, receive, send)
    await send({"type": "websocket.close", "code": 1000})


async def accept_then_ignore(api, scope, receive, send) -> None:
    """Takes every message, answers none (until the peer goes)."""
    await _accept(api, receive, send)
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def place_until(http, a, check, timeout: float = 15.0) -> int:
    """Place orders at ``a`` one by one (each answered 201 within LIVENESS_S) until
    ``check()``; returns how many were placed."""
    placed = 0

    async def one_more() -> bool:
        nonlocal placed
        with trio.fail_after(LIVENESS_S):
            await submit(http, a.url, "buy", "1", str(10 + placed % 7))
        placed += 1
        return check()

    await eventually(one_more, timeout=timeout, interval=0.1)
    return placed


# -- the fallback: a peer that does not speak the stream well -----------------------
async def test_a_receiver_that_accepts_and_closes_at_once_still_gets_pushes_over_http(
        nursery, monkeypatch):
    a = await start(nursery)
    opened = hostile(monkeypatch, (a,), accept_then_close)
    b = await start(nursery, a.url)
    await eventually(lambda: len(a.node.peers) == 1 and len(b.node.peers) == 1)
    async with client() as http:
        before = a.node.stats["push_requests"]
        placed = await place_until(http, a, lambda: a.node.stats["push_requests"] > before + 3)
        # a stream that closed before its first answer is not tried again for RETRY_S:
        # (one upgrade, not one per push); the push that found it out went over HTTP
        assert len(opened) == 1, (len(opened), placed)
    await eventually(lambda: converged(a, b))
    assert trading_events(b.node) == placed
    await a.stop()  # its sender's tasks and link end with it (within stop's bound)


async def test_a_receiver_that_never_answers_on_the_stream_gets_pushes_over_http(
        nursery, monkeypatch):
    a = await start(nursery)
    c = await start(nursery, a.url)
    opened = hostile(monkeypatch, (a, c), accept_then_ignore)
    b = await start(nursery, a.url)
    await eventually(lambda: all(len(r.node.peers) == 2 for r in (a, b, c)))
    async with client() as http:
        before = a.node.stats["push_requests"]
        answered_by_c = c.node.stream_pushes_answered
        # a keeps placing orders, and pushing to c over its stream, while b's hangs;
        # the pushes to b time out (request_timeout_s) and then go over HTTP
        await place_until(http, a, lambda: a.node.stats["push_requests"] > before + 3
                          and c.node.stream_pushes_answered > answered_by_c + 3
                          and (a.node.stats["push_requests"] - a.node.stats["stream_pushes"])
                          > 0, timeout=20)
        assert len(opened) == 1
    await eventually(lambda: converged(a, b, c))
    await a.stop()  # (a link to b, hung, still open: it ends with a)


async def test_a_receiver_that_flips_between_refusing_and_accepting(nursery, monkeypatch):
    monkeypatch.setattr(pushstream, "RETRY_S", 0.5)
    a = await start(nursery)
    real = peerstream.serve
    turns: list[str] = []

    async def flipping(api, scope, receive, send):
        turn = ("refuse", "close", "ignore", "real")[len(turns) % 4]
        turns.append(turn)
        if turn == "refuse":
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.http.response.start", "status": 404,
                        "headers": []})
            await send({"type": "websocket.http.response.body", "body": b""})
        elif turn == "close":
            await accept_then_close(api, scope, receive, send)
        elif turn == "ignore":
            await accept_then_ignore(api, scope, receive, send)
        else:
            await real(api, scope, receive, send)

    hostile(monkeypatch, (a,), flipping)
    b = await start(nursery, a.url)
    await eventually(lambda: len(a.node.peers) == 1 and len(b.node.peers) == 1)
    async with client() as http:
        started = trio.current_time()
        before = a.node.stats["push_requests"]
        streamed = a.node.stats["stream_pushes"]
        await place_until(http, a, lambda: "real" in turns
                          and a.node.stats["stream_pushes"] > streamed
                          and a.node.stats["push_requests"] - before
                          > a.node.stats["stream_pushes"] - streamed, timeout=30)
        # every turn but the real one costs a RETRY_S of HTTP: no reconnect loop
        took = trio.current_time() - started
        assert len(turns) <= 2 + took / pushstream.RETRY_S, (turns, took)
    await eventually(lambda: converged(a, b))
    await a.stop()


# -- forge: the stream answers as /peer/push does, and a refusal leaves no trace -----
def ws_url(running) -> str:
    return running.url.replace("http://", "ws://") + asgi.PEER_STREAM


def named(replica: str, book: str = "default") -> list[tuple[bytes, bytes]]:
    return [(b"x-crdtbook-replica", replica.encode()), (b"x-crdtbook-book", book.encode())]


async def over_http(http, node, body: bytes, receipt: bool, replica: str) -> tuple:
    headers = {"x-crdtbook-replica": replica, "x-crdtbook-book": "default",
               "content-type": "application/cbor"}
    if receipt:
        headers["x-crdtbook-ack"] = "1"
    r = await http.post(f"{node.url}/peer/push", content=body, headers=headers)
    signed = r.headers.get(peerauth.HEADER, "")
    return r.status_code, (r.json() if r.content else None), signed


async def over_stream(node, body: bytes, receipt: bool, replica: str) -> tuple:
    async with open_websocket_url(ws_url(node), extra_headers=named(replica),
                                  max_message_size=1 << 20) as ws:
        await ws.send_message(streamwire.push(2**64 - 1, receipt, body))
        ident, status, signed, content = streamwire.read_answer(await ws.get_message())
    assert ident == 2**64 - 1
    return status, (json.loads(content) if content else None), signed.decode()


def membership(node) -> tuple:
    """What no refused push may change: the set, who is a peer (and as whom), the
    door's verdicts, the node's own standing."""
    return (node.replica.digest(), node.replica.events_total(),
            sorted((url, p.replica) for url, p in node.peers.items()),
            dict(node.door.tips), sorted(node.door.proofs), node.conflict)


async def test_forged_pushes_get_the_answers_of_http_and_leave_no_trace(nursery):
    a = await start(nursery)
    b = await start(nursery, a.url)
    await eventually(lambda: len(a.node.peers) == 1 and len(b.node.peers) == 1)
    async with client() as http:
        for i in range(3):
            await submit(http, b.url, "sell", "1", str(20 + i))
        await eventually(lambda: converged(a, b, events=3))
        held, _ = decode_blocks(encode_blocks(
            [blk for blk in a.node.door.answer({}).blocks if blk.replica == b.node.id]))
        tip = a.node.door.tips[b.node.id]
        forger = SignedPeer("forger")
        forged = forger.forge(b.node.id, tip, a.node.clock_ms())
        mallory = SignedPeer("mallory").admitted_by(a.node)  # a member, blocks a lacks
        await eventually(lambda: b.node.replica.is_member(mallory.id) and converged(a, b))
        now = a.node.clock_ms()
        first = mallory.place("buy", "1", "5", now_ms=now)
        second = mallory.place("buy", "1", "6", now_ms=now + 1)  # past a gap without first
        last = held[-1]
        changed = (last.events[0]._replace(qty=last.events[0].qty + 1), *last.events[1:])
        cases = {
            "garbage": b"\xa1\x61x\xff not cbor",
            "empty": b"",
            "a stranger block": encode_blocks([stranger_block(Signer.from_name("s"))]),
            "b's next block signed by a forger": forger.blocks([forged]),
            "b's next block, zero signature": encode_blocks([forged._replace(sig=bytes(64))]),
            "b's next block under b's last signature": encode_blocks(
                [forged._replace(sig=last.sig)]),
            "a member's block altered": mallory.blocks(
                [first._replace(body=first.body[:-1] + bytes([first.body[-1] ^ 1]))]),
            "a member's block with its next one's body": mallory.blocks(
                [first._replace(body=second.body)]),
            "a held block replayed": encode_blocks(held),
            "a held block altered (a duplicate)": encode_blocks(
                [last._replace(body=encode_body(changed), events=changed)]),
            "a receipt asked for a block past a gap": mallory.blocks([second]),
        }
        for replica in ("stranger", b.node.id, a.node.id, ""):  # who the headers name
            for name, body in cases.items():
                before = membership(a.node)
                refused = a.node.refused_messages
                by_http = await over_http(http, a, body, True, replica)
                counted = a.node.refused_messages - refused
                assert membership(a.node) == before, name
                by_stream = await over_stream(a, body, True, replica)
                assert membership(a.node) == before, name
                assert a.node.refused_messages - refused == 2 * counted, name
                # the same status and error; a receipt exactly when HTTP gives one (each
                # signs the same body: the same bytes)
                assert by_stream == by_http, (name, replica, by_stream, by_http)
                if name.startswith(("garbage", "empty", "b's next", "a member's")):
                    assert by_http[0] == 400, (name, by_http)
                elif name.startswith("a held"):
                    assert by_http[0] == 204 and by_http[2], (name, by_http)  # held: receipt
                else:  # skipped (a stranger's feed; past a gap): taken, nothing held
                    assert by_http[0] == 204 and not by_http[2], (name, by_http)
        # the member's real first block still goes in (nothing was poisoned), either way
        assert (await over_stream(a, mallory.blocks([first]), True, "stranger"))[0] == 204
        assert a.node.door.tip(mallory.id).last >= first.last
    assert not a.node.conflict and not a.node.door.proofs
    await eventually(lambda: converged(a, b))


async def test_a_stream_of_another_book_or_of_a_node_with_it_off_is_refused_before_upgrade(
        nursery):
    a = await start(nursery)
    off = await start(nursery, a.url, peer_stream=False)
    before = membership(a.node)
    for node, headers, status in ((a, named("x", "other"), 409),
                                  (a, named("x", "default\u00e9"), 409),
                                  (off, named("x"), 404)):
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(ws_url(node), extra_headers=headers):
                pass
        assert refused.value.status_code == status
        assert json.loads(refused.value.body)["error"] in ("wrong_book", "not_found")
    assert a.node.streams_open == off.node.streams_open == 0
    assert membership(a.node) == before


# -- flood and bound: a raw peer stream ---------------------------------------------
class Raw:
    """A peer stream spoken by hand (wsproto over a trio socket): sends any frame,
    reads what comes, answers pings if ``pongs``."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream, self.ws = stream, ws
        self.pongs = True
        self.answers: list[tuple[int, int, bytes, bytes]] = []
        self.closed: CloseConnection | None = None

    @classmethod
    async def open(cls, node, replica: str = "raw") -> Raw:
        stream = await trio.open_tcp_stream("127.0.0.1", int(node.url.rsplit(":", 1)[1]))
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host="127.0.0.1", target=asgi.PEER_STREAM,
                                              extra_headers=named(replica))))
        raw = cls(stream, ws)
        event = await raw.next()
        assert isinstance(event, AcceptConnection), event
        return raw

    async def send(self, event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def push(self, ident: int, body: bytes, receipt: bool = False) -> None:
        await self.send(BytesMessage(data=streamwire.push(ident, receipt, body)))

    async def next(self):
        """The next event but pings (answered); an answer is kept in ``answers`` (and
        returned, read); None when the connection ends."""
        pending = bytearray()
        while True:
            for event in self.ws.events():
                if isinstance(event, Ping):
                    if self.pongs:
                        await self.send(event.response())
                elif isinstance(event, BytesMessage):
                    pending += event.data
                    if event.message_finished:
                        self.answers.append(streamwire.read_answer(bytes(pending)))
                        return self.answers[-1]
                else:
                    if isinstance(event, CloseConnection):
                        self.closed = event
                    return event
            try:
                data = await self.stream.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                return None
            self.ws.receive_data(data)

    async def answered(self, count: int) -> list:
        """Read until ``count`` answers came (or the connection ended)."""
        while len(self.answers) < count:
            with trio.fail_after(LIVENESS_S * 5):
                if await self.next() is None or self.closed is not None:
                    break
        return self.answers

    async def abort(self) -> None:
        """Reset the connection (SO_LINGER 0), as a killed process's kernel may."""
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))
        await self.stream.aclose()


async def live(http, node) -> None:
    """The node answers a client within LIVENESS_S."""
    with trio.fail_after(LIVENESS_S):
        r = await http.get(node.url + "/status")
    assert r.status_code == 200


def track_pushes(monkeypatch) -> dict:
    """Pushes handled at once (PeerAPI.push, for HTTP and streams alike), and the most
    bytes of bodies and messages charged at once, node-wide."""
    seen = {"now": 0, "most": 0, "held": 0}
    real_push, real_add = PeerAPI.push, asgi.Charge.add

    async def push(self, headers, body):
        seen["now"] += 1
        seen["most"] = max(seen["most"], seen["now"])
        try:
            return await real_push(self, headers, body)
        finally:
            seen["now"] -= 1

    def add(self, size):
        taken = real_add(self, size)
        seen["held"] = max(seen["held"], asgi._InFlight.held)
        return taken

    monkeypatch.setattr(PeerAPI, "push", push)
    monkeypatch.setattr(asgi.Charge, "add", add)
    return seen


async def held_blocks(running, count: int) -> bytes:
    """A push of ``count`` of ``running``'s own blocks (held there: a replay)."""
    node = running.node
    for i in range(count):
        node.place_many([OrderRequest("buy", "1", str(10 + i), "limit", "")])
        await node.journal.sync()
    return encode_blocks([b for b in node.door.answer({}).blocks if b.replica == node.id])


async def test_thousands_of_pushes_in_flight_on_one_connection_are_bounded(
        nursery, monkeypatch):
    a = await start(nursery)
    body = await held_blocks(a, 3)
    seen = track_pushes(monkeypatch)
    before = membership(a.node)
    raw = await Raw.open(a)
    count = 3_000
    async with client() as http:
        sent = [0]
        async with trio.open_nursery() as flood:
            async def send_all() -> None:  # never reading an answer meanwhile
                for ident in range(count):
                    await raw.push(ident, body, receipt=bool(ident % 2))
                    sent[0] += 1

            flood.start_soon(send_all)
            for k in range(1, 6):  # live at every fifth of the flood
                await eventually(lambda k=k: sent[0] >= k * count // 5, timeout=60)
                await live(http, a)
        answers = await raw.answered(count)
        await live(http, a)
    assert sorted(ident for ident, *_ in answers) == list(range(count))  # each once
    assert {status for _, status, _, _ in answers} == {204}
    assert all(bool(receipt) == bool(ident % 2) for ident, _, receipt, _ in answers)
    assert seen["most"] <= peerstream.IN_FLIGHT
    # the messages charged at once: those handled, those in hypercorn's queue, one begun
    assert seen["held"] <= (peerstream.IN_FLIGHT + 10 + 1) * (len(body) + 9), seen
    assert membership(a.node) == before
    await raw.stream.aclose()
    await eventually(lambda: a.node.streams_open == 0 and asgi._InFlight.held == 0)


async def test_large_messages_never_read_back_hold_a_bounded_budget(nursery, monkeypatch):
    a = await start(nursery)
    seen = track_pushes(monkeypatch)
    raws = [await Raw.open(a) for _ in range(3)]
    size = 1 << 20
    async with client() as http:
        sent = [0]
        with trio.move_on_after(LIVENESS_S * 2):  # they stop being read: TCP holds the rest
            async with trio.open_nursery() as flood:
                for raw in raws:
                    async def send_many(raw=raw) -> None:
                        for ident in range(200):
                            await raw.push(ident, b"\xff" * size)
                            sent[0] += 1
                    flood.start_soon(send_many)
                # live while they come: after 3, 6, ... 15 messages sent (each connection
                # has 8 handled, 10 queued and one begun before the node stops reading it)
                for k in range(1, 6):
                    await eventually(lambda k=k: sent[0] >= 3 * k, timeout=LIVENESS_S)
                    await live(http, a)
        await live(http, a)
    assert seen["most"] <= 3 * peerstream.IN_FLIGHT
    assert seen["held"] <= asgi.MAX_BODIES_IN_FLIGHT
    assert seen["held"] <= 3 * (peerstream.IN_FLIGHT + 10 + 1) * (size + 9), seen
    for raw in raws:
        await raw.abort()
    await eventually(lambda: a.node.streams_open == 0 and asgi._InFlight.held == 0)


async def test_streams_past_the_cap_are_refused_and_the_peer_pushes_over_http(
        nursery, monkeypatch):
    monkeypatch.setattr(peerstream, "MAX_STREAMS", 3)
    a = await start(nursery)
    raws = [await Raw.open(a, f"hog{i}") for i in range(3)]
    assert a.node.streams_open == 3
    with pytest.raises(ConnectionRejected) as refused:
        async with open_websocket_url(ws_url(a), extra_headers=named("one-more")):
            pass
    assert refused.value.status_code == 503
    # an honest peer finds the cap reached: its pushes go over HTTP
    b = await start(nursery, a.url)
    await eventually(lambda: len(a.node.peers) == 1 and len(b.node.peers) == 1)
    async with client() as http:
        await place_until(http, b, lambda: b.node.stats["push_requests"] > 3)
    assert b.node.stats["stream_pushes"] == 0
    assert a.node.streams_open == 3
    for raw in raws:
        await raw.stream.aclose()
    await eventually(lambda: a.node.streams_open == 0)


async def test_a_message_at_the_push_limit_is_a_push_and_one_byte_more_is_not(nursery):
    a = await start(nursery)
    await eventually(lambda: a.node.door.tips)  # (its own, once its founding is sealed)
    before = membership(a.node)
    body = b"\xff" * gossip.PUSH_BODY_LIMIT  # the largest body /peer/push reads
    async with client() as http:
        by_http = await over_http(http, a, body, False, "big")
        too_large = await http.post(a.url + "/peer/push", content=body + b"\xff")
    assert by_http[0] == 400 and too_large.status_code == 413
    raw = await Raw.open(a)
    await raw.push(1, body)
    assert [(ident, status) for ident, status, _, _ in await raw.answered(1)] == [(1, 400)]
    await raw.push(2, body + b"\xff")
    await raw.answered(2)
    assert raw.closed is not None and raw.closed.code == 1009 and len(raw.answers) == 1
    await raw.stream.aclose()
    assert membership(a.node) == before
    await eventually(lambda: a.node.streams_open == 0 and asgi._InFlight.held == 0)


async def test_a_push_in_fragments_is_one_push_up_to_the_bound_of_frames(nursery):
    a = await start(nursery)
    message = streamwire.push(5, True, await held_blocks(a, 2))
    cuts = [len(message) * i // (asgi.PEER_MAX_FRAMES - 1)
            for i in range(asgi.PEER_MAX_FRAMES)]
    pieces = [message[start:end] for start, end in zip(cuts, cuts[1:], strict=False)]
    assert len(pieces) == asgi.PEER_MAX_FRAMES - 1 and all(pieces)
    raw = await Raw.open(a)
    for piece in pieces:
        await raw.send(BytesMessage(data=piece, message_finished=False))
    await raw.send(BytesMessage(data=b"", message_finished=True))  # (an empty last frame)
    [(ident, status, receipt, _)] = await raw.answered(1)
    assert (ident, status) == (5, 204) and receipt
    # one frame more: refused whole, as a message too large is
    for piece in pieces:
        await raw.send(BytesMessage(data=piece, message_finished=False))
    await raw.send(BytesMessage(data=b"", message_finished=False))
    await raw.send(BytesMessage(data=b"", message_finished=True))
    await raw.answered(2)
    assert raw.closed is not None and raw.closed.code == 1009 and len(raw.answers) == 1
    await raw.stream.aclose()
    await eventually(lambda: a.node.streams_open == 0 and asgi._InFlight.held == 0)


async def test_messages_in_one_byte_frames_leave_the_node_live(nursery):
    a = await start(nursery)
    raws = [await Raw.open(a) for _ in range(4)]
    # a frame of one byte is 7 on the wire: hypercorn reads 64 KiB at once, 9,000 frames
    frames = b"".join(raws[0].ws.send(BytesMessage(data=b"\xff", message_finished=False))
                      for _ in range(100_000))
    step = len(frames) // 10
    sent, ended = [0], [0]  # tenths of the frames sent, senders done (or cut off)
    async with client() as http, trio.open_nursery() as flood:
        for raw in raws:
            async def send(raw=raw) -> None:
                try:
                    with contextlib.suppress(trio.BrokenResourceError):
                        for i in range(0, len(frames), step):
                            await raw.stream.send_all(frames[i:i + step])
                            sent[0] += 1
                finally:
                    ended[0] += 1
            flood.start_soon(send)
        for k in range(1, 11):  # live at every tenth of the frames (or once all ended)
            await eventually(lambda k=k: sent[0] >= k * len(raws) or ended[0] == len(raws),
                             timeout=LIVENESS_S)
            await live(http, a)
        flood.cancel_scope.cancel()
    for raw in raws:
        await raw.abort()
    await eventually(lambda: a.node.streams_open == 0 and asgi._InFlight.held == 0)


def rss_mib() -> int:
    """This process's resident memory (the nodes of a test run in it)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


async def flood_after_too_large(node, target: str, limit: int) -> tuple[bool, int | None, int]:
    """Open a WebSocket at ``target``, send a message of ``limit + 1`` bytes (closed with
    1009), then frames without end, for LIVENESS_S * 3 at most: (whether the node
    ended the connection, the code it closed with, how much this process grew, MiB)."""
    stream = await trio.open_tcp_stream("127.0.0.1", int(node.url.rsplit(":", 1)[1]))
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host="127.0.0.1", target=target,
                                          extra_headers=named("big"))))
    raw = Raw(stream, ws)
    assert isinstance(await raw.next(), AcceptConnection)
    raw.pongs = False  # (one task sends)
    await raw.send(BytesMessage(data=b"\xff" * (limit + 1)))
    chunk = b"".join(ws.send(BytesMessage(data=b"\xff" * 100, message_finished=False))
                     for _ in range(10_000))
    before = rss_mib()
    ended = False

    async def read() -> None:
        while await raw.next() is not None:
            pass

    async with trio.open_nursery() as both:
        both.start_soon(read)
        with trio.move_on_after(LIVENESS_S * 3):
            try:
                while True:
                    await stream.send_all(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                ended = True
        both.cancel_scope.cancel()
    grown = rss_mib() - before
    await raw.abort()
    return ended, raw.closed.code if raw.closed is not None else None, grown


async def test_what_follows_a_message_too_large_is_not_kept(nursery):
    a = await start(nursery)
    # a peer stream, and a client's WebSocket (/ws: the same hypercorn stream,
    # asgi.FramesAtOnce): the node cuts the sender off, and keeps nothing of it (it
    # took hundreds of MB in those seconds, and kept them)
    for target, limit in ((asgi.PEER_STREAM, asgi.PEER_MAX_MESSAGE),
                          ("/ws", asgi.WS_MAX_MESSAGE)):
        ended, code, grown = await flood_after_too_large(a, target, limit)
        assert ended and code == 1009 and grown < 64, (target, ended, code, grown)
    await eventually(lambda: a.node.streams_open == 0 and asgi._InFlight.held == 0)


# -- a malicious receiver: what the sender's node does with any answer ---------------
def answering(answer_of):
    """A ``/peer/stream`` handler that takes pushes and sends, for each, what
    ``answer_of(api, ident, receipt, body)`` returns (a list of ASGI send messages),
    without merging anything."""
    async def handler(api, scope, receive, send) -> None:
        await _accept(api, receive, send)
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            ident, receipt, body = streamwire.read_push(message["bytes"])
            for out in answer_of(api, ident, receipt, body):
                await send(out)
    return handler


def _bytes(data: bytes) -> list[dict]:
    return [{"type": "websocket.send", "bytes": data}]


HOSTILE_ANSWERS = {
    "an id never sent": lambda api, i, r, b: _bytes(streamwire.answer(i + 1000, 204, b"", b"")),
    "id 0 and the largest": lambda api, i, r, b: _bytes(streamwire.answer(0, 204, b"", b""))
    + _bytes(streamwire.answer(2**64 - 1, 204, b"", b"")),
    "a text message": lambda api, i, r, b: [{"type": "websocket.send", "text": "204"}],
    "a short message": lambda api, i, r, b: _bytes(b"\0\0\0"),
    "a status out of range": lambda api, i, r, b: _bytes(streamwire.answer(i, 999, b"", b"")),
    "a receipt longer than the message": lambda api, i, r, b: _bytes(
        streamwire.answer(i, 204, b"", b"")[:-2] + b"\xff\xff"),
    "a receipt not ASCII": lambda api, i, r, b: _bytes(streamwire.answer(i, 204, b"\xff", b"")),
    "an answer past MAX_ANSWER": lambda api, i, r, b: _bytes(
        streamwire.answer(i, 400, b"", b"x" * (pushstream.MAX_ANSWER + 1))),
    "a close with a strange code": lambda api, i, r, b: [
        {"type": "websocket.close", "code": 4999, "reason": "x" * 100}],
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_ANSWERS))
async def test_a_receiver_that_answers_nonsense_crashes_nothing_and_gets_pushes_over_http(
        nursery, monkeypatch, kind):
    a = await start(nursery)
    c = await start(nursery, a.url)
    opened = hostile(monkeypatch, (a, c), answering(HOSTILE_ANSWERS[kind]))
    b = await start(nursery, a.url)
    await eventually(lambda: all(len(r.node.peers) == 2 for r in (a, b, c)))
    async with client() as http:
        before = a.node.stats["push_requests"] - a.node.stats["stream_pushes"]
        answered_by_c = c.node.stream_pushes_answered
        # a keeps placing orders and pushing to c over its stream; the pushes to b go
        # over HTTP once its stream answered nothing usable
        await place_until(http, a, lambda: c.node.stream_pushes_answered > answered_by_c + 3
                          and a.node.stats["push_requests"] - a.node.stats["stream_pushes"]
                          > before + 3)
        assert len(opened) <= 2, len(opened)  # (b's join may race its first push)
        await live(http, a)
    await eventually(lambda: converged(a, b, c))
    assert not any(r.node.conflict for r in (a, b, c))
    await a.stop()


async def test_a_receiver_that_answers_at_once_without_merging_gets_no_credit_for_receipts(
        nursery, monkeypatch):
    sent: list[str] = []

    def lie(api, ident, receipt, body):
        # 204 before anything is durable, with a receipt of the receiver's own key, but
        # over another body (a replayed receipt, or one for what it does not hold)
        signed = peerauth.sign_answer(api.node, body + b"?", b"").encode() if receipt else b""
        sent.append(signed.decode())
        return _bytes(streamwire.answer(ident, 204, signed, b""))

    verified: list[tuple] = []
    real_answer_from = peerauth.answer_from

    def answer_from(node, replica, signature, request, answer):
        ok = real_answer_from(node, replica, signature, request, answer)
        verified.append((signature, ok))
        return ok

    monkeypatch.setattr(peerauth, "answer_from", answer_from)
    a = await start(nursery)
    hostile(monkeypatch, (a,), answering(lie))
    b = await start(nursery, a.url)
    await eventually(lambda: len(a.node.peers) == 1 and len(b.node.peers) == 1)
    async with client() as http:
        streamed = a.node.stats["stream_pushes"]
        for i in range(5):
            r = await http.post(f"{a.url}/orders?ack=replicated&timeout=5",
                                json={"side": "buy", "qty": "1", "price": str(10 + i)})
            assert r.status_code in (201, 202), r.text  # (b's own pulls may prove it)
        assert a.node.stats["stream_pushes"] > streamed  # the lies were taken as pushes
    lies = {signature for signature in sent if signature}
    assert lies, "receipts were asked for"
    assert not any(ok for signature, ok in verified if signature in lies)
    await eventually(lambda: converged(a, b))  # (b's pulls bring everything)


class RawReceiver:
    """A receiver spoken by hand (wsproto, server side, over a trio socket): accepts
    the upgrade, sends ``pings`` pings at once, then answers each push 204; counts
    the pongs it gets."""

    def __init__(self, pings: int) -> None:
        self.pings = pings
        self.pongs = 0
        self.url = ""

    async def serve(self, nursery) -> str:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, self._handle, listeners)
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        return self.url

    async def _handle(self, stream) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        writing = trio.Lock()

        async def write(data: bytes) -> None:
            async with writing:
                await stream.send_all(data)

        async def flood() -> None:  # (while reading on: a receiver that reads its pongs)
            for _ in range(self.pings // 100):
                await write(b"".join(ws.send(Ping(payload=b"p" * 125)) for _ in range(100)))

        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            async with trio.open_nursery() as tasks:
                while True:
                    data = await stream.receive_some(1 << 16)
                    if not data:
                        tasks.cancel_scope.cancel()
                        return
                    ws.receive_data(data)
                    out = b""
                    for event in ws.events():
                        if isinstance(event, WsRequest):
                            await write(ws.send(AcceptConnection(
                                extra_headers=named("raw-receiver"))))
                            tasks.start_soon(flood)
                        elif isinstance(event, Pong):
                            self.pongs += 1
                        elif isinstance(event, BytesMessage):
                            ident, _, _ = streamwire.read_push(bytes(event.data))
                            out += ws.send(BytesMessage(
                                data=streamwire.answer(ident, 204, b"", b"")))
                    if out:
                        await write(out)


async def test_a_receiver_that_floods_pings_still_gets_its_pushes_answered(nursery):
    receiver = RawReceiver(pings=5_000)
    await receiver.serve(nursery)
    link = await pushstream.connect(receiver.url, "sender", "default")
    async with trio.open_nursery() as reading:
        reading.start_soon(link.read)
        with trio.fail_after(LIVENESS_S * 3):
            answers = [await link.exchange(b"push %d" % i, False) for i in range(20)]
        # every ping answered, none of them taken as an answer, the link still open
        await eventually(lambda: receiver.pongs == 5_000)
        assert link.closed is None
        reading.cancel_scope.cancel()
    assert [answer.status_code for answer in answers] == [204] * 20


async def test_ids_reused_or_extreme_are_each_answered_once(nursery):
    a = await start(nursery)
    body = await held_blocks(a, 1)
    raw = await Raw.open(a)
    idents = [0, 2**64 - 1, 7, 7, 7, 2**63]
    for ident in idents:
        await raw.push(ident, body)
    answers = await raw.answered(len(idents))
    assert sorted(ident for ident, *_ in answers) == sorted(idents)
    assert {status for _, status, _, _ in answers} == {204}
    await raw.stream.aclose()


async def test_a_message_trickled_a_byte_at_a_time_is_cut_off_in_time(nursery, monkeypatch):
    monkeypatch.setattr(peerstream, "MESSAGE_GRACE_S", 0.5)
    monkeypatch.setattr(peerstream, "WATCH_EVERY_S", 0.1)
    a = await start(nursery)
    await eventually(lambda: a.node.door.tips)  # (its own, once its founding is sealed)
    before = membership(a.node)
    raw = await Raw.open(a)
    started = trio.current_time()
    closed = trio.Event()

    async def read() -> None:
        await raw.next()  # (the close, or the end)
        closed.set()

    async with trio.open_nursery() as both:
        both.start_soon(read)
        with trio.move_on_after(LIVENESS_S * 3):
            while not closed.is_set():  # a byte every 50 ms: never idle, never whole
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await raw.send(BytesMessage(data=b"\0", message_finished=False))
                await trio.sleep(0.05)
        both.cancel_scope.cancel()
    assert closed.is_set() and raw.closed is not None and raw.closed.code == 1008
    assert trio.current_time() - started < LIVENESS_S
    await raw.stream.aclose()
    await eventually(lambda: a.node.streams_open == 0 and asgi._InFlight.held == 0)
    assert membership(a.node) == before


async def test_a_sender_gone_mid_message_leaves_nothing_held(nursery):
    a = await start(nursery)
    message = streamwire.push(1, False, await held_blocks(a, 1) + b"\0" * 500_000)
    before = membership(a.node)
    for _ in range(20):  # reset at a different point of the message each time
        raw = await Raw.open(a)
        await raw.send(BytesMessage(data=message[:250_000], message_finished=False))
        await eventually(lambda: asgi._InFlight.held >= 250_000)
        await raw.abort()
        await eventually(lambda: a.node.streams_open == 0 and asgi._InFlight.held == 0)
    assert membership(a.node) == before


async def test_a_sender_gone_mid_message_after_64_whole_ones_leaves_nothing_held(nursery):
    """The buffer forgot the charge of each 65th message as it began: a sender gone
    in the middle of that one kept its bytes charged for ever (the whole suite
    once failed on 589,333 bytes a test left held). Each round lands the
    message begun on another index of the buffer's list."""
    a = await start(nursery)
    small = await held_blocks(a, 1)
    message = streamwire.push(1, False, small + b"\0" * 500_000)
    for whole in (63, 64, 65, 129):
        raw = await Raw.open(a)
        for ident in range(whole):
            await raw.push(ident, small)
        assert len(await raw.answered(whole)) == whole
        await raw.send(BytesMessage(data=message[:250_000], message_finished=False))
        await eventually(lambda: asgi._InFlight.held >= 250_000)
        await raw.abort()
        await eventually(lambda: a.node.streams_open == 0 and asgi._InFlight.held == 0)


# -- kill -9: receivers with pushes in flight, senders mid-message --------------------
def count_stream_pushes(monkeypatch) -> tuple[dict, dict]:
    """Pushes this process's nodes answered over a stream, by the replica that sent
    them; and pushes they sent over a stream and got a 204 for, by the peer's URL."""
    answered: dict[str, int] = {}
    sent: dict[str, int] = {}
    real_one, real_push = peerstream.Connection._one, pushstream.PushStream.push

    async def one(self, *args):
        await real_one(self, *args)
        answered[self.peer] = answered.get(self.peer, 0) + 1

    async def push(self, body, receipt):
        answer = await real_push(self, body, receipt)
        if answer.status_code == 204:
            sent[self.url] = sent.get(self.url, 0) + 1
        return answer

    monkeypatch.setattr(peerstream.Connection, "_one", one)
    monkeypatch.setattr(pushstream.PushStream, "push", push)
    return answered, sent


@pytest.mark.parametrize("seed", [18])
async def test_kill_9_mid_stream_loses_nothing_acknowledged_and_convicts_nobody(
        nursery, tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    answered, sent = count_stream_pushes(monkeypatch)
    a = await start(nursery, data_dir=str(tmp_path / "a"), rate_limit=0)  # never killed
    extra = ("--rate-limit", "0", "--peer-stream")
    others = [NodeProcess(str(tmp_path / name), a.url, extra=extra) for name in ("b", "c")]
    for node in others:
        await node.start()
    nodes = [a, *others]
    try:
        async with client(timeout=5) as http:
            await eventually(lambda: members(http, nodes, 3), timeout=60)
            traders = Traders(http, nodes)
            async with trio.open_nursery() as load:
                for k in range(3):
                    load.start_soon(traders.trade, k)
                for victim in (1, 2, 1, 2, 1):
                    await trio.sleep(rng.uniform(0.3, 1.2))  # pushes in flight, both ways
                    node = nodes[victim]
                    from_it, to_it = answered.get(node.replica, 0), sent.get(node.url, 0)
                    await traders.kill(victim, rng.uniform(0.0, 0.3))
                    # both ways over a stream again: a reconnected, and so did the victim
                    await eventually(lambda n=node, f=from_it, t=to_it:
                                     answered.get(n.replica, 0) > f
                                     and sent.get(n.url, 0) > t, timeout=30)
                traders.done.set()
            await traders.settle()  # one digest, one history, every acknowledged order
            for node in nodes:
                status = await get(http, node.url, "/status")
                assert status["conflict"] is None
                assert not [m for m in status["member_health"] if m["health"] == "convicted"]
                assert status["finality"] == {"regressions": 0, "violations": 0}
    finally:
        for node in others:
            node.kill()


@pytest.mark.parametrize("answer", ["101 without its accept key", "200 and a close",
                                    "nothing and a close"])
async def test_a_peer_whose_upgrade_answer_is_broken_still_gets_pushes_over_http(
        nursery, answer):
    def upgrade(headers, body):
        if answer == "101 without its accept key":
            return 101, b"", {"upgrade": "websocket", "connection": "Upgrade"}
        if answer == "200 and a close":
            return 200, b"{}", {}
        raise ValueError("(the fake closes the connection without a word)")

    fake = Fake({"/peer/stream": upgrade, "/peer/push": lambda headers, body: (204, b"", {})})
    await fake.serve(nursery)
    a = await start(nursery)
    a.node.add_peer(fake.url)
    async with client() as http:
        def pushed() -> int:
            return sum(1 for path, _, _ in fake.requests if path == "/peer/push")

        await place_until(http, a, lambda: pushed() >= 3)
        upgrades = sum(1 for path, _, _ in fake.requests if path == "/peer/stream")
        assert upgrades <= 2, upgrades  # not one per push
    await a.stop()


async def test_a_ping_flood_leaves_the_node_live(nursery):
    a = await start(nursery)
    raw = await Raw.open(a)
    raw.pongs = False
    pings = b"".join(raw.ws.send(Ping(payload=b"p" * 125)) for _ in range(50_000))
    async with client() as http, trio.open_nursery() as flood:
        async def send() -> None:  # never reading a pong: its answers pile up unread
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await raw.stream.send_all(pings)

        flood.start_soon(send)
        for _ in range(10):
            await live(http, a)
            await trio.sleep(0.1)
        flood.cancel_scope.cancel()
    await raw.abort()
    await eventually(lambda: a.node.streams_open == 0)
