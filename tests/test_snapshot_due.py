"""When a node's first snapshot is due (Node._snapshot_if_due).

A snapshot costs a pass over everything in memory; a restart replays what
the store holds after the last one. A node whose store replayed nothing at
start (a new one, or one stopped with a snapshot) waits an interval for its
first; one that replayed events (a crash) writes one at its first chance.
"""

from __future__ import annotations

import trio

from node.api.requests import OrderRequest
from node.service import Node, NodeConfig


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def open_node(path: str, ticks: Ticks) -> Node:
    return Node(NodeConfig(port=0, data_dir=path, rpc_host=None, snapshot_interval_s=30.0),
                monotonic=ticks)


async def test_a_new_node_waits_an_interval_a_replaying_one_does_not(tmp_path):
    ticks = Ticks()
    path = str(tmp_path / "node")
    node = open_node(path, ticks)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(node.journal.run)
        assert node.recovered == 0
        assert node._snapshot_if_due() is None  # new: nothing a snapshot would save
        node.bootstrap()
        node.place_many([OrderRequest("buy", "1", "10", "limit", "") for _ in range(3)])
        await node.journal.sync()
        ticks.now += 30.0
        snapshot = node._snapshot_if_due()
        assert snapshot is not None  # an interval later
        node.journal.history([], [], snapshot)
        ticks.now += 1.0
        assert node._snapshot_if_due() is None
        node.place_many([OrderRequest("sell", "1", "12", "limit", "")])
        await node.journal.sync()
        nursery.cancel_scope.cancel()
    node.close()  # a crash: no snapshot at stop; the last order is after the snapshot
    again = open_node(path, ticks)
    try:
        assert again.recovered == 1  # the order after the snapshot
        assert again._snapshot_if_due() is not None  # at once: the next crash replays less
    finally:
        again.close()
