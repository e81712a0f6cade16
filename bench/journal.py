"""Benchmark of a durable commit beside a busy event loop: rows on a thread or on the loop.

Usage: python bench/journal.py [--batches N] [--events E] [--repeat R] [--json]

A trio loop runs a task that keeps it busy (1 ms of Python work, then a
checkpoint, over and over: a loaded node's event loop) while N batches of E
events each (default 200 of 300, a busy node's commits) are committed to a
fresh store with fsync, one after another, two ways:

  thread  the whole ``Store.write`` on a worker thread (before issue 12's
          cluster work): SQLite releases the interpreter lock around each
          row's step and must take it back from the busy loop;
  stage   the rows written on the loop (``Store.stage``), only the commit
          (``Store.commit``, the fsync) on a worker thread: what the journal
          does now.

Each way runs --repeat times (default 2), alternating, and prints per run:
the commit's wall time (p50, p90, from the start of the write to its end),
the loop's work done per second meanwhile (1 ms slices: the thread way lets
SQLite's own C work run beside the loop when a core is free), and the
process's CPU per event, the busy task's own left out (the write, the hops
between threads, the scheduling). Figures, not assertions.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from figures import print_figures  # noqa: E402

from crdtbook.events import make_order  # noqa: E402
from node.store.sqlite import Batch, Store  # noqa: E402

SLICE_S = 0.001
REPLICAS = ("n" + "a" * 31, "n" + "b" * 31, "n" + "c" * 31)


def events(count: int) -> list:
    rng = random.Random(1)
    clock = 1_764_000_000_000 << 16
    out = []
    for seq in range(1, count + 1):
        clock += rng.randint(1, 500)
        out.append(make_order(clock, REPLICAS[seq % 3], seq, rng.choice(("buy", "sell")),
                              "limit", rng.randint(9_000, 11_000) * 10**6,
                              rng.randint(1, 20) * 10**8, "alice"))
    return out


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_run(mode: str, batches: list[list]) -> dict:
    directory = tempfile.mkdtemp(prefix="crdtbook-bench-journal-")
    store = Store.open(directory, "default", fsync=True)
    done = False
    slices = 0
    busy_cpu = 0.0  # the CPU the busy task itself used (time.thread_time: this thread's)

    async def busy() -> None:
        nonlocal slices, busy_cpu
        while not done:
            started, cpu = time.perf_counter(), time.thread_time()
            x = 0
            while time.perf_counter() - started < SLICE_S:
                for i in range(200):
                    x += i
            busy_cpu += time.thread_time() - cpu
            slices += 1
            await trio.sleep(0)

    waits: list[float] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy)
            cpu, wall = cpu_seconds(), time.perf_counter()
            for batch in batches:
                started = time.perf_counter()
                if mode == "thread":
                    await trio.to_thread.run_sync(store.write, Batch(events=batch))
                else:
                    store.stage(Batch(events=batch))
                    await trio.to_thread.run_sync(store.commit)
                waits.append(time.perf_counter() - started)
            done = True
        cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    finally:
        store.close()
        shutil.rmtree(directory, ignore_errors=True)
    waits.sort()
    count = sum(len(b) for b in batches)
    return {"commit_p50_ms": round(waits[len(waits) // 2] * 1000, 1),
            "commit_p90_ms": round(waits[int(len(waits) * 0.9)] * 1000, 1),
            "loop_slices_per_s": round(slices / wall),
            "write_cpu_us_per_event": round((cpu - busy_cpu) * 1e6 / count, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    made = events(args.batches * args.events)
    batches = [made[i:i + args.events] for i in range(0, len(made), args.events)]
    result: dict = {"batches": args.batches, "events_per_batch": args.events}
    for run in range(args.repeat):
        for mode in ("thread", "stage"):
            print(f"run {run + 1}: {mode}", file=sys.stderr)
            figures = trio.run(one_run, mode, batches)
            result.update({f"{mode}_{run + 1}_{k}": v for k, v in figures.items()})
    print_figures(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
