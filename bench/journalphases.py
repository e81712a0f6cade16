"""Instructions per event of a node's journal at arrival and of its compaction.

Usage: python bench/journalphases.py [--events N] [--block B] [--phases P,...]
       [--baseline REV] [--json]

Three members (``a``, ``b``, ``c``) place the cluster bench's orders
(bench/workload.py, six accounts) in batches of 100, each batch merged into
the other two; ``a`` then places a few batches nobody acknowledged (the log
above F a live node holds), and has ``b``'s and ``c``'s contexts as their
acknowledgements. ``a``'s events are cut into blocks of B (default 100) of
one origin, as the blocks a node writes. Phases, each counted alone under
callgrind (``--collect-atstart=no --toggle-collect=functools_reduce``: the
setup, imports and the teardown are not counted; ``PYTHONHASHSEED=0``, the
node's collector policy, the setup frozen out of the collector):

  arrive  the journal's part of each block's flush past the cutting of its
          slices: ``Journal.held``, ``_take_bodies`` and the store's
          transaction of the block (``Store.write``, no fsync), per event
  core    ``Replica.compact()`` (the engine's and crdtbook/compaction.py's
          part), per event that left memory
  node    a node's whole compaction (node/service.py ``compact``'s steps: the
          replica's, the final orders and fills, the rows, and the store's
          transaction of the history with the bodies kept at arrival), per
          event that left memory (about one fill each)

``--baseline REV`` counts REV's crdtbook and node (``git archive``) with this
same harness too. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PHASES = ("arrive", "core", "node")
T0 = 1_764_000_000_000


def run_phase(phase: str, count: int, size: int) -> None:
    """In the worker: build the state, freeze it, run the phase in reduce."""
    import functools
    import gc
    import random

    sys.path.insert(1, str(HERE))
    import workload

    from crdtbook.events import ORDER
    from crdtbook.feedwire import block_from_wire, encode_body, encodings
    from crdtbook.replica import Replica
    from node import service
    from node.gcpolicy import tune
    from node.store.feedindex import Unwritten
    from node.store.journal import Journal
    from node.store.sqlite import Batch, Store

    tune()
    a, b, c = members = [Replica(x * 32) for x in "abc"]
    for delta in (a.bootstrap(now_ms=T0), a.join(b.id, now_ms=T0), a.join(c.id, now_ms=T0)):
        b.merge(delta)
        c.merge(delta)
    rng = random.Random(1)
    stream = workload.order_stream(rng)
    accounts = [f"acct{i}" for i in range(6)]

    def batch(account=None) -> list:
        return [(o["side"], o["qty"], o["price"], "limit", account or rng.choice(accounts))
                for o in (next(stream) for _ in range(100))]

    clock, made = T0 + 1, 0
    while made < count:
        for member in members:
            clock += 3
            delta = member.place_many(batch(), now_ms=clock)[0]._delta.get()
            for other in members:
                if other is not member:
                    other.merge(delta)
            made += len(delta)
    for _ in range(max(1, count // 2000)):  # past what b and c count: above F
        clock += 3
        a.place_many(batch("acct0"), now_ms=clock)
    a.observe_ack(b.id, b.context())
    a.observe_ack(c.id, c.context())
    a.digest()
    flushes = []  # (block, a's events in it, its slices keyed by a's objects)
    for origin, seqs in sorted(a.state.store.items()):
        keys = sorted(seqs)
        for i in range(0, len(keys), size):
            events = [seqs[k] for k in keys[i:i + size]]
            if any(e.kind != ORDER for e in events):
                continue
            block = block_from_wire([origin, events[0].seq, encode_body(events), b"s" * 64],
                                    "block")
            sliced = encodings([block]).values()
            flushes.append((block, events, {id(e): (e, entry[1])
                                            for e, entry in zip(events, sliced, strict=True)}))
    store = Store.open(tempfile.mkdtemp(), "bench", fsync=False)
    journal = Journal(store)

    def arrive():
        for block, events, encoded in flushes:
            journal.held(events)
            written = Batch(blocks=[Unwritten(b"p" * 32, b"h" * 32, block)], encoded=encoded)
            journal._take_bodies(written)
            store.write(written)
        return sum(len(events) for _, events, _ in flushes)

    def core():
        return a.compact()

    def node():
        done = a.compact()
        orders = [service.final_order(view) for view in done.orders]
        fills = [service.stored_fill(done.fills_start + i, raw)
                 for i, raw in enumerate(done.fills)]
        finals = iter(orders)
        rows = [(e, next(finals) if e.kind == ORDER else None) for e in done.events]
        journal.history([], fills, None, rows)
        history, journal._batch = journal._batch, Batch()
        journal._take_bodies(history)
        store.write(history)
        return done

    work = {"arrive": arrive, "core": core, "node": node}[phase]
    if phase != "arrive":
        arrive()
    gc.collect()
    gc.freeze()
    kept = functools.reduce(lambda _, __: work(), (None,), None)
    events = kept if phase == "arrive" else kept.removed
    print(json.dumps({"events": events}))
    sys.stdout.flush()
    os._exit(0)


def count(tree: str, phase: str, events: int, size: int, out: str) -> float:
    """Instructions per event of ``phase`` with ``tree``'s code."""
    sys.path.insert(0, str(HERE))
    import callgrind

    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=tree)
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
         "--collect-jumps=no", "--collect-atstart=no", "--toggle-collect=functools_reduce",
         sys.executable, __file__, "--worker", phase, "--events", str(events),
         "--block", str(size), "--tree", tree],
        check=True, capture_output=True, env=env, text=True)
    counted = json.loads(done.stdout.strip().splitlines()[-1])["events"]
    return callgrind.total(out) / counted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6_000)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--baseline", metavar="REV")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        sys.path.insert(0, args.tree)
        run_phase(args.worker, args.events, args.block)
        return 0
    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    scratch = tempfile.mkdtemp(prefix="crdtbook-journal-")
    try:
        trees = {"this": str(ROOT)}
        if args.baseline:
            sys.path.insert(0, str(HERE))
            from revision import export

            trees = {args.baseline: export(args.baseline, "crdtbook", "node",
                                           into=tempfile.mkdtemp(dir=scratch)), **trees}
        result: dict = {}
        for phase in phases:
            result[phase] = {name: round(count(tree, phase, args.events, args.block,
                                               f"{scratch}/{phase}.{name}.out"))
                             for name, tree in trees.items()}
            if not args.json:
                row = result[phase]
                shown = "  ".join(f"{name} {value:,}" for name, value in row.items())
                if args.baseline:
                    before, after = row[args.baseline], row["this"]
                    shown += f"  ({(after - before) / before:+.1%})"
                print(f"{phase:<7} {shown}", flush=True)
        if args.json:
            print(json.dumps({"events": args.events, "block": args.block, "per_event": result}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
