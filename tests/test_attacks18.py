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

import json

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from crdtbook.feedwire import decode_blocks, encode_blocks, encode_body
from crdtbook.keys import Signer
from node import asgi
from node.cluster import peerauth, peerstream, pushstream, streamwire

from .nodes import LIVENESS_S, client, converged, eventually, start, trading_events
from .peers import SignedPeer
from .test_attacks import stranger_block


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
