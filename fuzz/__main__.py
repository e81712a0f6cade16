"""python -m fuzz: run seeded delivery-order schedules until a budget runs out.

    python -m fuzz [--seed S | --seeds N] [--replicas R] [--events E] [--budget SECONDS]

Without --seed it runs seeds 0, 1, 2, ... (or N of them with --seeds) until
the time budget is spent, printing a progress line. On the first failure it
prints the seed, the violation and the command that reproduces it, and exits
with status 1.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time

from .schedule import check_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seed", type=int, help="run exactly this seed")
    which.add_argument("--seeds", type=int, help="run this many seeds (0..N-1)")
    parser.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--replicas", type=int, default=0,
                        help="replicas per run (default: 2-7, varying by seed)")
    parser.add_argument("--events", type=int, default=300, help="steps per run (default 300)")
    parser.add_argument("--budget", type=float, default=30.0,
                        help="seconds to keep running (default 30)")
    args = parser.parse_args(argv)
    if args.replicas < 0 or args.replicas == 1 or args.events < 1 or args.budget <= 0:
        parser.error("--replicas must be 0 or >= 2, --events >= 1, --budget > 0")

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
        replicas = args.replicas or 2 + seed % 6
        failure, made = check_run(seed, replicas, args.events)
        runs += 1
        events += made
        now = time.monotonic()
        if failure is not None:
            print(f"\nFAIL seed {seed} ({replicas} replicas, {args.events} steps): {failure}")
            print(f"reproduce: python -m fuzz --seed {seed} --replicas {replicas} "
                  f"--events {args.events}")
            return 1
        if now - last_report >= 1.0 or args.seed is not None:
            last_report = now
            line = (f"fuzz: {runs} runs, {events:,} events, "
                    f"{events / max(now - started, 1e-9):,.0f} events/s, 0 failures, "
                    f"{now - started:.0f}/{args.budget:.0f}s")
            print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr,
                  flush=True)
        if now - started >= args.budget:
            break
    elapsed = time.monotonic() - started
    print(f"\nfuzz: {runs} runs, {events:,} events in {elapsed:.1f}s "
          f"({events / max(elapsed, 1e-9):,.0f} events/s), 0 failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
