"""A compaction stalls the event loop where the peers pay no rewind for it
(node/cluster/gossip.py ``_compacted_between_pushes``, node/store/journal.py
``between_flushes`` and ``commit_held``).

A block sealed but not sent when the loop stalls reaches every peer the
stall's length older, and each peer undoes what it applied meanwhile. So the
compaction waits (boundedly) until no own event waits for its flush, no flush
is under way and the outboxes are drained, holds the next flush off while it
runs, and commits the rows it leaves before any order is stamped. The tests
look at the node's state from inside the compaction.
"""

from __future__ import annotations

import trio
import trio.testing

from node.api.requests import OrderRequest
from node.cluster import gossip
from node.service import Node, NodeConfig
from node.store.journal import Journal
from node.store.sqlite import Store

from .nodes import eventually, start
from .test_gossip_inflight import HoldingPeer


def buy(price: str) -> list:
    return [OrderRequest("buy", "1", price, "limit", "")]


async def test_a_compaction_waits_until_its_own_events_are_sealed_durable_and_taken(
        nursery, tmp_path):
    peer = HoldingPeer()
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    node = a.node
    node.add_peer(await peer.serve(nursery))
    outbox = node.peers[peer.url].outbox
    await eventually(lambda: peer.url in node.peers and node.peers[peer.url].started)
    seen = {}

    def compact() -> int:
        seen.update(unsealed=node.unsealed, pending=node.journal.pending,
                    queued=outbox.statistics().current_buffer_used,
                    tip=node.door.tip(node.id).last)
        return 7

    node.compact = compact
    placed = node.place_many(buy("10"))  # stamped now: waits for the next flush
    assert node.unsealed
    with trio.fail_after(10):
        assert await gossip._compacted_between_pushes(node) == 7
    # sealed into a block, committed, and taken by the sender before the stall
    assert seen == {"unsealed": False, "pending": False, "queued": 0,
                    "tip": placed[0].order.dot.seq}
    await eventually(lambda: any(b.last >= placed[0].order.dot.seq for p in peer.pushes for b in p))
    peer.release()


async def test_no_flush_starts_while_the_writer_is_held_off(tmp_path, nursery):
    node = Node(NodeConfig(port=0, data_dir=str(tmp_path / "a"), fsync=False, rpc_host=None))
    nursery.start_soon(node.journal.run)
    node.bootstrap()
    await node.journal.sync()
    async with node.journal.between_flushes():
        node.place_many(buy("10"))  # appended, the writer woken
        for _ in range(20):
            await trio.testing.wait_all_tasks_blocked()
            await trio.lowlevel.checkpoint()
        assert node.journal.pending and node.unsealed  # the writer waits for the block's end
    with trio.fail_after(10):
        await node.journal.sync()
    assert not node.journal.pending and not node.unsealed
    node.close()


async def test_a_peer_that_takes_no_push_delays_a_compaction_only_so_long(tmp_path, nursery):
    node = Node(NodeConfig(port=0, data_dir=str(tmp_path / "a"), fsync=False, rpc_host=None))
    nursery.start_soon(node.journal.run)
    node.bootstrap()
    node.add_peer("http://127.0.0.1:9")  # no gossip runs: its outbox is never drained
    node.place_many(buy("10"))
    await node.journal.sync()
    outbox = node.peers["http://127.0.0.1:9"].outbox
    assert outbox.statistics().current_buffer_used >= 1
    seen = []
    compact = node.compact
    node.compact = lambda: seen.append(outbox.statistics().current_buffer_used) or compact()
    with trio.fail_after(10):  # liveness, not a timing: the wait is bounded
        await gossip.compact_once(node, between_pushes=True)
    assert seen and seen[0] >= 1  # ran after the bound, the block still queued
    node.close()


async def test_commit_held_commits_the_rows_but_not_a_batch_waiting_for_its_flush(tmp_path):
    """The rows appended while the writer is held off commit without ``before``;
    a wait marked by ``want_flush`` (an HTTP batch, placed by ``before``) is not
    taken for done by that commit, only by the flush after it."""
    store = Store.open(str(tmp_path / "data"), "default", fsync=False)
    journal = Journal(store)
    placed = []
    journal.before = lambda: placed.append(store.meta.get("rows"))
    synced = []

    async def batch_waits(mark: int) -> None:
        await journal.sync(mark)
        synced.append(list(placed))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal.run)
            async with journal.between_flushes():
                mark = journal.want_flush()  # a batch came: it waits for ``before``
                nursery.start_soon(batch_waits, mark)
                journal.meta(rows=1)  # the compaction's rows, appended after it
                await journal.commit_held()
                assert store.meta["rows"] == 1 and placed == []  # committed, nothing placed
                for _ in range(10):
                    await trio.testing.wait_all_tasks_blocked()
                assert synced == [] and journal.pending  # the batch still waits
            with trio.fail_after(10):
                while not synced:
                    await trio.sleep(0.01)
            assert synced == [[1]]  # placed by the next flush, after the rows
            nursery.cancel_scope.cancel()
    finally:
        store.close()
