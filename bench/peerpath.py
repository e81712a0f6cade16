"""Instructions per pushed event on the peer path: decode, the door, the merge, the rewinds.

Usage: python bench/peerpath.py [--commits N] [--delay MS] [--phases P,...]
                                [--baseline REV] [--json]

A node of the durable cluster spends a fifth of its CPU on its peers' pushes:
every order is decoded, checked by the door and merged (with the engine's
rewinds and replays) on the two nodes it did not start on. This bench plays
that in one process, with no HTTP and no store, so that callgrind's
instruction counts (noise-free, unlike the shared machine's clock) say what
each step costs per pushed event.

The simulation (seeded, in ms of a simulated clock): three members, alpha
and bravo (the origins) and charlie (the receiver), each stamping a batch
of 100 of ``bench/workload.py``'s orders at its flush, every 10 ms, at
offsets 0, 3 and 6 ms (``Replica.place_many``, as the node's flush
does). The origins seal each flush's orders into one signed block
(``Door.seal``) and encode the push that carries it (``encode_blocks``
with the origin's claim). A push reaches the receiver a seeded 1 to
2 x ``--delay`` - 1 ms after its seal (each origin's pushes in order: one
past a gap would be skipped), where it is decoded
(``decode_blocks_message``) and let in (``Door.admit``, as
``Node.accept`` calls it) before the receiver's next flush: the
receiver's own orders stamped after the push's are undone and matched
again, as on a node. ``--delay 4`` (the default) gives an
``applies_per_event`` of about 1.26, the cluster bench's 1.26-1.35.

Phases (each in its own process under callgrind; only the phase's calls are
counted, through ``functools.reduce`` and ``--toggle-collect``, as in
``bench/corephases.py``; the rest of the simulation runs uncounted):

  decode   ``decode_blocks_message`` of each push
  admit    ``Door.admit`` of each decoded push (verify, merge, engine update)
  engine   the engine's ``update`` calls made by those admits alone (rewind,
           sort, replay)
  own      the receiver's own ``place_many`` batches (matching its own orders;
           not the peer path, printed to compare)

Each figure is the phase's instructions over the events pushed to the
receiver; ``applies_per_event`` (the engine's applies over the events it
holds) and ``undone_per_pushed_event`` say how much rewinding the
simulation did. ``--baseline REV`` counts REV's crdtbook (``git archive``)
with this same harness and prints both. Figures, not assertions.
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
PHASES = ("decode", "admit", "engine", "own")
NAMES = ("alpha", "bravo", "charlie")
BATCH = 100  # orders a member stamps at each flush
COMMIT_MS = 10  # a flush every COMMIT_MS ms, each member at its own offset
OFFSETS_MS = (0, 3, 6)


def simulate(phase: str, commits: int, delay: int) -> dict:
    """Run the simulation; the calls of ``phase`` go through ``functools.reduce``."""
    import functools
    import random

    from crdtbook.door import Door
    from crdtbook.feedwire import decode_blocks_message, encode_blocks
    from crdtbook.keys import Signer
    from crdtbook.replica import Replica

    sys.path.insert(1, str(HERE))
    from workload import order_stream

    def counted(call, *args):
        return functools.reduce(lambda _, __: call(*args), (None,), None)

    def plain(call, *args):
        return call(*args)

    signers = {name: Signer.from_name(name) for name in NAMES}
    members = {name: Replica(s.id, track_fresh=True) for name, s in signers.items()}
    doors = {name: Door(members[name], signers[name].sign) for name in signers}
    for replica in members.values():  # as their join events would have told each
        for signer in signers.values():
            replica.membership.keys[signer.id] = signer.public
    streams = {name: order_stream(random.Random(i + 1)) for i, name in enumerate(NAMES)}
    delays = random.Random(7)
    receiver, door = members["charlie"], doors["charlie"]
    start = 1_700_000_000_000
    arriving: dict[int, list[bytes]] = {}
    last_arrival = {name: 0 for name in NAMES}
    pushed = 0

    def batch(name: str) -> list[tuple]:
        stream = streams[name]
        return [(o["side"], o["qty"], o["price"], "limit", "") for o in
                (next(stream) for _ in range(BATCH))]

    place_own = counted if phase == "own" else plain
    decode = counted if phase == "decode" else plain
    admit = counted if phase == "admit" else plain
    update = receiver.engine.update
    if phase == "engine":  # only the updates the admits make
        def admit(call, *args):
            receiver.engine.update = lambda add, drop=None: counted(update, add, drop)
            try:
                return call(*args)
            finally:
                receiver.engine.update = update
    for t in range(0, commits * COMMIT_MS + 3 * delay + COMMIT_MS):
        now = start + t
        for message in arriving.pop(t, ()):
            decoded = decode(decode_blocks_message, message)
            pushed += sum(len(b.events) for b in decoded.blocks)
            admit(door.admit, decoded.blocks, decoded.claims, None, decoded.proofs,
                  decoded.forks, False)
        if t >= commits * COMMIT_MS:
            continue
        for name, offset in zip(NAMES, OFFSETS_MS, strict=True):
            if t % COMMIT_MS != offset:
                continue
            member = members[name]
            if name == "charlie":
                place_own(member.place_many, batch(name), now)
                member.take_fresh()
                continue
            member.place_many(batch(name), now_ms=now)
            block = doors[name].seal(member.take_fresh())
            message = encode_blocks([block], doors[name].outgoing_claims(member.claim(now)))
            # a seeded age, each origin's pushes kept in order (one past a gap is skipped)
            at = max(t + delays.randint(1, 2 * delay - 1), last_arrival[name])
            last_arrival[name] = at
            arriving.setdefault(at, []).append(message)
    engine = receiver.engine
    held = receiver.event_count()
    return {"pushed": pushed, "held": held, "rewinds": engine.rewinds,
            "replayed": engine.replayed, "digest": receiver.digest()}


def worker(phase: str, commits: int, delay: int) -> None:
    import gc

    sys.path.insert(2, str(ROOT))
    from node.gcpolicy import tune

    tune()
    gc.collect()
    result = simulate(phase, commits, delay)
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)


def count(tree: str, phase: str, commits: int, delay: int, out: str) -> dict:
    """The phase's instructions per pushed event with ``tree``'s crdtbook."""
    sys.path.insert(0, str(HERE))
    import callgrind

    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=tree)
    done = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                           "--dump-instr=no", "--collect-jumps=no", "--collect-atstart=no",
                           "--toggle-collect=functools_reduce", sys.executable, __file__,
                           "--worker", phase, "--commits", str(commits), "--delay",
                           str(delay)],
                          check=True, capture_output=True, env=env, text=True, cwd=tree)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["instructions"] = callgrind.total(out)
    return result


def measure(tree: str, name: str, args, out_dir: str) -> dict:
    figures: dict = {}
    for phase in args.phases.split(","):
        print(f"{name}: {phase}", file=sys.stderr, flush=True)
        result = count(tree, phase, args.commits, args.delay,
                       os.path.join(out_dir, f"callgrind.{name}.{phase}"))
        figures[f"{name}_{phase}_instructions_per_pushed_event"] = round(
            result["instructions"] / result["pushed"])
        figures[f"{name}_applies_per_event"] = round(
            (result["held"] + result["replayed"]) / result["held"], 3)
        figures[f"{name}_undone_per_pushed_event"] = round(
            result["replayed"] / result["pushed"], 3)
        figures[f"{name}_digest"] = result["digest"][:16]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=60, help="commits per origin")
    parser.add_argument("--delay", type=int, default=4, help="mean ms from seal to merge")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--baseline", metavar="REV")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.commits, args.delay)
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("this bench needs valgrind (callgrind)")
    sys.path.insert(0, str(HERE))
    from figures import print_figures
    from revision import export

    out_dir = tempfile.mkdtemp(prefix="crdtbook-bench-peerpath-")
    result: dict = {}
    try:
        if args.baseline:
            code = export(args.baseline)
            try:
                result.update(measure(code, "baseline", args, out_dir))
            finally:
                shutil.rmtree(code, ignore_errors=True)
            result["baseline_revision"] = args.baseline
        result.update(measure(str(ROOT), "this", args, out_dir))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    print_figures(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
