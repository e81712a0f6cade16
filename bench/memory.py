"""Memory under churn: 1,000,000 orders through 3 in-process replicas, finality running.

Usage: python bench/memory.py [--orders N] [--fsync] [--json]
       python bench/memory.py --mode compact|keep --orders N   (one run, used internally)

Each order is placed at one replica (round robin) and its delta merged into
the other two at once; every replica keeps at most 200 of its own orders
resting (it cancels its oldest beyond that), prices straddle a mid so about
half the orders cross, and simulated time advances 1 ms per 10 orders. Every
1,000 orders the replicas exchange claims and acknowledgements (what a pull
carries) and, with compaction on, compact.

With compaction on, history goes to disk as in a node: each replica has a
real ``Store`` (node/store/sqlite.py) in a temporary data directory, tracks
the events new to it (``track_fresh``), and every 1,000 orders writes one
``Batch`` (synchronously, like one group commit of the journal): the events
placed or merged since the last one, plus what ``compact()`` returned (final
order states and fills, converted as ``Node.compact`` does) and a new
snapshot. Without --fsync the stores skip fsync (the figure is memory, not
durability). Bytes on disk per event: store.sqlite + -wal after a WAL
checkpoint, divided by the events stored (the first replica's store).

The collector runs the node's policy (node/gcpolicy.py: its thresholds, and
each compaction paused and the heap frozen after it), so a cycle frozen
before it became garbage shows here as it would in a node.

Resident memory (RSS, after a garbage collection) is printed at the 250,000th
and the last order, in two separate processes: compaction on (history on
disk), and compaction off (everything in memory, no store) for comparison.
Figures, not assertions.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crdtbook.codec import encode_snapshot  # noqa: E402
from crdtbook.replica import Replica  # noqa: E402
from node import gcpolicy  # noqa: E402
from node.gcpolicy import tune as tune_gc  # noqa: E402
from node.service import final_order, stored_fill  # noqa: E402
from node.store.sqlite import STORE_FILE, Batch, Store  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def persist(replica: Replica, store: Store, compact: bool) -> None:
    """One group commit: fresh events, and (after compacting) history and a snapshot."""
    batch = Batch(events=replica.take_fresh())
    if compact:
        with gcpolicy.compaction():  # as Node.compact: the collector paused, the heap frozen
            done = replica.compact()
        if done.removed or done.fills:
            batch.orders = [final_order(view) for view in done.orders]
            batch.fills = [stored_fill(done.fills_start + i, raw)
                           for i, raw in enumerate(done.fills)]
            snapshot = replica.snapshot_state()
            batch.snapshot = (snapshot.final, snapshot.fills_base,
                              encode_snapshot(snapshot, replica.claims()))
    if batch:
        store.write(batch)


def disk_bytes(directory: str) -> int:
    path = os.path.join(directory, STORE_FILE)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))


def run(orders: int, compact: bool, fsync: bool = False) -> dict:
    tune_gc()
    rng = random.Random(7)
    names = ("alpha", "bravo", "charlie")
    replicas = [Replica(name, track_fresh=compact) for name in names]
    root = tempfile.mkdtemp(prefix="crdtbook-memory-") if compact else None
    stores = [Store.open(os.path.join(root, name), "default", fsync=fsync)
              for name in names] if compact else []
    try:
        return _run(orders, compact, rng, replicas, stores)
    finally:
        for store in stores:
            store.close()
        if root:
            shutil.rmtree(root, ignore_errors=True)


def _run(orders: int, compact: bool, rng, replicas: list[Replica], stores: list[Store]) -> dict:
    now = 1_700_000_000_000
    founder = replicas[0]
    genesis = [founder.bootstrap(now)] + [founder.join(r.id, now) for r in replicas[1:]]
    for r in replicas[1:]:
        for delta in genesis:
            r.merge(delta)
    open_orders = [collections.deque() for _ in replicas]
    marks = {}
    checkpoints = sorted({min(250_000, orders), orders} | {orders * k // 8 for k in range(1, 8)})
    started = time.monotonic()
    for i in range(1, orders + 1):
        if i % 10 == 0:
            now += 1
        k = i % 3
        actor = replicas[k]
        side = rng.choice(("buy", "sell"))
        offset = rng.randint(-20, 20)  # in cents around 100: about half cross
        price = f"{100 + (offset if side == 'buy' else -offset) / 100:.2f}"
        placed = actor.place(side, str(rng.randint(1, 5)), price, now_ms=now)
        deltas = [placed.delta]
        mine = open_orders[k]
        if placed.order.status == "open":
            mine.append(placed.order.dot)
        while len(mine) > 200:
            dot = mine.popleft()
            view = actor.order(dot)  # None once settled and compacted
            if view is not None and view.status == "open":
                deltas.append(actor.cancel(dot, now_ms=now).delta)
        for other in replicas:
            if other is not actor:
                for delta in deltas:
                    other.merge(delta)
        if i % 1000 == 0:
            for x in replicas:
                x.claim(now)
            for x in replicas:
                for y in replicas:
                    if x is not y:
                        y.observe_claims(x.claims())
                        y.observe_ack(x.id, x.context())
            if compact:
                for x, store in zip(replicas, stores, strict=True):
                    persist(x, store, compact)
        if i in checkpoints:
            marks[i] = round(rss_mb(), 1)
            print(f"  {'compact' if compact else 'keep'}: {i:>9,} orders  rss {marks[i]:8.1f} MB"
                  f"  held {replicas[0].event_count():>9,}  "
                  f"{i / (time.monotonic() - started):,.0f} orders/s", file=sys.stderr,
                  flush=True)
    digests = {r.digest() for r in replicas}
    assert len(digests) == 1, "replicas diverged"
    first = min(250_000, orders)
    disk = {}
    if stores:
        for x, store in zip(replicas, stores, strict=True):
            persist(x, store, compact)
        stored = stores[0].event_count()
        size = disk_bytes(stores[0].directory)
        disk = {"events_stored": stored, "fills_stored": stores[0].fill_count(),
                "disk_bytes": size, "disk_bytes_per_event": round(size / stored, 1)}
    return {
        "orders": orders,
        "compaction": compact,
        "rss_mb_at_250k": marks[first],
        "rss_mb_at_end": marks[orders],
        "growth_pct": round(100 * (marks[orders] - marks[first]) / marks[first], 1),
        "events_held_at_end": replicas[0].event_count(),
        "events_total": replicas[0].events_total(),
        "final_fills": replicas[0].final_fill_count(),
        "seconds": round(time.monotonic() - started, 1),
        **disk,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--mode", choices=("both", "compact", "keep"), default="both")
    parser.add_argument("--fsync", action="store_true",
                        help="the stores fsync every commit (default: off)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.mode != "both":
        print(json.dumps(run(args.orders, args.mode == "compact", args.fsync)))
        return 0
    results = {}
    for mode in ("compact", "keep"):
        print(f"running with compaction {'on' if mode == 'compact' else 'off'} ...",
              file=sys.stderr)
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--orders",
                              str(args.orders)] + (["--fsync"] if args.fsync else []),
                             check=True, capture_output=False,
                             stdout=subprocess.PIPE, text=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    if args.json:
        print(json.dumps(results))
    else:
        for mode, r in results.items():
            print(f"compaction {'on ' if mode == 'compact' else 'off'}: "
                  f"rss {r['rss_mb_at_250k']} MB at 250,000 orders, {r['rss_mb_at_end']} MB at "
                  f"{r['orders']:,} ({r['growth_pct']:+}%), {r['events_held_at_end']:,} of "
                  f"{r['events_total']:,} events held, {r['seconds']} s")
            if "disk_bytes" in r:
                print(f"  history on disk: {r['events_stored']:,} events and "
                      f"{r['fills_stored']:,} fills in {r['disk_bytes']:,} bytes "
                      f"({r['disk_bytes_per_event']} bytes per event)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
