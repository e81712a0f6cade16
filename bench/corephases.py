"""Instructions per event of each phase of the core's replay and in-order ingest.

Usage: python bench/corephases.py [--commands N] [--phases P,...] [--baseline REV] [--json]

The clock on the shared development machine moves by a third between runs;
callgrind's instruction counts do not. Each phase runs in its own process
under callgrind on ``bench/core.py``'s workload (N commands, seed 1),
CPython with ``PYTHONHASHSEED=0`` and the node's GC policy. The setup (the
workload, its encoding, whatever the phase takes as input) is built first
and frozen out of the collector (``gc.freeze``); the phase itself is called
through ``functools.reduce`` and callgrind collects only inside that call
(``--collect-atstart=no --toggle-collect=functools_reduce``), so neither
the setup nor the imports are counted. The process ends by ``os._exit``
(no teardown: what the phase built is kept, as ``bench/core.py``
stops its clock before letting it go). Each figure is that count over the events.

Phases:

  replay    decode one CBOR delta of every event, merge it into a new replica
  decode    ``decode_delta`` of that delta alone
  scan      ``cborscan.scan_proving`` of it alone
  cbor      cbor2 building its lists alone (``codec.loads``, trusted)
  proven    ``codec._proven_events`` over its decoded lists alone
  merge     merging the decoded delta (built in the setup) into a new replica
  engine    ``Engine.update`` of all the events (sorted) into a new engine
  inorder   ``Replica.merge_event`` of every event, one at a time
  wire      ``codec.events_from_wire`` of every event, one item a call (the
            peer path's decode, as bench/peers.py runs it)
  restore   ``Replica.restore`` of every event (a restart's replay of its
            store: a plain delta, no decode, no proof)

``--baseline REV`` also counts REV's crdtbook (``git archive``) with this
same harness, and prints both with the change. Figures, not assertions.
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
PHASES = ("replay", "decode", "scan", "cbor", "proven", "merge", "engine", "inorder", "wire",
          "restore")


def run_phase(phase: str, commands: int) -> None:
    """In the worker: build the phase's input, freeze it, run the phase in reduce."""
    import functools
    import gc

    from crdtbook import codec, engine, replica
    from crdtbook.aworset import AWORSet
    from crdtbook.cborscan import scan_proving

    counted = Path(sys.path[0]).resolve()
    assert Path(codec.__file__).resolve().is_relative_to(counted), codec.__file__

    sys.path.insert(1, str(HERE))
    sys.path.insert(2, str(ROOT))
    import core  # its workload; crdtbook is already imported from the tree counted

    from node.gcpolicy import tune

    tune()
    events = core.workload(commands, 1)
    data = codec.encode_delta(AWORSet.from_entries((e.replica, e.seq, e) for e in events))
    items = codec.loads(data, "delta", trusted=True)["events"]
    work = None
    if phase == "replay":
        def work():
            rebuilt = replica.Replica("replay")
            rebuilt.merge(codec.decode_delta(data))
            return rebuilt
    elif phase == "decode":
        def work():
            return codec.decode_delta(data)
    elif phase == "scan":
        def work():
            return scan_proving(data)
    elif phase == "cbor":
        def work():
            return codec.loads(data, "delta", trusted=True)
    elif phase == "proven":
        def work():
            return codec._proven_events(items, "delta event", codec._Names())
    elif phase == "merge":
        delta = codec.decode_delta(data)

        def work():
            rebuilt = replica.Replica("replay")
            rebuilt.merge(delta)
            return rebuilt
    elif phase == "engine":
        def work():
            built = engine.Engine()
            built.update(events)
            return built
    elif phase == "inorder":
        def work():
            observer = replica.Replica("observer")
            merge_event = observer.merge_event
            for event in events:
                merge_event(event)
            return observer
    elif phase == "restore":
        def work():
            restored = replica.Replica("restored")
            restored.restore(events)
            return restored
    elif phase == "wire":
        def work():
            names = codec._Names()
            decode = codec.events_from_wire
            return [decode((item,), "event", names) for item in items]
    gc.collect()
    gc.freeze()
    # The result is kept (until os._exit): its teardown is not the phase's.
    kept = functools.reduce(lambda _, __: work(), (None,), None)  # noqa: F841
    sys.stdout.flush()
    os._exit(0)


def count(tree: str, phase: str, commands: int, out: str) -> float:
    """Instructions per event of ``phase`` with ``tree``'s crdtbook."""
    sys.path.insert(0, str(HERE))
    import callgrind

    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=tree)
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                    "--dump-instr=no", "--collect-jumps=no", "--collect-atstart=no",
                    "--toggle-collect=functools_reduce", sys.executable, __file__,
                    "--worker", phase, "--commands", str(commands), "--tree", tree],
                   check=True, capture_output=True, env=env)
    return callgrind.total(out) / commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--baseline", metavar="REV")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        sys.path.insert(0, args.tree)
        run_phase(args.worker, args.commands)
        return 0
    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    scratch = tempfile.mkdtemp(prefix="crdtbook-phases-")
    try:
        trees = {"this": str(ROOT)}
        if args.baseline:
            sys.path.insert(0, str(HERE))
            from revision import export

            trees = {args.baseline: export(args.baseline, "crdtbook",
                                           into=tempfile.mkdtemp(dir=scratch)), **trees}
        result: dict = {}
        for phase in phases:
            result[phase] = {name: round(count(tree, phase, args.commands,
                                               f"{scratch}/{phase}.{name}.out"))
                             for name, tree in trees.items()}
            if not args.json:
                row = result[phase]
                shown = "  ".join(f"{name} {value:,}" for name, value in row.items())
                if args.baseline:
                    before, after = row[args.baseline], row["this"]
                    shown += f"  ({(after - before) / before:+.1%})"
                print(f"{phase:<8} {shown}", flush=True)
        if args.json:
            print(json.dumps({"commands": args.commands, "per_event": result}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
