"""Attacks on the WebSocket entry's fast path (hypercorn hands frames over without a
checkpoint, httpserve.QueuedTaskGroup) and its opt-in ``answers`` frames
(``{"op": "options", "batch_answers": true}``, docs/streams.md), against real nodes.

Each test is one attack and passes when the node held: a clear refusal and nothing
changed, memory bounded, every command answered once and in order (each answer as
it would have come alone), an order answered only once durable, nothing left
behind by a connection that ended. The ones that once got through are fixed in the
node; their tests stay here.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct

import trio

from node import httpserve
from node.api import websocket
from node.store import accounts

from . import nodes
from .procs import NodeProcess, paged
from .test_attacks4 import bugs, raw_frame, raw_ws, task_count  # noqa: F401 (a fixture)
from .test_attacks5 import Acked, an_order, quietly
from .wsclient import connect

FLOOD_S = 3.0  # how long a client floods a node that stopped reading it
SAMPLE_S = 0.01  # how often a test samples a node's state while a flood runs
GONE_S = 15.0  # a connection that ended is gone by then (a half-closed one within 5 s)


def flatten(frames: list[dict]) -> list[dict]:
    """The messages of ``frames``, each ``answers`` frame's answers in their place."""
    return [m for f in frames for m in (f["answers"] if f["type"] == "answers" else [f])]


class Recorded:
    """Every ``websocket.Connection`` a node in this process runs (to look inside)."""

    def __init__(self, monkeypatch) -> None:
        self.connections: list[websocket.Connection] = []
        run = websocket.Connection.run
        seen = self.connections

        async def recorded(conn, receive) -> None:
            seen.append(conn)
            await run(conn, receive)
        monkeypatch.setattr(websocket.Connection, "run", recorded)


# -- frames that cost the client nothing: the read-ahead bounds them in number --------
INBOX_FRAMES = websocket.READ_AHEAD // websocket.FRAME_COST  # the most it may hold


async def test_empty_and_binary_frames_are_bounded_in_the_inbox_by_number():
    """An empty text frame and a binary one (kept as nothing: only an error answer is
    owed) each count ``FRAME_COST`` against the read-ahead: the reader waits once it
    holds ``INBOX_FRAMES`` of them. They counted 0: it never waited, and the inbox
    of a client that stops reading grew by a slot for every 6 bytes it sent."""
    inbox = websocket.Inbox()
    with trio.CancelScope() as waited:
        waited.cancel()  # raised at put's first checkpoint: only when it has to wait
        for i in range(websocket.READ_AHEAD):
            await inbox.put("" if i % 2 else None)
    assert waited.cancelled_caught
    assert len(inbox.items) == INBOX_FRAMES
    while inbox.items:
        assert inbox.take_nowait().refused is not None  # each still gets its refusal
    assert inbox.size == 0


async def test_a_flood_of_empty_frames_to_a_stuck_connection_stays_bounded(
        nursery, monkeypatch, bugs):  # noqa: F811 (the fixture)
    """A client whose commands the node stopped processing (its answers unread) keeps
    sending empty and binary frames as fast as it can: the node holds at most
    ``INBOX_FRAMES`` of them, then stops reading it (TCP pushes back), serves everyone
    else, and forgets the connection once it is gone."""
    recorded = Recorded(monkeypatch)
    stuck = trio.Event()
    process = websocket.Connection._processor

    async def processor(conn) -> None:  # as while the outbox is full: waits
        await stuck.wait()
        await process(conn)
    monkeypatch.setattr(websocket.Connection, "_processor", processor)
    a = await nodes.start(nursery, rate_limit=0)
    hub = a.node.streams
    stream, _client = await raw_ws(a.url)
    await nodes.eventually(lambda: recorded.connections)
    inbox = recorded.connections[0].inbox
    burst = (raw_frame(0x1, b"") + raw_frame(0x2, b"")) * 10_000
    most = 0

    async def flood() -> None:
        while True:
            await stream.send_all(burst)

    with trio.move_on_after(FLOOD_S):
        async with trio.open_nursery() as inner:
            inner.start_soon(flood)
            while True:
                most = max(most, len(inbox.items))
                await trio.sleep(SAMPLE_S)
    assert 0 < most <= INBOX_FRAMES + 1, most
    async with nodes.client() as http:
        assert (await http.get(a.url + "/status")).status_code == 200
    stuck.set()  # (its answers now go to a socket that is reset)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()
    await nodes.eventually(lambda: hub.connections == 0, timeout=GONE_S)
    assert not bugs
    await a.stop()


# -- the options op: bad values refused and nothing changed; in force in command order --
BAD_OPTIONS = [
    {"batch_answers": 1}, {"batch_answers": 0}, {"batch_answers": "true"},
    {"batch_answers": None}, {"batch_answers": []}, {"batch_answers": {"on": True}},
    {"batch_answers": True, "other": 1}, {"batch_answer": True},
    {"batch_answers": "x" * 60_000}, {"batch_answers": True, "pad": "x" * 60_000},
]
ORDERS_EACH = 150  # orders pipelined between two options commands


def an_entry(i: int) -> dict:
    """A resting order (buys 1-49, sells 60-99), every 10th refused alone."""
    if i % 10 == 7:
        return {"side": "buy", "qty": "0", "price": "1"}
    if i % 2:
        return {"side": "buy", "qty": "1", "price": str(1 + i % 49)}
    return {"side": "sell", "qty": "1", "price": str(60 + i % 40)}


async def test_options_refuse_bad_values_and_take_effect_in_command_order(nursery):
    """Everything sent at once, never waiting: orders, refused options (wrong types,
    null, unknown keys, 60 KB values), options on mid-stream with orders in flight,
    on again, asked without a value, off. Each answer comes once, in command order;
    each before the first ``on`` (and ``on``'s own) in a frame of its own, from
    then to ``off`` in ``answers`` frames, after ``off`` alone again."""
    a = await nodes.start(nursery, rate_limit=0)
    script: list[dict] = []
    n = 0

    def orders() -> None:
        nonlocal n
        for _ in range(ORDERS_EACH):
            script.append({"op": "order", "id": n, "order": an_entry(n)})
            n += 1

    orders()
    script += [{"op": "options", "id": f"bad{i}", **bad} for i, bad in enumerate(BAD_OPTIONS)]
    script += [{"op": "ping", "id": "alone"}, {"op": "options", "id": "on",
                                               "batch_answers": True}]
    orders()
    script += [{"op": "options", "id": "on2", "batch_answers": True},
               {"op": "options", "id": "asked"}]
    orders()
    script += [{"op": "options", "id": "off", "batch_answers": False},
               {"op": "ping", "id": "after"}]
    async with connect(a.url, token=a.token) as ws:
        async def send_all() -> None:
            for command in script:
                await ws.send(**command)
        nursery.start_soon(send_all)
        frames: list[dict] = []
        while len(flatten(frames)) < len(script):
            frames.append(await ws.next())
    answers = flatten(frames)
    assert [m["id"] for m in answers] == [c["id"] for c in script]
    framing = [f["type"] == "answers" for f in frames for _ in flatten([f])]
    on, off = [c["id"] for c in script].index("on"), [c["id"] for c in script].index("off")
    assert framing == [False] * (on + 1) + [True] * (off - on) + [False]
    for i, message in enumerate(answers):
        command = script[i]
        if command["op"] == "ping":
            assert message == {"type": "pong", "id": command["id"]}
        elif command["op"] == "order" and command["id"] % 10 == 7:
            assert (message["ok"], message["status"], message["error"]) == (
                False, 400, "bad_amount"), message
        elif command["op"] == "order":
            assert (message["ok"], message["status"]) == (True, 201), message
            assert message["result"]["order"]["qty"] == "1"
        elif str(command["id"]).startswith("bad"):
            assert (message["ok"], message["status"], message["error"]) == (
                False, 400, "bad_request"), message
            assert len(json.dumps(message)) < 1_000  # nothing echoed back whole
        else:
            expected = command["id"] != "off"
            assert (message["ok"], message["result"]) == (True, {"batch_answers": expected})
    placed = [m["result"]["order"]["seq"] for m in answers if m.get("status") == 201]
    assert placed == sorted(placed) and len(placed) == 3 * ORDERS_EACH * 9 // 10
    await a.stop()


async def test_answers_in_frames_are_what_a_connection_without_them_gets(nursery):
    """The same refused commands, pings and cancels (anonymous first, then with a
    token) on two connections, one with ``answers`` frames: the same answers, in the
    same order, to the character."""
    a = await nodes.start(nursery, rate_limit=0)
    script = [
        {"op": "order", "id": 1, "order": {"side": "buy", "qty": "1", "price": "5"}},
        {"op": "cancel", "id": 2, "order": "nobody:1"}, {"op": "ping", "id": 3},
        {"op": "subscribe", "id": 4, "channel": "orders"},
        {"op": "unsubscribe", "id": 5, "channel": "book"},
        {"op": "auth", "id": 6, "token": "wrong"},
        {"op": "auth", "id": 7, "token": a.token},
        {"op": "order", "id": 8, "order": {"side": "up", "qty": "1", "price": "5"}},
        {"op": "order", "id": 9, "order": {"side": "buy", "qty": "1", "price": "5"},
         "extra": 1},
        {"op": "cancel", "id": 10, "order": "a:b:c"}, {"op": "nothing", "id": 11},
        {"op": "ping", "id": "x" * 65}, {"op": "ping", "id": 2**60},
    ]
    texts = [json.dumps(c) for c in script] + ["", "[]", '{"op": "ping", "id": 1.5}']
    seen = []
    for batched in (False, True):
        async with connect(a.url) as ws:
            if batched:
                assert (await ws.call(op="options", id=0, batch_answers=True))["ok"]
            for text in texts:
                await ws.conn.send_message(text)
            await ws.send(op="ping", id="end")
            frames: list[dict] = []
            while not frames or flatten(frames)[-1].get("id") != "end":
                frames.append(await ws.next())
            assert {f["type"] == "answers" for f in frames} == {batched}
            seen.append(flatten(frames))
    assert seen[0] == seen[1]
    assert len(seen[0]) == len(texts) + 1
    assert [m.get("status") for m in seen[0][:2]] == [401, 401]
    await a.stop()


# -- an answer larger than a frame's bound; a client that never reads ------------------
SWEEP = 400  # resting sells one buy takes: an answer of ~100 K characters


async def test_an_answer_past_the_frames_bound_comes_alone_and_the_rest_stay_under_it(
        nursery):
    """A sweep's answer (~100 K characters) among pings: it comes in an ``answers``
    frame of its own, every other frame holds at most ``MAX_ANSWERS_FRAME``
    characters of answers, and channel messages never share a frame."""
    a = await nodes.start(nursery, rate_limit=0)
    async with nodes.client() as http:
        r = await http.post(a.url + "/orders",
                            json=[{"side": "sell", "qty": "1", "price": "10"}] * SWEEP)
        assert r.status_code == 201, r.text
    async with connect(a.url, token=a.token) as ws:
        assert (await ws.call(op="options", id="on", batch_answers=True))["ok"]
        script = [{"op": "ping", "id": i} for i in range(3_000)]
        script.insert(1_500, {"op": "order", "id": "sweep",
                              "order": {"side": "buy", "qty": str(SWEEP), "price": "10"}})
        script.insert(2_000, {"op": "subscribe", "id": "book", "channel": "book"})
        for command in script:
            await ws.send(**command)
        texts: list[str] = []
        while sum(len(json.loads(t).get("answers", [0])) for t in texts) < len(script) + 1:
            with trio.fail_after(15):
                texts.append(await ws.conn.get_message())
    frames = [json.loads(t) for t in texts]
    assert [m["id"] for m in flatten(frames) if m["type"] != "snapshot"] == \
        [c["id"] for c in script]
    sweep = next(f for f in frames if f["type"] == "answers"
                 and any(m["id"] == "sweep" for m in f["answers"]))
    assert len(sweep["answers"]) == 1 and len(sweep["answers"][0]["result"]["fills"]) == SWEEP
    for frame in frames:
        if frame["type"] == "answers" and len(frame["answers"]) > 1:
            size = sum(len(json.dumps(m, separators=(",", ":"))) for m in frame["answers"])
            assert size <= websocket.MAX_ANSWERS_FRAME
    kinds = [m.get("id", m["type"]) for m in flatten(frames)]
    assert kinds.count("snapshot") == 1 and kinds[kinds.index("book") + 1] == "snapshot"
    await a.stop()


async def test_a_client_that_never_reads_its_answers_frames_holds_a_bounded_queue(
        nursery, monkeypatch, bugs):  # noqa: F811 (the fixture)
    """Orders and pings pipelined on a connection with ``answers`` frames that reads
    nothing: the node's queue for it stays bounded, the orders waiting to be
    answered within ``IN_COMMIT``, everyone else is served; when it goes, every
    character it held is counted out and nothing of it is left."""
    recorded = Recorded(monkeypatch)
    a = await nodes.start(nursery, rate_limit=0)
    hub = a.node.streams
    baseline = task_count()
    most_queued = most_in_commit = 0
    async with connect(a.url, token=a.token, rcvbuf=4096) as ws:
        assert (await ws.call(op="options", id="on", batch_answers=True))["ok"]
        conn = recorded.connections[0]

        async def flood() -> None:
            for i in range(1_000_000):
                if i % 3:
                    await ws.send(op="order", id=i, order=an_entry(i))
                else:
                    await ws.send(op="ping", id="p" * 60)

        async def sample() -> None:
            nonlocal most_queued, most_in_commit
            while True:
                most_queued = max(most_queued, conn.outbox.size + conn.outbox.sending)
                most_in_commit = max(most_in_commit, conn._in_commit)
                await trio.sleep(SAMPLE_S)

        async with trio.open_nursery() as inner:
            inner.start_soon(flood)
            inner.start_soon(sample)
            # (the kernel's buffers take a few MB first)
            await nodes.eventually(conn.outbox.full, timeout=60)
            with trio.move_on_after(FLOOD_S):  # it stopped reading: the flood goes on
                await trio.sleep_forever()
            inner.cancel_scope.cancel()
        async with nodes.client() as http:
            assert (await http.get(a.url + "/status")).status_code == 200
    assert websocket.MAX_QUEUED < most_queued <= websocket.MAX_QUEUED + 1_000
    assert most_in_commit <= websocket.IN_COMMIT
    await nodes.eventually(lambda: hub.connections == 0 and task_count() <= baseline,
                           timeout=GONE_S)
    assert hub.outgoing.chars == 0 and not bugs
    await a.stop()


# -- durable before answered, in frames too: kill -9 right after an answers frame -------
ACKED_BEFORE_KILL = 2_500  # answers read before the kill (the node dies as it reads)


async def ws_batched(url: str, token: str, seed: int, acked: list[str]) -> None:
    rng = random.Random(seed)
    async with connect(url, token=token) as ws:
        assert (await ws.call(op="options", id="on", batch_answers=True))["ok"]

        async def send_all() -> None:
            for i in range(1_000_000):
                await ws.send(op="order", id=i, order=an_order(rng))

        async with trio.open_nursery() as inner:
            inner.start_soon(send_all)
            while True:
                frame = await ws.next()
                acked.extend(m["result"]["order"]["id"] for m in frame.get("answers", ())
                             if m.get("ok"))


async def test_kill_9_right_after_an_answers_frame_loses_no_acknowledged_order(tmp_path):
    node = NodeProcess(str(tmp_path / "n"), extra=("--rate-limit", "0"))
    await node.start()
    acked = Acked(node, ACKED_BEFORE_KILL)
    try:
        token = accounts.read(node.data_dir)
        async with trio.open_nursery() as clients:
            for seed in range(2):
                clients.start_soon(quietly, ws_batched, node.url, token, seed, acked)
            await nodes.eventually(lambda: node.proc.poll() is not None, timeout=60)
            clients.cancel_scope.cancel()
        seen = list(acked)
        await node.start()
        async with nodes.client(timeout=10) as http:
            held = set()
            for order in await paged(http, node.url, "/orders", "orders"):
                held.add(order["id"])
        assert len(set(seen)) == len(seen) >= ACKED_BEFORE_KILL
        missing = [order_id for order_id in seen if order_id not in held]
        assert not missing, f"{len(missing)} of {len(seen)} acknowledged orders lost: " \
                            f"{missing[:5]}"
    finally:
        node.kill()


# -- connections cut mid-frame, with answers frames and orders in flight ---------------
CUT = 12  # connections cut mid-frame, half by a reset, half by a close of their side
LEFT_OPEN = 3  # connections still open, mid-frame, when the node stops


async def cut_mid_frame(url: str, token: str, i: int) -> trio.SocketStream:
    """A connection with answers frames, a subscription and orders in flight, whose
    last frame stops halfway (its head says 1,000 bytes; 10 came)."""
    stream, _client = await raw_ws(url)
    frames = [raw_frame(0x1, json.dumps(c).encode()) for c in (
        {"op": "auth", "id": "a", "token": token},
        {"op": "options", "id": "o", "batch_answers": True},
        {"op": "subscribe", "id": "s", "channel": "book"})]
    frames += [raw_frame(0x1, json.dumps({"op": "order", "id": n, "order": an_entry(n + i)})
                         .encode()) for n in range(300)]
    frames.append(raw_frame(0x1, b"x" * 1_000)[:20])
    await stream.send_all(b"".join(frames))
    return stream


async def test_connections_cut_mid_frame_with_orders_in_flight_leave_nothing_behind(
        nursery, bugs):  # noqa: F811 (the fixture)
    a = await nodes.start(nursery, rate_limit=0)
    hub = a.node.streams
    baseline = task_count()
    for i in range(CUT):
        stream = await cut_mid_frame(a.url, a.token, i)
        if i % 2:
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))  # a reset, no goodbye
        else:
            await stream.send_eof()  # its side closed: the node's answers may still go
        await stream.aclose()
    # the connections' tasks, slots, subscriptions and queued characters are freed
    await nodes.eventually(lambda: hub.connections == 0 and task_count() <= baseline,
                           timeout=GONE_S)
    assert hub.subscription_count() == 0 and hub.outgoing.chars == 0 and not bugs
    async with connect(a.url, token=a.token) as ws:
        assert (await ws.call(op="options", id=1, batch_answers=True))["ok"]
        await ws.send(op="ping", id=2)
        assert (await ws.next()) == {"type": "answers", "answers": [{"type": "pong", "id": 2}]}
    left = [await cut_mid_frame(a.url, a.token, i) for i in range(LEFT_OPEN)]
    await nodes.eventually(lambda: hub.connections == LEFT_OPEN)
    await a.stop()  # a graceful stop ends them (within its deadline)
    assert hub.connections == 0
    for stream in left:
        await stream.aclose()


# -- a stalled connection whose app stopped taking frames: its tasks end too -----------
STALL_S = 1.0  # the node's send-stall cut, shortened for the test (20 s in a node)


async def test_a_client_that_sends_and_never_reads_is_cut_and_frees_its_slot(
        nursery, monkeypatch, bugs):  # noqa: F811 (the fixture)
    """Pings pipelined, answers never read: the outbox fills, the processor waits, the
    reader waits, hypercorn's queue of frames fills. The stalled send then cut the
    socket, and hypercorn handed the app its disconnect through that full queue from
    the app's own sender: a deadlock. The connection (a slot of the node's cap, one of
    its 1,000 WebSocket connections) and its tasks stayed until the node stopped."""
    monkeypatch.setattr(httpserve, "SEND_STALL_S", STALL_S)
    a = await nodes.start(nursery, rate_limit=0)
    hub = a.node.streams
    baseline = task_count()
    stream, _client = await raw_ws(a.url)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    burst = raw_frame(0x1, json.dumps({"op": "ping", "id": "p" * 60}).encode()) * 100
    with trio.fail_after(60), contextlib.suppress(trio.BrokenResourceError):
        while True:  # until the node cuts it (our sends wait once it stops reading)
            await stream.send_all(burst)
    await nodes.eventually(lambda: hub.connections == 0 and task_count() <= baseline,
                           timeout=GONE_S)
    await stream.aclose()
    assert hub.outgoing.chars == 0 and not bugs
    async with connect(a.url) as ws:
        assert (await ws.call(op="ping", id=1))["type"] == "pong"
    await a.stop()
