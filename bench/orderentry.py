"""Instructions per order on a node's HTTP batch path, stage by stage, without HTTP.

Usage: python bench/orderentry.py [--batches N] [--rev REV] [--json]

A node that takes ``POST /orders`` with a list (the cluster bench's batches
of 100) parses the JSON (``parse_orders``), gives each order its account
and takes it from the rate limit (``auth.entitled``), places the batch
(``Replica.place_many``), builds each order's answer
(``orderentry.placed_answers``, or ``placed_json`` per order where that is
all a revision has) and encodes the response (``json_response``). The
orders are bench/cluster.py's (seeded prices around a mid, so a share
cross), one replica takes them all, with the node's collector policy
(``node.gcpolicy.tune``). The stages run cumulatively, each in its own
process under valgrind's callgrind with N and 3N batches: what the extra
2N batches cost over 200N orders, less the previous stage's, is the stage's
instructions per order (the bodies are made in every stage, so they cancel
out; noise-free, so figures compare on a busy machine).

``--rev REV`` measures the code of revision REV instead (exported with
``git archive`` into a temporary folder): the same stages, for a before and
after. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import callgrind  # noqa: E402
from figures import print_figures  # noqa: E402
from workload import order_stream  # noqa: E402

STAGES = ("setup", "parse", "entitle", "place", "answer", "dump")
BATCH = 100




def run(stage: str, batches: int, code: str) -> None:
    """The stages up to ``stage``, in this process (under callgrind when measured)."""
    sys.path.insert(0, code)
    from crdtbook.replica import Replica
    from node.api import auth, orderentry, requests
    from node.api.app import json_response
    from node.gcpolicy import tune

    tune()
    orders = order_stream(random.Random(1))
    bodies = [json.dumps([next(orders) for _ in range(BATCH)]).encode()
              for _ in range(batches)]

    class Limiter:
        def take(self, costs) -> None:
            pass

    class Node:
        limiter = Limiter()

    node, who = Node(), auth.Principal("alice")
    replica = Replica("n" + "a" * 31)
    answers = getattr(orderentry, "placed_answers", None)
    upto = STAGES.index(stage)
    for i, body in enumerate(bodies):
        if upto < 1:
            continue
        parsed, _ = requests.parse_orders(body)
        if upto < 2:
            continue
        parsed = auth.entitled(node, who, parsed)
        if upto < 3:
            continue
        placed = replica.place_many(parsed, now_ms=1_764_000_000_000 + i)
        if upto < 4:
            continue
        results = (answers(replica, placed, None) if answers is not None
                   else [orderentry.placed_json(replica, p, None) for p in placed])
        if upto < 5:
            continue
        json_response(201, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--rev", help="measure this revision's code instead")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # one measured run
    parser.add_argument("--code", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        run(args.stage, args.batches, args.code)
        return
    root = str(Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory() as out_dir:
        code = root
        if args.rev:
            code = os.path.join(out_dir, "code")
            os.mkdir(code)
            archive = subprocess.run(["git", "-C", root, "archive", args.rev],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", code], input=archive, check=True)
        # once without valgrind: modules compiled since their last change are compiled here
        subprocess.run([sys.executable, __file__, "--stage", "dump", "--batches", "2",
                        "--code", code], check=True)
        totals = {}
        for stage in STAGES:
            for count in (args.batches, 3 * args.batches):
                print(f"callgrind: {stage} ({count:,} batches) ...", file=sys.stderr)
                out = os.path.join(out_dir, f"callgrind.{stage}.{count}")
                totals[stage, count] = callgrind.run_script(
                    out, __file__, "--stage", stage, "--batches", str(count), "--code", code)
    orders = 2 * args.batches * BATCH
    extra = {s: totals[s, 3 * args.batches] - totals[s, args.batches] for s in STAGES}
    per = {s: round((extra[s] - extra[STAGES[i - 1]]) / orders)
           for i, s in enumerate(STAGES) if i}
    figures = {"revision": args.rev or "this checkout", "orders": orders,
               **{f"{s}_instructions_per_order": n for s, n in per.items()},
               "total_instructions_per_order": sum(per.values())}
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
