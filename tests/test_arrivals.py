"""Pushed blocks that arrive together merge at once (Node.arrive, Node.merge_arrivals).

Nodes here are in-process and unserved: the test hands one node's sealed
blocks to another the way a push would, so it decides what arrives when.
"""

from __future__ import annotations

import trio

from crdtbook.feed import Block
from crdtbook.feedwire import BlocksMessage, decode_blocks_message, encode_blocks
from node.api.requests import OrderRequest
from node.service import Node, NodeConfig


def node() -> Node:
    return Node(NodeConfig(port=0, data_dir=None, rpc_host=None), clock_ms=CLOCK.now)


class Clock:
    """A wall clock the test moves: events stamped in a known order."""

    def __init__(self) -> None:
        self.ms = 1_764_000_000_000

    def now(self) -> int:
        return self.ms

    def step(self) -> None:
        self.ms += 10


CLOCK = Clock()


def orders(side: str, price: str, n: int) -> list[OrderRequest]:
    return [OrderRequest(side, "1", price, "limit", "") for _ in range(n)]


def message(blocks: list) -> BlocksMessage:
    """``blocks`` as a peer receives them: through the wire."""
    return decode_blocks_message(encode_blocks(blocks, []))


async def joined_cluster(nursery: trio.Nursery) -> list[Node]:
    """A founder and two members, each with its journal writer running."""
    a, b, c = node(), node(), node()
    for n in (a, b, c):
        nursery.start_soon(n.journal.run)
    a.bootstrap()
    for joiner in (b, c):
        a.sponsor(joiner.id, joiner.signer.public)
    await a.journal.sync()
    for joiner in (b, c):
        joiner.accept(message(a.door.answer({}).blocks).blocks, may_found=True)
        await joiner.journal.sync()
    for n in (b, c):  # each knows the others' joins (the founder's blocks hold them all)
        assert n.joined
    return [a, b, c]


async def placed_blocks(n: Node, side: str, price: str, count: int) -> list[Block]:
    """Place ``count`` orders on ``n``; its sealed blocks holding them, once durable."""
    before = n.door.tip(n.id).last
    n.place_many(orders(side, price, count))
    await n.journal.sync()
    return [b for b in n.door.answer({}).blocks if b.replica == n.id and b.last > before]


async def test_pushes_of_one_tick_rewind_once():
    async with trio.open_nursery() as nursery:
        a, b, c = await joined_cluster(nursery)
        CLOCK.step()
        from_b = await placed_blocks(b, "buy", "10", 5)
        from_c = await placed_blocks(c, "sell", "11", 5)
        CLOCK.step()
        a.place_many(orders("buy", "9", 20))  # stamped after b's and c's orders
        await a.journal.sync()
        rewinds, replayed = a.replica.engine.rewinds, a.replica.engine.replayed
        held = a.replica.events_total()
        got: list[int] = []

        async def push(blocks) -> None:
            got.append(await a.arrive(message(blocks)))

        # Both arrive at the same moment. The journal's writer is held off meanwhile
        # (its flush lock): its before-hook merges whatever has arrived, and trio may
        # run it between the two pushes, which would merge them apart.
        async with a.journal._flushing, trio.open_nursery() as pushes:
            pushes.start_soon(push, from_b)
            pushes.start_soon(push, from_c)
        assert a.replica.events_total() == held + 10
        assert got == [10, 10]  # both told what their one merge added
        assert a.replica.engine.rewinds == rewinds + 1  # a's 20 orders undone once, not twice
        assert a.replica.engine.replayed == replayed + 20
        await a.journal.sync()
        assert a.journal.committed_events >= held + 10 - 1  # durable (all but the self-join)
        nursery.cancel_scope.cancel()


async def test_a_bad_push_fails_alone():
    async with trio.open_nursery() as nursery:
        a, b, c = await joined_cluster(nursery)
        CLOCK.step()
        good = await placed_blocks(b, "buy", "10", 3)
        bad = await placed_blocks(c, "sell", "11", 3)
        bad = [block._replace(sig=bytes(len(block.sig))) for block in bad]
        held = a.replica.events_total()
        outcomes: dict[str, object] = {}

        async def push(name: str, blocks) -> None:
            try:
                outcomes[name] = await a.arrive(message(blocks))
            except ValueError as exc:
                outcomes[name] = exc

        async with trio.open_nursery() as pushes:
            pushes.start_soon(push, "good", good)
            pushes.start_soon(push, "bad", bad)
        assert outcomes["good"] == 3
        assert isinstance(outcomes["bad"], ValueError)
        assert "signature" in str(outcomes["bad"])
        assert a.replica.events_total() == held + 3  # only the good push's events
        nursery.cancel_scope.cancel()
