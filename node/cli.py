"""The ``crdtbook`` command line.

The networked node (HTTP API, anti-entropy, registry) is the next issue.
Until it lands, ``crdtbook devnet --demo`` runs an in-process demonstration
of the core, and every other subcommand says plainly that the node is not
built yet and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys

PENDING = ("node", "order", "cancel", "book", "fills", "status", "registry")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crdtbook", description="A leaderless distributed exchange (CRDT order book)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in PENDING:
        cmd = sub.add_parser(name, help=f"{name} (node not built yet)")
        cmd.add_argument("args", nargs=argparse.REMAINDER)
    devnet = sub.add_parser("devnet", help="local cluster (for now: an in-process demo)")
    devnet.add_argument("-n", type=int, default=3, help="number of nodes (not used yet)")
    devnet.add_argument("--demo", action="store_true", help="run the scripted demo")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "devnet":
        print("crdtbook devnet: node not built yet; running the in-process core demo instead",
              file=sys.stderr)
        from .demo import run

        return 0 if run() else 1
    print(f"crdtbook {args.command}: node not built yet (the core is; see README.md)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
