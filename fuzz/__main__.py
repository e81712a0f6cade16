"""python -m fuzz: run seeded delivery-order schedules until a budget runs out.

    python -m fuzz [--seed S | --seeds N] [--replicas R] [--events E] [--budget SECONDS]
                   [--plant NAME] [--replay FILE]

Without --seed it runs seeds start, start+1, ... (N of them with --seeds) until
the time budget is spent, with a progress line (runs, events/s, failures). On
the first failure it prints the seed and the violation, shrinks the schedule
to the smallest one that still fails, writes it to fuzz-failures/ as JSON
(replay it with --replay), prints it, and exits with status 1.

--plant NAME runs with a deliberate bug (see fuzz/plants.py) to show that the
fuzzer catches it: there a failure is the expected outcome.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import time
from pathlib import Path

from .checks import run_and_check
from .generate import schedule as make_schedule
from .plants import PLANTS
from .reduce import reduce
from .sim import Schedule

FAILURES = Path("fuzz-failures")


def check(schedule: Schedule) -> str | None:
    """None if the schedule passes, else a one-line description of what broke."""
    try:
        run_and_check(schedule)
    except AssertionError as exc:
        return (str(exc).splitlines() or ["assertion failed"])[0][:300]
    except Exception as exc:  # a crash is a failure too, and must be reproducible
        return f"crash: {type(exc).__name__}: {exc}"[:300]
    return None


def to_json(schedule: Schedule) -> str:
    actions = ",\n  ".join(json.dumps(list(a)) for a in schedule.actions)
    offsets = json.dumps(list(schedule.offsets))
    byzantine = json.dumps([list(b) for b in schedule.byzantine])
    head = (f'{{"replicas": {schedule.replicas}, "offsets": {offsets}, '
            f'"byzantine": {byzantine}, "actions": [')
    return f"{head}\n  {actions}\n]}}\n"


def from_json(text: str) -> Schedule:
    data = json.loads(text)

    def tuples(value):
        return tuple(tuples(v) for v in value) if isinstance(value, list) else value

    return Schedule(data["replicas"], tuple(data["offsets"]), tuples(data["actions"]),
                    tuples(data.get("byzantine", [])))


def report_failure(schedule: Schedule, failure: str, label: str, reduce_s: float) -> None:
    print(f"\nFAIL {label}: {failure}", flush=True)
    print(f"shrinking {len(schedule.actions)} actions (up to {reduce_s:g}s) ...", flush=True)
    small = reduce(schedule, lambda s: check(s) is not None, budget_s=reduce_s)
    FAILURES.mkdir(exist_ok=True)
    path = FAILURES / f"{label.replace(' ', '-')}.json"
    path.write_text(to_json(small))
    print(f"smallest failing schedule: {len(small.actions)} actions "
          f"({check(small)}), saved to {path}")
    if len(small.actions) <= 40:
        print(to_json(small), end="")
    print(f"replay: python -m fuzz --replay {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seed", type=int, help="run exactly this seed")
    which.add_argument("--seeds", type=int, help="run this many seeds, from --start")
    which.add_argument("--replay", type=Path, help="run a schedule saved by a failure")
    parser.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--replicas", type=int, default=0,
                        help="replica slots per run (default: 2-6, varying by seed)")
    parser.add_argument("--events", type=int, default=150,
                        help="orders and cancels per run (default 150)")
    parser.add_argument("--budget", type=float, default=30.0,
                        help="seconds to keep running (default 30)")
    parser.add_argument("--reduce-budget", type=float, default=30.0,
                        help="seconds to spend shrinking a failure (default 30)")
    parser.add_argument("--plant", choices=sorted(PLANTS), help="run with a deliberate bug")
    args = parser.parse_args(argv)
    if args.replicas < 0 or args.replicas == 1 or args.events < 1 or args.budget <= 0:
        parser.error("--replicas must be 0 or >= 2, --events >= 1, --budget > 0")

    plant = PLANTS[args.plant]() if args.plant else contextlib.nullcontext()
    with plant:
        if args.replay:
            try:
                schedule = from_json(args.replay.read_text())
            except (OSError, ValueError, KeyError, TypeError) as exc:
                parser.error(f"cannot read {args.replay}: {exc}")
            failure = check(schedule)
            print(f"replay {args.replay}: {failure or 'passes'}")
            return 1 if failure else 0
        return run_seeds(args)


def run_seeds(args) -> int:
    if args.seed is not None:
        seeds = iter([args.seed])
    elif args.seeds is not None:
        seeds = iter(range(args.start, args.start + args.seeds))
    else:
        seeds = itertools.count(args.start)
    started = time.monotonic()
    runs = events = 0
    last_report = started
    tty = sys.stderr.isatty()
    for seed in seeds:
        replicas = args.replicas or 2 + seed % 5
        schedule = make_schedule(seed, replicas, args.events)
        failure = check(schedule)
        runs += 1
        events += args.events
        if failure is not None:
            report_failure(schedule, failure,
                           f"seed {seed} replicas {replicas} events {args.events}",
                           args.reduce_budget)
            print(f"reproduce: python -m fuzz --seed {seed} --replicas {replicas} "
                  f"--events {args.events}" + (f" --plant {args.plant}" if args.plant else ""))
            return 1
        now = time.monotonic()
        if now - last_report >= (0.5 if tty else 5.0):
            last_report = now
            line = (f"fuzz: {runs} schedules, {events:,} events, "
                    f"{runs / (now - started):.1f} schedules/s, "
                    f"{events / (now - started):,.0f} events/s, 0 failures, "
                    f"{now - started:.0f}/{args.budget:.0f}s")
            print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr,
                  flush=True)
        if now - started >= args.budget:
            break
    elapsed = max(time.monotonic() - started, 1e-9)
    print(f"\nfuzz: {runs} schedules, {events:,} events in {elapsed:.1f}s "
          f"({runs / elapsed:.1f} schedules/s, {events / elapsed:,.0f} events/s), 0 failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
