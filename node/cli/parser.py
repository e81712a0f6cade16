"""The ``crdtbook`` command line: its grammar, its help, and what it says to slips.

Theory of operation
-------------------
``parse(argv)`` turns the arguments into a namespace or raises ``UsageError``
(exit status 2) with a line saying what is wrong and, for the common slips,
a hint saying what to type instead. argparse does the parsing; this module
adds three things it lacks:

* **Global options anywhere.** ``--node``, ``--json``, ``--no-color``,
  ``--token``, ``--admin-token``, ``--data-dir`` and ``--book`` are options of
  the top-level parser *and* of every subcommand that uses them (there with
  ``SUPPRESS`` as default, so a value given before the subcommand is kept),
  so ``crdtbook --node URL book`` and ``crdtbook book --node URL`` mean the
  same. One given before a subcommand that has no use for it is an error.
* **Hints.** Negative amounts (``-1@12``, which argparse would take for an
  option), a price given as a second word (``3 12``), a bare quantity
  without ``--type market``, a mistyped command: each gets the command that
  was probably meant.
* **Help.** Every subcommand has a description and an example.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import re
import textwrap

from crdtbook.dot import DotError, check_replica

from .. import logs
from .client import DEFAULT_NODE, CliError

TYPES = ("limit", "market", "ioc", "fok", "post_only")


class UsageError(CliError):
    """A mistake in the command line: exit status 2, with hints of what to type."""

    def __init__(self, message: str, *hints: str, prog: str = "crdtbook") -> None:
        super().__init__(message, 2)
        self.hints = [h for h in hints if h]
        self.prog = prog


# -- argument types --------------------------------------------------------------
def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (port 0-65535)")
    return host or "127.0.0.1", int(port)


def join_token(text: str) -> str:
    from ..store import jointoken

    if not jointoken.valid(text):
        raise argparse.ArgumentTypeError(f"a join token is {jointoken.FORMAT}")
    return text


def book_name(text: str) -> str:
    try:
        return check_replica(text)  # same alphabet: it travels in HTTP headers
    except DotError:
        raise argparse.ArgumentTypeError(
            f"book name {text[:40]!r} must be 1-64 letters, digits, '.', '_' or '-'") from None


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.01 <= value <= 3600:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0.01 and 3600 seconds")
    return value


def rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1e9:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 (unlimited) to 1e9 per second")
    return value


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


# -- global options ----------------------------------------------------------------
GLOBAL: dict[str, tuple[str, dict]] = {
    "node": ("--node", {"metavar": "URL", "default": None,
                        "help": f"the node to talk to (default $CRDTBOOK_NODE, else "
                                f"{DEFAULT_NODE})"}),
    "json": ("--json", {"action": "store_true", "default": False,
                        "help": "print the node's JSON, raw values and all"}),
    "no_color": ("--no-color", {"action": "store_true", "default": False,
                                "help": "no colour, even on a terminal (as $NO_COLOR)"}),
    "token": ("--token", {"metavar": "TOKEN", "default": None,
                          "help": "an account's token (default $CRDTBOOK_TOKEN, else the "
                                  "default account's, read from --data-dir)"}),
    "admin_token": ("--admin-token", {"metavar": "TOKEN", "default": None,
                                      "help": "the node's admin token (default "
                                              "$CRDTBOOK_ADMIN_TOKEN, else read from "
                                              "--data-dir)"}),
    "data_dir": ("--data-dir", {"metavar": "DIR", "default": None,
                                "help": "the node's data directory (default "
                                        "./crdtbook-data/<book>-<port of --node>, as "
                                        "`crdtbook node` picks it)"}),
    "book": ("--book", {"type": book_name, "default": "default",
                        "help": "book name (default: default)"}),
}
PUBLIC = ("node", "json", "no_color")  # market data: no token
CLIENT = (*PUBLIC, "token", "data_dir", "book")
ADMIN = ("node", "json", "no_color", "admin_token", "data_dir", "book")


class Parser(argparse.ArgumentParser):
    """argparse with usage errors raised (with hints), not printed and exited."""

    def error(self, message: str):
        raise UsageError(message, *hints_for(self, message), f"see: {self.prog} --help",
                         prog=self.prog)


def hints_for(parser: argparse.ArgumentParser, message: str) -> list[str]:
    wrong = re.search(r"argument ([^:]+): invalid choice: '([^']*)' \(choose from (.*)\)",
                      message)
    if parser.prog == "crdtbook order" and (
            "required: QTY@PRICE" in message or (wrong and wrong[1] == "buy|sell")):
        return ["the side comes first, then QTY@PRICE: crdtbook order sell 3@12"]
    if wrong:
        choices = re.findall(r"'([^']*)'", wrong[3])
        close = difflib.get_close_matches(wrong[2], choices, n=1)
        if close:
            option = wrong[1].split("/")[0]
            return [f"did you mean: {option} {close[0]}" if option.startswith("-")
                    else f"did you mean: {parser.prog} {close[0]}"]
    return []


def subcommand(sub, name: str, summary: str, description: str, example: str,
               options: tuple[str, ...] = (), **overrides: str) -> argparse.ArgumentParser:
    """A subcommand with its help, its example, and the global options it takes
    (``overrides``: a global option's help, said for this command)."""
    cmd = sub.add_parser(name, help=summary, description=textwrap.fill(description, 79),
                         epilog="example:\n  " + example,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    for dest in options:
        flag, settings = GLOBAL[dest]
        cmd.add_argument(flag, **dict(settings, default=argparse.SUPPRESS,
                                      help=overrides.get(dest, settings["help"])))
    cmd.set_defaults(accepts=frozenset(options))
    return cmd


def paging(cmd: argparse.ArgumentParser) -> None:
    group = cmd.add_mutually_exclusive_group()
    group.add_argument("--limit", type=positive_int, default=100,
                       help="show at most this many, the oldest first (default 100)")
    group.add_argument("--all", action="store_true", help="page through everything")


def version() -> str:
    try:
        return importlib.metadata.version("crdtbook")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown (not installed)"


def build_parser() -> Parser:
    parser = Parser(
        prog="crdtbook",
        description=textwrap.fill("A leaderless distributed exchange: every node holds the "
                                  "whole order book as a CRDT of events and matches it "
                                  "itself.", 79),
        epilog="example:\n  crdtbook devnet --demo        # a local 3-node cluster, with "
               "orders\n\n`crdtbook COMMAND --help` tells more about each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"crdtbook {version()}")
    for flag, settings in GLOBAL.values():
        parser.add_argument(flag, **settings)
    parser.set_defaults(accepts=frozenset())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    node = subcommand(
        sub, "node", "run a node (HTTP API, gossip, embedded registry)",
        "Run a node: it serves the client API, gossips with its peers and keeps its "
        "state in a data directory. Started with no --peer, it founds a new cluster and "
        "prints the cluster's join token; with --peer URL and that token, it joins. "
        "SIGINT or SIGTERM stops it cleanly (exit status 0).",
        "crdtbook node --listen 127.0.0.1:8701 --peer http://127.0.0.1:8700 "
        "--join-token crdtbook-join-c1c975d7a92957c392dea24cb6374d78",
        ("data_dir", "book"),
        data_dir="keep the node's state here: identity, every event, history (default "
                 "./crdtbook-data/<book>-<port>)")
    node.add_argument("--listen", type=listen_address, default=("127.0.0.1", 8700),
                      metavar="HOST:PORT", help="address to serve on (default 127.0.0.1:8700; "
                      "port 0 picks a free one)")
    node.add_argument("--peer", action="append", default=[], metavar="URL",
                      help="a node to join through (repeatable); the rest are discovered")
    node.add_argument("--registry", "--grape", metavar="URL", dest="registry",
                      help="use this registry (a crdtbook registry or a Grenache grape's HTTP "
                           "API) instead of the embedded ones")
    node.add_argument("--registry-ttl", type=seconds, default=60.0, metavar="SECONDS",
                      help="how long the registry keeps an announcement (in seconds; a "
                           "grape's --dpa is the same in milliseconds); the node re-announces "
                           "every third of it (default 60)")
    node.add_argument("--rpc-listen", type=listen_address, default=("127.0.0.1", 0),
                      metavar="HOST:PORT",
                      help="serve Grenache PeerRPC here, announced as crdtbook:<book>:rpc "
                           "(default 127.0.0.1 on a free port)")
    admission = node.add_mutually_exclusive_group()
    admission.add_argument("--join-token", type=join_token, metavar="TOKEN",
                           help="the cluster's join token, to be admitted (default "
                                "$CRDTBOOK_JOIN_TOKEN); a founder makes it the cluster's "
                                "token instead of a new one")
    admission.add_argument("--open", action="store_true",
                           help="found an open cluster: members admit any node that reaches "
                                "them, without a join token")
    node.add_argument("--bootstrap-expect", type=positive_int, default=0, metavar="N",
                      help="start together with other nodes: found nothing alone, wait until "
                           "N nodes (this one included) started with the same N find each "
                           "other; the smallest id founds, the rest join it (all need the "
                           "same --join-token, or all --open)")
    node.add_argument("--ephemeral", action="store_true",
                      help="keep nothing: a throwaway store, a new replica each start, and a "
                           "leave on stop")
    node.add_argument("--rejoin-as-new", action="store_true",
                      help="if this data directory's replica left or was evicted, set its "
                           "data aside and join as a new replica")
    node.add_argument("--pull-interval", type=seconds, default=1.0, metavar="SECONDS",
                      help="anti-entropy pull interval (default 1.0)")
    noauth = node.add_mutually_exclusive_group()
    noauth.add_argument("--no-auth", action="store_true",
                        help="client API without tokens: anyone who reaches it trades as "
                             "anyone; loopback only (protected mode)")
    noauth.add_argument("--insecure-no-auth", action="store_true",
                        help="client API without tokens on any address (warned at every "
                             "start)")
    node.add_argument("--rate-limit", type=rate, default=1000.0, metavar="ORDERS_PER_S",
                      help="orders and cancels per second per account (default 1000; 0: "
                           "unlimited)")
    node.add_argument("--rate-burst", type=positive_int, default=2000, metavar="N",
                      help="how many an account may send at once (default 2000)")
    node.add_argument("--peer-stream", action="store_true",
                      help="push to peers over one WebSocket each (/peer/stream), and "
                           "serve that route (default: HTTP pushes only)")
    node.add_argument("--log-level", choices=logs.LEVELS, default="info")

    order = subcommand(
        sub, "order", "place an order at your node",
        "Place a buy or sell order. A limit order is QTY@PRICE (3@12: 3 at 12); a market "
        "order is a bare QTY with --type market: it takes the best prices there are, and "
        "what it cannot fill at once is not kept. Amounts are positive decimals with at "
        "most 8 decimal places. The order belongs to the account whose token is sent.",
        "crdtbook order sell 3@12\n  crdtbook order buy 5 --type market",
        CLIENT)
    order.add_argument("side", choices=("buy", "sell"), metavar="buy|sell",
                       help="which way: buy or sell")
    order.add_argument("amount", metavar="QTY@PRICE", help="e.g. 3@12 (market orders: just QTY)")
    order.add_argument("--type", choices=TYPES, default="limit",
                       help="limit (default), market (no price), ioc (fill what can be "
                            "now, drop the rest), fok (all at once or nothing), post_only "
                            "(rest only, never take)")
    order.add_argument("--account", default="",
                       help="the account the order is for (default: the token's)")
    order.add_argument("--ack", choices=("local", "replicated", "all"), default="local",
                       help="answer once durable here (local, default), also held by a peer "
                            "(replicated) or by every member (all)")
    order.add_argument("--timeout", type=seconds, default=5.0, metavar="SECONDS",
                       help="how long --ack replicated/all waits (default 5)")

    cancel = subcommand(
        sub, "cancel", "cancel one of your orders",
        "Cancel an order placed at this node, by the account that placed it. ID is the "
        "whole order id, REPLICA:SEQ, as `crdtbook order` printed it (tables shorten "
        "replica ids to 10 characters; `--json` shows them whole).",
        "crdtbook cancel 4tgy6z7sxc5hpxzvdvbvrtnglz22buok:3", CLIENT)
    cancel.add_argument("id", help="order id, REPLICA:SEQ")

    show = subcommand(
        sub, "order-status", "show one order",
        "Show one order: what it asked for, what filled, what rests, and whether that is "
        "final. ID is the whole order id, REPLICA:SEQ.",
        "crdtbook order-status 4tgy6z7sxc5hpxzvdvbvrtnglz22buok:3", CLIENT)
    show.add_argument("id", help="order id, REPLICA:SEQ")

    book = subcommand(
        sub, "book", "show the order book",
        "Show the book: price levels with their total quantity and number of orders, "
        "bids on the left (best first), asks on the right.",
        "crdtbook book --depth 5", PUBLIC)
    book.add_argument("--depth", type=positive_int, help="price levels per side")
    book.add_argument("--watch", action="store_true",
                      help="keep it on screen, live from the node's stream, until Ctrl-C")

    trades = subcommand(
        sub, "trades", "show the latest trades, or follow them live",
        "Show the latest trades from the node's stream (GET /ws, channel trades). With "
        "--follow, keep printing trades as they happen: provisional first, then marked "
        "final, or retracted if a late event undid them.",
        "crdtbook trades --follow", PUBLIC)
    trades.add_argument("--follow", "-f", action="store_true",
                        help="keep printing trades as they happen until Ctrl-C")

    fills = subcommand(
        sub, "fills", "list fills in replay order, oldest first",
        "List fills in replay order, the oldest first. A provisional fill (marked *) may "
        "still change if an earlier event arrives; a final one never does.",
        "crdtbook fills --account alice --limit 20", CLIENT)
    fills.add_argument("--account", help="only fills where this account is taker or maker")
    paging(fills)

    orders = subcommand(
        sub, "orders", "list orders, oldest first",
        "List orders, the oldest first, with what became of each (needs the account's "
        "token, or the admin token).",
        "crdtbook orders --open", CLIENT)
    orders.add_argument("--account", help="only this account's orders")
    orders.add_argument("--open", action="store_true", help="only orders still resting")
    paging(orders)

    events = subcommand(
        sub, "events", "list events in position order",
        "List every event the node holds (orders, cancels, joins, leaves, evicts) in "
        "position order, the order every node replays them in.",
        "crdtbook events --all --json > events.json", PUBLIC)
    paging(events)

    subcommand(
        sub, "status", "show the node, its members' health and finality",
        "Show the node (replica, book, data directory, events), how far fills are final "
        "and, one line per member, its health and when it was last heard from. A member "
        "that holds finality back is named, with the command to evict it if it is gone "
        "for good.",
        "crdtbook status --node http://127.0.0.1:8701", PUBLIC)

    subcommand(
        sub, "leave", "leave the cluster for good, then stop the node",
        "Take this node's replica out of the cluster for good: its resting orders are "
        "cancelled on every node, then the node stops. (A plain stop, Ctrl-C, is not a "
        "leave: the node comes back as the same replica.) Needs the admin token.",
        "crdtbook leave --node http://127.0.0.1:8702", ADMIN)

    account = subcommand(
        sub, "account", "manage this node's accounts (as its operator)",
        "Add an account (its token is printed once: the node keeps only a hash), list "
        "them, or revoke one (its token stops working at once). Needs the admin token.",
        "crdtbook account add alice", ADMIN)
    account.add_argument("action", choices=("add", "list", "revoke"))
    account.add_argument("name", nargs="?", help="the account (add, revoke)")

    evict = subcommand(
        sub, "evict", "evict a vanished replica so finality can advance",
        "Remove a replica that is gone for good (a machine that died): its resting "
        "orders are cancelled everywhere and finality no longer waits for it. REPLICA is "
        "the whole id (`crdtbook status` names the one holding finality back). Needs the "
        "admin token.",
        "crdtbook evict lm3essiouzdz3q6axtd7iiebao5vzfbm", ADMIN)
    evict.add_argument("replica", help="the replica id to evict, whole")
    evict.add_argument("--force", action="store_true",
                       help="evict even if some peers cannot be reached (see docs/semantics.md)")

    dir_only = "only to find the default data directory by its port"
    subcommand(
        sub, "admin-token", "print the admin token of a local data directory",
        "Print the node's admin token, read from its data directory (for scripts, or to "
        "act as the operator from another machine).",
        "crdtbook admin-token --data-dir crdtbook-data/default-8700",
        ("node", "data_dir", "book"), node=dir_only)

    join = subcommand(
        sub, "join-token", "print (or rotate) the cluster's join token",
        "Print the join token kept in a member's data directory: what a new node needs "
        "to be admitted. --rotate replaces it, on this member only.",
        "crdtbook join-token --rotate", ("node", "json", "data_dir", "book"), node=dir_only)
    join.add_argument("--rotate", action="store_true",
                      help="replace it with a new one, on this member only")

    registry = subcommand(
        sub, "registry", "run a standalone grape-compatible registry",
        "Run a registry that nodes announce themselves to and look each other up in "
        "(the HTTP API of a Grenache grape). Nodes use it with --registry URL.",
        "crdtbook registry --listen 127.0.0.1:30001")
    registry.add_argument("--listen", type=listen_address, default=("127.0.0.1", 30001),
                          metavar="HOST:PORT", help="default 127.0.0.1:30001")
    registry.add_argument("--log-level", choices=logs.LEVELS, default="info")

    devnet = subcommand(
        sub, "devnet", "start a local cluster of nodes",
        "Start a local cluster of real node processes on free loopback ports and print "
        "commands to try against it; Ctrl-C stops them all. --demo also sends crossing "
        "orders to different nodes and shows that every node agrees.",
        "crdtbook devnet -n 3 --demo", ("data_dir", "book"),
        data_dir="keep the nodes' data directories under DIR (default: a new temporary "
                 "folder)")
    devnet.add_argument("-n", type=positive_int, default=3, help="number of nodes (default 3)")
    devnet.add_argument("--demo", action="store_true",
                        help="submit scripted crossing orders and show every node's result")
    return parser


COMMANDS = ("node", "order", "cancel", "order-status", "book", "fills", "orders", "events",
            "status", "leave", "account", "evict", "admin-token", "join-token", "registry",
            "devnet")
_NEGATIVE = re.compile(r"-[0-9.]+(@.*)?")


def parse(argv: list[str]) -> argparse.Namespace:
    """The namespace for ``argv``, or UsageError (with hints) for a mistake."""
    slips_before(argv)
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        prog = f"crdtbook {args.command}" if args.command else "crdtbook"
        raise UsageError(f"unrecognized arguments: {' '.join(extras)}",
                         *extra_hints(args, extras), f"see: {prog} --help", prog=prog)
    for dest, (flag, settings) in GLOBAL.items():
        if args.command and dest not in args.accepts \
                and getattr(args, dest) != settings["default"]:
            raise UsageError(f"{flag} does not apply to `crdtbook {args.command}`",
                             f"see: crdtbook {args.command} --help",
                             prog=f"crdtbook {args.command}")
    return args


def slips_before(argv: list[str]) -> None:
    """Slips argparse would report misleadingly: a negative amount (``-1@12``
    looks like an option to it)."""
    for token in argv:
        if _NEGATIVE.fullmatch(token):
            if "order" not in argv:
                raise UsageError(f"{token!r}: every number crdtbook takes is positive")
            side = "sell" if "sell" in argv else "buy"
            raise UsageError(f"{token!r}: amounts are positive (buy or sell says which way)",
                             f"try: crdtbook order {side} {token[1:]}", prog="crdtbook order")


def extra_hints(args: argparse.Namespace, extras: list[str]) -> list[str]:
    """What was meant by words left over: ``order sell 3 12`` is ``order sell 3@12``."""
    if args.command != "order":
        return []
    rest = "".join(extras)
    meant = args.amount + (rest if rest.startswith("@") or args.amount.endswith("@")
                           else "@" + rest)
    if re.fullmatch(r"[0-9.]+@[0-9.]+", meant):
        return [f"QTY@PRICE is one word: crdtbook order {args.side} {meant}"]
    return []
