"""Instructions per event for a node's store, from an event's arrival to its compaction.

Usage: python bench/storeonce.py [--events N] [--block B] [--compact-every K] [--json]

A node stores its peers' events as they arrive in signed blocks (default
5,000 orders and cancels in blocks of 100, as bench/encodeonce.py makes
them), one commit per block, and every K blocks (default 10) a compaction
takes those events out of memory with their final states (every order
filled). Two ways:

* ``twice`` (schema 2): each event's row at arrival (its body cut from the
  block), then every order's final state written into its row;
* ``once`` (schema 3, node/store/journal.py): at arrival only the block,
  the row body kept in memory; at compaction each event's row, written once
  with its final state;
* ``once_encoded``: as ``once``, but no body kept: each row's body encoded
  anew with cbor2 at compaction.

Both write the same blocks. Each way (and the setup alone) runs in its own
process under valgrind's callgrind with N and 2N events: what the second N
events cost, less the setup's, over N, is its instructions per event
(noise-free, so figures compare on a busy machine). Figures, not assertions.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import callgrind  # noqa: E402
from encodeonce import blocks  # noqa: E402
from figures import print_figures  # noqa: E402

WAYS = ("setup", "twice", "once", "once_encoded")


def run(way: str, count: int, size: int, every: int) -> None:
    """One way, in this process (under callgrind when measured)."""
    from crdtbook.events import ORDER
    from crdtbook.feedwire import encodings
    from node.store.feedindex import Unwritten
    from node.store.journal import Journal
    from node.store.sqlite import Batch, FinalOrder, Store

    received = blocks(count, size)
    with tempfile.TemporaryDirectory() as directory:
        store = Store.open(directory, "bench", fsync=False)
        journal = Journal(store)
        if way != "setup":
            for start in range(0, len(received), every):
                chunk = received[start:start + every]
                for block in chunk:
                    batch = Batch(blocks=[Unwritten(b"p" * 32, b"h" * 32, block)],
                                  encoded=encodings([block]))
                    if way == "twice":
                        batch.events = list(block.events)
                    elif way == "once":
                        journal.held(block.events)
                        journal._take_bodies(batch)
                    store.write(batch)
                gone = [e for block in chunk for e in block.events]
                finals = [(e, FinalOrder(e.replica, e.seq, "filled", e.qty, None)
                           if e.kind == ORDER else None) for e in gone]
                if way == "twice":
                    store.write(Batch(orders=[f for _, f in finals if f is not None]))
                else:
                    journal.history([], [], None, finals)
                    batch, journal._batch = journal._batch, Batch()
                    journal._take_bodies(batch)
                    store.write(batch)
        store.close()


def instructions(way: str, args, count: int, out_dir: str) -> int:
    out = os.path.join(out_dir, f"callgrind.{way}.{count}")
    return callgrind.run_script(out, __file__, "--way", way, "--events", str(count),
                                "--block", str(args.block),
                                "--compact-every", str(args.compact_every))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--compact-every", type=int, default=10, metavar="K",
                        help="blocks per compaction")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # one measured run
    args = parser.parse_args()
    if args.way:
        run(args.way, args.events, args.block, args.compact_every)
        return
    # once without valgrind: modules compiled since their last change are compiled here
    subprocess.run([sys.executable, __file__, "--way", "once", "--events", "10"], check=True)
    with tempfile.TemporaryDirectory() as out_dir:
        totals = {}
        for way in WAYS:
            for count in (args.events, 2 * args.events):
                print(f"callgrind: {way} ({count:,} events) ...", file=sys.stderr)
                totals[way, count] = instructions(way, args, count, out_dir)

    def extra(way: str) -> int:  # what the second N events cost: fixed costs cancel out
        return totals[way, 2 * args.events] - totals[way, args.events]

    per = {way: round((extra(way) - extra("setup")) / args.events)
           for way in WAYS if way != "setup"}
    figures = {"events": args.events, "block": args.block,
               "compact_every_blocks": args.compact_every,
               **{f"store_{way}_instructions_per_event": n for way, n in per.items()}}
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
