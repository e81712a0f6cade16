"""Restart of a durable node holding a large history: time to serve again, bytes per event.

Usage: python bench/restart.py [--events N] [--batch B] [--workers W] [--data-dir DIR]
                               [--seed S] [--json]

1. Build: one durable node (``crdtbook node --data-dir``, fsync on, a cluster
   of one, so every event is final at once and compaction runs every 5 s as
   in any node) takes batches of B orders (default 5,000) over HTTP from W
   concurrent clients (default 2) until it holds N events (default
   1,000,000). Orders are seeded: 55% limit orders around a mid (about half
   of them cross), 45% market orders, so the book stays small and almost
   every event is settled and compacted into the store, as in a long-running
   book. Prints how long the build took.
2. Size: the node is stopped (SIGTERM); the bench checkpoints the WAL
   (``PRAGMA wal_checkpoint(TRUNCATE)``) and divides the size of
   ``store.sqlite`` + ``-wal`` by the events held.
3. Graceful restart: ``crdtbook node`` starts again on the same directory;
   the time runs from process start until ``GET /status`` answers and shows
   every event (``events_total``).
4. Crash restart: one more batch is posted (so the WAL holds committed but
   uncheckpointed pages), the node is killed with SIGKILL, and the restart
   is timed the same way (every acknowledged event must be back).

The data directory is a new temporary one (removed afterwards) unless
--data-dir names one (kept). Figures, not assertions.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from figures import print_figures  # noqa: E402

from node.cli.devnet import start_node, stop  # noqa: E402
from node.store import accounts  # noqa: E402
from node.store.sqlite import STORE_FILE  # noqa: E402

# the node's default account token (read from its data directory) and no rate limit
HEADERS: dict[str, str] = {}
NODE_FLAGS = ["--rate-limit", "0"]

MID = 100


def order_stream(rng: random.Random):
    while True:
        side = rng.choice(("buy", "sell"))
        qty = str(rng.randint(1, 5))
        if rng.random() < 0.45:
            yield {"side": side, "qty": qty, "type": "market"}
        else:
            offset = round(rng.gauss(0.05, 0.05), 2)
            price = MID - offset if side == "buy" else MID + offset
            yield {"side": side, "qty": qty, "price": f"{price:.2f}"}


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def status(url: str) -> dict:
    return httpx.get(f"{url}/status", timeout=60).json()


async def build(url: str, events: int, batch: int, workers: int, rng) -> int:
    """Post orders until the node holds ``events`` events; return orders posted."""
    orders = order_stream(rng)
    held = status(url)["events_total"]
    todo = events - held
    posted = 0
    started = trio.current_time()

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal todo, posted
        while todo > 0:
            n = min(batch, todo)
            todo -= n
            response = await http.post(f"{url}/orders", json=[next(orders) for _ in range(n)])
            if response.status_code != 201:
                raise SystemExit(f"POST /orders answered {response.status_code}: "
                                 f"{response.text[:200]}")
            posted += n

    async def report() -> None:
        last = 0.0
        while todo > 0:
            await trio.sleep(1)
            elapsed = trio.current_time() - started
            if elapsed - last >= 10:
                last = elapsed
                progress(f"build: {held + posted:,} of {events:,} events in {elapsed:.0f}s "
                         f"({posted / elapsed:,.0f} orders/s)")

    async with httpx.AsyncClient(timeout=120, headers=HEADERS) as http, \
            trio.open_nursery() as nursery:
        nursery.start_soon(report)
        async with trio.open_nursery() as senders:
            for _ in range(workers):
                senders.start_soon(worker, http)
        nursery.cancel_scope.cancel()
    return posted


def disk_bytes(directory: str) -> tuple[int, int]:
    """(bytes of store.sqlite + -wal after a WAL checkpoint, bytes of the -wal before it)."""
    path = os.path.join(directory, STORE_FILE)
    wal_before = os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    total = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
    return total, wal_before


def timed_start(directory: str, expect: int, timeout: float = 300.0):
    """Start a node on ``directory``; return (process, url, seconds until it serves all)."""
    started = time.monotonic()
    proc, url = start_node(["--data-dir", directory, *NODE_FLAGS])
    listening = time.monotonic() - started
    while True:
        try:
            held = status(url)["events_total"]
        except httpx.HTTPError:
            held = -1
        if held >= expect:
            return proc, url, time.monotonic() - started, listening, held
        if time.monotonic() - started > timeout:
            stop([proc])
            raise SystemExit(f"restarted node holds {held:,} of {expect:,} events "
                             f"after {timeout:g}s")
        time.sleep(0.01)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", help="build here and keep it (default: a temp folder)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    directory = args.data_dir or tempfile.mkdtemp(prefix="crdtbook-restart-")
    procs: list[subprocess.Popen] = []
    try:
        progress(f"building {args.events:,} events in {directory} over HTTP ...")
        t0 = time.monotonic()
        proc, url = start_node(["--data-dir", directory, *NODE_FLAGS])
        procs.append(proc)
        HEADERS["Authorization"] = f"Bearer {accounts.read(directory)}"
        orders = trio.run(build, url, args.events, args.batch, args.workers, rng)
        build_s = time.monotonic() - t0
        before = status(url)
        events = before["events_total"]
        progress(f"built: {events:,} events ({orders:,} orders posted) in {build_s:.1f}s; "
                 f"{before['events']:,} held in memory; stopping (SIGTERM) ...")
        stop(procs)
        procs.clear()
        size, wal = disk_bytes(directory)
        progress(f"on disk after a checkpoint: {size:,} bytes ({size / events:.1f} per event)")

        progress("restarting after SIGTERM ...")
        proc, url, graceful_s, graceful_listen_s, held = timed_start(directory, events)
        procs.append(proc)
        progress(f"serving all {held:,} events {graceful_s:.2f}s after start "
                 f"(listening after {graceful_listen_s:.2f}s)")

        more = min(args.batch, 5_000)
        trio.run(build, url, events + more, more, 1, rng)
        expect = status(url)["events_total"]
        progress(f"posted {more:,} more orders ({expect:,} events); kill -9 ...")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        procs.clear()
        proc, url, crash_s, crash_listen_s, held = timed_start(directory, expect)
        procs.append(proc)
        progress(f"serving all {held:,} events {crash_s:.2f}s after start "
                 f"(listening after {crash_listen_s:.2f}s)")
        after = status(url)
        stop(procs)
        procs.clear()
    finally:
        stop(procs)
        if not args.data_dir:
            shutil.rmtree(directory, ignore_errors=True)
    result = {
        "events": events,
        "orders_posted": orders,
        "build_s": round(build_s, 1),
        "build_orders_per_s": round(orders / build_s),
        "events_in_memory_at_stop": before["events"],
        "disk_bytes": size,
        "disk_bytes_per_event": round(size / events, 1),
        "wal_bytes_before_checkpoint": wal,
        "restart_sigterm_serving_s": round(graceful_s, 2),
        "restart_sigterm_listening_s": round(graceful_listen_s, 2),
        "restart_sigkill_events": expect,
        "restart_sigkill_serving_s": round(crash_s, 2),
        "restart_sigkill_listening_s": round(crash_listen_s, 2),
        "digest_after_sigkill": after["digest"][:16],
    }
    print_figures(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
