"""Benchmark against a peer: crdtbook's origin and peer paths vs matching-engine 0.1.1.

Usage: python bench/peers.py [--commands N] [--seed S] [--repeat R]
                             [--baseline [REV]] [--python PATH] [--json]

One seeded workload of N commands (default 100,000): 90% limit orders on a
0.01 tick grid around a mid of 100 (a normal spread makes about a third of
them cross), 10% cancels of earlier orders (some have filled by then: those
cancels do nothing, in all three engines). It runs through

  matching_engine  the PyPI package ``matching-engine`` 0.1.1 (a pure-Python
                   price-time engine), ``MatchingEngine.process`` over
                   prebuilt commands (integer ticks and lots; self-trade
                   prevention off, as crdtbook has none); it needs Python >=
                   3.12, so it runs in its own virtualenv under
                   .bench-venv/peers-pyX.Y/ (made on first use);
                   ``matching_engine_from_strings`` adds its gateway's decimal
                   conversion (MarketSpec) and the command structs to the timing
  origin           crdtbook's origin path: ``Replica.place(side, qty, price,
                   "limit", "", now_ms)`` with decimal strings and
                   ``Replica.cancel(dot)``, keeping every Placed/Cancelled
  peer             crdtbook's peer path: each event as a peer's decoded wire
                   item (the CBOR-decoded list), validated into an event
                   (codec.events_from_wire, one item at a time, one name table
                   for the run; codec._fast_event before issue 12) and merged
                   (``merge_event`` if the replica has it, else a one-event delta)

in the same interpreter (the 3.12 venv holds crdtbook's core deps too), each
best of --repeat (default 3), under CPython's default GC thresholds and under
node/gcpolicy.py's. crdtbook's two paths also run under the interpreter
running this script, for reference, and, with --baseline, from ``git archive
REV`` (default 2073425, before issue 12) in the same run. Every run must
produce the same trades, in the same order (taker, maker, price, quantity):
the script checks it and says so. Figures, never assertions: the targets
(origin >= 0.35x, peer >= 0.65x matching_engine) are printed beside them.
Status lines go to stderr.
"""

from __future__ import annotations

import argparse
import gc
import glob
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from revision import export  # noqa: E402 (bench/ is first on the path of a script run here)

ROOT = Path(__file__).resolve().parent.parent
ME_VERSION = "0.1.1"
ME_REQUIREMENTS = (f"matching-engine=={ME_VERSION}", "sortedcontainers", "cbor2", "pynacl")
DEFAULT_BASELINE = "2073425"
TARGETS = {"origin": 0.35, "peer": 0.65}

MID_TICKS = 10_000  # 100.00 on a 0.01 grid
TICK_UNITS = 10**6  # crdtbook units (1e-8) per 0.01 tick
LOT_UNITS = 10**8  # crdtbook units per whole lot
NOW_MS = 1_700_000_000_000

NEW, CANCEL = 0, 1
BUY, SELL = 0, 1


# what the worker times with: wall time, or with --cpu-time the process's CPU
# time (steadier on a machine shared with other work; the same on a quiet one)
timer = time.perf_counter


def status(text: str) -> None:
    print(f"peers: {text}", file=sys.stderr, flush=True)


# -- the workload ---------------------------------------------------------------
def workload(commands: int, seed: int) -> list[list[int]]:
    """Commands, numbered from 1: [NEW, side, price_ticks, qty_lots] or [CANCEL, number]."""
    rng = random.Random(seed)
    placed: list[int] = []
    out: list[list[int]] = []
    for number in range(1, commands + 1):
        if placed and rng.random() < 0.10:
            out.append([CANCEL, placed[rng.randrange(len(placed))]])
            continue
        side = BUY if rng.random() < 0.5 else SELL
        # Buyers bid a little under the mid, sellers ask a little over; the
        # spread makes about a third of them cross.
        offset = round(rng.gauss(0.15, 0.5) * 100)
        price = MID_TICKS - offset if side == BUY else MID_TICKS + offset
        out.append([NEW, side, max(price, 1), rng.randint(1, 20)])
        placed.append(number)
    return out


def price_text(ticks: int) -> str:
    return f"{ticks // 100}.{ticks % 100:02d}"


# -- the worker: runs inside one interpreter, prints one JSON object -----------------
def timed(repeat: int, runs: dict, thresholds: tuple, digest: str | None) -> dict:
    """Best time of each run and the trades it made, the runs interleaved so a
    busy moment hits them alike. Each run's result is reduced to its trades
    (and checked) as soon as it is timed, so no run's heap is there to slow the
    collector during the next; the setup's own data is frozen out of its way
    (gc.freeze), so collections visit what the engine under test allocates."""
    best: dict[str, tuple[float, list]] = {}
    old = gc.get_threshold()
    gc.set_threshold(*thresholds)
    try:
        for _ in range(max(1, repeat)):
            for name, run in runs.items():
                gc.collect()
                gc.freeze()
                took, result = run()
                trades = trades_of(name, result, digest)
                del result
                gc.unfreeze()
                if name in best and trades != best[name][1]:
                    raise SystemExit(f"peers: {name} traded differently from one run to the next")
                if name not in best or took < best[name][0]:
                    best[name] = (took, trades)
    finally:
        gc.set_threshold(*old)
    return best


def trades_of(name: str, result, digest: str | None) -> list:
    if name.startswith("matching_engine"):
        return me_trades(result)
    replica, kept = result
    if replica.digest() != digest:
        raise SystemExit(f"peers: {name}: digest differs from the origin's")
    return crdtbook_trades(replica, kept)


def me_runs(cmds: list) -> dict:
    from decimal import Decimal

    from matching_engine import (
        CancelOrder,
        NewOrder,
        SelfTradePrevention,
        SequencedCommand,
        Side,
    )
    from matching_engine.engine import MatchingEngine
    from matching_engine.market import MarketSpec

    sides = (Side.BUY, Side.SELL)
    none = SelfTradePrevention.NONE
    prebuilt = [
        SequencedCommand(i, 0, NewOrder(i, 1, sides[c[1]], c[2], c[3], stp=none)
                         if c[0] == NEW else CancelOrder(c[1], 1))
        for i, c in enumerate(cmds, 1)
    ]
    texts = [(c[0], c[1], price_text(c[2]), str(c[3])) if c[0] == NEW else tuple(c)
             for c in cmds]

    def engine_only():
        engine = MatchingEngine()
        process = engine.process
        out = []
        append = out.append
        start = timer()
        for sc in prebuilt:
            append(process(sc))
        return timer() - start, out

    def from_strings():
        engine = MatchingEngine()
        process = engine.process
        spec = MarketSpec("X", Decimal("0.01"), Decimal("1"))
        ticks, lots = spec.to_ticks, spec.to_lots
        out = []
        append = out.append
        start = timer()
        for i, c in enumerate(texts, 1):
            if c[0] == NEW:
                cmd = NewOrder(i, 1, sides[c[1]], ticks(Decimal(c[2])), lots(Decimal(c[3])),
                               stp=none)
            else:
                cmd = CancelOrder(c[1], 1)
            append(process(SequencedCommand(i, 0, cmd)))
        return timer() - start, out

    return {"matching_engine": engine_only, "matching_engine_from_strings": from_strings}


def me_trades(out: list) -> list:
    from matching_engine.events import Trade

    return [(t.taker_order_id, t.maker_order_id, t.price, t.qty)
            for events in out for t in events if type(t) is Trade]


def crdtbook_runs(cmds: list) -> tuple[dict, object]:
    from crdtbook import codec
    from crdtbook.aworset import AWORSet
    from crdtbook.replica import Replica

    sides = ("buy", "sell")
    texts = [(NEW, sides[c[1]], str(c[3]), price_text(c[2])) if c[0] == NEW else tuple(c)
             for c in cmds]
    n = len(cmds)

    def origin():
        replica = Replica("origin")
        place, cancel = replica.place, replica.cancel
        dots = [None] * (n + 1)
        out = []
        append = out.append
        start = timer()
        for i, c in enumerate(texts, 1):
            if c[0] == NEW:
                placed = place(c[1], c[2], c[3], "limit", "", NOW_MS)
                dots[i] = placed.order.dot
                append(placed)
            else:
                append(cancel(dots[c[1]], NOW_MS))
        took = timer() - start
        return took, (replica, out)

    # The peer receives what the origin made, as decoded wire items.
    source, _ = origin()[1]
    items = [codec.event_to_wire(source.state.get(source.id, seq)) for seq in range(1, n + 1)]
    origin_digest = source.digest()
    del source
    fast = getattr(codec, "_fast_event", None)
    if hasattr(codec, "events_from_wire"):  # since issue 12: the one loop every message takes
        bulk = codec.events_from_wire

        def fast(item, names):
            return bulk((item,), "event", names)[0]
    names_table = getattr(codec, "_Names", None)
    careful = codec.event_from_wire
    from_entries = AWORSet.from_entries

    def peer():
        replica = Replica("peer")
        names = names_table() if names_table is not None else None
        merge_event = getattr(replica, "merge_event", None)
        merge = replica.merge
        start = timer()
        for item in items:
            event = fast(item, names) if fast is not None else None
            if event is None:
                event = careful(item)
            if merge_event is not None:
                merge_event(event)
            else:
                merge(from_entries([(event.replica, event.seq, event)]))
        took = timer() - start
        return took, (replica, None)

    return {"origin": origin, "peer": peer}, origin_digest


def crdtbook_trades(replica, out) -> list:
    fills = [f for placed in out if hasattr(placed, "fills") for f in placed.fills] \
        if out is not None else replica.fills()
    return [(f.taker.seq, f.maker.seq, f.price // TICK_UNITS, f.qty // LOT_UNITS)
            for f in fills]


def worker(spec: dict) -> dict:
    global timer
    timer = time.process_time if spec["cpu_time"] else time.perf_counter
    sys.path.insert(0, spec["root"])
    cmds = json.loads(Path(spec["workload"]).read_text())
    gcpolicy = importlib.util.spec_from_file_location("gcpolicy", spec["gcpolicy"])
    module = importlib.util.module_from_spec(gcpolicy)
    gcpolicy.loader.exec_module(module)
    modes = {"default": gc.get_threshold(), "node": tuple(module.THRESHOLDS)}
    runs = {}
    if "me" in spec["paths"]:
        runs.update(me_runs(cmds))
    digest = None
    if "crdtbook" in spec["paths"]:
        crdt, digest = crdtbook_runs(cmds)
        runs.update(crdt)
    result = {"python": sys.version.split()[0], "eps": {}, "trades": {}, "digest": digest}
    for mode, thresholds in modes.items():
        status(f"{spec['label']}: {', '.join(runs)} under GC {mode} {thresholds}, "
               f"best of {spec['repeat']} ...")
        best = timed(spec["repeat"], runs, thresholds, digest)
        for name, (took, trades) in best.items():
            result["eps"][f"{name}/{mode}"] = round(len(cmds) / took)
            result["trades"][f"{name}/{mode}"] = trades
    return result


# -- the driver -------------------------------------------------------------------
def version_of(python: str) -> tuple[int, int] | None:
    try:
        done = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    major, minor = done.stdout.split()
    return int(major), int(minor)


def find_python312(forced: str | None) -> tuple[str | None, list[str]]:
    """A Python >= 3.12: PATH first, then pyenv's versions; and what was tried."""
    if forced:
        candidates = [forced]
    else:
        # The oldest that qualifies: 3.12 is the version the targets were set with.
        candidates = [p for name in ("python3.12", "python3.13", "python3.14")
                      if (p := shutil.which(name))]
        root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
        candidates += sorted(glob.glob(f"{root}/versions/*/bin/python3.1[2-9]"))
    for python in candidates:
        found = version_of(python)
        if found is not None and found >= (3, 12):
            return python, candidates
    return None, candidates


def bench_venv(python: str) -> str:
    major, minor = version_of(python)
    venv = ROOT / ".bench-venv" / f"peers-py{major}.{minor}"
    exe = venv / "bin" / "python"
    probe = f"import matching_engine as m, cbor2, nacl, sortedcontainers; " \
            f"assert m.__version__ == '{ME_VERSION}'"
    if exe.exists() and subprocess.run([exe, "-c", probe], capture_output=True).returncode == 0:
        return str(exe)
    status(f"making {venv.relative_to(ROOT)} with {' '.join(ME_REQUIREMENTS)} ...")
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([exe, "-m", "pip", "install", "--quiet", *ME_REQUIREMENTS],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"peers: pip could not install {' '.join(ME_REQUIREMENTS)} "
                         f"into {venv}:\n{done.stderr}")
    return str(exe)


def run_worker(python: str, label: str, root: Path, paths: list[str], workload_file: str,
               args: argparse.Namespace) -> dict:
    spec = {"label": label, "root": str(root), "paths": paths, "workload": workload_file,
            "repeat": args.repeat, "cpu_time": args.cpu_time,
            "gcpolicy": str(ROOT / "node" / "gcpolicy.py")}
    done = subprocess.run([python, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"peers: the {label} run failed (exit {done.returncode})")
    return json.loads(done.stdout)


def baseline_tree(rev: str, into: str) -> Path:
    target = Path(into) / f"baseline-{rev}"
    target.mkdir()
    export(rev, "crdtbook", into=str(target))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each timing; the fastest counts (default 3)")
    parser.add_argument("--baseline", nargs="?", const=DEFAULT_BASELINE, default=None,
                        metavar="REV", help="also run crdtbook from `git archive REV` "
                        f"(default {DEFAULT_BASELINE}, before issue 12)")
    parser.add_argument("--python", help="a Python >= 3.12 for matching-engine "
                        "(default: PATH, then ~/.pyenv/versions)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with the process's CPU time instead of the wall clock "
                        "(steadier while other work shares the machine)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    status(f"generating {args.commands:,} commands (seed {args.seed}) ...")
    cmds = workload(args.commands, args.seed)
    report: dict = {"commands": len(cmds), "seed": args.seed, "repeat": args.repeat,
                    "timer": "cpu" if args.cpu_time else "wall",
                    "cancels": sum(1 for c in cmds if c[0] == CANCEL), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="crdtbook-peers-") as tmp:
        workload_file = os.path.join(tmp, "workload.json")
        Path(workload_file).write_text(json.dumps(cmds))
        python312, tried = find_python312(args.python)
        if python312 is None:
            print(f"skipped: matching-engine needs Python >= 3.12; none found "
                  f"(tried {', '.join(tried) or 'nothing'})", file=sys.stderr)
            same = sys.executable
            report["matching_engine"] = "skipped"
        else:
            same = bench_venv(python312)
            report["runs"]["same"] = run_worker(same, "matching-engine + crdtbook", ROOT,
                                                ["me", "crdtbook"], workload_file, args)
        if python312 is None or version_of(same) != version_of(sys.executable):
            report["runs"]["project"] = run_worker(sys.executable, "crdtbook (project venv)",
                                                   ROOT, ["crdtbook"], workload_file, args)
        if args.baseline:
            old = baseline_tree(args.baseline, tmp)
            report["runs"]["baseline"] = run_worker(
                same, f"crdtbook at {args.baseline}", old, ["crdtbook"], workload_file, args)
            report["baseline"] = args.baseline
    return finish(report, args.json)


def finish(report: dict, as_json: bool) -> int:
    # Identical trades everywhere is part of the claim.
    reference = None
    for run in report["runs"].values():
        for name, trades in run.pop("trades").items():
            if reference is None:
                reference = trades
            elif trades != reference:
                raise SystemExit(f"peers: {name} traded differently "
                                 f"({len(trades)} trades vs {len(reference)})")
    takers = {t[0] for t in reference or ()}
    report["trades"] = len(reference or ())
    report["traded_lots"] = sum(t[3] for t in reference or ())
    report["crossing_share"] = round(len(takers) / (report["commands"] - report["cancels"]), 3)
    report["trades_identical"] = True
    same = report["runs"].get("same")
    ratios = {}
    if same is not None:
        for mode in ("default", "node"):
            me = same["eps"][f"matching_engine/{mode}"]
            for path in ("origin", "peer"):
                ratios[f"{path}/{mode}"] = round(same["eps"][f"{path}/{mode}"] / me, 3)
                if "baseline" in report["runs"]:
                    base = report["runs"]["baseline"]["eps"][f"{path}/{mode}"]
                    ratios[f"{path}_baseline/{mode}"] = round(base / me, 3)
    report["ratios"] = ratios
    report["targets"] = TARGETS
    if as_json:
        print(json.dumps(report))
        return 0
    print(f"{report['commands']:,} commands (seed {report['seed']}, {report['cancels']:,} "
          f"cancels), {report['trades']:,} trades, {report['traded_lots']:,} lots traded, "
          f"crossing share {report['crossing_share']}; trades identical in every run")
    if report.get("matching_engine") == "skipped":
        print("matching-engine: skipped (no Python >= 3.12)")
    for label, run in report["runs"].items():
        print(f"\n[{label}] Python {run['python']}, commands/s (best of {report['repeat']}, "
              f"{report['timer']} time)")
        for key, eps in run["eps"].items():
            name, mode = key.split("/")
            ratio = ratios.get(key) if label == "same" else \
                ratios.get(f"{name}_baseline/{mode}") if label == "baseline" else None
            extra = ""
            if ratio is not None:
                extra = f"  {ratio:.3f}x matching_engine (target {TARGETS[name]}x)"
            print(f"  {name:<30} GC {mode:<8} {eps:>10,}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
