"""Instructions per event to store and to digest peers' events, with and without block bytes.

Usage: python bench/encodeonce.py [--events N] [--block B] [--json]

A node receives its peers' events in signed blocks (default 5,000 events in
blocks of 100, orders and cancels with 32-character ids, as a cluster's
nodes make them), merges them, writes their rows (``Store.stage`` and
``commit``, no fsync) and hashes them into the digest. Both of the last two
can cut each event's bytes from its block's body (crdtbook/feedwire.py,
``encodings``) or encode the event anew with cbor2 (``plain``: what the node
did before); ``slices`` is the cutting alone (a node does it once per
event for both). Each way (and the setup alone) runs in its own process
under valgrind's callgrind, with N and with 2N events: what the second N
events cost, less the setup's, over N, is its instructions per event
(fixed costs such as imports cancel out; noise-free, so figures compare on
a busy machine).
Figures, not assertions.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import callgrind  # noqa: E402
from figures import print_figures  # noqa: E402

WAYS = ("setup", "slices", "store_plain", "store_sliced", "digest_plain", "digest_sliced")
ORIGINS = ("n" + "a" * 31, "n" + "b" * 31)


def blocks(count: int, size: int) -> list:
    """Decoded blocks, as a peer's push brings them (signatures are not checked here)."""
    from crdtbook.events import make_cancel, make_order
    from crdtbook.feedwire import block_from_wire, encode_body

    rng = random.Random(1)
    clock = 1_764_000_000_000 << 16
    out = []
    for n, origin in enumerate(ORIGINS):
        events = []
        for seq in range(1, count // len(ORIGINS) + 1):
            clock += rng.randint(1, 500)
            if seq > 1 and rng.random() < 0.2:
                events.append(make_cancel(clock, origin, seq, origin, seq - 1))
            else:
                events.append(make_order(clock, origin, seq, rng.choice(("buy", "sell")),
                                         "limit", rng.randint(9_000, 11_000) * 10**6,
                                         rng.randint(1, 20) * 10**8, f"acct{n}"))
        for start in range(0, len(events), size):
            chunk = events[start:start + size]
            out.append(block_from_wire([origin, chunk[0].seq, encode_body(chunk), b"s" * 64],
                                       "block"))
    return out


def run(way: str, count: int, size: int) -> None:
    """One way, in this process (under callgrind when measured)."""
    from crdtbook.feedwire import encodings
    from crdtbook.replica import Replica
    from node.store.feedindex import Unwritten
    from node.store.sqlite import Batch, Store

    received = blocks(count, size)
    replica = Replica("n" + "c" * 31)
    for block in received:
        for event in block.events:
            replica.merge_event(event)
    with tempfile.TemporaryDirectory() as directory:
        store = Store.open(directory, "bench", fsync=False)
        if way.startswith("store"):
            for block in received:
                batch = Batch(events=list(block.events),
                              blocks=[Unwritten(b"p" * 32, b"h" * 32, block)])
                if way == "store_sliced":
                    batch.encoded = encodings([block])
                store.write(batch)
        elif way == "slices":
            encodings(received)
        elif way == "digest_plain":
            replica.digest()
        elif way == "digest_sliced":
            replica.hash_pending(encodings(received))
        store.close()


def instructions(way: str, count: int, size: int, out_dir: str) -> int:
    out = os.path.join(out_dir, f"callgrind.{way}.{count}")
    return callgrind.run_script(out, __file__, "--way", way, "--events", str(count),
                                "--block", str(size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # one measured run
    args = parser.parse_args()
    if args.way:
        run(args.way, args.events, args.block)
        return
    # once without valgrind: modules compiled since their last change are compiled
    # (and cached) here, not in whichever measured run comes first
    subprocess.run([sys.executable, __file__, "--way", "slices", "--events", "10"], check=True)
    with tempfile.TemporaryDirectory() as out_dir:
        totals = {}
        for way in WAYS:
            for count in (args.events, 2 * args.events):
                print(f"callgrind: {way} ({count:,} events) ...", file=sys.stderr)
                totals[way, count] = instructions(way, count, args.block, out_dir)

    def extra(way: str) -> int:  # what the second N events cost: fixed costs cancel out
        return totals[way, 2 * args.events] - totals[way, args.events]

    per = {way: round((extra(way) - extra("setup")) / args.events)
           for way in WAYS if way != "setup"}
    figures = {"events": args.events, "block": args.block,
               **{f"{way}_instructions_per_event": n for way, n in per.items()}}
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
