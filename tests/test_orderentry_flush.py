"""Durable nodes stamp HTTP order batches when the journal's next flush starts
(node/api/orderentry.py AtFlush).

Nodes here are in-process and unserved, their journals flushed by the test (no
writer task), so the test decides what waits for which flush.
"""

from __future__ import annotations

import trio
import trio.testing

from crdtbook.clock import LOGICAL_BITS
from crdtbook.feedwire import decode_blocks_message, encode_blocks
from crdtbook.replica import ReplicaError
from node.api.orderentry import AtFlush
from node.api.requests import OrderRequest
from node.service import Node, NodeConfig


class Clock:
    def __init__(self) -> None:
        self.ms = 1_764_000_000_000

    def now(self) -> int:
        return self.ms


def durable(path, clock: Clock) -> Node:
    return Node(NodeConfig(port=0, data_dir=str(path), fsync=False, rpc_host=None),
                clock_ms=clock.now)


def orders(side: str, price: str, n: int = 1) -> list[OrderRequest]:
    return [OrderRequest(side, "1", price, "limit", "") for _ in range(n)]


async def founded(tmp_path, clock: Clock) -> Node:
    n = durable(tmp_path / "a", clock)
    n.bootstrap()
    await n.journal.flush()
    return n


async def test_a_batch_is_stamped_when_its_flush_starts(tmp_path):
    clock = Clock()
    n = await founded(tmp_path, clock)
    entry = AtFlush(n)
    got: list = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _place(entry, orders("buy", "10", 3), got))
        await trio.testing.wait_all_tasks_blocked()
        assert len(entry.waiting) == 1
        assert n.metrics.orders_accepted == 0  # waiting: neither stamped nor matched
        clock.ms += 500
        await n.journal.flush()
    [placed] = got
    assert [p.order.clock >> LOGICAL_BITS for p in placed] == [clock.ms] * 3
    assert n.metrics.orders_accepted == 3
    assert not n.journal.pending  # answered once durable
    n.close()


async def _place(entry: AtFlush, batch, got: list) -> None:
    try:
        got.append(await entry.place(batch))
    except ReplicaError as exc:
        got.append(exc)


async def test_a_push_that_came_meanwhile_goes_in_first(tmp_path):
    """b's buy waits for b's flush; a's earlier sell arrives meanwhile: at the flush
    the sell is merged first, then the buy is stamped and trades with it at once
    (placed at the request, the buy would have rested, then been undone and
    replayed when the older sell merged)."""
    clock = Clock()
    a = await founded(tmp_path, clock)
    b = durable(tmp_path / "b", clock)
    a.sponsor(b.id, b.signer.public)
    await a.journal.flush()
    b.accept(_wire(a.door.answer({}).blocks).blocks, may_found=True)
    await b.journal.flush()
    assert b.joined
    clock.ms += 10
    a.place_many(orders("sell", "10"))
    await a.journal.flush()
    sell = [blk for blk in a.door.answer({}).blocks if blk.replica == a.id][-1:]
    clock.ms += 10
    entry = AtFlush(b)
    rewinds = b.replica.engine.rewinds
    got: list = []
    added: list[int] = []

    async def push() -> None:
        added.append(await b.arrive(_wire(sell)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _place(entry, orders("buy", "10"), got))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(push)
        await trio.testing.wait_all_tasks_blocked()
        assert added == [1] and len(entry.waiting) == 1  # merged; the buy still waits
        clock.ms += 10
        await b.journal.flush()
    [[buy]] = got
    assert len(buy.fills) == 1 and buy.fills[0].qty == 10**8  # traded with the sell
    assert b.replica.engine.rewinds == rewinds  # nothing undone
    a.close()
    b.close()


async def test_a_refused_batch_fails_alone(tmp_path):
    clock = Clock()
    n = await founded(tmp_path, clock)
    entry = AtFlush(n)
    got: dict[str, list] = {"bad": [], "good": []}
    bad = [OrderRequest("sideways", "1", "10", "limit", "")]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _place(entry, bad, got["bad"]))
        nursery.start_soon(lambda: _place(entry, orders("sell", "11", 2), got["good"]))
        await trio.testing.wait_all_tasks_blocked()
        await n.journal.flush()
    assert isinstance(got["bad"][0], ReplicaError)
    assert len(got["good"][0]) == 2
    assert n.metrics.orders_accepted == 2
    n.close()


async def test_a_batch_cancelled_before_its_flush_is_never_placed(tmp_path):
    clock = Clock()
    n = await founded(tmp_path, clock)
    entry = AtFlush(n)
    held = n.replica.events_total()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(entry.place, orders("buy", "10", 5))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert entry.waiting == []
    await n.journal.flush()
    assert n.replica.events_total() == held
    assert n.metrics.orders_accepted == 0
    n.close()


def _wire(blocks):
    return decode_blocks_message(encode_blocks(blocks, []))

