"""Streams over /ws against real nodes (docs/streams.md): channels, order entry, limits."""

from __future__ import annotations

import json
import random
import zlib

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason

from node import asgi
from node.api import websocket
from node.api.streams import Subscription

from . import nodes
from .wsclient import BookView, book_of, connect

POLL_S = 0.05  # how often a test samples a node while it waits (within a deadline)


async def make_account(client, running: nodes.Running, name: str) -> str:
    response = await client.post(running.url + "/accounts", json={"account": name},
                                 headers=running.admin)
    assert response.status_code == 201, response.text
    return response.json()["token"]


async def test_an_order_placed_at_b_shows_on_a_book_and_tape():
    async with trio.open_nursery() as nursery, nodes.client() as client:
        a = await nodes.start(nursery)
        b = await nodes.start(nursery, a.url)
        async with connect(a.url) as ws:
            answer = await ws.call(op="subscribe", id=1, channel="book", depth=10)
            assert answer["ok"] and answer["result"] == {"channel": "book"}
            book = BookView(await ws.next())
            assert book.seq == 1 and (book.bids, book.asks) == ({}, {})
            assert (await ws.call(op="subscribe", id="t", channel="trades"))["ok"]
            tape = await ws.next()
            assert tape["type"] == "snapshot" and tape["trades"] == []

            sell = await client.post(b.url + "/orders",
                                     json={"side": "sell", "qty": "3", "price": "12"})
            assert sell.status_code == 201
            update = await ws.until(lambda m: m["channel"] == "book")
            book.apply(update)
            assert book.shown() == ([], [["12", "3"]])

            buy = await client.post(b.url + "/orders",
                                    json={"side": "buy", "qty": "1", "price": "13"})
            assert buy.status_code == 201
            trade = await ws.until(lambda m: m["type"] == "trade")
            assert trade["channel"] == "trades" and trade["seq"] == 2
            assert trade["trade"]["taker"] == buy.json()["order"]["id"]
            assert trade["trade"]["maker"] == sell.json()["order"]["id"]
            assert (trade["trade"]["price"], trade["trade"]["qty"]) == ("12", "1")
            assert trade["trade"]["final"] is False
            final = await ws.until(lambda m: m["type"] == "final")
            assert final["ids"] == [trade["trade"]["id"]] and final["seq"] == 3
            for message in ws.seen:
                if message["channel"] == "book":
                    book.apply(message)
            ws.seen.clear()

            async def same_as_get_book():
                body = (await client.get(a.url + "/book?depth=10")).json()
                with trio.move_on_after(POLL_S):
                    book.apply(await ws.until(lambda m: m["channel"] == "book"))
                return book.shown() == book_of(body) == ([], [["12", "2"]])

            await nodes.eventually(same_as_get_book)
            assert not [m for m in ws.seen if m["type"] in ("retract", "final")]
        await a.stop()
        await b.stop()


async def test_streamed_book_and_tape_equal_get_book_and_fills_under_random_load():
    """Seeded orders and cancels at two nodes; A's streams, applied, end equal to
    A's GET /book?depth=3 (levels come and go below the depth) and GET /fills."""
    rng = random.Random(7)
    async with trio.open_nursery() as nursery, nodes.client() as client:
        a = await nodes.start(nursery)
        b = await nodes.start(nursery, a.url)
        async with connect(a.url) as ws:
            await ws.call(op="subscribe", id=1, channel="book", depth=3)
            book = BookView(await ws.next())
            await ws.call(op="subscribe", id=2, channel="trades")
            trades = {t["id"]: t for t in (await ws.next())["trades"]}
            tape_seq = 1
            placed = []
            for i in range(60):
                node = (a, b)[i % 2]
                if placed and rng.random() < 0.2:
                    at, order_id = placed.pop(rng.randrange(len(placed)))
                    await client.delete(f"{at.url}/orders/{order_id}")
                    continue
                response = await client.post(node.url + "/orders", json={
                    "side": rng.choice(("buy", "sell")), "qty": str(rng.randint(1, 5)),
                    "price": str(rng.randint(95, 105))})
                assert response.status_code == 201
                placed.append((node, response.json()["order"]["id"]))

            def take(message: dict) -> None:
                nonlocal tape_seq
                if message["channel"] == "book":
                    book.apply(message)
                    return
                assert message["seq"] == tape_seq + 1, "a gap in the tape"
                tape_seq = message["seq"]
                if message["type"] == "trade":
                    trades[message["trade"]["id"]] = message["trade"]
                elif message["type"] == "retract":
                    for fill_id in message["ids"]:
                        del trades[fill_id]
                elif message["type"] == "final":
                    for fill_id in message["ids"]:
                        trades[fill_id] = dict(trades[fill_id], final=True)

            async def streams_equal_the_routes():
                with trio.move_on_after(POLL_S):
                    while True:
                        take(await ws.next())
                shown = (await client.get(a.url + "/book?depth=3")).json()
                fills = (await client.get(a.url + "/fills")).json()["fills"]
                return book.shown() == book_of(shown) and \
                    list(trades.values()) == fills and nodes.converged(a, b)

            await nodes.eventually(streams_equal_the_routes)
            assert all(t["final"] for t in trades.values())  # a quiet cluster finalizes
        await a.stop()
        await b.stop()


async def test_a_late_subscriber_gets_the_recent_trades_and_their_finality():
    async with trio.open_nursery() as nursery, nodes.client() as client:
        a = await nodes.start(nursery)
        await client.post(a.url + "/orders", json=[
            {"side": "sell", "qty": "2", "price": "10"}, {"side": "buy", "qty": "2",
                                                          "price": "10"}])
        async with connect(a.url) as ws:
            await ws.call(op="subscribe", id=1, channel="trades")
            snapshot = await ws.next()
            [trade] = snapshot["trades"]
            assert (trade["qty"], trade["index"]) == ("2", 0)
            if not trade["final"]:
                final = await ws.until(lambda m: m["type"] == "final")
                assert final["ids"] == [trade["id"]]
        await a.stop()


async def test_orders_channel_needs_a_token_and_shows_only_that_account():
    async with trio.open_nursery() as nursery, nodes.client() as client:
        a = await nodes.start(nursery)
        alice = await make_account(client, a, "alice")
        async with connect(a.url) as ws:
            refused = await ws.call(op="subscribe", id=1, channel="orders")
            assert (refused["ok"], refused["status"], refused["error"]) == \
                (False, 401, "unauthorized")
            assert nodes.Running.token  # the public connection may still authenticate
            authed = await ws.call(op="auth", id=2, token=alice)
            assert authed["ok"] and authed["result"] == {"account": "alice"}
            other = await ws.call(op="subscribe", id=3, channel="orders", account="local")
            assert (other["ok"], other["status"]) == (False, 403)
            assert (await ws.call(op="subscribe", id=4, channel="orders"))["ok"]
            assert (await ws.next())["orders"] == []
            mine = await client.post(a.url + "/orders", headers=nodes.bearer(alice),
                                     json={"side": "buy", "qty": "1", "price": "5"})
            theirs = await client.post(a.url + "/orders",
                                       json={"side": "buy", "qty": "1", "price": "6"})
            assert mine.status_code == theirs.status_code == 201
            seen = await ws.until(lambda m: m["type"] == "order")
            assert seen["order"]["id"] == mine.json()["order"]["id"]
            assert (seen["order"]["account"], seen["order"]["status"]) == ("alice", "open")
            cancel = await client.delete(a.url + f"/orders/{seen['order']['id']}",
                                         headers=nodes.bearer(alice))
            assert cancel.status_code == 200
            gone = await ws.until(lambda m: m["type"] == "order")
            assert (gone["order"]["id"], gone["order"]["status"]) == \
                (seen["order"]["id"], "cancelled")
            assert all(m.get("order", {}).get("account") != "local" for m in ws.seen)
        async with connect(a.url, token=alice) as ws:  # the handshake's token, this time
            assert (await ws.call(op="subscribe", id=1, channel="orders"))["ok"]
            assert (await ws.next())["orders"] == []  # the cancelled order is not open
        await a.stop()


async def test_order_and_cancel_over_the_socket_echo_ids():
    async with trio.open_nursery() as nursery, nodes.client() as client:
        a = await nodes.start(nursery)
        alice = await make_account(client, a, "alice")
        async with connect(a.url, token=a.token) as ws:
            placed = await ws.call(op="order", id="o-1",
                                   order={"side": "sell", "qty": "2", "price": "11"})
            assert (placed["ok"], placed["status"], placed["id"]) == (True, 201, "o-1")
            order = placed["result"]["order"]
            assert (order["account"], order["status"], order["qty"]) == ("local", "open", "2")
            held = (await client.get(a.url + f"/orders/{order['id']}")).json()
            assert held["status"] == "open"  # durable and visible before the answer
            taker = await ws.call(op="order", id=7,
                                  order={"side": "buy", "qty": "1", "price": "11"})
            assert taker["id"] == 7 and taker["result"]["fills"][0]["maker"] == order["id"]
            cancelled = await ws.call(op="cancel", id=8, order=order["id"])
            assert (cancelled["ok"], cancelled["id"]) == (True, 8)
            assert cancelled["result"]["cancel"]["removed"] == "1"
            again = await ws.call(op="cancel", id=9, order=order["id"])
            assert (again["status"], again["error"]) == (409, "cannot_cancel")
            assert (await ws.call(op="ping", id=10)) == {"type": "pong", "id": 10}
        async with connect(a.url, token=alice) as ws:
            mine = (await ws.call(op="order", id=1, order={"side": "buy", "qty": "1",
                                                           "price": "3"}))["result"]["order"]
            local = (await client.post(a.url + "/orders", json={
                "side": "buy", "qty": "1", "price": "4"})).json()["order"]
            denied = await ws.call(op="cancel", id=2, order=local["id"])
            assert (denied["ok"], denied["status"], denied["error"]) == (False, 403, "forbidden")
            as_other = await ws.call(op="order", id=3, order={
                "side": "buy", "qty": "1", "price": "3", "account": "local"})
            assert (as_other["status"], as_other["error"]) == (403, "forbidden")
            assert mine["account"] == "alice"
        assert (await client.get(a.url + f"/orders/{local['id']}")).json()["status"] == "open"
        await a.stop()


async def test_bad_commands_get_an_answer_and_change_nothing():
    async with trio.open_nursery() as nursery, nodes.client() as client:
        a = await nodes.start(nursery)
        before = (await client.get(a.url + "/status")).json()["events_total"]
        async with connect(a.url) as ws:
            await ws.conn.send_message("{not json")
            bad = await ws.next()
            assert (bad["type"], bad["id"], bad["ok"], bad["error"]) == \
                ("answer", None, False, "bad_json")
            await ws.conn.send_message('{"op": "ping", "id": 1, "id": 2}')
            assert (await ws.next())["error"] == "bad_json"  # a key twice
            await ws.conn.send_message("[1, 2]")
            assert (await ws.next())["error"] == "bad_request"
            await ws.conn.send_message(b"\x00binary")
            assert (await ws.next())["error"] == "bad_frame"
            unknown = await ws.call(op="explode", id="x")
            assert (unknown["id"], unknown["error"]) == ("x", "bad_op")
            await ws.send(op="ping", id="i" * 65)
            long_id = await ws.next()
            assert (long_id["id"], long_id["error"]) == (None, "bad_id")
            await ws.send(op="order", id=3, order={"side": "buy", "qty": 1.5, "price": "3"})
            floaty = await ws.next()  # not read at all: its id is not known either
            assert (floaty["id"], floaty["error"]) == (None, "bad_number")
            anonymous = await ws.call(op="order", id=4,
                                      order={"side": "buy", "qty": "1", "price": "3"})
            assert (anonymous["status"], anonymous["error"]) == (401, "unauthorized")
            bad_order = await ws.call(op="order", id=5, order={"side": "up", "qty": "1"})
            assert bad_order["id"] == 5 and bad_order["status"] == 401  # auth comes first
            wrong = await ws.call(op="auth", id=6, token="nope")
            assert (wrong["status"], wrong["ok"]) == (401, False)
            for channel, extra in (("nope", {}), ("book", {"depth": 0}),
                                   ("book", {"depth": True}), ("trades", {"depth": 5})):
                refused = await ws.call(op="subscribe", id=7, channel=channel, **extra)
                assert (refused["ok"], refused["status"]) == (False, 400), (channel, extra)
            missing = await ws.call(op="unsubscribe", id=8, channel="book")
            assert missing["status"] == 404
            odd_values = ([1], {}, "5", 10**30, None, -1, "", "x" * 70)
            for i, odd in enumerate(odd_values):  # never a 500: a refusal, or a no-op
                for command in ({"op": "subscribe", "channel": odd},
                                {"op": "subscribe", "channel": "book", "depth": odd},
                                {"op": "subscribe", "channel": "orders", "account": odd},
                                {"op": "unsubscribe", "channel": odd},
                                {"op": "order", "order": odd}, {"op": "cancel", "order": odd},
                                {"op": "auth", "token": odd}, {"op": odd}):
                    answer = await ws.call(id=f"odd-{i}", **command)
                    assert answer.get("status", 200) < 500, (command, answer)
            assert (await ws.call(op="ping", id=9))["type"] == "pong"  # still open
        assert (await client.get(a.url + "/status")).json()["events_total"] == before
        assert a.node.streams.subscription_count() == 0
        with pytest.raises(ConnectionRejected) as rejected:
            async with connect(a.url, token="crdtbook-not-a-token"):
                pass
        assert rejected.value.status_code == 401
        await a.stop()


async def test_orders_over_the_socket_are_rate_limited():
    async with trio.open_nursery() as nursery:
        a = await nodes.start(nursery, rate_limit=1.0, rate_burst=2)
        async with connect(a.url, token=a.token) as ws:
            for i in range(3):  # pipelined: all three are read before the first answer
                await ws.send(op="order", id=i, order={"side": "buy", "qty": "1",
                                                       "price": "3"})
            answers = [await ws.answer(i) for i in range(3)]
            assert [x["status"] for x in answers] == [201, 201, 429]
            assert answers[2]["error"] == "rate_limited" and answers[2]["retry_after_s"] >= 1
        assert len([o for o in a.node.replica.orders()]) == 2
        await a.stop()


async def test_pipelined_orders_are_answered_in_order_once_durable():
    async with trio.open_nursery() as nursery:
        a = await nodes.start(nursery, rate_limit=0)
        commits = a.node.journal.commits
        async with connect(a.url, token=a.token) as ws:
            for i in range(300):
                await ws.send(op="order", id=i, order={"side": "buy" if i % 2 else "sell",
                                                       "qty": "1", "price": "10"})
            answers = [await ws.next() for _ in range(300)]
        assert [x["id"] for x in answers] == list(range(300))
        assert all(x["status"] == 201 for x in answers)
        assert a.node.journal.committed_events >= 300
        assert a.node.journal.commits - commits < 300  # commits served many orders each
        assert a.node.streams.publishes == 0  # nobody subscribed: the hub never ran
        await a.stop()


async def test_status_channel_sends_the_status_body():
    async with trio.open_nursery() as nursery:
        a = await nodes.start(nursery)
        async with connect(a.url) as ws:
            await ws.call(op="subscribe", id=1, channel="status")
            first = await ws.next()
            assert (first["type"], first["seq"]) == ("status", 1)
            assert first["status"]["replica"] == a.node.id
            second = await ws.next(timeout=5)
            assert second["seq"] == 2 and second["status"]["replica"] == a.node.id
            assert (await ws.call(op="unsubscribe", id=2, channel="status"))["ok"]
        await a.stop()


async def test_an_oversized_frame_closes_the_connection_with_1009():
    async with trio.open_nursery() as nursery:
        a = await nodes.start(nursery)
        async with connect(a.url) as ws:
            await ws.conn.send_message(json.dumps({"op": "ping", "id": "x" * 70_000}))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.next()
            assert closed.value.reason.code == 1009
        await a.stop()


async def test_one_subscription_per_channel_and_a_connection_cap(monkeypatch):
    async with trio.open_nursery() as nursery:
        a = await nodes.start(nursery)
        monkeypatch.setattr(websocket, "MAX_CONNECTIONS", 2)
        async with connect(a.url) as one, connect(a.url) as two:
            for depth in (5, 10, 5):  # subscribing again replaces the subscription
                assert (await one.call(op="subscribe", id=depth, channel="book",
                                       depth=depth))["ok"]
                assert (await one.next())["depth"] == depth
            for channel in ("trades", "status"):
                assert (await one.call(op="subscribe", id=channel, channel=channel))["ok"]
            assert a.node.streams.subscription_count() == 3
            with pytest.raises(ConnectionRejected) as rejected:
                async with connect(a.url):
                    pass
            assert rejected.value.status_code == 503
            assert json.loads(rejected.value.body)["error"] == "busy"
            assert (await two.call(op="ping", id=1))["type"] == "pong"
        await nodes.eventually(lambda: a.node.streams.connections == 0)
        assert a.node.streams.subscription_count() == 0
        async with connect(a.url) as three:  # room again
            assert (await three.call(op="ping", id=1))["type"] == "pong"
        await a.stop()


async def test_a_client_that_stops_reading_is_closed_with_1013(monkeypatch):
    monkeypatch.setattr(websocket, "MAX_QUEUED", 64 * 1024)
    async with trio.open_nursery() as nursery, nodes.client() as client:
        a = await nodes.start(nursery, rate_limit=0)
        levels = [{"side": "buy", "qty": "1", "price": str(1000 + i)} for i in range(1000)]
        assert (await client.post(a.url + "/orders", json=levels)).status_code == 201
        async with connect(a.url, rcvbuf=4096) as ws:
            with trio.move_on_after(10):  # the node may stop reading too: that is fine
                for i in range(400):  # each snapshot is ~20 KB; the client reads none
                    await ws.send(op="subscribe", id=i, channel="book", depth=1000)
            with pytest.raises(ConnectionClosed) as closed:
                while True:  # what was sent before the close, then the close
                    await ws.next(timeout=30)
            assert closed.value.reason.code == 1013
        await nodes.eventually(lambda: a.node.streams.connections == 0)
        assert a.node.streams.subscription_count() == 0
        await a.stop()


class FakeHub:
    def __init__(self) -> None:
        self.unsubscribed = []

    def unsubscribe(self, sub) -> None:
        sub.live = False
        self.unsubscribed.append(sub.channel)


def test_a_full_queue_resets_the_channels_then_closes_with_1013():
    hub = FakeHub()
    conn = websocket.Connection(None, hub, None, send=None)
    book = Subscription(conn, "book", depth=5)
    trades = Subscription(conn, "trades")
    conn.subs = {"book": book, "trades": trades}
    conn.outbox.push(None, "an answer")
    piece = "x" * (websocket.MAX_QUEUED // 4)
    for _ in range(3):
        book.send("update", piece + "}")
    assert len(conn.outbox.items) == 4 and conn.close_code is None
    trades.send("trade", piece + "}")  # does not fit: every channel is reset
    assert hub.unsubscribed == ["book", "trades"] and conn.subs == {}
    kept = [text for _, text in conn.outbox.items]
    assert kept[0] == "an answer"  # answers are never dropped
    assert [json.loads(t) for t in kept[1:]] == [
        {"type": "reset", "channel": "book", "reason": "slow_consumer"},
        {"type": "reset", "channel": "trades", "reason": "slow_consumer"}]
    assert not book.live and not trades.live
    conn.outbox.push(None, piece)  # answers still queue (they wait for room)
    fresh = Subscription(conn, "book", depth=5)
    fresh.send("update", piece * 4 + "}")  # full again, the resets not even sent: closed
    assert conn.close_code == 1013


IDLE_TEST_S = 1.0  # the idle limit these tests run the node with
OUTLIVE_S = 3 * IDLE_TEST_S  # how long a live but silent client stays, to show it is kept


async def test_a_silent_dead_client_is_closed_and_a_live_one_kept(monkeypatch):
    monkeypatch.setattr(websocket, "IDLE_S", IDLE_TEST_S)
    monkeypatch.setattr(asgi, "WS_PING_EVERY_S", IDLE_TEST_S / 4)
    async with trio.open_nursery() as nursery:
        a = await nodes.start(nursery)
        host, port = a.url.split("://", 1)[1].rsplit(":", 1)
        dead = await trio.open_tcp_stream(host, int(port))
        handshake = WSConnection(ConnectionType.CLIENT)
        await dead.send_all(handshake.send(Request(host=host, target="/ws")))
        async with connect(a.url) as live:  # trio-websocket answers pings by itself
            await nodes.eventually(lambda: a.node.streams.connections == 2)
            with trio.fail_after(10 * IDLE_TEST_S):  # the dead one: closed by the node
                while await dead.receive_some(65536):
                    pass
            await nodes.eventually(lambda: a.node.streams.connections == 1)
            await trio.sleep(OUTLIVE_S)
            assert (await live.call(op="ping", id=1))["type"] == "pong"
        await dead.aclose()
        await a.stop()


def test_an_inflating_chunk_is_cut_at_the_message_limit():
    wire = zlib.compressobj(wbits=-15)
    bomb = wire.compress(b"a" * 8 * 1024 * 1024) + wire.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < 16 * 1024  # small on the wire
    inflater = asgi.BoundedDeflate()
    inflater._inbound_compressed = inflater._inbound_is_compressible = True
    inflater._decompressor = zlib.decompressobj(-15)
    assert inflater.frame_inbound_payload_data(None, bomb) == CloseReason.MESSAGE_TOO_BIG
    small = zlib.compressobj(wbits=-15)
    text = b'{"op": "ping", "id": 1}'
    inflater._decompressor = zlib.decompressobj(-15)
    assert inflater.frame_inbound_payload_data(
        None, small.compress(text) + small.flush(zlib.Z_SYNC_FLUSH)) == text


async def test_a_compressed_bomb_ends_its_connection_and_nothing_else():
    async with trio.open_nursery() as nursery:
        a = await nodes.start(nursery)
        host, port = a.url.split("://", 1)[1].rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        client = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(client.send(Request(host=host, target="/ws",
                                                  extensions=[PerMessageDeflate()])))

        async def events() -> list:
            with trio.fail_after(10):
                data = await stream.receive_some(65536)
            client.receive_data(data or None)
            return list(client.events())

        accepted = await events()
        assert isinstance(accepted[0], AcceptConnection) and accepted[0].extensions
        await stream.send_all(client.send(TextMessage('{"op": "ping", "id": 1}')))
        texts = []
        while not texts:  # (hypercorn's first ping may come too)
            texts = [e for e in await events() if isinstance(e, TextMessage)]
        assert json.loads(texts[0].data) == {"type": "pong", "id": 1}  # compression works
        await stream.send_all(client.send(TextMessage("a" * 8 * 1024 * 1024)))
        with trio.fail_after(10):  # the node ends the connection
            while await stream.receive_some(65536):
                pass
        await nodes.eventually(lambda: a.node.streams.connections == 0)
        async with connect(a.url) as ws:
            assert (await ws.call(op="ping", id=2))["type"] == "pong"
        await stream.aclose()
        await a.stop()


async def test_orders_channel_shows_only_this_nodes_orders_of_the_account():
    """Accounts are a node's own: the same name at another node is someone else."""
    async with trio.open_nursery() as nursery, nodes.client() as client:
        a = await nodes.start(nursery)
        b = await nodes.start(nursery, a.url)
        async with connect(a.url, token=a.token) as ws:
            assert (await ws.call(op="subscribe", id=1, channel="orders",
                                  account="local"))["ok"]
            assert (await ws.next())["orders"] == []
            elsewhere = await client.post(b.url + "/orders",
                                          json={"side": "buy", "qty": "1", "price": "5"})
            assert elsewhere.status_code == 201
            assert elsewhere.json()["order"]["account"] == "local"
            with trio.fail_after(10):  # B's order is on A's book before A's own is placed
                while not (await client.get(a.url + "/book")).json()["bids"]:
                    await trio.sleep(POLL_S)
            here = await client.post(a.url + "/orders",
                                     json={"side": "buy", "qty": "1", "price": "6"})
            assert here.status_code == 201
            seen = await ws.until(lambda m: m["type"] == "order")
            assert seen["order"]["id"] == here.json()["order"]["id"]
            assert all(m.get("order", {}).get("id") != elsewhere.json()["order"]["id"]
                       for m in ws.seen)
        async with connect(a.url, token=a.token) as ws:  # and not in a snapshot either
            assert (await ws.call(op="subscribe", id=1, channel="orders",
                                  account="local"))["ok"]
            assert [o["id"] for o in (await ws.next())["orders"]] == \
                [here.json()["order"]["id"]]
        await b.stop()
        await a.stop()


async def test_commands_pipelined_among_orders_are_answered_in_command_order():
    """Orders are placed a batch ahead of their answers (the answerer waits for them
    to be durable): a ping, a cancel of an order sent just before, or an auth
    sent among them still gets its answer in command order, and sees the orders
    before it."""
    async with trio.open_nursery() as nursery:
        a = await nodes.start(nursery, rate_limit=0)
        async with connect(a.url, token=a.token) as ws:
            sent = []
            for i in range(40):
                await ws.send(op="order", id=f"o{i}", order={"side": "sell", "qty": "1",
                                                             "price": str(100 + i)})
                sent.append(f"o{i}")
                if i % 10 == 9:
                    await ws.send(op="ping", id=f"p{i}")
                    sent.append(f"p{i}")
            answers = [await ws.next() for _ in sent]
            assert [x["id"] for x in answers] == sent
            order = next(x for x in answers if x["id"] == "o39")["result"]["order"]["id"]
            await ws.send(op="order", id="last", order={"side": "sell", "qty": "1",
                                                        "price": "1000"})
            await ws.send(op="cancel", id="c", order=order)
            await ws.send(op="auth", id="t", token=a.token)
            await ws.send(op="order", id="after", order={"side": "buy", "qty": "1",
                                                         "price": "100"})
            tail = [await ws.next() for _ in range(4)]
            assert [x["id"] for x in tail] == ["last", "c", "t", "after"]
            assert [x["status"] for x in tail] == [201, 200, 200, 201]
            assert tail[3]["result"]["fills"][0]["price"] == "100"
        assert a.node.journal.committed_events >= 42
        await a.stop()


def flatten(frames: list[dict]) -> list[dict]:
    """The messages of ``frames``, each ``answers`` frame's answers in their place."""
    return [m for f in frames for m in (f["answers"] if f["type"] == "answers" else [f])]


async def test_batched_answers_are_opted_into_and_keep_every_answer_in_order():
    """``options`` with ``batch_answers``: answers may then share ``answers`` frames,
    each exactly as it would have come alone, in command order; refused options
    change nothing; turning it off again gives one frame per answer."""
    async with trio.open_nursery() as nursery:
        a = await nodes.start(nursery, rate_limit=0)
        async with connect(a.url, token=a.token) as ws:
            for bad in ({"batch_answers": 1}, {"batch_answers": True, "other": 2}):
                refused = await ws.call(op="options", id="bad", **bad)
                assert (refused["status"], refused["error"]) == (400, "bad_request")
            alone = await ws.call(op="ping", id="still-alone")
            assert alone == {"type": "pong", "id": "still-alone"}
            on = await ws.call(op="options", id="on", batch_answers=True)
            assert (on["type"], on["status"], on["result"]) == ("answer", 200,
                                                                {"batch_answers": True})
            sent = []
            for i in range(200):
                order = {"side": "buy" if i % 2 else "sell", "qty": "1", "price": "10"}
                if i == 50:
                    order = {"side": "up", "qty": "1", "price": "10"}  # refused alone
                await ws.send(op="order", id=i, order=order)
                sent.append(i)
                if i % 40 == 39:
                    await ws.send(op="ping", id=f"p{i}")
                    sent.append(f"p{i}")
            frames: list[dict] = []
            while len(flatten(frames)) < len(sent):
                frames.append(await ws.next())
            answers = flatten(frames)
            assert [x["id"] for x in answers] == sent
            assert {f["type"] for f in frames} <= {"answers"}  # every answer in one
            bad_order = next(x for x in answers if x["id"] == 50)
            assert (bad_order["status"], bad_order["error"]) == (400, "bad_order")
            orders = [x for x in answers if x["type"] == "answer"]
            assert [x["status"] for x in orders].count(201) == 199
            assert answers[-1] == {"type": "pong", "id": "p199"}
            await ws.send(op="options", id="off", batch_answers=False)
            off = flatten([await ws.next()])  # (framed as the answers before it)
            assert [(x["id"], x["result"]) for x in off] == [("off", {"batch_answers": False})]
            assert (await ws.call(op="ping", id="after")) == {"type": "pong", "id": "after"}
        await a.stop()


def test_answers_share_a_frame_up_to_its_bound_and_never_pass_channel_messages():
    conn = websocket.Connection(None, FakeHub(), None, send=None)
    book = Subscription(conn, "book", depth=5)
    box = conn.outbox
    for i in range(3):
        box.push(websocket.BATCHABLE, json.dumps({"type": "answer", "id": i}))
    box.push(book, '{"type":"update"}')
    box.push(websocket.BATCHABLE, json.dumps({"type": "answer", "id": 3}))
    big = "x" * (websocket.MAX_ANSWERS_FRAME // 2)
    for i in range(4, 7):
        box.push(websocket.BATCHABLE, json.dumps({"type": "answer", "id": i, "pad": big}))
    frames = []
    while box.items:
        tag, text = box.items.popleft()
        box._taken(len(text))
        frames.append(json.loads(box.take_answers(text) if tag is websocket.BATCHABLE
                                 else text))
    assert [[a["id"] for a in f["answers"]] if f["type"] == "answers" else f["type"]
            for f in frames] == [[0, 1, 2], "update", [3, 4], [5], [6]]
    assert box.size == 0 and box.tally.chars == 0  # every character taken is counted out
