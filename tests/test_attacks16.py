"""Attacks on the eighth pass's scheduling, against real nodes.

A compaction now runs "between pushes" (node/cluster/gossip.py
``_compacted_between_pushes``): it waits, at most ``QUIET_WAIT_S``, until
nothing stamped here waits for its commit or push, holds the journal's writer
off (``Journal.between_flushes``), compacts and commits its rows in a flush
of their own (``commit_held``, no ``before``: no order is stamped for it).
A peer keeps up to ``PUSHES_IN_FLIGHT`` (four) pushes in flight, and a push
past a gap waits at most ``OVERTAKEN_WAIT_S`` for the one before
(node/cluster/peerapi.py ``_after_overtaken``). Each test is one attack and
passes when the node kept its promises:

1. SIGKILL at each moment of such a compaction (rows appended with the
   writer held off, the held commit staged, just committed, and the next
   flush's stamped orders staged) under load on three durable nodes: every
   order answered 201 survives, nobody is convicted of equivocation (no seq
   signed twice), and the nodes end with one history;
2. a member pushing out of order, past gaps, twice over and far more than
   four at once: a receipt only for blocks held, every push answered within
   its bound, order entry and compaction go on meanwhile; slow push bodies
   hold neither;
3. a node that never has a quiet moment (orders pipelined over a WebSocket
   without pause) still compacts, and its memory stays bounded;
4. the held commit failing (a full disk), an ordinary flush failing while a
   compaction waits for the writer, or the held commit hanging while the
   node stops: no deadlock, nothing more acknowledged, a restart holds
   every 201;
5. HTTP batches, WebSocket orders and a member's pushes on three durable
   nodes during compactions: one history, fills equal to the reference
   engine's over every stored event;
6. a flood of pushes past a gap nothing fills: each answered within its
   bound, none receipted, nothing of them kept;
7. batches racing a leave while the leaving node compacts: each answered
   201 and held whole by its peer, or refused and held nowhere.
"""

from __future__ import annotations

import os
import random
import threading

import httpx
import pytest
import trio
import trio.testing

from crdtbook.amount import parse_amount
from node.cluster import peerapi, peerauth
from node.service import STRAY_BODIES
from node.store.sqlite import Store, StoreError

from .helpers import stored_events
from .nodes import LIVENESS_S, client, converged, eventually, start
from .peers import SignedPeer
from .procs import get, paged
from .reference import replay_all
from .test_attacks14 import FastNode, Traders, members, recovered_ids
from .test_attacks15 import BATCH, tagged
from .wsclient import connect

# -- 1. SIGKILL inside a compaction between pushes --------------------------------------
# The victim's process kills itself at one moment of its compactions once the test
# arms it (a file in its data directory): deterministic moments a kill from
# outside would hit once in many tries.
KILL_HOOK = """\
import os, signal
import trio as _trio
import node.cluster.gossip as _g
import node.service as _s
import node.store.journal as _j
import node.store.sqlite as _q
_point, _arm, _slow = {point!r}, {arm!r}, {slow!r}
_held = [False]
_due = [0]
_flight = {{}}  # pushes in flight per peer

def _die():
    if max(_flight.values(), default=0) >= _g.PUSHES_IN_FLIGHT:  # all four slots taken
        os.kill(os.getpid(), signal.SIGKILL)

_push = _g._push
async def _push_hook(node, client, peer, *args, **kwargs):
    # (over HTTP or a peer stream alike)
    _flight[peer.url] = _flight.get(peer.url, 0) + 1
    try:
        await _trio.sleep(_slow)  # a slow way to the peer: pushes pile up in flight
        return await _push(node, client, peer, *args, **kwargs)
    finally:
        _flight[peer.url] -= 1
_g._push = _push_hook

_compact = _s.Node.compact
def _compact_hook(self):
    removed = _compact(self)
    if removed and os.path.exists(_arm):
        _due[0] += 1
        if _point == "compacted" and _due[0] >= 2:
            _die()  # its rows appended, the writer held off, nothing committed
    return removed
_s.Node.compact = _compact_hook

_commit_held = _j.Journal.commit_held
async def _commit_held_hook(self):
    _held[0] = True
    try:
        await _commit_held(self)
    finally:
        _held[0] = False
_j.Journal.commit_held = _commit_held_hook

_store_commit = _q.Store.commit
def _store_commit_hook(self):
    due = _due[0] >= 2
    if due and _point == "rows" and _held[0]:
        _die()  # the held commit staged, not committed
    if due and _point == "stamped" and not _held[0]:
        _die()  # the flush after it: orders stamped and sealed, not committed
    _store_commit(self)
    if due and _point == "rows_committed" and _held[0]:
        _die()  # committed, its sealed block not pushed yet
_q.Store.commit = _store_commit_hook
"""


SLOW_PUSH_S = 0.3  # the victim's pushes take this long more on their way


class KillingNode(FastNode):
    """A ``FastNode`` that SIGKILLs itself at ``point`` of a compaction (its second
    that removed events after ``arm()``, or a later one), at a moment when all
    ``PUSHES_IN_FLIGHT`` pushes to one peer are on their way; restarts run
    without the hook."""

    def __init__(self, data_dir: str, *peers: str, point: str, **kwargs) -> None:
        super().__init__(data_dir, *peers, **kwargs)
        self.point: str | None = point
        self.arm_file = os.path.join(data_dir, "arm-kill")

    def arm(self) -> None:
        with open(self.arm_file, "w"):
            pass

    def command(self) -> list[str]:
        cmd = super().command()
        if self.point is not None:
            cmd[2] = KILL_HOOK.format(point=self.point, arm=self.arm_file,
                                      slow=SLOW_PUSH_S) + cmd[2]
        return cmd


def convictions(data_dir: str) -> object:
    """The equivocation proofs a stopped node's store keeps (none for honest nodes)."""
    store = Store.open(data_dir, "default", fsync=False)
    try:
        return store.meta.get("proofs")
    finally:
        store.close()


@pytest.mark.parametrize("point", ["compacted", "rows", "rows_committed", "stamped"])
async def test_kill_9_inside_a_compaction_between_pushes_loses_and_resigns_nothing(
        tmp_path, point):
    extra = ("--rate-limit", "0")
    nodes = [FastNode(str(tmp_path / "n0"), extra=extra)]
    await nodes[0].start()
    victim = KillingNode(str(tmp_path / "n1"), nodes[0].url, point=point, extra=extra)
    nodes.append(victim)
    await victim.start()
    nodes.append(FastNode(str(tmp_path / "n2"), nodes[0].url, extra=extra))
    await nodes[2].start()
    try:
        async with client(timeout=5) as http:
            await eventually(lambda: members(http, nodes, 3), timeout=60)
            traders = Traders(http, nodes)
            async with trio.open_nursery() as nursery:
                for k in range(3):
                    nursery.start_soon(traders.trade, k)
                await eventually(lambda: all(traders.acked), timeout=60)
                victim.arm()
                await eventually(lambda: victim.proc.poll() is not None, timeout=60,
                                 interval=0.02)
                assert victim.proc.returncode == -9  # the hook's SIGKILL, nothing else
                traders.down.add(1)
                promised = set(traders.acked[1])
                held = await trio.to_thread.run_sync(recovered_ids, victim.data_dir)
                lost = sorted(promised - held)
                assert not lost, f"acknowledged, then lost: {lost[:5]} ({len(lost)})"
                victim.point = None
                await victim.start(timeout=60)
                traders.down.discard(1)
                before = len(traders.acked[1])
                await eventually(lambda: len(traders.acked[1]) > before + 5, timeout=60)
                traders.done.set()
            seen = await traders.settle()
            assert len(seen[0][2]) > 0  # fills
            for node in nodes:  # nobody convicted, every member still one
                status = await get(http, node.url, "/status")
                assert len(status["members"]) == 3, status["members"]
    finally:
        for node in nodes:
            node.kill()
    for node in nodes:
        assert not convictions(node.data_dir), node.data_dir


# -- 2. a member's pushes: out of order, past gaps, twice over, many at once -------------
FEED = 24  # blocks of the member's feed, one order each
COPIES = 2  # each block pushed this many times at once, shuffled
PUSH_HEADERS = {"content-type": "application/cbor", "x-crdtbook-book": "default",
                "x-crdtbook-ack": "1"}


def holds_through(node, replica: str) -> int:
    return node.replica.state.context.contiguous(replica)


class Compactions:
    """Counts a node's compactions that ran (wraps ``Node.compact``)."""

    def __init__(self, monkeypatch, node) -> None:
        self.count = 0
        real = node.compact

        def compact() -> int:
            self.count += 1
            return real()

        monkeypatch.setattr(node, "compact", compact)


async def entry_answers(url: str, rounds: int, price: str = "7") -> list[int]:
    """Order batches placed one after another, each answered within ``LIVENESS_S``."""
    statuses = []
    async with client(timeout=30) as http:
        for _ in range(rounds):
            with trio.fail_after(LIVENESS_S):
                r = await http.post(url + "/orders", json=[
                    {"side": side, "qty": "1", "price": price} for side in ("buy", "sell")])
            statuses.append(r.status_code)
    return statuses


@pytest.mark.parametrize("wait", ["bounded", "none"])
async def test_a_member_pushing_out_of_order_and_many_at_once_gets_receipts_only_for_held(
        nursery, tmp_path, monkeypatch, wait):
    """``bounded``: a push past a gap waits ``OVERTAKEN_WAIT_S`` (the gaps of a flood
    fill meanwhile, mostly); ``none``: it waits not at all, so pushes are skipped
    and their receipts must be withheld."""
    if wait == "none":
        monkeypatch.setattr(peerapi, "OVERTAKEN_WAIT_S", 0.0)
    a = await start(nursery, data_dir=str(tmp_path / "a"), rate_limit=0,
                    compact_interval_s=0.2)
    http = client(timeout=30)  # one client, 100 connections, for every push
    compactions = Compactions(monkeypatch, a.node)
    member = SignedPeer("flood-16").admitted_by(a.node)
    await eventually(lambda: a.node.replica.is_member(member.id))
    now = a.node.clock_ms()
    feed = [member.place("sell", "1", str(200 + i), now_ms=now + 10 + i) for i in range(FEED)]
    answers: list[tuple[int, bool, bool, tuple]] = []  # status, receipt, held then, seqs

    async def push(blocks: list) -> None:
        body = member.blocks(blocks)
        with trio.fail_after(peerapi.OVERTAKEN_WAIT_S + LIVENESS_S):
            r = await http.post(a.url + "/peer/push", content=body, headers=PUSH_HEADERS)
        held = all(holds_through(a.node, member.id) >= b.last for b in blocks)
        answers.append((r.status_code, peerauth.HEADER in r.headers, held,
                        tuple(b.last for b in blocks)))

    # past a gap that nothing fills: waited for, skipped, no receipt, no trace
    gap_before = a.node.door.refused["gap"]
    await push(feed[-1:])
    assert answers.pop() == (204, False, False, (feed[-1].last,))
    assert a.node.door.refused["gap"] > gap_before
    assert a.node.door.tip(member.id).last < feed[0].first
    assert a.node.replica.state.get(member.id, feed[-1].last) is None

    # every block twice, in a shuffled order, all at once (far past four in flight),
    # while a client places orders and compactions run
    rng = random.Random(16)
    pushes = [[block] for block in feed] * COPIES + [feed[i:i + 3] for i in range(0, FEED, 5)]
    rng.shuffle(pushes)
    ran_before = compactions.count
    async with trio.open_nursery() as flood:
        for blocks in pushes:
            flood.start_soon(push, blocks)
        # order entry goes on until a compaction has run beside the flood (on a
        # quiet machine the flood alone can end before the 0.2 s comes round)
        entry: list[int] = []
        with trio.fail_after(4 * LIVENESS_S):
            while compactions.count == ran_before or len(entry) < 5:
                entry += await entry_answers(a.url, 1)
    assert set(entry) == {201}
    assert compactions.count > ran_before
    assert len(answers) == len(pushes) and {s for s, *_ in answers} == {204}
    lied = [seqs for _, receipt, held, seqs in answers if receipt and not held]
    assert not lied, f"receipts for blocks not held: {lied}"
    assert any(receipt for _, receipt, _, _ in answers)
    if wait == "none":  # every push that came past a gap was skipped: no receipt
        assert any(not receipt for _, receipt, _, _ in answers)
    # whatever was skipped comes again (a pull would bring it): held once, whole
    await push(feed)
    assert answers[-1][:3] == (204, True, True)
    assert a.node.door.tip(member.id).last == feed[-1].last
    assert not a.node._arrivals  # nothing waits any more
    await http.aclose()


SLOW = 16  # push bodies trickling in at once
TRICKLE_S = 0.3  # a byte this often


async def slow_push(url: str, stop: trio.Event) -> None:
    """A push whose body never ends: a byte every ``TRICKLE_S`` until ``stop``."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    try:
        await stream.send_all(
            f"POST /peer/push HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/cbor\r\n"
            f"x-crdtbook-book: default\r\ncontent-length: 1000000\r\n\r\n".encode())
        while not stop.is_set():
            await stream.send_all(b"\x00")
            with trio.move_on_after(TRICKLE_S):
                await stop.wait()
    except trio.BrokenResourceError:
        pass  # the node closed it (its body timeout): fine
    finally:
        await stream.aclose()


async def test_slow_push_bodies_stall_neither_entry_nor_compaction_nor_other_pushes(
        nursery, tmp_path, monkeypatch):
    a = await start(nursery, data_dir=str(tmp_path / "a"), rate_limit=0,
                    compact_interval_s=0.2)
    compactions = Compactions(monkeypatch, a.node)
    member = SignedPeer("slow-16").admitted_by(a.node)
    await eventually(lambda: a.node.replica.is_member(member.id))
    now = a.node.clock_ms()
    feed = [member.place("buy", "1", str(100 + i), now_ms=now + 10 + i) for i in range(8)]
    stop = trio.Event()
    async with trio.open_nursery() as slow:
        for _ in range(SLOW):
            slow.start_soon(slow_push, a.url, stop)
        ran_before = compactions.count
        assert await entry_answers(a.url, 10) == [201] * 10
        await eventually(lambda: compactions.count > ran_before + 2)
        async with client(timeout=30) as http:
            for block in feed:  # an honest push goes through meanwhile
                with trio.fail_after(peerapi.OVERTAKEN_WAIT_S + LIVENESS_S):
                    r = await http.post(a.url + "/peer/push", content=member.blocks([block]),
                                        headers=PUSH_HEADERS)
                assert r.status_code == 204 and peerauth.HEADER in r.headers
        stop.set()
    assert a.node.door.tip(member.id).last == feed[-1].last
    assert not a.node._arrivals


# -- 3. no quiet moment: orders pipelined over a WebSocket without pause -----------------
PIPELINE = 40  # orders sent before their answers are read
LOADED_COMPACTIONS = 5  # compactions that removed events, all under load


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "ephemeral"])
async def test_a_node_never_quiet_still_compacts_and_keeps_memory_bounded(
        nursery, tmp_path, monkeypatch, durable):
    store = {"data_dir": str(tmp_path / "a")} if durable else {}
    a = await start(nursery, rate_limit=0, compact_interval_s=0.2, **store)
    node = a.node
    seen: list[tuple[bool, int]] = []  # (own events unsealed at compaction, removed)
    real = node.compact

    def compact() -> int:
        busy = node.unsealed or node.journal.pending
        removed = real()
        seen.append((busy, removed))
        return removed

    monkeypatch.setattr(node, "compact", compact)
    placed = 0
    held_most = 0
    async with connect(a.url, token=a.token) as ws:
        with trio.fail_after(120):
            while sum(1 for busy, removed in seen if busy and removed) < LOADED_COMPACTIONS:
                for i in range(PIPELINE):
                    await ws.send(op="order", id=i, order={
                        "side": ("buy", "sell")[i % 2], "qty": "1", "price": str(50 + i % 3)})
                for i in range(PIPELINE):
                    answer = await ws.answer(i)
                    assert answer["ok"], answer
                placed += PIPELINE
                held_most = max(held_most, node.replica.event_count())
    # compacted under load (the wait for a quiet moment gave up each time, bounded)
    # and memory kept to a part of what was placed
    assert held_most < placed, (held_most, placed)
    await eventually(lambda: not node.unflushed_events and not node.unflushed_orders
                     and not node.unflushed_fills)
    assert len(node.journal.bodies) <= 2 * node.replica.event_count() + STRAY_BODIES


# -- 4. the held commit fails, or hangs while the node stops -----------------------------
class HeldCommits:
    """Makes the store's commits inside ``commit_held`` fail as on a full disk
    (``fail``) or hang until ``release`` (``hang``); ``fail_flush``: an ordinary
    flush's commit fails instead (a compaction waits for its lock meanwhile)."""

    def __init__(self, monkeypatch, node, how: str) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        self.armed = False
        self.inside = False
        journal, store = node.journal, node.store
        real_held, real_commit = journal.commit_held, store.commit

        async def commit_held() -> None:
            self.inside = True
            try:
                await real_held()
            finally:
                self.inside = False

        def commit() -> None:
            if self.armed and self.inside == (how != "fail_flush"):
                self.entered.set()
                if how != "hang":
                    store._db.execute("ROLLBACK")
                    store._rolled_back()
                    raise StoreError("writing to the store failed: database or disk is full")
                self.go.wait()
            real_commit()

        monkeypatch.setattr(journal, "commit_held", commit_held)
        monkeypatch.setattr(store, "commit", commit)

    def release(self) -> None:
        self.go.set()


ENTRY_CLIENTS = 6


async def post_until_refused(url: str, acked: set, refused: list, stop: trio.Event) -> None:
    async with client(timeout=30) as http:
        i = 0
        while not stop.is_set():
            i += 1
            with trio.fail_after(LIVENESS_S + 10):  # a failed store answers, never hangs
                r = await http.post(url + "/orders", json=[
                    {"side": ("buy", "sell")[(i + k) % 2], "qty": "1", "price": str(60 + k)}
                    for k in range(3)])
            if r.status_code == 201:
                assert not refused, "a 201 after the store failed"
                acked.update(item["order"]["id"] for item in r.json())
            else:
                assert r.status_code == 503 and r.json()["error"] == "store_failed", r.text
                refused.append(r.status_code)
                return


async def orders_held(url: str) -> set:
    async with client(timeout=30) as http:
        return {o["id"] for o in await paged(http, url, "/orders", "orders")}


@pytest.mark.parametrize("how", ["fail", "fail_flush"])
async def test_a_held_commit_failing_refuses_what_waits_and_deadlocks_nothing(
        nursery, tmp_path, monkeypatch, how):
    directory = str(tmp_path / "a")
    a = await start(nursery, data_dir=directory, rate_limit=0, compact_interval_s=0.2)
    compactions = Compactions(monkeypatch, a.node)
    disk = HeldCommits(monkeypatch, a.node, how)
    acked: set[str] = set()
    refused: list[int] = []
    stop = trio.Event()
    async with trio.open_nursery() as clients:
        for _ in range(ENTRY_CLIENTS):
            clients.start_soon(post_until_refused, a.url, acked, refused, stop)
        await eventually(lambda: len(acked) > 100, timeout=60)
        disk.armed = True
        await eventually(lambda: a.node.journal.failed, timeout=60)
        await eventually(lambda: len(refused) == ENTRY_CLIENTS, timeout=30)
    assert "disk is full" in a.node.journal.failed
    ran = compactions.count  # the compaction loop goes on (nothing committed), unblocked
    await eventually(lambda: compactions.count > ran + 2)
    with trio.fail_after(LIVENESS_S + 10):
        await a.stop()  # no flush waits for ever on a held writer
    b = await start(nursery, data_dir=directory, rate_limit=0, wait=False)  # (alone: reads)
    assert not acked - await orders_held(b.url)
    await b.stop()


async def test_a_node_stopping_while_its_held_commit_hangs_stops_and_keeps_every_201(
        nursery, tmp_path, monkeypatch):
    directory = str(tmp_path / "a")
    a = await start(nursery, data_dir=directory, rate_limit=0, compact_interval_s=0.2)
    disk = HeldCommits(monkeypatch, a.node, "hang")
    acked: set[str] = set()
    refused: list[int] = []
    stop = trio.Event()
    try:
        async with trio.open_nursery() as clients:
            for _ in range(ENTRY_CLIENTS):
                clients.start_soon(post_until_refused, a.url, acked, refused, stop)
            await eventually(lambda: len(acked) > 100, timeout=60)
            disk.armed = True
            await trio.to_thread.run_sync(disk.entered.wait, 60)
            assert disk.entered.is_set()
            stop.set()
            a.shutdown.set()  # the stop cancels the compaction in its held commit
            with trio.fail_after(LIVENESS_S):  # the stop is stuck on the hung disk
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert not a.done.is_set()
            disk.release()
            with trio.fail_after(LIVENESS_S + 10):
                await a.done.wait()
            clients.cancel_scope.cancel()
    finally:
        disk.release()
    b = await start(nursery, data_dir=directory, rate_limit=0, wait=False)  # (alone: reads)
    assert not acked - await orders_held(b.url)
    await b.stop()


# -- 5. batches, WebSocket orders and a member's shuffled pushes during compactions ------
MIXED_ROUNDS = 10  # batches per HTTP client
MIXED_WS = 30  # orders per node's WebSocket client
MEMBER_BLOCKS = 30  # the outside member's feed, pushed shuffled in pieces to every node


def mixed_batch(rng: random.Random) -> list[dict]:
    return [{"side": rng.choice(("buy", "sell")), "qty": str(rng.randint(1, 4)),
             "price": str(rng.randint(97, 103))} for _ in range(6)]


def reference_fills(data_dir: str) -> list[tuple]:
    """The reference engine's fills over every event a stopped node's store holds."""
    store = Store.open(data_dir, "default", fsync=False)
    try:
        events = stored_events(store)
    finally:
        store.close()
    fills, _, _, _ = replay_all(sorted(events, key=lambda e: (e.replica, e.seq)))
    return [(f"{t[0]}:{t[1]}", f"{m[0]}:{m[1]}", price, qty) for t, m, price, qty in fills]


async def test_batches_websocket_and_member_pushes_during_compactions_match_the_reference(
        nursery, tmp_path, monkeypatch):
    settings = {"rate_limit": 0, "compact_interval_s": 0.1, "snapshot_interval_s": 0.5}
    a = await start(nursery, data_dir=str(tmp_path / "a"), **settings)
    b = await start(nursery, a.url, data_dir=str(tmp_path / "b"), **settings)
    c = await start(nursery, a.url, data_dir=str(tmp_path / "c"), **settings)
    running = (a, b, c)
    counters = [Compactions(monkeypatch, r.node) for r in running]
    member = SignedPeer("mixed-16").admitted_by(a.node)
    await eventually(lambda: all(r.node.replica.is_member(member.id) for r in running))
    placed: set[str] = set()

    async def http_client(node, seed: int) -> None:
        rng = random.Random(seed)
        async with client(timeout=60) as http:
            for _ in range(MIXED_ROUNDS):
                r = await http.post(node.url + "/orders", json=mixed_batch(rng))
                assert r.status_code == 201, r.text
                placed.update(p["order"]["id"] for p in r.json())

    async def ws_client(node, seed: int) -> None:
        rng = random.Random(seed)
        async with connect(node.url, token=node.token) as ws:
            for i in range(MIXED_WS):
                answer = await ws.call(op="order", id=i, order=mixed_batch(rng)[0])
                assert answer["ok"], answer
                placed.add(answer["result"]["order"]["id"])

    async def member_pushes() -> None:
        rng = random.Random(16)
        async with client(timeout=60) as http:
            for i in range(MEMBER_BLOCKS):
                now = a.node.clock_ms()
                side = ("buy", "sell")[i % 2]
                block = member.place(side, "2", str(98 + i % 5), now_ms=now)
                # this block alone, then with the one before, to two nodes in turn
                # and in either order: past gaps, duplicates, overtaking
                targets = rng.sample(running, 2)
                for target in targets:
                    body = member.blocks([block], now_ms=now)
                    r = await http.post(target.url + "/peer/push", content=body,
                                        headers=PUSH_HEADERS)
                    assert r.status_code == 204, r.text
                placed.add(f"{member.id}:{block.last}")
                await trio.sleep(0.02)  # (a member's pace: its claims move finality on)

    before = [k.count for k in counters]
    async with trio.open_nursery() as clients:
        for n, node in enumerate(running):
            for i in range(2):
                clients.start_soon(http_client, node, n * 10 + i)
            clients.start_soon(ws_client, node, n * 10 + 9)
        clients.start_soon(member_pushes)
    assert all(k.count > n for k, n in zip(counters, before, strict=True))
    await eventually(lambda: converged(*running), timeout=60)

    async def fills_of(node) -> list[tuple]:
        async with client(timeout=30) as http:
            fills = await paged(http, node.url, "/fills", "fills")
        return [(f["taker"], f["maker"], parse_amount(f["price"]), parse_amount(f["qty"]))
                for f in fills]

    seen = [await fills_of(node) for node in running]
    assert seen[0] and all(fills == seen[0] for fills in seen[1:])
    for node in running:
        assert not placed - await orders_held(node.url)
    for node in running:
        await node.stop()
    for node in running:
        assert reference_fills(node.directory) == seen[0], node.directory


# -- 6. a flood of pushes past a gap nothing fills -----------------------------------------
GAPPED = 96  # pushes at once, each past the same unfilled gap (httpx: 100 connections)


async def test_a_flood_of_pushes_past_an_unfilled_gap_waits_bounded_and_leaves_no_trace(
        nursery, tmp_path, monkeypatch):
    a = await start(nursery, data_dir=str(tmp_path / "a"), rate_limit=0,
                    compact_interval_s=0.2)
    compactions = Compactions(monkeypatch, a.node)
    member = SignedPeer("gapped-16").admitted_by(a.node)
    await eventually(lambda: a.node.replica.is_member(member.id))
    now = a.node.clock_ms()
    feed = [member.place("sell", "1", str(300 + i), now_ms=now + 10 + i) for i in range(40)]
    gapped = feed[1:]  # the first block never comes
    statuses: list[tuple[int, bool]] = []
    async with client(timeout=60) as http:
        async def push(blocks: list) -> None:
            with trio.fail_after(peerapi.OVERTAKEN_WAIT_S + LIVENESS_S):
                r = await http.post(a.url + "/peer/push", content=member.blocks(blocks),
                                    headers=PUSH_HEADERS)
            statuses.append((r.status_code, peerauth.HEADER in r.headers))

        ran_before = compactions.count
        async with trio.open_nursery() as flood:
            for i in range(GAPPED):
                flood.start_soon(push, gapped[i % len(gapped):][:3])
            assert await entry_answers(a.url, 5) == [201] * 5
            # and compaction is not held up by the waiting pushes either
            await eventually(lambda: compactions.count > ran_before, timeout=LIVENESS_S)
    assert statuses == [(204, False)] * GAPPED  # answered, skipped, no receipt
    assert a.node.door.tip(member.id).last < feed[0].first  # nothing of it held
    assert all(a.node.replica.state.get(member.id, b.last) is None for b in gapped)
    assert not a.node._arrivals
    store = a.node.store
    assert not [1 for origin in store.block_origins() if origin == member.id]


# -- 7. batches racing a leave, with compactions between pushes ---------------------------
LEAVE_CLIENTS = 6
BATCHES_BEFORE_LEAVE = 30


async def test_batches_racing_a_leave_amid_compactions_are_answered_whole_or_not_at_all(
        nursery, tmp_path, monkeypatch):
    """test_attacks15's leave race, with b compacting every 0.1 s (its writer held
    off, its rows committed without ``before``) while the batches wait: a holds
    every batch b answered 201, each whole, and none b refused."""
    settings = {"rate_limit": 0, "compact_interval_s": 0.1}
    a = await start(nursery, data_dir=str(tmp_path / "a"), **settings)
    b = await start(nursery, a.url, data_dir=str(tmp_path / "b"), **settings)
    compactions = Compactions(monkeypatch, b.node)
    answered: dict[int, int] = {}
    unanswered: set[int] = set()

    async def flood(client_no: int) -> None:
        async with client(timeout=30) as http:
            for round_no in range(1_000):
                batch_no = client_no * 1_000 + round_no
                try:
                    r = await http.post(b.url + "/orders", json=tagged(batch_no))
                except httpx.TransportError:  # b stopped: its answer, if any, is lost
                    unanswered.add(batch_no)
                    return
                answered[batch_no] = r.status_code
                if r.status_code != 201:
                    return

    async with trio.open_nursery() as clients:
        for i in range(LEAVE_CLIENTS):
            clients.start_soon(flood, i)
        await eventually(lambda: len(answered) >= BATCHES_BEFORE_LEAVE
                         and compactions.count >= 3)
        async with client(timeout=30) as http:
            r = await http.post(b.url + "/leave", headers=b.admin)
            assert r.status_code == 200, r.text
    await eventually(lambda: not a.node.replica.is_member(b.node.id))
    placed = sorted(n for n, status in answered.items() if status == 201)
    assert placed and set(answered.values()) <= {201, 409, 503}, answered
    held: dict[int, list[int]] = {}

    async def all_placed_held() -> bool:  # (a compacts too: its history, not its memory)
        held.clear()
        async with client(timeout=30) as http:
            for order in await paged(http, a.url, "/orders", "orders"):
                if int(order["price"]) >= 1000:
                    held.setdefault(int(order["price"]) - 1000, []).append(int(order["qty"]))
        return set(placed) <= set(held)

    await eventually(all_placed_held)
    assert set(held) <= set(placed) | unanswered
    for batch_no, qtys in held.items():
        assert sorted(qtys) == list(range(1, BATCH + 1)), batch_no
