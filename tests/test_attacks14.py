"""Attacks on "store an event once": SIGKILL and crash copies against real nodes.

An event's signed block is written at its arrival and its row only when
compaction takes it out of memory; recovery reads everything above the
snapshot back from the blocks. These tests try to make a restart lose or
change something that was acknowledged:

1. a seeded SIGKILL loop on a durable three-node cluster under load, with
   compaction and snapshots made frequent so kills land mid-commit and
   mid-compaction: every killed store, recovered offline before its node
   restarts, holds every order that node acknowledged; afterwards every
   node pages the same events, orders, fills and book;
2. blocks of an equivocating peer past its conviction cut (each node holds
   another version of them) read back by a crash recovery: the same digest,
   book, fills and history as before the crash;
3. a node SIGKILLed right after it joined (its peers' blocks arriving for
   the first time), and again, many times in a row, while its peers trade.
"""

from __future__ import annotations

import contextlib
import copy
import random
import shutil
import sqlite3

import httpx
import pytest
import trio

from crdtbook.dot import parse_dot
from crdtbook.engine import REASON_FOK, REASON_FOREIGN, REASON_POST_ONLY
from crdtbook.events import make_cancel
from crdtbook.feed import link
from node.api import history
from node.cluster import gossip
from node.service import Node, NodeConfig
from node.store.recover import recover
from node.store.sqlite import STORE_FILE, Store, StoreError

from .helpers import stored_events
from .nodes import client, converged, eventually, start
from .peers import SignedPeer
from .procs import NodeProcess, get, paged
from .test_attacks import order, push

# -- helpers -----------------------------------------------------------------------------
COMPACT_S = 0.2  # a node process's compaction cadence here (5 s in a node)
SNAPSHOT_S = 1.0  # and its snapshot cadence (30 s in a node): kills land amid both


class FastNode(NodeProcess):
    """``crdtbook node`` whose compaction and snapshots come every ``COMPACT_S``
    and ``SNAPSHOT_S``, so a kill lands mid-compaction often."""

    def command(self) -> list[str]:
        cmd = super().command()
        assert cmd[1:3] == ["-m", "node"]
        boot = ("import node.service as s; _config = s.NodeConfig\n"
                "def fast(*args, **kwargs):\n"
                "    config = _config(*args, **kwargs)\n"
                f"    config.compact_interval_s = {COMPACT_S}\n"
                f"    config.snapshot_interval_s = {SNAPSHOT_S}\n"
                "    return config\n"
                "s.NodeConfig = fast\n"
                "import runpy; runpy.run_module('node', run_name='__main__', alter_sys=True)")
        return [cmd[0], "-c", boot, *cmd[3:]]


def recovered_ids(data_dir: str, book: str = "default") -> set[str]:
    """Every event id a stopped node's store recovers (offline, as a restart would)."""
    store = Store.open(data_dir, book, fsync=False)
    try:
        replica, _ = recover(store, store.meta["replica"])
        held = {f"{e.replica}:{e.seq}" for e in replica.events()}
        return held | {f"{e.replica}:{e.seq}" for page in store.events_after(0) for e in page}
    finally:
        store.close()


async def views(http, nodes) -> list[tuple]:
    """Each node's whole history as its client sees it (every page followed)."""
    out = []
    for node in nodes:
        ids = [e["id"] for e in await paged(http, node.url, "/events", "events")]
        assert len(set(ids)) == len(ids), "an event paged twice"
        orders = {o["id"]: (o["status"], o["filled"])
                  for o in await paged(http, node.url, "/orders", "orders")}
        fills = [(f["id"], f["price"], f["qty"])
                 for f in await paged(http, node.url, "/fills", "fills")]
        book = await get(http, node.url, "/book")
        out.append((ids, orders, fills, book["bids"], book["asks"], book["digest"]))
    return out


async def same_digest(http, nodes) -> bool:
    statuses = [await get(http, n.url, "/status") for n in nodes]
    return len({(s["digest"], s["events_total"]) for s in statuses}) == 1


# -- 1. a seeded SIGKILL loop under load --------------------------------------------------
KILLS = 5  # kills per run: small enough for CI (a node process starts in ~1-4 s)
KILL_AFTER_S = (0.1, 1.5)  # a kill comes this long after the last restart
DOWN_S = (0.0, 0.4)  # and the node stays down this long
ORDERS_PER_POST = 12  # crossing and resting orders: fills, and rows with final states


class Traders:
    """Clients posting batches of crossing and resting orders (and a cancel now
    and then) to every node that is up, round robin; what each node answered
    201 for is ``acked[i]``. A node that is down, or answers otherwise, is
    skipped: only 201s are promises."""

    def __init__(self, http, nodes: list) -> None:
        self.http, self.nodes = http, nodes
        self.acked: list[set[str]] = [set() for _ in nodes]
        self.down: set[int] = set()
        self.done = trio.Event()

    async def trade(self, k: int) -> None:
        http, i = self.http, 0
        while not self.done.is_set():
            i += 1
            target = (k + i) % len(self.nodes)
            if target in self.down:
                await trio.sleep(COMPACT_S / 10)
                continue
            url = self.nodes[target].url
            entries = [{"side": ("buy", "sell")[j % 2], "qty": str(1 + j % 3),
                        "price": str(100 + (i + j) % 7)} for j in range(ORDERS_PER_POST)]
            try:
                r = await http.post(url + "/orders", json=entries)
            except httpx.HTTPError:  # killed while it answered: not acknowledged
                continue
            if r.status_code != 201:  # a joiner catching up (503): not a promise
                await trio.sleep(COMPACT_S / 10)
                continue
            ids = [item["order"]["id"] for item in r.json()]
            self.acked[target].update(ids)
            if i % 5 == 0:  # a cancel now and then (an event of its own)
                with contextlib.suppress(httpx.HTTPError):
                    await http.delete(f"{url}/orders/{ids[-1]}")

    async def kill(self, victim: int, down_s: float) -> None:
        """SIGKILL, check the store offline holds every order the node acknowledged,
        stay down ``down_s``, restart."""
        node = self.nodes[victim]
        self.down.add(victim)
        node.kill()
        promised = set(self.acked[victim])
        held = await trio.to_thread.run_sync(recovered_ids, node.data_dir)
        lost = sorted(promised - held)
        assert not lost, f"acknowledged, then lost: {lost[:5]} ({len(lost)})"
        await trio.sleep(down_s)
        await node.start(timeout=60)
        self.down.discard(victim)

    async def settle(self) -> list:
        """Once every node stands at one digest: their views, checked equal and
        holding every acknowledged order."""
        await eventually(lambda: same_digest(self.http, self.nodes), timeout=60,
                         interval=0.25)
        seen = await views(self.http, self.nodes)
        assert all(view == seen[0] for view in seen[1:])
        assert not set().union(*self.acked) - set(seen[0][1])
        return seen


async def members(http, nodes, count: int) -> bool:
    for node in nodes:
        status = await get(http, node.url, "/status")
        if not (status["joined"] and len(status["members"]) == count):
            return False
    return True


@pytest.mark.parametrize("seed", [14])
async def test_sigkill_at_random_moments_loses_no_acknowledged_order(tmp_path, seed):
    rng = random.Random(seed)
    extra = ("--rate-limit", "0")
    nodes = [FastNode(str(tmp_path / "n0"), extra=extra)]
    await nodes[0].start()
    for i in (1, 2):
        nodes.append(FastNode(str(tmp_path / f"n{i}"), nodes[0].url, extra=extra))
        await nodes[-1].start()
    try:
        async with client(timeout=5) as http:
            await eventually(lambda: members(http, nodes, 3), timeout=60)
            traders = Traders(http, nodes)
            async with trio.open_nursery() as nursery:
                for k in range(3):
                    nursery.start_soon(traders.trade, k)
                for _ in range(KILLS):
                    await trio.sleep(rng.uniform(*KILL_AFTER_S))
                    await traders.kill(rng.randrange(3), rng.uniform(*DOWN_S))
                traders.done.set()
            seen = await traders.settle()
            assert len(seen[0][2]) > 0 and sum(map(len, traders.acked)) >= KILLS
    finally:
        for node in nodes:
            node.kill()


JOIN_KILLS = 2  # kills of a joiner within its first seconds (peers' blocks arriving)
AGAIN = 2  # then kills of it in a row, each soon after its restart
AGAIN_AFTER_S = (0.05, 0.6)


@pytest.mark.parametrize("seed", [21])
async def test_a_joiner_killed_as_it_joins_and_again_in_a_row_recovers(tmp_path, seed):
    """A third node joins two that trade: it is SIGKILLed as its peers' blocks
    arrive for the first time, then again and again soon after each restart.
    Its store always opens, holds what it acknowledged, and it ends with
    the same history as the others."""
    rng = random.Random(seed)
    extra = ("--rate-limit", "0")
    nodes = [FastNode(str(tmp_path / "n0"), extra=extra)]
    await nodes[0].start()
    nodes.append(FastNode(str(tmp_path / "n1"), nodes[0].url, extra=extra))
    await nodes[1].start()
    try:
        async with client(timeout=5) as http:
            await eventually(lambda: members(http, nodes, 2), timeout=60)
            traders = Traders(http, nodes)
            async with trio.open_nursery() as nursery:
                for k in range(2):
                    nursery.start_soon(traders.trade, k)
                await eventually(lambda: sum(map(len, traders.acked)) > 500, timeout=60)
                joiner = FastNode(str(tmp_path / "n2"), nodes[0].url, extra=extra)
                await joiner.start()
                traders.acked.append(set())
                traders.nodes.append(joiner)  # traded with once it is caught up
                for _ in range(JOIN_KILLS):
                    await trio.sleep(rng.uniform(0.0, 1.0))
                    await traders.kill(2, 0.0)
                await eventually(lambda: members(http, nodes, 3), timeout=60)
                for _ in range(AGAIN):
                    await trio.sleep(rng.uniform(*AGAIN_AFTER_S))
                    await traders.kill(2, 0.0)
                await eventually(lambda: traders.acked[2], timeout=60)
                await trio.sleep(rng.uniform(*AGAIN_AFTER_S))
                await traders.kill(2, 0.0)
                traders.done.set()
            await traders.settle()
    finally:
        for node in nodes:
            node.kill()


# -- 2. an equivocator's blocks past its cut, read back by a crash recovery ----------------
def feed(peer: SignedPeer, count: int, start_ms: int, side: str, price: int) -> list:
    blocks = []
    for i in range(count):
        peer.replica.place(side, "1", str(price + i % 3), now_ms=start_ms + i)
        blocks.append(peer.seal())
    return blocks


async def crash_copy(running, into: str) -> Node:
    """The node's files as a power cut right after its last commit leaves them, opened."""
    await running.node.journal.sync()
    shutil.copytree(running.directory, into)
    return Node(NodeConfig(port=0, data_dir=into, fsync=False, rpc_host=None))


async def history_of(node: Node) -> tuple:
    events, after = [], None
    while True:
        page, cursor = await history.events_page(node, after, 500)
        events += page
        if cursor is None:
            break
        after = page[-1].position
    fills, _ = await history.fills_page(node, -1, 10_000, None)
    replica = node.replica
    return (replica.digest(), replica.book(), replica.events_total(), events,
            [(f.index, f.taker, f.maker, f.price, f.qty) for f, _ in fills])


@pytest.mark.parametrize("snapshot_s", [0.0, 3_600.0], ids=["snapshots", "no-snapshot"])
async def test_an_equivocators_blocks_past_its_cut_recover_as_they_stood(nursery, tmp_path,
                                                                       snapshot_s):
    """Each node took another version of the two-faced member's feed past the
    shared prefix (a both, so it convicts at once; b learns the proof by
    pulling). Those blocks stay in the stores; a crash recovery reads them back
    and the conviction (kept in the store's meta) rejects their events again.
    Compaction runs by hand, after the conviction: no final fill involves the
    rejected events (a conviction of final history is another matter, see the
    report of this pass in docs/performance.md)."""
    settings = {"compact_interval_s": None, "fsync": False, "snapshot_interval_s": snapshot_s}
    async with client() as http:
        a = await start(nursery, data_dir=str(tmp_path / "a"), **settings)
        b = await start(nursery, a.url, data_dir=str(tmp_path / "b"), **settings)
        nodes = [a, b]
        await eventually(lambda: all(len(r.node.peers) == 1 for r in nodes))
        faces = [SignedPeer("two-faced") for _ in range(2)]
        faces[0].admitted_by(a.node)
        await eventually(lambda: all(n.node.replica.is_member(faces[0].id) for n in nodes))
        for _ in range(6):  # resting buys the two-faced sells would fill
            await order(http, a.url, "buy", "1", "120")
        await eventually(lambda: converged(*nodes))
        now = a.node.clock_ms() + 5
        prefix = feed(faces[0], 3, now, "sell", 100)
        assert [blk.body for blk in feed(faces[1], 3, now, "sell", 100)] == \
            [blk.body for blk in prefix]
        for node in nodes:
            assert (await push(http, node, faces[0].blocks(prefix, now + 3))).status_code == 204
        later = a.node.clock_ms() + 5
        versions = [feed(face, 12, later + 50 * k, "sell", 110 + k) for k, face in
                    enumerate(faces)]
        # b takes its version first: once a holds both, a convicts, and b may
        # learn the proof by pulling before a later push reached it (then b
        # would refuse its version past the cut, rightly, and hold none of it)
        for node, face, blocks in ((b, faces[1], versions[1]), (a, faces[0], versions[0]),
                                   (a, faces[1], versions[1])):
            r = await push(http, node, face.blocks(blocks, later))
            assert r.status_code == 204
        await eventually(lambda: all(faces[0].id in n.node.door.proofs for n in nodes),
                         timeout=20)
        assert {n.node.door.proofs[faces[0].id].cut for n in nodes} == {3}
        await eventually(lambda: converged(*nodes), timeout=20)
        for k in range(4):  # more trading after the conviction, on both
            await order(http, nodes[k % 2].url, "sell", "1", "120")
        await eventually(lambda: converged(*nodes), timeout=20)
        for running in nodes:
            assert await gossip.compact_once(running.node) > 0
        for k in range(2):  # and some left in memory (in blocks only)
            await order(http, nodes[k].url, "buy", "1", "90")
        await eventually(lambda: converged(*nodes), timeout=20)
        fills = []
        for k, running in enumerate(nodes):
            # the node's own version of the feed past the cut is in its blocks
            held = {(e.replica, e.seq) for e in stored_events(running.node.store)}
            assert {(faces[0].id, seq) for seq in range(4, 16)} <= held
            before = await history_of(running.node)
            assert running.node.store.event_count() > 0  # rows were written
            copy = await crash_copy(running, str(tmp_path / f"crash{k}"))
            try:
                assert copy.recovered > 0
                assert faces[0].id in copy.door.proofs
                assert await history_of(copy) == before
            finally:
                copy.close()
            fills.append(before[4])
        assert fills[0] == fills[1] and fills[0]


# -- 3. every kind of event, from rows and blocks alike ------------------------------------
BIG = "500000000000"  # whole units: 5 * 10^19 units, past 2^64 (a BLOB in the store)


async def orders_of(node: Node) -> list:
    out, after = [], None
    while True:
        page, cursor = await history.orders_page(node, after, 500, None, None)
        out += [(position, view.status, view.filled, view.reason) for position, view, _ in page]
        if cursor is None:
            return out
        after = page[-1][0]


@pytest.mark.parametrize("snapshot_s", [0.0, 3_600.0], ids=["snapshots", "no-snapshot"])
async def test_every_kind_of_event_comes_back_from_rows_and_blocks_alike(nursery, tmp_path,
                                                                        snapshot_s):
    """Joins, an evict, a member's cancel of another's order and orders the
    engine rejects, cancels, orders and fills past 2^64 units: some compacted
    into rows, some in blocks only; a crash copy of each node recovers the same
    history, orders, fills and digest."""
    settings = {"compact_interval_s": None, "fsync": False, "snapshot_interval_s": snapshot_s}
    async with client() as http:
        a = await start(nursery, data_dir=str(tmp_path / "a"), **settings)
        b = await start(nursery, a.url, data_dir=str(tmp_path / "b"), **settings)
        nodes = [a, b]
        await eventually(lambda: all(len(r.node.peers) == 1 for r in nodes))
        x = SignedPeer("soon-evicted").admitted_by(a.node)
        await eventually(lambda: all(n.node.replica.is_member(x.id) for n in nodes))
        now = a.node.clock_ms() + 5
        first = x.place("sell", "1", "50", now)
        for node in nodes:
            assert (await push(http, node, x.blocks([first], now))).status_code == 204

        async def trade(k: int) -> None:
            node = nodes[k % 2]
            await order(http, node.url, "sell", BIG, "1")
            await order(http, node.url, "buy", BIG, "1")  # a fill of 5 * 10^19 units
            resting = await order(http, node.url, "buy", "3", str(20 + k))
            r = await http.delete(f"{node.url}/orders/{resting['order']['id']}")
            assert r.status_code == 200, r.text
            await order(http, node.url, "buy", "1", "50")  # fills x's sell (once)
            await order(http, node.url, "sell", "2", str(60 + k))  # rests

        for k in range(3):
            await trade(k)
        # x cancels an order of a's (a rejected event), then a evicts x
        victim = await order(http, a.url, "buy", "1", "5")
        target = parse_dot(victim["order"]["id"])
        foreign = x.door.seal([make_cancel(a.node.replica.clock.last + (1 << 16), x.id, 2,
                                           target.replica, target.seq)])
        for node in nodes:
            assert (await push(http, node, x.blocks([foreign]))).status_code == 204
        for node in nodes:  # and orders the engine rejects: a post_only that would
            for kind, price in (("post_only", "60"), ("fok", "1")):  # trade, an fok it can't
                r = await http.post(node.url + "/orders", json={
                    "side": "buy", "type": kind, "qty": "9", "price": price})
                assert r.status_code == 201, r.text
        r = await http.post(f"{a.url}/evict", json={"replica": x.id}, headers=a.admin)
        assert r.status_code == 200, r.text
        await eventually(lambda: all(x.id not in n.node.replica.members() for n in nodes))
        reasons = {o.reason for o in a.node.replica.orders() if o.status == "rejected"}
        assert REASON_POST_ONLY in reasons and REASON_FOK in reasons
        assert a.node.replica.order(target).status == "open"  # the foreign cancel changed nothing
        assert all(n.node.replica.cancel_view((x.id, 2)).reason == REASON_FOREIGN for n in nodes)
        for k in range(3, 6):
            await trade(k)
        await eventually(lambda: converged(*nodes), timeout=20)
        for running in nodes:
            assert await gossip.compact_once(running.node) > 0
        for k in range(6, 9):  # more, in blocks only
            await trade(k)
        await eventually(lambda: converged(*nodes), timeout=20)
        pictures = []
        for k, running in enumerate(nodes):
            node = running.node
            assert node.store.event_count() > 0
            with node.store._read as db:  # a final fill and a filled order past 2^64
                assert db.execute("SELECT count(*) FROM fills WHERE typeof(qty) = 'blob'"
                                  ).fetchone()[0] > 0
                assert db.execute("SELECT count(*) FROM events WHERE typeof(filled) = 'blob'"
                                  ).fetchone()[0] > 0
            before = (await history_of(node), await orders_of(node))
            copy = await crash_copy(running, str(tmp_path / f"crash{k}"))
            try:
                assert copy.recovered > 0
                assert (await history_of(copy), await orders_of(copy)) == before
            finally:
                copy.close()
            pictures.append((before[0][0], before[0][1], before[0][4], before[1]))
        assert pictures[0] == pictures[1]


# -- 4. a conviction that rebuilds the replica while own events wait to be sealed ----------
def test_a_feed_replay_keeps_own_events_not_sealed_yet():
    """A conviction that reaches a membership event past its cut rebuilds the
    replica from the blocks held (Door.replay_feed). A node seals its own new
    events only at its next commit: one placed just before must survive the
    rebuild, or the node's next event reuses its seq (its own feed then
    breaks: the sealer fails and the node acknowledges nothing more) while
    peers get the first one, acknowledged, from the next push."""
    from .test_equivocation import T0, cluster

    f, o, r = cluster("f", "o", "r")
    newcomer = SignedPeer("joined-past-the-cut")
    other_face = copy.deepcopy(o)
    version_a = o.seal(o.replica.join(newcomer.id, T0 + 5, newcomer.signer.public))
    version_b = other_face.place("sell", 1, 100, T0 + 6)
    r.door.admit([version_a])
    assert r.replica.is_member(newcomer.id)
    placed = r.replica.place("buy", "1", "50", now_ms=T0 + 7)  # not sealed yet
    mine = next(e for _, _, e in placed.delta.entries())
    r.door.admit([version_b])  # a fork: o is convicted at cut 0, its join undone
    assert o.id in r.door.proofs and not r.replica.is_member(newcomer.id)
    assert r.replica.state.get(r.id, mine.seq) == mine
    nxt = next(e for _, _, e in r.replica.place("buy", "1", "51", now_ms=T0 + 8).delta.entries())
    assert nxt.seq == mine.seq + 1
    block = r.door.seal([mine, nxt])  # what the node's next commit seals
    assert [e.seq for e in block.events] == [mine.seq, nxt.seq]


# -- 5. a block damaged on disk ---------------------------------------------------------
@pytest.mark.parametrize("damage", ["one flipped byte", "the next block's link"])
async def test_a_stored_block_damaged_on_disk_is_refused_not_read_as_other_events(
        nursery, tmp_path, damage):
    """Events above the snapshot live only in their blocks: a byte flipped in
    one would be read back as another event (a price, a quantity) that nobody
    placed, unlike its peers' copies, unless recovery checks the hash chain."""
    data, crash = tmp_path / "a", tmp_path / "crash"
    a = await start(nursery, data_dir=str(data), snapshot_interval_s=3_600.0)
    node = a.node
    for i in range(8):  # one block per commit
        node.replica.place("buy", "1", str(100 + i), now_ms=node.clock_ms())
        node._journal_fresh()
        await node.journal.sync()
    shutil.copytree(data, crash)
    await a.stop()
    path = crash / STORE_FILE
    with sqlite3.connect(path) as db:
        rid, last, body, prev = db.execute(
            "SELECT rid, last, body, prev FROM blocks ORDER BY rid, last LIMIT 1 OFFSET 4"
        ).fetchone()
        if damage == "one flipped byte":
            db.execute("UPDATE blocks SET body = ? WHERE rid = ? AND last = ?",
                       (body[:-3] + bytes([body[-3] ^ 1]) + body[-2:], rid, last))
        else:  # a consistent block whose link to the one before is broken
            db.execute("UPDATE blocks SET prev = ?, hash = ? WHERE rid = ? AND last = ?",
                       (bytes(32), link(bytes(32), body), rid, last))
    before = path.read_bytes()
    with pytest.raises(StoreError, match="do not match its feed's hash chain.*left as it is"):
        Node(NodeConfig(port=0, data_dir=str(crash), fsync=False, rpc_host=None))
    assert path.read_bytes() == before
