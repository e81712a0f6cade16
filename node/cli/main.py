"""The ``crdtbook`` command line.

    crdtbook node [--listen HOST:PORT] [--peer URL ...] [--registry URL] [--book NAME]
                  [--data-dir DIR | --ephemeral] [--rejoin-as-new] [--log-level LEVEL]
                  [--join-token TOKEN | --open] [--bootstrap-expect N]
                  [--no-auth | --insecure-no-auth] [--rate-limit R] [--rate-burst N]
    crdtbook order buy|sell QTY@PRICE [--type T] [--account A] [--ack replicated] [--token T]
    crdtbook cancel ID | order-status ID | leave | evict REPLICA   [--admin-token T]
    crdtbook admin-token [--data-dir DIR]
    crdtbook account add NAME | list | revoke NAME   [--admin-token T]
    crdtbook join-token [--rotate] [--data-dir DIR]
    crdtbook book [--depth N] [--watch] | trades [--follow] | status
    crdtbook fills [--account A] | orders [--account A] [--open] | events   [--limit N | --all]
    crdtbook registry [--listen HOST:PORT]
    crdtbook devnet [-n 3] [--demo] [--data-dir DIR]

Client commands talk to ``--node`` (default ``$CRDTBOOK_NODE``, else
http://127.0.0.1:8700); read commands take ``--json`` for scripts. Errors are
one line on stderr and a non-zero exit, never a traceback.

``leave`` and ``evict`` act as the node's operator and send its admin token:
``--admin-token``, else ``$CRDTBOOK_ADMIN_TOKEN``, else the ``admin-token``
file of the node's data directory when the CLI runs on the node's machine
(``--data-dir``, by default the directory ``crdtbook node`` would pick for
that port: ./crdtbook-data/<book>-<port>). ``account`` acts as the
operator too. Every other client command sends an account's token:
``--token``, else ``$CRDTBOOK_TOKEN``, else the default account's, from
``account-token`` in that same data directory (if there is one; public
reads need none).
"""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import urlencode, urlsplit

from crdtbook.dot import DotError, check_replica

from .. import logs
from . import client
from .client import CliError

TYPES = ("limit", "market", "ioc", "fok", "post_only")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crdtbook",
        description="A leaderless distributed exchange: every node holds the whole order "
                    "book as a CRDT of events and matches it itself.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    node = sub.add_parser("node", help="run a node (HTTP API, gossip, embedded registry)")
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
    node.add_argument("--book", type=book_name, default="default",
                      help="book name (default: default)")
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
    node.add_argument("--data-dir", metavar="DIR",
                      help="keep the node's state here: identity, every event, history "
                           "(default ./crdtbook-data/<book>-<port>)")
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
    node.add_argument("--log-level", choices=logs.LEVELS, default="info")

    def client_command(name: str, help: str, read: bool = True) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help)
        cmd.add_argument("--node", metavar="URL",
                         help="node to talk to (default $CRDTBOOK_NODE or "
                              f"{client.DEFAULT_NODE})")
        cmd.add_argument("--json", action="store_true", help="print the API's JSON")
        cmd.add_argument("--token", metavar="TOKEN",
                         help="an account's token (default $CRDTBOOK_TOKEN, else the default "
                              "account's, read from --data-dir)")
        data_dir_options(cmd)
        return cmd

    order = client_command("order", "submit an order to your node")
    order.add_argument("side", choices=("buy", "sell"))
    order.add_argument("amount", metavar="QTY@PRICE", help="e.g. 3@12 (market orders: just QTY)")
    order.add_argument("--type", choices=TYPES, default="limit")
    order.add_argument("--account", default="", help="account label")
    order.add_argument("--ack", choices=("local", "replicated", "all"), default="local",
                       help="answer once durable here (local, default), also held by a peer "
                            "(replicated) or by every member (all)")
    order.add_argument("--timeout", type=seconds, default=5.0, metavar="SECONDS",
                       help="how long --ack replicated/all waits (default 5)")

    cancel = client_command("cancel", "cancel an order placed at your node")
    cancel.add_argument("id", help="order id, replica:seq")

    show = client_command("order-status", "show one order")
    show.add_argument("id", help="order id, replica:seq")

    book = client_command("book", "show the book")
    book.add_argument("--depth", type=positive_int, help="price levels per side")
    book.add_argument("--watch", action="store_true",
                      help="keep it on screen, live from the node's stream, until Ctrl-C")
    trades = client_command("trades", "show the latest trades from the node's stream")
    trades.add_argument("--follow", "-f", action="store_true",
                        help="keep printing trades as they happen, marked final or retracted, "
                             "until Ctrl-C")
    fills = client_command("fills", "list fills in replay order, oldest first")
    fills.add_argument("--account", help="only fills where this account is taker or maker")
    paging(fills)
    orders = client_command("orders", "list orders, oldest first")
    orders.add_argument("--account", help="only this account's orders")
    orders.add_argument("--open", action="store_true", help="only orders still resting")
    paging(orders)
    events = client_command("events", "list events in position order")
    paging(events)
    leave = client_command("leave", "leave the cluster for good (cancels this node's "
                           "resting orders everywhere), then stop the node")
    admin_options(leave)
    client_command("status", "show the node's status, peers and final frontier")
    account = client_command("account", "manage this node's accounts (as its operator)")
    account.add_argument("action", choices=("add", "list", "revoke"))
    account.add_argument("name", nargs="?", help="the account (add, revoke)")
    admin_options(account)
    evict = client_command("evict", "evict a vanished replica so finality can advance")
    evict.add_argument("replica", help="the replica id to evict")
    evict.add_argument("--force", action="store_true",
                       help="evict even if some peers cannot be reached (see docs/semantics.md)")
    admin_options(evict)
    token = sub.add_parser("admin-token", help="print the admin token of a local data "
                           "directory (for scripts, or to use on another machine)")
    token.add_argument("--node", metavar="URL",
                       help="only to find the default data directory by its port (default "
                            f"$CRDTBOOK_NODE or {client.DEFAULT_NODE})")
    data_dir_options(token)
    join = sub.add_parser("join-token", help="print the join token of a local member's data "
                          "directory (what a new node needs to be admitted)")
    join.add_argument("--node", metavar="URL",
                      help="only to find the default data directory by its port (default "
                           f"$CRDTBOOK_NODE or {client.DEFAULT_NODE})")
    join.add_argument("--rotate", action="store_true",
                      help="replace it with a new one, on this member only")
    join.add_argument("--json", action="store_true", help="print JSON")
    data_dir_options(join)

    registry = sub.add_parser("registry", help="run a standalone grape-compatible registry")
    registry.add_argument("--listen", type=listen_address, default=("127.0.0.1", 30001),
                          metavar="HOST:PORT", help="default 127.0.0.1:30001")
    registry.add_argument("--log-level", choices=logs.LEVELS, default="info")

    devnet = sub.add_parser("devnet", help="start a local cluster of nodes")
    devnet.add_argument("-n", type=positive_int, default=3, help="number of nodes (default 3)")
    devnet.add_argument("--demo", action="store_true",
                        help="submit scripted crossing orders and show every node's result")
    devnet.add_argument("--book", type=book_name, default="default")
    devnet.add_argument("--data-dir", metavar="DIR",
                        help="keep the nodes' data directories under DIR (default: a new "
                             "temporary folder)")
    return parser


def data_dir_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--data-dir", metavar="DIR",
                     help="the node's data directory (default ./crdtbook-data/<book>-<port of "
                          "--node>, as `crdtbook node` picks it)")
    cmd.add_argument("--book", type=book_name, default="default",
                     help="book name, for the default --data-dir (default: default)")


def admin_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--admin-token", metavar="TOKEN",
                     help="the node's admin token (default $CRDTBOOK_ADMIN_TOKEN, else read "
                          "from --data-dir)")


def default_data_dir(args: argparse.Namespace, url: str) -> str:
    """``--data-dir``, or the one ``crdtbook node`` picks for the port of ``url``."""
    if args.data_dir:
        return args.data_dir
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise CliError(f"{url!r} is not a node URL", 2) from None
    return os.path.join("crdtbook-data", f"{args.book}-{port}")


def read_token(directory: str) -> str | None:
    """The admin token kept in ``directory``, or None if it holds none."""
    from ..store import admintoken
    from ..store.sqlite import StoreError

    try:
        return admintoken.read(directory)
    except FileNotFoundError:
        return None
    except StoreError as exc:
        raise CliError(str(exc)) from None


def account_token(args: argparse.Namespace, url: str) -> str | None:
    """An account's token for a client command: --token, the environment, else the
    default account's in the node's data directory; None if there is none."""
    from ..store import accounts
    from ..store.sqlite import StoreError

    if args.token:
        return args.token
    if os.environ.get("CRDTBOOK_TOKEN"):
        return os.environ["CRDTBOOK_TOKEN"]
    try:
        return accounts.read(default_data_dir(args, url))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except StoreError as exc:
        raise CliError(str(exc)) from None


def admin_token(args: argparse.Namespace, url: str) -> str:
    """The token for an operator action: --admin-token, the environment, the data directory."""
    if args.admin_token:
        return args.admin_token
    if os.environ.get("CRDTBOOK_ADMIN_TOKEN"):
        return os.environ["CRDTBOOK_ADMIN_TOKEN"]
    directory = default_data_dir(args, url)
    token = read_token(directory)
    if token is None:
        where = os.path.join(os.path.abspath(directory), "admin-token")
        raise CliError(f"no admin token: no --admin-token, no $CRDTBOOK_ADMIN_TOKEN, and no "
                       f"{where}; pass --admin-token TOKEN, set CRDTBOOK_ADMIN_TOKEN, or "
                       "--data-dir DIR of the node (`crdtbook admin-token --data-dir DIR` on "
                       "the node's machine prints it)")
    return token


def paging(cmd: argparse.ArgumentParser) -> None:
    group = cmd.add_mutually_exclusive_group()
    group.add_argument("--limit", type=positive_int, default=100,
                       help="show at most this many, the oldest first (default 100)")
    group.add_argument("--all", action="store_true", help="page through everything")


def pages(url: str, path: str, key: str, args: argparse.Namespace, query: dict,
          token: str | None = None) -> list:
    """Items of a paged history route: ``--limit`` of them, or every page with ``--all``."""
    items: list = []
    after = None
    while True:
        want = 10_000 if args.all else min(10_000, args.limit - len(items))
        params = dict(query, limit=str(want))
        if after is not None:
            params["after"] = after
        result = client.call("GET", url, path + "?" + urlencode(sorted(params.items())),
                             token=token)
        items.extend(result[key])
        after = result.get("next")
        if after is None or (not args.all and len(items) >= args.limit):
            return items
        if args.all:
            print(f"\r{len(items)} {key} ...", end="", file=sys.stderr, flush=True)


def parse_amount_arg(text: str, kind: str) -> tuple[str, str | None]:
    qty, sep, price = text.partition("@")
    if kind == "market":
        if sep:
            raise CliError("a market order takes no price: write just QTY", 2)
        return qty, None
    if not sep or not qty or not price:
        raise CliError(f"{text!r}: write QTY@PRICE, e.g. 3@12", 2)
    return qty, price


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return run(args)
    except (KeyError, TypeError, AttributeError, IndexError):
        print(f"crdtbook {args.command}: unexpected answer: is {client.node_url(args.node)} "
              "a crdtbook node?" if hasattr(args, "node") else
              f"crdtbook {args.command}: unexpected data", file=sys.stderr)
        return 1
    except CliError as exc:
        print(f"crdtbook {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


def run(args: argparse.Namespace) -> int:
    if args.command == "node":
        return run_node(args)
    if args.command == "registry":
        return run_registry(args)
    if args.command == "devnet":
        from .devnet import run_devnet

        return run_devnet(args.n, args.demo, args.book, args.data_dir)
    url = client.node_url(args.node)
    if args.command == "admin-token":
        directory = default_data_dir(args, url)
        token = read_token(directory)
        if token is None:
            raise CliError(f"no admin token in {os.path.abspath(directory)}: is it a node's "
                           "data directory? (a node makes its token when it starts; give "
                           "--data-dir DIR)")
        print(token)
        return 0
    if args.command == "join-token":
        return run_join_token(args, url)
    if args.command == "order":
        qty, price = parse_amount_arg(args.amount, args.type)
        body = {"side": args.side, "qty": qty, "type": args.type}
        if price is not None:
            body["price"] = price
        if args.account:
            body["account"] = args.account
        path = "/orders"
        if args.ack != "local":
            path += f"?ack={args.ack}&timeout={args.timeout:g}"
        result = client.call("POST", url, path, body, timeout=args.timeout + 10,
                             token=account_token(args, url))
        if args.json:
            client.emit_json(result)
        else:
            print(client.format_order(result["order"]))
            if result.get("replicated") is False:
                print(f"not yet held by a peer after {args.timeout:g}s (ack={args.ack}); "
                      "the order stands and is durable here")
            if result["fills"]:
                print(client.format_fills(result["fills"]))
        return 0
    if args.command == "cancel":
        result = client.call("DELETE", url, f"/orders/{args.id}",
                             token=account_token(args, url))
        if args.json:
            client.emit_json(result)
        else:
            c = result["cancel"]
            print(f"{c['id']} cancels {c['target']}: {c['status']}, removed {c['removed']}")
        return 0
    if args.command == "order-status":
        result = client.call("GET", url, f"/orders/{args.id}",
                             token=account_token(args, url))
        client.emit_json(result) if args.json else print(client.format_order(result))
        return 0
    if args.command == "book":
        if args.watch:
            from .stream import watch_book

            return watch_book(url, args.depth, args.json)
        result = client.call("GET", url, "/book" + (f"?depth={args.depth}" if args.depth else ""))
        client.emit_json(result) if args.json else print(client.format_book(result))
        return 0
    if args.command == "trades":
        from .stream import trades

        return trades(url, args.follow, args.json)
    if args.command == "fills":
        query = {"account": args.account} if args.account else {}
        fills = pages(url, "/fills", "fills", args, query,
                      account_token(args, url) if args.account else None)
        client.emit_json(fills) if args.json else print(client.format_fills(fills))
        return 0
    if args.command == "orders":
        query = {"account": args.account} if args.account else {}
        if args.open:
            query["status"] = "open"
        orders = pages(url, "/orders", "orders", args, query, account_token(args, url))
        client.emit_json(orders) if args.json else print(client.format_orders(orders))
        return 0
    if args.command == "events":
        events = pages(url, "/events", "events", args, {})
        client.emit_json(events) if args.json else print(client.format_events(events))
        return 0
    if args.command == "leave":
        result = client.call("POST", url, "/leave", timeout=30,
                             admin_token=admin_token(args, url))
        if args.json:
            client.emit_json(result)
        else:
            e = result["leave"]
            held = "held by a peer" if result["replicated"] else "not yet confirmed by a peer"
            print(f"{e['id']}: replica {e['replica']} left the cluster ({held}); its resting "
                  "orders are cancelled on every node; the node is stopping")
        return 0
    if args.command == "status":
        result = client.call("GET", url, "/status")
        client.emit_json(result) if args.json else print(client.format_status(result))
        return 0
    if args.command == "account":
        return run_account(args, url)
    if args.command == "evict":
        result = client.call("POST", url, "/evict", {"replica": args.replica,
                                                     "force": args.force}, timeout=60,
                             admin_token=admin_token(args, url))
        if args.json:
            client.emit_json(result)
        else:
            e = result["evict"]
            print(f"{e['id']} evicts {e['target']}: its events after seq {e['last_seq']} "
                  "are rejected everywhere")
        return 0
    raise CliError(f"unknown command {args.command}", 2)


def run_account(args: argparse.Namespace, url: str) -> int:
    from urllib.parse import quote

    if (args.name is None) != (args.action == "list"):
        raise CliError("usage: crdtbook account add NAME | list | revoke NAME", 2)
    token = admin_token(args, url)
    if args.action == "add":
        result = client.call("POST", url, "/accounts", {"account": args.name},
                             admin_token=token)
        if args.json:
            client.emit_json(result)
        else:
            print(result["token"])
            print(f"account {result['account']} made; its token is shown this once (the "
                  "node keeps only its hash)", file=sys.stderr)
        return 0
    if args.action == "revoke":
        result = client.call("DELETE", url, f"/accounts/{quote(args.name, safe='')}",
                             admin_token=token)
        client.emit_json(result) if args.json else print(
            f"account {result['account']} revoked: its token no longer works")
        return 0
    result = client.call("GET", url, "/accounts", admin_token=token)
    if args.json:
        client.emit_json(result)
    else:
        rows = [[a["account"], client.human_time(a["created"]),
                 client.human_time(a["revoked"]) or "live"] for a in result["accounts"]]
        print(client.table(rows, ["account", "created (UTC)", "revoked (UTC)"]))
    return 0


def run_join_token(args: argparse.Namespace, url: str) -> int:
    from ..store import jointoken
    from ..store.sqlite import StoreError

    directory = os.path.abspath(default_data_dir(args, url))
    try:
        token = jointoken.read(directory)
        if token is None:
            raise CliError(f"no join token in {directory}: is it the data directory of a "
                           "member? (a node keeps one once it founded or joined a cluster; "
                           "give --data-dir DIR)")
        if args.rotate:
            token = jointoken.rotate(directory)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    is_open = token == jointoken.OPEN
    if args.json:
        client.emit_json({"join_token": None if is_open else token, "open": is_open,
                          "rotated": args.rotate, "data_dir": directory})
    elif is_open:
        print("open: this member admits any node without a join token (--open); "
              "`crdtbook join-token --rotate` gives it one")
    else:
        print(token)
        if args.rotate:
            print("rotated on this member only: the old token still works on members not "
                  "rotated", file=sys.stderr)
    return 0


def print_join_token(node, token: str) -> None:
    """The line a founder prints: its cluster's token and how a new node uses it."""
    if token == "open":
        print(f"crdtbook node {node.id}: founded an OPEN cluster (--open): any node that "
              f"reaches a member is admitted: crdtbook node --peer {node.url}",
              file=sys.stderr, flush=True)
    else:
        print(f"crdtbook node {node.id}: founded a cluster; join token: {token}\n"
              f"  to add a node: crdtbook node --peer {node.url} --join-token {token}",
              file=sys.stderr, flush=True)


def run_node(args: argparse.Namespace) -> int:
    import trio

    from ..gcpolicy import tune
    from ..server import main_node
    from ..service import Node, NodeConfig, ProtectedMode, normalize_url
    from ..store.datadir import Retired
    from ..store.sqlite import StoreError

    logs.setup(args.log_level)
    for url in args.peer + ([args.registry] if args.registry else []):
        try:
            normalize_url(url)
        except ValueError as exc:
            raise CliError(str(exc), 2) from None
    token = args.join_token
    if token is None and os.environ.get("CRDTBOOK_JOIN_TOKEN") and not args.open:
        token = os.environ["CRDTBOOK_JOIN_TOKEN"]
        try:
            join_token(token)
        except argparse.ArgumentTypeError as exc:
            raise CliError(f"$CRDTBOOK_JOIN_TOKEN: {exc}", 2) from None
    if args.bootstrap_expect > 1 and token is None and not args.open:
        raise CliError("--bootstrap-expect needs the same --join-token on every node of the "
                       "group (or --open on all): the founder makes it the cluster's token", 2)
    if args.ephemeral and (args.data_dir or args.rejoin_as_new):
        raise CliError("--ephemeral keeps no data directory: drop --data-dir/--rejoin-as-new",
                       2)
    data_dir = None
    if not args.ephemeral:
        if not args.data_dir and args.listen[1] == 0:
            raise CliError("with --listen on port 0 there is no default data directory: "
                           "give --data-dir DIR (or --ephemeral)", 2)
        data_dir = args.data_dir or os.path.join("crdtbook-data",
                                                 f"{args.book}-{args.listen[1]}")
    tune()
    config = NodeConfig(host=args.listen[0], port=args.listen[1], peers=args.peer,
                        registry_url=args.registry and normalize_url(args.registry),
                        book=args.book, pull_interval_s=args.pull_interval,
                        registry_ttl_s=args.registry_ttl,
                        announce_interval_s=args.registry_ttl / 3,
                        rpc_host=args.rpc_listen[0], rpc_port=args.rpc_listen[1],
                        data_dir=data_dir, rejoin_as_new=args.rejoin_as_new,
                        join_token=token, open_admission=args.open,
                        bootstrap_expect=args.bootstrap_expect,
                        auth=not (args.no_auth or args.insecure_no_auth),
                        insecure_no_auth=args.insecure_no_auth,
                        rate_limit=args.rate_limit, rate_burst=args.rate_burst)
    try:
        node = Node(config)
    except ProtectedMode as exc:
        raise CliError(str(exc), 2) from None
    except (StoreError, Retired) as exc:
        raise CliError(str(exc), 3) from None
    if args.insecure_no_auth:
        logs.warning("node.insecure_no_auth", hint="anyone who reaches the client API can "
                     "place and cancel orders for any account")
        print(f"crdtbook node {node.id}: WARNING: --insecure-no-auth: anyone who reaches "
              f"{args.listen[0]}:{args.listen[1]} can place and cancel orders for any account",
              file=sys.stderr, flush=True)
    where = "nowhere (--ephemeral)" if args.ephemeral else os.path.abspath(data_dir)
    logs.info("node.data_dir", path=where, replica=node.id, recovered_events=node.recovered)
    print(f"crdtbook node {node.id}: data in {where}", file=sys.stderr, flush=True)
    node.on_founded = print_join_token

    def announce(node) -> None:
        # One line on stdout for scripts (devnet, tests) to learn the URL from.
        print(f"crdtbook node {node.id} listening on {node.url}", flush=True)

    try:
        status = trio.run(main_node, config, announce, node)
    except (OSError, BaseExceptionGroup) as exc:
        node.close()
        raise CliError(f"cannot serve on {args.listen[0]}:{args.listen[1]}: "
                       f"{_os_error(exc)}") from None
    if node.join_refused is not None:
        error, detail = node.join_refused
        raise CliError(f"not admitted to the cluster ({error}): {detail}", 3)
    return status


def run_registry(args: argparse.Namespace) -> int:
    import trio

    from ..cluster.standalone import main_registry

    logs.setup(args.log_level)

    def announce(url: str) -> None:
        print(f"crdtbook registry listening on {url}", flush=True)

    try:
        return trio.run(main_registry, args.listen[0], args.listen[1], announce)
    except (OSError, BaseExceptionGroup) as exc:
        raise CliError(f"cannot serve on {args.listen[0]}:{args.listen[1]}: "
                       f"{_os_error(exc)}") from None


def _os_error(exc: BaseException) -> str:
    """The OSError inside what trio raised (possibly an exception group), as text."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if isinstance(e, OSError | BaseExceptionGroup)]
        if not inner:
            raise exc
        exc = inner[0]
    return exc.strerror or str(exc)


if __name__ == "__main__":
    sys.exit(main())
