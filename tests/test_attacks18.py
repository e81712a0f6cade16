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

import trio

from node.cluster import peerstream, pushstream

from .nodes import LIVENESS_S, client, converged, eventually, start, trading_events


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
