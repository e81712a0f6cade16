"""Peers' pushes over one WebSocket per peer (``/peer/stream``): real nodes on loopback.

The sender (node/cluster/pushstream.py) and the receiver (peerstream.py) are
checked together, through clusters, and the receiver alone, with a raw
WebSocket client (trio-websocket) playing a peer that may send anything.
"""

from __future__ import annotations

import contextlib
import json

import httpx
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Request

from crdtbook.feedwire import encode_blocks
from node import asgi
from node.api.requests import OrderRequest
from node.cluster import peerauth, peerstream, streamwire

from .nodes import client, converged, eventually, start, trading_events, views
from .procs import NodeProcess


async def submit(http, url: str, side: str, qty: str, price: str) -> None:
    response = await http.post(f"{url}/orders", json={"side": side, "qty": qty, "price": price})
    assert response.status_code == 201, response.text


def ws_url(running) -> str:
    return running.url.replace("http://", "ws://") + asgi.PEER_STREAM


def peer_headers(replica: str, book: str = "default") -> list[tuple[bytes, bytes]]:
    return [(b"x-crdtbook-replica", replica.encode()), (b"x-crdtbook-book", book.encode())]


async def own_blocks(running, count: int) -> list:
    """``count`` new blocks of ``running``'s own orders (durable there)."""
    node = running.node
    tip = node.door.tip(node.id).last
    for i in range(count):
        node.place_many([OrderRequest("buy", "1", str(10 + i), "limit", "")])
        await node.journal.sync()
    return [b for b in node.door.answer({}).blocks if b.replica == node.id and b.last > tip]


def trace(node) -> tuple:
    """What a refused push must leave as it was."""
    return (node.replica.digest(), node.replica.events_total(), sorted(node.peers),
            node.conflict, node.refused_messages)


async def test_a_cluster_converges_with_its_pushes_over_the_stream(nursery):
    a = await start(nursery, peer_stream=True)
    b = await start(nursery, a.url, peer_stream=True)
    c = await start(nursery, a.url, peer_stream=True)
    await eventually(lambda: all(len(r.node.peers) == 2 for r in (a, b, c)))
    async with client() as http:
        async def burst(url: str, offset: int) -> None:
            for i in range(15):
                side = "buy" if (i + offset) % 2 else "sell"
                await submit(http, url, side, str(1 + i % 3), str(100 + (i * 7 + offset) % 5))

        async with trio.open_nursery() as load:
            for offset, node in enumerate((a, b, c)):
                load.start_soon(burst, node.url, offset)
    await eventually(lambda: converged(a, b, c, events=45))
    assert views(a.node) == views(b.node) == views(c.node)
    for r in (a, b, c):
        stats = r.node.stats
        assert stats["stream_pushes"] > 0
        assert stats["stream_pushes"] == stats["push_requests"]  # none over HTTP
    # the receivers answered them over their streams (and maybe some whose answer came
    # too late: a push timed out on a loaded machine reconnects)
    assert sum(r.node.stream_pushes_answered for r in (a, b, c)) >= sum(
        r.node.stats["stream_pushes"] for r in (a, b, c))


async def test_replicated_acknowledgements_with_receipts_over_the_stream(nursery, monkeypatch):
    a = await start(nursery, peer_stream=True)
    b = await start(nursery, a.url, peer_stream=True)
    await eventually(lambda: len(a.node.peers) == 1 and len(b.node.peers) == 1)
    checked = []  # answer_from of pushes (an empty answer body) at the sender
    real = peerauth.answer_from

    def answer_from(node, replica, signature, body, answer) -> bool:
        good = real(node, replica, signature, body, answer)
        if answer == b"" and node is a.node:
            checked.append(good)
        return good

    monkeypatch.setattr(peerauth, "answer_from", answer_from)
    async with client() as http:
        for price in ("10", "11", "12"):
            r = await http.post(f"{a.url}/orders?ack=replicated&timeout=8",
                                json={"side": "buy", "qty": "1", "price": price})
            assert r.status_code == 201, r.text
            assert r.json()["replicated"], r.text
    assert a.node.stats["stream_pushes"] == a.node.stats["push_requests"] > 0
    # a receipt came back signed by b and checked good (a push with none asked, or
    # one b could not give, checks False: not every push carries one)
    assert any(checked)


async def test_a_receipt_over_the_stream_is_signed_by_the_receiver(nursery):
    a = await start(nursery, peer_stream=True)
    b = await start(nursery, a.url, peer_stream=True)
    [block] = await own_blocks(a, 1)
    body = encode_blocks([block], [])
    async with open_websocket_url(ws_url(b), extra_headers=peer_headers(a.node.id)) as ws:
        await ws.send_message(streamwire.push(7, True, body))
        ident, status, receipt, content = streamwire.read_answer(await ws.get_message())
    assert (ident, status, content) == (7, 204, b"")
    assert receipt, "a receipt was asked for"
    assert peerauth.answer_from(a.node, b.node.id, receipt.decode(), body, b"")
    assert not peerauth.answer_from(a.node, b.node.id, receipt.decode(), body + b"x", b"")


async def test_a_bad_push_gets_its_400_and_leaves_no_trace(nursery):
    a = await start(nursery, peer_stream=True)
    before = trace(a.node)
    async with open_websocket_url(ws_url(a), extra_headers=peer_headers("stranger")) as ws:
        await ws.send_message(streamwire.push(1, True, b"\xa1\x61x\xff not cbor"))
        ident, status, receipt, content = streamwire.read_answer(await ws.get_message())
        assert (ident, status, receipt) == (1, 400, b"")
        assert json.loads(content)["error"] == "bad_blocks"
        # the connection goes on: a next push is answered on it
        await ws.send_message(streamwire.push(2, False, b""))
        ident, status, _, _ = streamwire.read_answer(await ws.get_message())
        assert (ident, status) == (2, 400)
    assert trace(a.node) == before


async def test_the_upgrade_of_a_peer_of_another_book_is_refused(nursery):
    a = await start(nursery, peer_stream=True)
    with pytest.raises(ConnectionRejected) as refused:
        async with open_websocket_url(ws_url(a), extra_headers=peer_headers("x", "other")):
            pass
    assert refused.value.status_code == 409
    assert a.node.streams_open == 0


async def close_code(running, message) -> int:
    """Send ``message`` on a new peer stream; the code the node closes it with."""
    async with open_websocket_url(ws_url(running), extra_headers=peer_headers("p"),
                                  max_message_size=1 << 20) as ws:
        try:
            await ws.send_message(message)
            await ws.get_message()
        except ConnectionClosed as exc:
            return exc.reason.code
    raise AssertionError("the node answered instead of closing")


async def test_oversize_and_garbage_messages_close_the_stream_and_change_nothing(nursery):
    a = await start(nursery, peer_stream=True)
    before = trace(a.node)
    assert await close_code(a, b"\0" * (asgi.PEER_MAX_MESSAGE + 1)) == 1009
    assert await close_code(a, "a text message") == 1003
    assert await close_code(a, b"\0" * 8) == 1007  # shorter than a push's head
    assert await close_code(a, b"\0" * 8 + b"\x02" + b"body") == 1007  # an unknown flag
    assert trace(a.node) == before
    await eventually(lambda: a.node.streams_open == 0)
    assert asgi._InFlight.held == 0  # every byte charged was given back


async def test_pushes_fall_back_to_http_against_a_node_that_refuses_the_route(nursery):
    a = await start(nursery, peer_stream=True)
    old = await start(nursery, a.url)  # as a node from before the stream
    await eventually(lambda: len(a.node.peers) == 1)
    async with client() as http:
        for i in range(6):
            await submit(http, a.url, "buy", "1", str(10 + i))
            await submit(http, old.url, "sell", "1", str(20 + i))
    await eventually(lambda: converged(a, old, events=12))
    assert a.node.stats["push_requests"] > 0
    assert a.node.stats["stream_pushes"] == 0  # refused (404): every push went over HTTP
    assert old.node.stream_pushes_answered == 0


async def test_an_answer_waits_for_the_journal_sync(nursery):
    a = await start(nursery, peer_stream=True)
    b = await start(nursery, a.url, peer_stream=True)
    blocks = await own_blocks(a, 1)
    body = encode_blocks(blocks, [])
    released, waiting = trio.Event(), []
    sync = b.node.journal.sync

    async def held_sync(*args, **kwargs):
        waiting.append(1)
        await released.wait()
        return await sync(*args, **kwargs)

    async with open_websocket_url(ws_url(b), extra_headers=peer_headers(a.node.id)) as ws:
        held = b.node.replica.events_total()
        b.node.journal.sync = held_sync
        try:
            await ws.send_message(streamwire.push(1, False, body))
            await eventually(lambda: waiting)
            await trio.testing.wait_all_tasks_blocked(0.05)
            answer = None
            with trio.move_on_after(0):  # (nothing may have come: the sync is held)
                answer = await ws.get_message()
            assert answer is None
        finally:
            b.node.journal.sync = sync
            released.set()
        ident, status, _, _ = streamwire.read_answer(await ws.get_message())
    assert (ident, status) == (1, 204)
    assert b.node.replica.events_total() >= held


async def test_the_sender_reconnects_to_a_receiver_killed_and_restarted(nursery, tmp_path):
    receiver = NodeProcess(str(tmp_path / "receiver"), extra=("--peer-stream",))
    await receiver.start()
    try:
        a = await start(nursery, receiver.url, peer_stream=True)
        async with client() as http, httpx.AsyncClient(timeout=5) as plain:
            async def digests_agree() -> bool:
                try:
                    status = (await plain.get(receiver.url + "/status")).json()
                except httpx.HTTPError:
                    return False
                return status["digest"] == a.node.replica.digest()

            placed = 0

            async def pushed_over(streamed: int) -> bool:
                # (an order placed while the sender backs off from a failure, such as
                # those the kill causes, is not pushed: the receiver's pull brings it)
                nonlocal placed
                await submit(http, a.url, "sell", "1", str(30 + placed % 7))
                placed += 1
                return a.node.stats["stream_pushes"] > streamed

            await eventually(lambda: pushed_over(0), timeout=30, interval=0.2)
            await eventually(digests_agree)
            streamed = a.node.stats["stream_pushes"]
            receiver.kill()
            await receiver.start()  # same port, same store
            await eventually(lambda: pushed_over(streamed), timeout=30, interval=0.2)
            await eventually(digests_agree, timeout=30)
            assert trading_events(a.node) == placed
    finally:
        receiver.kill()


async def test_a_message_that_stalls_midway_closes_the_stream_and_gives_its_bytes_back(
        nursery, monkeypatch):
    monkeypatch.setattr(peerstream, "MESSAGE_GRACE_S", 0.3)
    monkeypatch.setattr(peerstream, "WATCH_EVERY_S", 0.1)
    a = await start(nursery, peer_stream=True)
    before = trace(a.node)
    stream = await trio.open_tcp_stream("127.0.0.1", int(a.url.rsplit(":", 1)[1]))
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host="127.0.0.1", target=asgi.PEER_STREAM,
                                          extra_headers=peer_headers("p"))))
    events: list = []

    async def read_until(kind) -> object:
        while True:
            for event in ws.events():
                events.append(event)
                if isinstance(event, Ping):
                    await stream.send_all(ws.send(event.response()))  # a live peer, pongs
                if isinstance(event, kind):
                    return event
            data = await stream.receive_some(65536)
            if not data:
                raise AssertionError(f"closed without {kind.__name__}: {events}")
            ws.receive_data(data)

    await read_until(AcceptConnection)
    await stream.send_all(ws.send(BytesMessage(data=b"\0" * 100_000, message_finished=False)))
    await eventually(lambda: asgi._InFlight.held >= 100_000)
    closed = await read_until(CloseConnection)  # (the rest never comes)
    assert closed.code == 1008
    await eventually(lambda: asgi._InFlight.held == 0)
    await eventually(lambda: a.node.streams_open == 0)
    assert trace(a.node) == before
    await stream.aclose()


async def test_a_peer_that_sends_on_past_a_refused_message_is_cut_off(nursery, monkeypatch):
    monkeypatch.setattr(peerstream, "WATCH_EVERY_S", 0.1)
    a = await start(nursery, peer_stream=True)
    before = trace(a.node)
    stream = await trio.open_tcp_stream("127.0.0.1", int(a.url.rsplit(":", 1)[1]))
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host="127.0.0.1", target=asgi.PEER_STREAM,
                                          extra_headers=peer_headers("p"))))
    while not any(isinstance(e, AcceptConnection) for e in ws.events()):
        ws.receive_data(await stream.receive_some(65536))
    # too large; then, the 1009 close never read nor answered, more and more frames
    received = b""

    async def send_on() -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(ws.send(BytesMessage(data=b"\0" * (asgi.PEER_MAX_MESSAGE + 1))))
            while True:
                await stream.send_all(ws.send(BytesMessage(data=b"\0" * 60_000,
                                                           message_finished=False)))
                await trio.sleep(0.01)

    async with trio.open_nursery() as sending:
        sending.start_soon(send_on)
        with trio.fail_after(10):
            while True:  # until the node ends the connection
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not data:
                    break
                received += data
        sending.cancel_scope.cancel()
    ws.receive_data(received)
    assert any(isinstance(e, CloseConnection) and e.code == 1009 for e in ws.events())
    await eventually(lambda: a.node.streams_open == 0)
    assert asgi._InFlight.held == 0
    assert trace(a.node) == before
    await stream.aclose()


async def test_a_stopping_node_closes_its_peers_streams_going_away(nursery):
    a = await start(nursery, peer_stream=True)
    async with open_websocket_url(ws_url(a), extra_headers=peer_headers("p")) as ws:
        nursery.start_soon(a.stop)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 1001


class DeafPeer:
    """A peer that takes connections and never answers; counts its upgrades to
    ``/peer/stream``, and how many were open at once."""

    def __init__(self) -> None:
        self.url = ""
        self.upgrades = self.open = self.most_open = 0

    async def serve(self, nursery) -> str:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, self._handle, listeners)
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        return self.url

    async def _handle(self, stream) -> None:
        upgrade = False
        try:
            head = await stream.receive_some(65536)
            upgrade = head.startswith(b"GET /peer/stream ")
            if upgrade:
                self.upgrades += 1
                self.open += 1
                self.most_open = max(self.most_open, self.open)
            while await stream.receive_some(65536):  # until the caller gives up
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if upgrade:
                self.open -= 1
            await stream.aclose()


async def test_a_peer_that_never_answers_the_upgrade_holds_one_connection(nursery, tmp_path):
    """Pushes in flight to a peer that never answers wait for one connection (each
    within its time bound), a timeout closes it, and a later push opens the next;
    the node answers its clients meanwhile."""
    deaf = DeafPeer()
    await deaf.serve(nursery)
    a = await start(nursery, data_dir=str(tmp_path / "a"), rate_limit=0, peer_stream=True)
    a.node.add_peer(deaf.url, sticky=True)
    await eventually(lambda: a.node.peers[deaf.url].started)
    placed = 0

    async def tried_again() -> bool:
        nonlocal placed
        async with client() as http:  # (each order answered: the deaf peer holds nothing)
            await submit(http, a.url, "buy", "1", str(10 + placed % 5))
        placed += 1
        return deaf.upgrades >= 2

    await eventually(tried_again, timeout=30, interval=0.1)
    assert deaf.most_open == 1
    assert a.node.stats["stream_pushes"] == 0


async def test_every_message_begun_is_charged_where_release_all_finds_it():
    """A connection that ends mid-message gives back every byte charged, whatever
    number of messages came before (the buffer once forgot the charge of each
    65th message as it began: a peer sending 64 messages, then half of one, then
    hanging up, kept that half of the node-wide budget for ever)."""
    start = asgi._InFlight.held
    for whole in (0, 1, 63, 64, 65, 100, 200):
        buffer = asgi._ChargedBuffer(1 << 20)
        for _ in range(whole):
            buffer.extend(BytesMessage(data=b"x" * 10, frame_finished=True,
                                       message_finished=True))
            message = buffer.to_message()
            buffer.clear()
            message[asgi.CHARGE].release()  # the app is done with it
        buffer.extend(BytesMessage(data=b"y" * 1000, frame_finished=True,
                                   message_finished=False))  # half a message
        assert asgi._InFlight.held == start + 1000
        buffer.release_all()  # the connection ends
        assert asgi._InFlight.held == start, whole
