"""An event stored once: its block at arrival, its row (final state and all) at compaction.

Recovery reads the events above the snapshot from the signed blocks, GET
/events stitches rows, unflushed events and memory together, and a schema 2
store (a row for every event) opens, is raised to schema 3 and reads the same.
"""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest

from crdtbook.codec import event_to_wire
from node.api import history
from node.cluster import gossip
from node.service import Node, NodeConfig
from node.store.sqlite import SCHEMA_VERSION, STORE_FILE, Batch, Store

from .helpers import stored_events
from .nodes import client, start


def trader(node, seen: set):
    """Place ``n`` crossing pairs and ``n`` resting orders; remember every event."""
    def trade(n: int, price: int = 10) -> None:
        for i in range(n):
            node.replica.place("sell", "1", str(price), now_ms=node.clock_ms())
            node.replica.place("buy", "1", str(price), now_ms=node.clock_ms())
            node.replica.place("sell", "2", str(price + 5 + i % 3), now_ms=node.clock_ms())
        node._journal_fresh()
        seen.update(node.replica.events())
    return trade


def picture(node) -> tuple:
    replica = node.replica
    return (replica.digest(), replica.book(), replica.events_total(),
            replica.final_fill_count())


async def all_fills(node) -> list:
    fills, _ = await history.fills_page(node, -1, 10_000, None)
    return [(f.index, f.taker, f.maker, f.price, f.qty) for f, _ in fills]


async def all_events(node, limit: int) -> list:
    walked, after = [], None
    while True:
        page, cursor = await history.events_page(node, after, limit)
        walked += page
        if cursor is None:
            return walked
        after = page[-1].position


async def test_rows_are_written_at_compaction_with_their_final_state(nursery):
    a = await start(nursery)
    node, seen = a.node, set()
    trade = trader(node, seen)
    trade(10)
    await node.journal.sync()
    assert node.store.event_count() == 0  # arrival writes the blocks only
    assert stored_events(node.store) == seen
    held = node.replica.event_count()
    removed = await gossip.compact_once(node)
    assert removed and node.store.event_count() == removed == held - node.replica.event_count()
    finals = node.store.final_orders_page(None, 1_000)
    assert {(f.status, f.filled) for _, f in finals if f.replica == node.id} >= {("filled", 10**8)}
    for event, final in finals:  # rows decode to their events, with the engine's outcome
        assert event in seen and final.seq == event.seq
    # the kept bodies went with the rows: only events still held keep one
    assert all(node.replica.state.get(kept[0].replica, kept[0].seq) is kept[0]
               for kept in node.journal.bodies.values() if kept is not None)


async def test_events_pages_have_no_gap_or_double_while_compaction_moves_them(nursery):
    a = await start(nursery)
    node, seen = a.node, set()
    trade = trader(node, seen)
    trade(20)
    await gossip.compact_once(node)  # the first ones become rows
    trade(20)  # more in memory
    read = node.journal.read

    async def read_while_compacting(method, *args):
        await gossip.compact_once(node)  # events leave memory while the store is read
        return await read(method, *args)

    node.journal.read = read_while_compacting
    assert await all_events(node, 7) == sorted(seen)
    node.journal.read = read
    assert await all_events(node, 1_000) == sorted(seen)
    assert node.store.event_count() > 0 and not node.unflushed_events


@pytest.mark.parametrize("snapshot_s", [0.0, 3_600.0], ids=["snapshot", "no-snapshot"])
async def test_a_copy_taken_after_a_commit_recovers_the_same_replica(nursery, tmp_path,
                                                                     snapshot_s):
    """The files as a power cut right after a commit leaves them: the events
    above the snapshot (or all of them, with none) come back from the blocks,
    the compacted ones from the rows and the snapshot."""
    data, crash = tmp_path / "a", tmp_path / "crash"
    a = await start(nursery, data_dir=str(data), snapshot_interval_s=snapshot_s)
    node, seen = a.node, set()
    trade = trader(node, seen)
    trade(15)
    await gossip.compact_once(node)
    trade(10, price=20)
    await node.journal.sync()
    assert node.store.event_count() > 0  # some rows, the rest in blocks only
    assert (node.store.snapshot() is not None) == (snapshot_s == 0.0)
    before, fills = picture(node), await all_fills(node)
    events = await all_events(node, 1_000)
    async with node.journal._flushing:  # no commit (nor its checkpoint) while copying
        shutil.copytree(data, crash)
    await a.stop()
    recovered = Node(NodeConfig(port=0, data_dir=str(crash), fsync=False))
    try:
        assert recovered.recovered > 0
        assert picture(recovered) == before
        assert await all_fills(recovered) == fills
        assert await all_events(recovered, 1_000) == events == sorted(seen)
    finally:
        recovered.close()


async def test_a_schema_2_store_opens_raised_to_schema_3_and_reads_the_same(nursery,
                                                                             tmp_path):
    """Schema 2 wrote every event's row at arrival: rows of events still in
    memory, open orders without a final state. They read once, and compaction
    writes their final states over them."""
    data = tmp_path / "a"
    a = await start(nursery, data_dir=str(data), snapshot_interval_s=3_600.0)
    node, seen = a.node, set()
    trade = trader(node, seen)
    trade(10)
    await gossip.compact_once(node)
    trade(5, price=20)
    await node.journal.sync()
    before, fills = picture(node), await all_fills(node)
    await a.stop()
    # what schema 2 would hold: a row for every event, the schema's number 2
    path = os.path.join(data, STORE_FILE)
    store = Store.open(str(data), "default", fsync=False)
    try:
        everything = stored_events(store)
        store.write(Batch(events=sorted(everything)))
        assert store.event_count() == len(everything)
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = 2 WHERE key = 'schema'")
    # a lone member restarted: it serves at once (no peer to catch up with)
    a = await start(nursery, data_dir=str(data), snapshot_interval_s=3_600.0, wait=False)
    node = a.node
    assert node.store.meta["schema"] == SCHEMA_VERSION == 3
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (3,)
    assert picture(node)[:3] == before[:3]
    assert await all_fills(node) == fills
    assert await all_events(node, 9) == sorted(seen | everything)
    resting = [v.dot for v in node.replica.orders() if v.status == "open"]
    assert resting and all(node.store.order(*dot)[1] is None  # schema 2's rows, not final
                           for dot in resting)
    seen = set(node.replica.events())
    trade = trader(node, seen)
    trade(5, price=30)  # the buys at 30 fill the orders resting at 15-27
    await gossip.compact_once(node)  # writes final states over their old rows
    compacted = [dot for dot in resting if node.replica.order(dot) is None]
    assert compacted
    for dot in compacted:
        event, final = node.store.order(*dot)
        assert final is not None and final.status == "filled" and final.filled == event.qty
    async with client() as http:
        r = await http.get(a.url + "/events?limit=5")
        assert r.status_code == 200 and len(r.json()["events"]) == 5


def test_rows_replace_a_schema_2_row_and_blocks_alone_hold_events(tmp_path):
    from crdtbook.events import make_order
    from crdtbook.feedwire import block_from_wire, encode_body
    from node.store.feedindex import Unwritten
    from node.store.sqlite import FinalOrder

    replica = "n" + "a" * 31
    events = [make_order(10 + i, replica, i + 1, "buy", "limit", 100, 5, "alice")
              for i in range(3)]
    block = block_from_wire([replica, 1, encode_body(events), b"s" * 64], "block")
    store = Store.open(str(tmp_path / "d"), "book1")
    try:
        assert not store.holds_events()
        store.write(Batch(blocks=[Unwritten(b"p" * 32, b"h" * 32, block)]))
        assert store.holds_events() and store.event_count() == 0
        assert store.block_origins() == [replica]
        assert [first for first, _, _ in store.blocks_past(replica, 0)] == [1]
        assert store.blocks_past(replica, 3) == []
        store.write(Batch(events=events[:1]))  # schema 2's row, no final state
        final = FinalOrder(replica, 1, "filled", 5, None)
        store.write(Batch(rows=[(events[0], final), (events[1], None)]))
        assert store.order(replica, 1) == (events[0], final)
        assert store.order(replica, 2) == (events[1], None)
        assert store.event_count() == 2
        assert event_to_wire(store.events_page(None, 10)[0]) == event_to_wire(events[0])
    finally:
        store.close()


async def test_kill_9_after_compaction_recovers_rows_and_blocks_alike(tmp_path):
    """Real processes: orders until compaction wrote rows (every 5 s, the default),
    more orders that exist only in blocks, then SIGKILL: the restarted node
    holds every acknowledged order once and agrees with its peer."""
    from .nodes import client as http_client
    from .nodes import eventually
    from .procs import NodeProcess, get, paged

    first = NodeProcess(str(tmp_path / "n0"))
    await first.start()
    second = NodeProcess(str(tmp_path / "n1"), first.url)
    await second.start()
    nodes = [first, second]
    acknowledged = set()
    try:
        async with http_client(timeout=5) as http:
            async def joined():
                status = await get(http, second.url, "/status")
                return status["joined"] and len(status["members"]) == 2
            await eventually(joined, timeout=30)

            async def place(count: int) -> None:
                for i in range(count):
                    node = nodes[i % 2]
                    r = await http.post(node.url + "/orders", json=[
                        {"side": side, "qty": "1", "price": str(100 + i % 3)}
                        for side in ("buy", "sell", "sell")])
                    assert r.status_code == 201
                    acknowledged.update(item["order"]["id"] for item in r.json())

            await place(20)

            async def compacted():  # rows written on the victim
                status = await get(http, first.url, "/status")
                return status["events"] < status["events_total"] - 20
            await eventually(compacted, timeout=40, interval=0.5)
            await place(20)  # these stand in blocks only, on both nodes
            first.kill()
            await first.start()

            async def same_digest():
                statuses = [await get(http, n.url, "/status") for n in nodes]
                return statuses[0]["digest"] == statuses[1]["digest"]
            await eventually(same_digest, timeout=30)
            views = []
            for node in nodes:
                events = await paged(http, node.url, "/events", "events")
                ids = [e["id"] for e in events]
                assert len(set(ids)) == len(ids)  # nothing twice
                orders = await paged(http, node.url, "/orders", "orders")
                by_id = {o["id"]: (o["status"], o["filled"]) for o in orders}
                assert not acknowledged - set(by_id)
                fills = await paged(http, node.url, "/fills", "fills")
                views.append((ids, by_id, [(f["id"], f["qty"]) for f in fills]))
            assert views[0] == views[1]
    finally:
        for node in nodes:
            node.kill()


async def test_an_event_no_stored_block_holds_gets_its_row_at_arrival(nursery):
    """The safety net: a fresh event of an origin whose feed the door holds to
    a lower seq (none is expected) is written as a row at once, not left to
    blocks that do not hold it; the node's own events still wait."""
    from crdtbook.events import make_order

    a = await start(nursery)
    node, seen = a.node, set()
    trade = trader(node, seen)
    stranger = make_order(node.clock_ms() << 16, "n" + "z" * 31, 1, "buy", "limit",
                          10**9, 10**8, "")
    node.replica._fresh = [stranger]  # as if merged without its block
    trade(1)  # the node's own, in the same hand-over
    await node.journal.sync()
    assert [e for page in node.store.events_after(0) for e in page] == [stranger]
    assert stored_events(node.store) == seen | {stranger}
