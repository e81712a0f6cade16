"""Attacks on the WebSocket sender's frames written at once (``asgi.FramesAtOnce``: a
batch of queued messages handed to hypercorn in one ``SEND_MANY`` message) and on the
send-stall cut that resets a connection (``httpserve.Guarded``), against real nodes.

Each test is one attack and passes when the node held: memory within the documented
bounds of the outgoing queues (docs/streams.md, Limits), a client that reads is never
cut, one that reads nothing is cut and leaves nothing behind (its slot, its
descriptor, its tasks), and the node keeps serving everyone else. The ones that once
got through are fixed in the node; their tests stay here.
"""

from __future__ import annotations

import json
import os
import socket
import struct

import pytest
import trio
from wsproto.events import CloseConnection, TextMessage

from node import asgi, httpserve, logs
from node.api import websocket
from node.store import accounts

from . import nodes
from .procs import NodeProcess, paged
from .test_attacks4 import bugs, raw_frame, raw_ws, task_count  # noqa: F401 (a fixture)
from .test_attacks10 import GONE_S, Recorded, an_entry
from .wsclient import BookView, book_of, connect

SAMPLE_S = 0.01  # how often a test samples a node's state while an attack runs
LEVELS = 1000  # price levels a side: a depth-1000 book snapshot is ~40 K characters


async def deep_book(url: str) -> None:
    async with nodes.client() as http:
        levels = [{"side": "buy", "qty": "1", "price": str(1000 + i)} for i in range(LEVELS)]
        levels += [{"side": "sell", "qty": "1", "price": str(3000 + i)}
                   for i in range(LEVELS)]
        r = await http.post(url + "/orders", json=levels, timeout=60)
        assert r.status_code == 201, r.text


class InFlight:
    """Characters of ``SEND_MANY`` batches handed to hypercorn and not yet written."""

    def __init__(self, monkeypatch) -> None:
        self.chars = 0
        self.most = 0
        real = asgi.FramesAtOnce.app_send
        me = self

        async def app_send(stream, message) -> None:
            if message is None or message["type"] != asgi.SEND_MANY:
                await real(stream, message)
                return
            size = sum(len(text) for text in message["texts"])
            me.chars += size
            me.most = max(me.most, me.chars)
            try:
                await real(stream, message)
            finally:
                me.chars -= size
        monkeypatch.setattr(asgi.FramesAtOnce, "app_send", app_send)


# -- stalled batches: what the sender holds counts against the queues' bounds ----------
STUCK = 8  # connections that subscribe and never read
RESUBSCRIBES = 30  # depth-1000 book snapshots each asks for


async def test_a_stalled_batch_counts_against_the_queues_bounds(nursery, monkeypatch, bugs):  # noqa: F811
    """A client that reads nothing stalls the sender on a batch of up to 64 Ki
    characters and one more message, held as text and as frames until the stall cut.
    Uncounted, each stuck connection held that on top of its queue (400 such
    connections: 149 KB each at the node's peak against 83 KB for one message at a
    time). Now every character the node holds for a client, queued or being written,
    counts in the node-wide tally and against the connection's sure share."""
    monkeypatch.setattr(websocket, "MAX_QUEUED_TOTAL", 0)  # every queue at its sure share
    recorded = Recorded(monkeypatch)
    flight = InFlight(monkeypatch)
    a = await nodes.start(nursery, rate_limit=0)
    hub = a.node.streams
    await deep_book(a.url)
    uncounted = held = 0
    subscribed = [0]

    async def stuck() -> None:
        async with connect(a.url, rcvbuf=4096) as ws:
            with trio.move_on_after(GONE_S):  # the node stops reading it: fine
                for i in range(RESUBSCRIBES):
                    await ws.send(op="subscribe", id=i, channel="book", depth=LEVELS)
            subscribed[0] += 1
            await trio.sleep_forever()

    async def sample() -> None:
        nonlocal uncounted, held
        while True:
            queued = sum(c.outbox.size for c in recorded.connections)
            uncounted = max(uncounted, queued + flight.chars - hub.outgoing.chars)
            held = max(held, queued + flight.chars)
            await trio.sleep(SAMPLE_S)

    async with trio.open_nursery() as inner:
        inner.start_soon(sample)
        for _ in range(STUCK):
            inner.start_soon(stuck)
        await nodes.eventually(lambda: subscribed[0] == STUCK, timeout=60)
        # every stuck sender is on a batch the client does not take
        await nodes.eventually(lambda: flight.most > websocket.FAIR_SHARE, timeout=60)
        async with connect(a.url) as ws:  # a reader is served meanwhile
            assert (await ws.call(op="subscribe", id=1, channel="book", depth=5))["ok"]
            assert (await ws.next())["type"] == "snapshot"
        inner.cancel_scope.cancel()
    print(f"\nat most {held} characters held for {STUCK} stuck connections, "
          f"{uncounted} of them uncounted")
    assert uncounted <= 0
    await nodes.eventually(lambda: hub.connections == 0, timeout=GONE_S)
    assert hub.outgoing.chars == 0 and not bugs
    await a.stop()


# -- the stall cut: a client that reads slowly, but reads, is never cut ---------------
STALL_S = 2.0  # the node's send-stall cut, shortened for the test (20 s in a node)
SNAPSHOTS = 8  # depth-1000 book snapshots (~40 K characters each) the slow client asks for
READ_BYTES = 16384  # what the slow client reads at a time ...
READ_EVERY_S = 0.1  # ... this often: ~160 KB/s, a 64 KiB write takes it ~0.4 s


async def test_a_slow_client_that_keeps_reading_is_never_cut(nursery, monkeypatch, bugs):  # noqa: F811
    """The stall cut is for a client that takes nothing: one that reads steadily, a
    few KB at a time, and takes what the node writes well within ``SEND_STALL_S``,
    gets every message, is never reset. (The clock runs over each 64 KiB piece of a
    write, and the kernel takes a piece once what it holds unsent drains: a client
    must read about 128 KiB per ``SEND_STALL_S``, ~6 KB/s with the node's 20 s.)"""
    monkeypatch.setattr(httpserve, "SEND_STALL_S", STALL_S)
    a = await nodes.start(nursery, rate_limit=0)
    await deep_book(a.url)
    stream, client = await raw_ws(a.url)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READ_BYTES)
    await stream.send_all(b"".join(
        raw_frame(0x1, json.dumps({"op": "subscribe", "id": i, "channel": "book",
                                   "depth": LEVELS}).encode()) for i in range(SNAPSHOTS)))
    answers = snapshots = 0
    text = ""
    with trio.fail_after(SNAPSHOTS * 10):
        while snapshots < SNAPSHOTS:
            data = await stream.receive_some(READ_BYTES)  # a reset raises here
            assert data, "the node hung up on a client that reads"
            client.receive_data(data)
            for event in client.events():
                assert not isinstance(event, CloseConnection), event
                if isinstance(event, TextMessage):
                    text += event.data
                    if event.message_finished:
                        kind = json.loads(text)["type"]
                        answers += kind == "answer"
                        snapshots += kind == "snapshot"
                        text = ""
            await trio.sleep(READ_EVERY_S)
    assert answers == SNAPSHOTS and not bugs
    await stream.aclose()
    await a.stop()


# -- the stall reset on the HTTP path: an answer nobody reads ---------------------------
CAP = 8  # the node's cap of open connections, for the test
HTTP_STUCK = CAP + 4  # clients that post and never read: some wait for a freed slot
ENTRY = 1000  # orders per post: an answer of ~300 KB, far more than the buffers take


@pytest.fixture
def failures(monkeypatch) -> list:
    """Every warning and error the node logs about a connection or a bug."""
    seen: list = []
    for name in ("warning", "error"):
        real = getattr(logs, name)

        def record(event: str, _real=real, **fields) -> None:
            seen.append((event, fields))
            _real(event, **fields)
        monkeypatch.setattr(logs, name, record)
    return seen


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def post_and_never_read(url: str, token: str, i: int) -> bool:
    """POST a batch of orders on a socket with a tiny receive buffer, read nothing for
    a while, then read: True once the node reset the connection."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    body = json.dumps([{"side": "buy", "qty": "1", "price": str(1 + (i * ENTRY + n) % 900)}
                       for n in range(ENTRY)]).encode()
    head = (f"POST /orders HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    try:
        await stream.send_all(head.encode() + body)
        await trio.sleep(GONE_S)  # the node stalls on its answer, then cuts it
        with trio.fail_after(GONE_S):
            while await stream.receive_some(READ_BYTES):
                pass
        return False  # an EOF: the node hung up without a reset
    except trio.BrokenResourceError:
        return True
    finally:
        await stream.aclose()


async def test_an_http_answer_nobody_reads_is_reset_and_frees_its_slot(
        nursery, monkeypatch, failures):
    monkeypatch.setattr(httpserve, "SEND_STALL_S", STALL_S)
    a = await nodes.start(nursery, rate_limit=0, max_connections=CAP)
    fds = open_fds()
    reset = []

    async def stuck(i: int) -> None:
        reset.append(await post_and_never_read(a.url, a.token, i))

    async with nodes.client() as http:
        async with trio.open_nursery() as inner:
            for i in range(HTTP_STUCK):
                inner.start_soon(stuck, i)
            # (while all the slots are stuck, /status waits for one: a freed slot)
            with trio.fail_after(GONE_S * 2):
                assert (await http.get(a.url + "/status")).status_code == 200
        assert reset == [True] * HTTP_STUCK
        # every stuck connection's descriptor and slot came back
        await nodes.eventually(lambda: open_fds() <= fds + 1, timeout=GONE_S)
        for _ in range(CAP * 2):  # keep-alive requests, more of them than the cap
            assert (await http.get(a.url + "/book")).status_code == 200
    async with connect(a.url) as ws:  # and an upgrade
        assert (await ws.call(op="ping", id=1))["type"] == "pong"
    assert trading_orders(a) == HTTP_STUCK * ENTRY  # placed, and durable, before the answer
    assert not failures, failures[:3]
    await a.stop()


def trading_orders(a) -> int:
    return nodes.trading_events(a.node)


# -- a close in the middle of batches: whole frames, then the close, then nothing -------
CLOSING_PINGS = 2_000  # protocol pings a client sends around its close


@pytest.mark.parametrize("pings", [False, True])
async def test_a_close_amid_batches_gets_whole_frames_then_the_close_then_nothing(
        nursery, failures, pings):
    """A client that asked for ~1 MB of snapshots closes while the node writes them
    in batches (with a flood of pings before its close and after it, which it may
    not send): every frame it gets is whole and parses, the close answers its own,
    and nothing follows it."""
    a = await nodes.start(nursery, rate_limit=0)
    hub = a.node.streams
    await deep_book(a.url)
    stream, client = await raw_ws(a.url)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READ_BYTES)
    ping = raw_frame(0x9, b"p" * 16)
    await stream.send_all(b"".join(
        raw_frame(0x1, json.dumps({"op": "subscribe", "id": i, "channel": "book",
                                   "depth": LEVELS}).encode()) for i in range(25)))
    client.receive_data(await stream.receive_some(READ_BYTES))  # the batches are under way
    close = raw_frame(0x8, struct.pack(">H", 1000))
    await stream.send_all((ping * CLOSING_PINGS if pings else b"") + close
                          + (ping * CLOSING_PINGS if pings else b""))
    messages, closes, after_close = 0, 0, 0
    text = ""
    with trio.fail_after(GONE_S * 2):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""  # (the node may reset once its close is out: our pings after)
            if not data:  # (wsproto would make up a 1006 close of the EOF)
                break
            client.receive_data(data)
            for event in client.events():
                if closes:
                    after_close += 1
                elif isinstance(event, CloseConnection):
                    closes += 1
                    assert event.code == 1000
                elif isinstance(event, TextMessage):
                    text += event.data
                    if event.message_finished:
                        json.loads(text)  # whole
                        messages, text = messages + 1, ""
    print(f"\n{messages} whole messages, then the close")
    assert closes == 1 and after_close == 0 and messages >= 1 and text == ""
    await stream.aclose()
    await nodes.eventually(lambda: hub.connections == 0, timeout=GONE_S)
    assert hub.outgoing.chars == 0 and not failures, failures[:3]
    async with connect(a.url) as ws:
        assert (await ws.call(op="ping", id=1))["type"] == "pong"
    await a.stop()


# -- the stall reset while orders commit, then kill -9: nothing acknowledged is lost -----
class StallingNode(NodeProcess):
    """A node process whose send-stall cut is ``STALL_S`` (20 s in a node)."""

    def command(self) -> list[str]:
        cmd = super().command()
        assert cmd[1:3] == ["-m", "node"]
        boot = (f"from node import httpserve; httpserve.SEND_STALL_S = {STALL_S}; "
                "import runpy; runpy.run_module('node', run_name='__main__', alter_sys=True)")
        return [cmd[0], "-c", boot, *cmd[3:]]


PIPELINED = 3_000  # orders sent at once by a client that reads a few answers, then stops


async def test_a_stall_reset_amid_commits_then_kill_9_loses_no_acknowledged_order(tmp_path):
    node = StallingNode(str(tmp_path / "n"), extra=("--rate-limit", "0"))
    await node.start()
    try:
        stream, client = await raw_ws(node.url)
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        token = accounts.read(node.data_dir)
        commands = [{"op": "auth", "id": "a", "token": token}]
        commands += [{"op": "order", "id": i, "order": an_entry(i)} for i in range(PIPELINED)]
        acked: list[str] = []
        text = ""

        def take(data: bytes) -> None:
            nonlocal text
            client.receive_data(data)
            for event in client.events():
                if isinstance(event, TextMessage):
                    text += event.data
                    if event.message_finished:  # a whole answer: acknowledged
                        answer, text = json.loads(text), ""
                        if answer.get("ok") and answer.get("status") == 201:
                            acked.append(answer["result"]["order"]["id"])

        async with trio.open_nursery() as inner:
            inner.start_soon(stream.send_all, b"".join(
                raw_frame(0x1, json.dumps(c).encode()) for c in commands))
            with trio.move_on_after(STALL_S):  # a few answers, then it stops reading
                while True:
                    take(await stream.receive_some(READ_BYTES))
                    await trio.sleep(READ_EVERY_S)
            await trio.sleep(STALL_S * 2)  # the node stalls on it and resets it
            reset = False
            with trio.fail_after(GONE_S):
                try:
                    while data := await stream.receive_some(65536):  # what came before it
                        take(data)
                except trio.BrokenResourceError:
                    reset = True
            inner.cancel_scope.cancel()
        assert reset, "the node hung up on a client that read nothing, without a reset"
        node.kill()  # right after the reset: commits may be under way
        await stream.aclose()
        assert acked, "no answer was read"
        await node.start()
        async with nodes.client(timeout=10) as http:
            held = {order["id"] for order in await paged(http, node.url, "/orders", "orders")}
        missing = [order_id for order_id in acked if order_id not in held]
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged orders lost"
        print(f"\n{len(acked)} orders acknowledged before the reset, all held after kill -9")
    finally:
        node.kill()


# -- order across batches: answers in command order, once; channels without a gap ------
ROUNDS = 40  # of: resubscribe to the deep book, orders that change it, a ping


@pytest.mark.parametrize("batch_answers", [False, True])
async def test_answers_and_channel_messages_keep_their_order_across_batches(
        nursery, failures, batch_answers):
    """Pipelined commands whose answers share batches with depth-1000 snapshots (each
    one batch's "one larger message") and the book's updates their orders make: every
    command answered once, in command order; each snapshot right after its subscribe's
    answer; the book's updates without a gap from each snapshot; the book shown at
    the end is GET /book's."""
    a = await nodes.start(nursery, rate_limit=0)
    await deep_book(a.url)
    commands = [{"op": "options", "id": "o", "batch_answers": batch_answers}]
    for r in range(ROUNDS):
        commands.append({"op": "subscribe", "id": f"s{r}", "channel": "book",
                         "depth": LEVELS})
        commands += [{"op": "order", "id": f"o{r}.{n}", "order": an_entry(r * 7 + n)}
                     for n in range(5)]
        commands.append({"op": "ping", "id": f"p{r}"})
    expected = [c["id"] for c in commands]
    answered: list = []
    view = None
    async with connect(a.url, token=a.token) as ws:
        for command in commands:
            await ws.send(**command)
        last_subscribe = None
        while len(answered) < len(expected):
            frame = await ws.next()
            for m in frame["answers"] if frame["type"] == "answers" else [frame]:
                if m["type"] in ("answer", "pong"):
                    assert m.get("ok", True) or m["id"][0] == "o", m  # (some orders refused)
                    answered.append(m["id"])
                    last_subscribe = m["id"] if str(m["id"]).startswith("s") else None
                elif m["type"] == "snapshot":
                    assert last_subscribe is not None, "a snapshot before its answer"
                    last_subscribe = None
                    view = BookView(m)
                else:
                    assert m["type"] == "update", m
                    view.apply(m)  # (asserts no gap)
        assert answered == expected
        async with nodes.client() as http:
            async def same() -> bool:
                body = (await http.get(a.url + f"/book?depth={LEVELS}")).json()
                while True:  # the updates that came meanwhile
                    with trio.move_on_after(SAMPLE_S):
                        frame = await ws.next()
                        assert frame["type"] == "update", frame
                        view.apply(frame)
                        continue
                    break
                return view.shown() == book_of(body)
            await nodes.eventually(same)
    assert not failures, failures[:3]
    await a.stop()
