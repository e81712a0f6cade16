"""Benchmark of the pure core: ingest, late ingest, replay, reference, memory.

Usage: python bench/core.py [--commands N] [--seed S] [--batch B] [--json]

A seeded workload of N commands (default 200,000): 90% limit orders priced
around a mid with a normal spread (so that about 40% cross), 10% cancels of
earlier orders of the same replica, spread across 3 replicas whose clocks
follow one simulated wall clock. It prints events/s for

  ingest_in_order_eps  every event merged as its own delta, in position order
  ingest_late_eps      the same, but 10% of events delivered late by up to
                       1,000 positions; deltas are grouped into messages of
                       --batch events (default 100) and the book is brought
                       up to date after every message
  replay_eps           decoding one CBOR delta holding all events + replaying it
  reference_eps        the tests' simple reference engine on the same events

plus p50/p99 microseconds per event of in-order ingest and bytes per resting
order (tracemalloc over a replica holding only resting orders). Figures, not
assertions: nothing here fails on a slow machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crdtbook.aworset import AWORSet  # noqa: E402
from crdtbook.clock import HybridClock  # noqa: E402
from crdtbook.codec import decode_delta, encode_delta  # noqa: E402
from crdtbook.events import make_cancel, make_order  # noqa: E402
from crdtbook.replica import Replica  # noqa: E402
from node.gcpolicy import tune as tune_gc  # noqa: E402
from tests.reference import replay as reference_replay  # noqa: E402

UNIT = 10**8
TICK = UNIT // 100  # prices on a 0.01 grid
MID = 100 * UNIT
REPLICAS = ("alpha", "bravo", "charlie")


def workload(commands: int, seed: int) -> list:
    """Events in position order."""
    rng = random.Random(seed)
    clocks = {r: HybridClock() for r in REPLICAS}
    seqs = {r: 0 for r in REPLICAS}
    placed: dict[str, list[int]] = {r: [] for r in REPLICAS}
    events = []
    now = 1_700_000_000_000
    for _ in range(commands):
        now += rng.choice((0, 0, 1))
        replica = rng.choice(REPLICAS)
        seqs[replica] += 1
        seq = seqs[replica]
        clock = clocks[replica].tick(now)
        if rng.random() < 0.10 and placed[replica]:
            target = placed[replica][rng.randrange(len(placed[replica]))]
            events.append(make_cancel(clock, replica, seq, replica, target))
            continue
        side = rng.choice(("buy", "sell"))
        # Buyers bid a little under the mid, sellers ask a little over; the normal
        # spread makes a share of them cross (the bench prints that share).
        offset = round(rng.gauss(0.1, 0.5) * 100) * TICK
        price = MID - offset if side == "buy" else MID + offset
        qty = rng.randint(1, 20) * UNIT
        events.append(make_order(clock, replica, seq, side, "limit", max(price, TICK), qty, ""))
        placed[replica].append(seq)
    events.sort()
    return events


def single(event) -> AWORSet:
    return AWORSet.from_entries([(event.replica, event.seq, event)])


def timed_ingest(deltas: list[AWORSet]) -> tuple[float, Replica, list[int]]:
    replica = Replica("observer")
    merge = replica.merge
    samples = []
    clock = time.perf_counter_ns
    gc.collect()
    start = time.perf_counter()
    for delta in deltas:
        t0 = clock()
        merge(delta)
        samples.append(clock() - t0)
    return time.perf_counter() - start, replica, samples


def late_order(events: list, rng: random.Random, share: float, spread: int) -> list:
    keyed = []
    for i, event in enumerate(events):
        delay = rng.randint(1, spread) if rng.random() < share else 0
        keyed.append((i + delay, i, event))
    keyed.sort()
    return [event for _, _, event in keyed]


def batches(events: list, size: int) -> list[AWORSet]:
    out = []
    for start in range(0, len(events), size):
        delta = AWORSet()
        for event in events[start:start + size]:
            delta.merge(single(event))
        out.append(delta)
    return out


def bytes_per_resting(count: int) -> float:
    """Traced bytes of a replica holding ``count`` resting (non-crossing) orders."""
    rng = random.Random(1)
    clock = HybridClock()
    events = []
    for seq in range(1, count + 1):
        side = "buy" if seq % 2 else "sell"
        offset = rng.randint(1, 500) * TICK
        price = MID - offset if side == "buy" else MID + offset
        events.append(make_order(clock.tick(seq), "mem", seq, side, "limit", price,
                                 rng.randint(1, 20) * UNIT, ""))
    deltas = [single(e) for e in events]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    replica = Replica("observer")
    for delta in deltas:
        replica.merge(delta)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    resting = sum(level.orders for level in replica.book().bids + replica.book().asks)
    assert resting == count
    return used / count


def percentile(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=100,
                        help="events per message in the late-delivery run (default 100)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--default-gc", action="store_true",
                        help="keep CPython's default GC thresholds (the node raises them)")
    args = parser.parse_args(argv)
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    if not args.default_gc:
        tune_gc()

    say(f"generating {args.commands:,} commands (seed {args.seed}) ...")
    events = workload(args.commands, args.seed)
    n = len(events)

    say("ingest in position order, one delta per event ...")
    elapsed, replica, samples = timed_ingest([single(e) for e in events])
    in_order = n / elapsed
    digest = replica.digest()
    fills = replica.fills()
    takers = {f.taker for f in fills}
    crossing_share = len(takers) / sum(1 for e in events if e.kind == "order")
    resting = sum(level.orders for level in replica.book().bids + replica.book().asks)

    say(f"ingest with 10% late by up to 1,000 positions, messages of {args.batch} ...")
    late_events = late_order(events, random.Random(args.seed + 1), 0.10, 1000)
    elapsed_late, late, _ = timed_ingest(batches(late_events, args.batch))
    assert late.digest() == digest and late.fills() == fills, "late ingest diverged"
    late_eps = n / elapsed_late
    replayed = late.engine.replayed

    say("replay: decode one CBOR delta of every event and apply it ...")
    data = encode_delta(replica.snapshot())
    gc.collect()
    start = time.perf_counter()
    rebuilt = Replica("replay")
    rebuilt.merge(decode_delta(data))
    replay_eps = n / (time.perf_counter() - start)
    assert rebuilt.digest() == digest

    say("reference engine on the same events ...")
    start = time.perf_counter()
    ref_fills, _, _ = reference_replay(events)
    reference_eps = n / (time.perf_counter() - start)
    assert len(ref_fills) == len(fills)

    say("memory per resting order (tracemalloc) ...")
    per_order = bytes_per_resting(50_000)

    result = {
        "commands": n,
        "seed": args.seed,
        "late_batch": args.batch,
        "gc_thresholds": list(__import__("gc").get_threshold()),
        "ingest_in_order_eps": round(in_order),
        "ingest_late_eps": round(late_eps),
        "late_events_replayed": replayed,
        "replay_eps": round(replay_eps),
        "reference_eps": round(reference_eps),
        "bytes_per_resting_order": round(per_order),
        "ingest_p50_us": round(percentile(samples, 0.50), 2),
        "ingest_p99_us": round(percentile(samples, 0.99), 2),
        "fills": len(fills),
        "crossing_share": round(crossing_share, 3),
        "resting_orders_at_end": resting,
        "cbor_bytes": len(data),
        "digest": digest,
    }
    if args.json:
        print(json.dumps(result))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            shown = f"{value:,}" if isinstance(value, int) else value
            print(f"{key:<{width}}  {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
