"""What metrics cost: the hot-path counting per order, and one scrape.

Usage: python bench/metrics.py [--orders N] [--peers K] [--json]

A real ephemeral ``Node`` (no server, no gossip) places ``--orders`` orders
in batches of 1 and of 1,000 (half of them crossing, so fills are counted
too); the figure is the time ``Metrics.placed`` took per order, measured
around that call alone. Then the node is given ``--peers`` peers (the most
a node keeps is 64 discovered ones), each with push and pull latencies and
a failure observed, and ``GET /metrics``'s body is rendered 50 times: the
time per scrape and its size. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.figures import print_figures  # noqa: E402
from node.service import Node, NodeConfig  # noqa: E402
from node.store.journal import StoreFailed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--peers", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    print_figures(trio.run(run, args.orders, args.peers), args.json)


async def run(orders: int, peers: int) -> dict:
    node = Node(NodeConfig(data_dir=None, fsync=False, rate_limit=0))
    try:
        node.bootstrap()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.journal.run)
            result = {}
            for batch in (1, 1000):
                result[f"placed_us_per_order_batch_{batch}"] = round(
                    await counting_cost(node, orders, batch) * 1e6, 3)
            result["events_held"] = node.replica.event_count()
            for i in range(peers):
                url = f"http://127.0.0.1:{20_000 + i}"
                peer = node.add_peer(url)
                peer.ok(f"peer{i:02d}", node.monotonic())
                node.metrics.push_seconds.labels(url).observe(0.002)
                node.metrics.pull_seconds.labels(url).observe(0.004)
                node.metrics.peer_failures.labels(url, "pull").inc()
            rounds = 50
            started = time.perf_counter()
            for _ in range(rounds):
                body = node.metrics.render()
            result["peers"] = len(node.peers)
            result["scrape_ms"] = round((time.perf_counter() - started) / rounds * 1e3, 3)
            result["scrape_bytes"] = len(body)
            nursery.cancel_scope.cancel()
        return result
    finally:
        node.close()


class Order:
    def __init__(self, side: str, qty: str, price: str) -> None:
        self.side, self.qty, self.price, self.type, self.account = side, qty, price, "limit", ""


async def counting_cost(node: Node, orders: int, batch: int) -> float:
    """Seconds per order spent in ``Metrics.placed`` (timed around it alone)."""
    metrics = node.metrics
    spent = 0.0
    real = metrics.placed

    def timed(placed: list) -> None:
        nonlocal spent
        started = time.perf_counter()
        real(placed)
        spent += time.perf_counter() - started

    metrics.placed = timed
    try:
        for start in range(0, orders, batch):
            node.place_many([Order("buy" if i % 2 else "sell", "1", "10" if i % 4 < 2 else "11")
                             for i in range(start, min(start + batch, orders))])
            try:
                await node.journal.sync()
            except StoreFailed:
                raise SystemExit("the store failed") from None
    finally:
        metrics.placed = real
    return spent / orders


if __name__ == "__main__":
    main()
