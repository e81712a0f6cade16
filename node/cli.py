"""The ``crdtbook`` command line.

The networked node (HTTP API, anti-entropy, registry) is the next issue; until
it lands every subcommand says so plainly and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys

COMMANDS = ("node", "order", "cancel", "book", "fills", "status", "registry", "devnet")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crdtbook", description="A leaderless distributed exchange (CRDT order book)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        cmd = sub.add_parser(name, help=f"{name} (not built yet)")
        cmd.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 0
    print(f"crdtbook {args.command}: node not built yet (the core is; see README.md)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
