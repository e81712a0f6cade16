"""Attacks on issue 12's performance work, against real nodes.

Each test is one attack and passes when the node held: every acknowledged
order survived a kill -9, answers stayed byte-valid JSON, pipelined commands
kept their order and account, forged pushes left no trace. The ones that once
got through are fixed in the module at fault; their tests stay here.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct

import h11
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, TextMessage
from wsproto.events import Request as WsRequest

from crdtbook import amount, codec
from crdtbook.amount import MAX_UNITS, SCALE, AmountError, parse_amount
from crdtbook.codec import CodecError, event_from_wire, events_from_wire
from node.store import accounts

from . import nodes
from .procs import NodeProcess
from .test_accounts import add
from .test_arrivals import CLOCK as ARRIVALS_CLOCK
from .test_arrivals import joined_cluster, message, placed_blocks
from .test_equivocation import sign_block
from .wsclient import connect

READ_ROUTES = ("/book", "/fills", "/events", "/status", "/context", "/orders",
               "/accounts", "/metrics", "/peer/hello")


def valid_json(body: bytes) -> object:
    """Strict JSON (no NaN, no lone surrogates), UTF-8."""
    def no_constant(text):
        raise ValueError(f"{text} in an answer")
    return json.loads(body.decode("utf-8"), parse_constant=no_constant)


async def test_the_largest_amounts_trade_and_every_answer_stays_json(nursery):
    """10^12 at 10^12 (10^20 units each, 10^24 notional): no answer path may fail on them."""
    a = await nodes.start(nursery)
    big = "1000000000000"
    async with nodes.client() as http:
        for side in ("sell", "buy"):
            r = await http.post(a.url + "/orders", json={"side": side, "price": big, "qty": big})
            assert r.status_code == 201, r.text
            valid_json(r.content)
        r = await http.post(a.url + "/orders", json=[
            {"side": "sell", "price": big, "qty": big},
            {"side": "sell", "price": "999999999999.99999999", "qty": big}])
        assert r.status_code == 201, r.text
        r = await http.post(a.url + "/orders", json={"side": "buy", "type": "market", "qty": big})
        assert r.status_code == 201, r.text
        for route in READ_ROUTES:
            r = await http.get(a.url + route)
            assert r.status_code < 500, (route, r.status_code, r.text[:300])
            if route != "/metrics":
                valid_json(r.content)
        fills = (await http.get(a.url + "/fills")).json()
        assert any(f["qty"] == big for f in fills["fills"]), fills
    async with connect(a.url, token=a.token) as ws:
        for i, channel in enumerate(("book", "trades", "orders", "status")):
            answer = await ws.call(op="subscribe", id=i, channel=channel)
            assert answer["ok"], answer
        answer = await ws.call(op="order", id="o", order={"side": "sell", "price": big, "qty": big})
        assert answer["ok"] and answer["status"] == 201, answer


# -- kill -9 right after the answers: every acknowledged order is there -------------
class Acked(list):
    """Acknowledged order ids; the one that reaches ``limit`` kills the node at once,
    in the same step that read it (no poll between the answer and the kill)."""

    def __init__(self, node: NodeProcess, limit: int) -> None:
        super().__init__()
        self.node, self.limit = node, limit

    def append(self, order_id: str) -> None:
        self.extend([order_id])

    def extend(self, ids) -> None:
        super().extend(ids)
        if len(self) >= self.limit:
            self.node.kill()


def an_order(rng: random.Random) -> dict:
    """A resting order mostly (buys under 100, sells over 200), a cross now and then."""
    if rng.random() < 0.1:
        return {"side": rng.choice(("buy", "sell")), "price": "150", "qty": "1"}
    if rng.random() < 0.5:
        return {"side": "buy", "price": str(rng.randint(1, 99)), "qty": str(rng.randint(1, 9))}
    return {"side": "sell", "price": str(rng.randint(201, 299)), "qty": str(rng.randint(1, 9))}


async def http_singles(url: str, seed: int, acked: list[str]) -> None:
    rng = random.Random(seed)
    async with nodes.client(timeout=5) as http:
        while True:
            r = await http.post(url + "/orders", json=an_order(rng))
            if r.status_code == 201:
                acked.append(r.json()["order"]["id"])


async def http_batches(url: str, seed: int, acked: list[str]) -> None:
    rng = random.Random(seed)
    async with nodes.client(timeout=5) as http:
        while True:
            r = await http.post(url + "/orders", json=[an_order(rng) for _ in range(40)])
            if r.status_code == 201:
                acked.extend(item["order"]["id"] for item in r.json()["orders"])


async def ws_pipelined(url: str, token: str, seed: int, acked: list[str]) -> None:
    rng = random.Random(seed)
    async with connect(url, token=token) as ws:
        async def send_all():
            for i in range(1_000_000):
                await ws.send(op="order", id=i, order=an_order(rng))

        async with trio.open_nursery() as inner:
            inner.start_soon(send_all)
            while True:
                message = await ws.next()
                if message.get("type") == "answer" and message["ok"]:
                    acked.append(message["result"]["order"]["id"])


async def quietly(job, *args) -> None:
    """A client until the node dies under it: its errors then are expected."""
    with contextlib.suppress(Exception, BaseExceptionGroup):
        await job(*args)


@pytest.mark.parametrize("round_", range(2))
async def test_kill_9_right_after_answers_loses_no_acknowledged_order(tmp_path, round_):
    node = NodeProcess(str(tmp_path / "n"), extra=("--rate-limit", "0"))
    await node.start()
    acked = Acked(node, 2_000 + 1_000 * round_)
    try:
        token = accounts.read(node.data_dir)
        async with trio.open_nursery() as clients:
            for i in range(3):
                clients.start_soon(quietly, http_singles, node.url, 10 * round_ + i, acked)
            clients.start_soon(quietly, http_batches, node.url, 100 + round_, acked)
            for i in range(2):
                clients.start_soon(quietly, ws_pipelined, node.url, token, 200 + i, acked)
            await nodes.eventually(lambda: node.proc.poll() is not None, timeout=60)
            clients.cancel_scope.cancel()
        seen = list(acked)
        await node.start()
        missing = []
        async with nodes.client(timeout=10) as http:
            limit = trio.Semaphore(8)

            async def check(order_id: str) -> None:
                async with limit:
                    r = await http.get(f"{node.url}/orders/{order_id}")
                if r.status_code != 200:
                    missing.append((order_id, r.status_code))

            async with trio.open_nursery() as checks:
                for order_id in seen:
                    checks.start_soon(check, order_id)
        assert len(set(seen)) == len(seen)
        assert not missing, f"{len(missing)} of {len(seen)} acknowledged orders lost: " \
                            f"{missing[:5]}"
    finally:
        node.kill()


# -- the WebSocket pipeline: order, account and cancels of commands sent at once ----
async def test_a_pipeline_of_orders_cancels_and_auth_switches_keeps_command_order(
        nursery, tmp_path):
    """Thousands of commands in one go, never waiting: orders (some refused), a cancel
    of the order just before it, an auth switch, a ping. Every answer comes in command
    order, each order as the account authenticated when it was sent, each cancel finds
    its order."""
    a = await nodes.start(nursery, data_dir=str(tmp_path / "a"), rate_limit=0)
    async with nodes.client() as http:
        tokens = {"alice": await add(http, a, "alice"), "bob": await add(http, a, "bob")}
    async with connect(a.url, token=tokens["alice"]) as ws:
        probe = await ws.call(op="order", id="probe", order={"side": "buy", "price": "1",
                                                              "qty": "1"})
        replica, seq = probe["result"]["order"]["replica"], probe["result"]["order"]["seq"]
        expected: list[tuple[object, str, object]] = []  # (id, kind, what the answer holds)
        commands = []
        account, n = "alice", 0
        for _round in range(40):
            for _ in range(30):
                n += 1
                if n % 7 == 0:  # refused alone; its neighbours placed
                    commands.append({"op": "order", "id": n,
                                     "order": {"side": "buy", "price": "1", "qty": "0"}})
                    expected.append((n, "refused", 400))
                    continue
                seq += 1
                commands.append({"op": "order", "id": n,
                                 "order": {"side": "buy", "price": str(1 + n % 50),
                                           "qty": "1"}})
                expected.append((n, "order", (f"{replica}:{seq}", account)))
            n += 1
            commands.append({"op": "cancel", "id": n, "order": f"{replica}:{seq}"})
            expected.append((n, "cancel", f"{replica}:{seq}"))
            seq += 1
            n += 1
            commands.append({"op": "ping", "id": n})
            expected.append((n, "pong", None))
            account = "bob" if account == "alice" else "alice"
            n += 1
            commands.append({"op": "auth", "id": n, "token": tokens[account]})
            expected.append((n, "auth", account))

        async def send_all():
            for command in commands:
                await ws.send(**command)

        nursery.start_soon(send_all)
        for ident, kind, what in expected:
            message = await ws.until(lambda m: m.get("type") in ("answer", "pong"))
            assert message["id"] == ident, (message, ident, kind)
            if kind == "order":
                assert message["ok"], message
                order = message["result"]["order"]
                assert (order["id"], order["account"]) == what
            elif kind == "refused":
                assert (message["ok"], message["status"]) == (False, what)
            elif kind == "cancel":
                assert message["ok"], message
                assert message["result"]["cancel"]["target"] == what, message
            elif kind == "auth":
                assert message["result"] == {"account": what}
            else:
                assert message["type"] == "pong"


# -- pushes merged together (Node.arrive): as if each came alone ---------------------
async def arrive_together(a, *pushes) -> list:
    """Every push handed to ``a`` at the same moment (one merge); each one's outcome."""
    outcomes: list = [None] * len(pushes)

    async def push(i: int, blocks) -> None:
        try:
            outcomes[i] = await a.arrive(message(blocks))
        except ValueError as exc:
            outcomes[i] = exc

    async with trio.open_nursery() as together:
        for i, blocks in enumerate(pushes):
            together.start_soon(push, i, blocks)
    return outcomes


async def test_a_forged_gap_push_does_not_hide_an_honest_push_merged_with_it():
    """Anyone may POST /peer/push. A forged block of b's feed past a gap is skipped
    unverified; merged in the same door call as b's honest push, it stopped b's feed
    for the whole call, so the honest blocks were dropped too (answered 0 added)."""
    async with trio.open_nursery() as nursery:
        a, b, _ = await joined_cluster(nursery)
        ARRIVALS_CLOCK.step()
        first = await placed_blocks(b, "buy", "10", 2)
        second = await placed_blocks(b, "buy", "10", 2)
        third = await placed_blocks(b, "buy", "10", 2)
        await a.arrive(message(first))
        held = a.replica.events_total()
        forged = [block._replace(sig=bytes(len(block.sig))) for block in third]
        outcomes = await arrive_together(a, forged, second + third)
        assert a.replica.events_total() == held + 4, outcomes
        assert outcomes[1] == 4
        assert a.door.tip(b.id).last == third[-1].last
        nursery.cancel_scope.cancel()


async def test_two_versions_of_a_block_pushed_together_convict_their_origin():
    """An origin that signs two versions of a block is convicted when they come one
    after the other; merged in one door call, the second looked like a duplicate
    (compared with held blocks only) and the equivocation went unseen."""
    async with trio.open_nursery() as nursery:
        a, b, c = await joined_cluster(nursery)
        ARRIVALS_CLOCK.step()
        await a.arrive(message(await placed_blocks(c, "sell", "11", 1)))
        prev = c.door.tip(c.id).hash
        (version,) = message(await placed_blocks(c, "sell", "11", 1)).blocks
        twin = version.events[0]._replace(qty=version.events[0].qty * 2)
        other = sign_block(c.signer, prev, [twin])
        await arrive_together(a, [version], [other])
        assert c.id in a.door.proofs
        nursery.cancel_scope.cancel()


# -- crdtbook's fast paths agree with the careful ones --------------------------------
def careful(item):
    try:
        return ("ok", event_from_wire(item, "event"))
    except CodecError:
        return ("refused", None)


def fast(item):
    try:
        (event,) = events_from_wire([item], "event", codec._Names())
        return ("ok", event)
    except CodecError:
        return ("refused", None)


_ints = st.one_of(st.integers(-3, 6), st.sampled_from(
    [0, 1, 2**53, 2**63 - 1, 2**63, 2**64, -(2**63), MAX_UNITS, MAX_UNITS + 1, 10**30]),
    st.booleans(), st.none(), st.just(1.0), st.just("1"))
_names = st.one_of(st.sampled_from(["r1", "a", "", "-r", "r.1_x-", "x" * 64, "x" * 65,
                                    "r 1", "é", "\x00", "local", "acct\n", "Ünï", "\ud800"]),
                   st.text(max_size=70), _ints)
_tags = st.one_of(st.sampled_from([0, 1, 2, False, True, 0.0]), _ints)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(
    st.tuples(_tags, _names, _ints, _ints, _ints, _ints, _ints, _ints, _names).map(list),
    st.tuples(_tags, _names, _ints, _ints, _names, _ints).map(list),
    st.lists(_ints, max_size=10), _ints, st.text(max_size=5)))
def test_the_fast_event_loop_takes_exactly_what_event_from_wire_takes(item):
    """codec.events_from_wire's inline checks against event_from_wire: same event (with
    the same field types) or both refuse."""
    want, got = careful(item), fast(item)
    assert want[0] == got[0], (item, want, got)
    if want[0] == "ok":
        assert want[1] == got[1]
        assert [type(f) for f in want[1]] == [type(f) for f in got[1]]
        assert want[1].side is got[1].side if hasattr(got[1], "side") else True


# one pool of strings for ids and accounts: some valid as both, some as an account only
_shared = st.sampled_from(["r1", "", "r 1", "x" * 65, "acct\n", "-r", "vf3fs4ki6x", "é"])
_order = st.tuples(st.just(0), _shared, st.integers(1, 3), st.integers(1, 3),
                   st.integers(0, 1), st.just(0), st.integers(1, 3), st.integers(1, 3),
                   _shared).map(list)
_cancel = st.tuples(st.just(1), _shared, st.integers(1, 3), st.integers(1, 3), _shared,
                    st.integers(1, 3)).map(list)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(_order, _cancel), min_size=1, max_size=12))
def test_the_fast_event_loop_with_one_name_table_takes_what_event_from_wire_takes(items):
    """The messages' name tables (codec._Names) remember each string checked, as an
    id and as an account apart: a string met first as one must still be checked as
    the other. Every item through one table, against the careful way item by item."""
    names = codec._Names()
    for item in items:
        want = careful(item)
        try:
            (event,) = events_from_wire([item], "event", names)
            got = ("ok", event)
        except CodecError:
            got = ("refused", None)
        assert want == got, (items, item, want, got)


def test_the_amount_cache_keeps_each_refusals_own_words_and_stays_bounded():
    for text in ("1.", ".5", "1e3", " 1", "1_0", "\uff11", "1" * 40, "1.000000001"):
        for what in ("price", "quantity"):
            with pytest.raises(AmountError) as refused:
                parse_amount(text, what)
            assert str(refused.value).startswith(what), (text, what)
    assert parse_amount("01.5") == parse_amount("1.5") == 150_000_000
    for n in range(1, 3 * amount._RECENT_MAX):
        assert parse_amount(f"{n}.5", "price") == n * SCALE + SCALE // 2
    assert len(amount._RECENT) <= amount._RECENT_MAX


# -- answers held until their body (httpserve.Guarded.hold_next) -----------------------
async def test_pipelined_head_get_100_continue_and_refusals_on_one_connection(nursery):
    """HEAD (no body goes out: the head must not wait for it), a POST that expects
    100-continue, a 404 and a GET, all written at once on one keep-alive connection:
    each answer comes whole, in order, with a length that frames it."""
    a = await nodes.start(nursery)
    host, port = a.url.split("://", 1)[1].split(":")
    auth = f"Authorization: Bearer {a.token}\r\n"
    order = json.dumps({"side": "buy", "price": "3", "qty": "1"}).encode()
    requests = (
        f"HEAD /status HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()
        + f"HEAD /nowhere HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()
        + f"POST /orders HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
          f"Expect: 100-continue\r\nContent-Length: {len(order)}\r\n\r\n".encode() + order
        + f"GET /book HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    conn = h11.Connection(h11.CLIENT)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(requests)
        answers = []
        for method in ("HEAD", "HEAD", "POST", "GET"):
            # h11 needs to know what it asked to frame the answer (HEAD: no body)
            length = [("Content-Length", str(len(order)))] if method == "POST" else []
            conn.send(h11.Request(method=method, target="/", headers=[("Host", "x"), *length]))
            if method == "POST":
                conn.send(h11.Data(data=order))
            conn.send(h11.EndOfMessage())
            status, body = None, b""
            with trio.fail_after(10):
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                        continue
                    if isinstance(event, h11.Response):
                        status = event.status_code
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
            answers.append((method, status, body))
            conn.start_next_cycle()
    assert [(m, s) for m, s, _ in answers] == [("HEAD", answers[0][1]), ("HEAD", 404),
                                               ("POST", 201), ("GET", 200)], answers
    assert answers[0][1] in (200, 405) and answers[0][2] == b"" and answers[1][2] == b""
    assert json.loads(answers[2][2])["order"]["price"] == "3"
    assert json.loads(answers[3][2])["bids"][0]["price"] == "3"


async def test_a_client_cut_mid_pipeline_leaves_no_task_and_loses_nothing_placed(
        nursery, tmp_path):
    """Thousands of orders pipelined, then the TCP connection dropped without a close
    frame while batches wait to be durable: the connection's tasks end, the node goes
    on serving, and whatever it placed is held after a restart."""
    a = await nodes.start(nursery, data_dir=str(tmp_path / "a"), rate_limit=0)
    host, port = a.url.split("://", 1)[1].split(":")
    ws = WSConnection(ConnectionType.CLIENT)
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(ws.send(WsRequest(host="x", target="/ws", extra_headers=[
        (b"authorization", f"Bearer {a.token}".encode())])))
    with trio.fail_after(10):
        while not any(isinstance(e, AcceptConnection) for e in ws.events()):
            ws.receive_data(await stream.receive_some(65536))
    frames = b"".join(ws.send(TextMessage(json.dumps(
        {"op": "order", "id": i, "order": {"side": "buy", "price": str(1 + i % 90),
                                            "qty": "1"}})))
        for i in range(3_000))
    await stream.send_all(frames)
    await nodes.eventually(lambda: nodes.trading_events(a.node) > 0, interval=0.001)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()  # a reset, mid-pipeline
    await nodes.eventually(lambda: a.node.streams.connections == 0)
    await a.node.journal.sync()
    placed = nodes.trading_events(a.node)
    digest = a.node.replica.digest()
    assert 0 < placed <= 3_000
    async with nodes.client() as http:
        assert (await http.get(a.url + "/status")).status_code == 200
    await a.stop()
    again = await nodes.start(nursery, data_dir=str(tmp_path / "a"), wait=False)
    assert nodes.trading_events(again.node) == placed  # from its store, before any peer
    assert again.node.replica.digest() == digest
