"""The ``crdtbook`` command line.

    crdtbook node [--listen HOST:PORT] [--peer URL ...] [--registry URL] [--book NAME]
                  [--id REPLICA] [--log-level LEVEL]
    crdtbook order buy|sell QTY@PRICE [--type T] [--account A]     (market: QTY --type market)
    crdtbook cancel ID
    crdtbook book [--depth N] [--watch] | fills | events | status | order ID
    crdtbook registry [--listen HOST:PORT]
    crdtbook devnet [-n 3] [--demo]

Client commands talk to ``--node`` (default ``$CRDTBOOK_NODE``, else
http://127.0.0.1:8700); read commands take ``--json`` for scripts. Errors are
one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time

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


def replica_id(text: str) -> str:
    try:
        return check_replica(text)
    except DotError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
                      help="how long the registry keeps an announcement (a grape's --dpa, in "
                           "seconds); the node re-announces every third of it (default 60)")
    node.add_argument("--rpc-listen", type=listen_address, default=("127.0.0.1", 0),
                      metavar="HOST:PORT",
                      help="serve Grenache PeerRPC here, announced as crdtbook:<book>:rpc "
                           "(default 127.0.0.1 on a free port)")
    node.add_argument("--book", type=book_name, default="default",
                      help="book name (default: default)")
    node.add_argument("--id", type=replica_id, help="replica id (default: a fresh random one)")
    node.add_argument("--pull-interval", type=seconds, default=1.0, metavar="SECONDS",
                      help="anti-entropy pull interval (default 1.0)")
    node.add_argument("--log-level", choices=logs.LEVELS, default="info")

    def client_command(name: str, help: str, read: bool = True) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help)
        cmd.add_argument("--node", metavar="URL",
                         help="node to talk to (default $CRDTBOOK_NODE or "
                              f"{client.DEFAULT_NODE})")
        cmd.add_argument("--json", action="store_true", help="print the API's JSON")
        return cmd

    order = client_command("order", "submit an order to your node")
    order.add_argument("side", choices=("buy", "sell"))
    order.add_argument("amount", metavar="QTY@PRICE", help="e.g. 3@12 (market orders: just QTY)")
    order.add_argument("--type", choices=TYPES, default="limit")
    order.add_argument("--account", default="", help="account label")

    cancel = client_command("cancel", "cancel an order placed at your node")
    cancel.add_argument("id", help="order id, replica:seq")

    show = client_command("order-status", "show one order")
    show.add_argument("id", help="order id, replica:seq")

    book = client_command("book", "show the book")
    book.add_argument("--depth", type=positive_int, help="price levels per side")
    book.add_argument("--watch", action="store_true", help="refresh every second until Ctrl-C")
    client_command("fills", "list fills in replay order")
    client_command("events", "list events in position order")
    client_command("status", "show the node's status, peers and final frontier")
    evict = client_command("evict", "evict a vanished replica so finality can advance")
    evict.add_argument("replica", help="the replica id to evict")
    evict.add_argument("--force", action="store_true",
                       help="evict even if some peers cannot be reached (see README)")

    registry = sub.add_parser("registry", help="run a standalone grape-compatible registry")
    registry.add_argument("--listen", type=listen_address, default=("127.0.0.1", 30001),
                          metavar="HOST:PORT", help="default 127.0.0.1:30001")
    registry.add_argument("--log-level", choices=logs.LEVELS, default="info")

    devnet = sub.add_parser("devnet", help="start a local cluster of nodes")
    devnet.add_argument("-n", type=positive_int, default=3, help="number of nodes (default 3)")
    devnet.add_argument("--demo", action="store_true",
                        help="submit scripted crossing orders and show every node's result")
    devnet.add_argument("--book", type=book_name, default="default")
    return parser


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

        return run_devnet(args.n, args.demo, args.book)
    url = client.node_url(args.node)
    if args.command == "order":
        qty, price = parse_amount_arg(args.amount, args.type)
        body = {"side": args.side, "qty": qty, "type": args.type}
        if price is not None:
            body["price"] = price
        if args.account:
            body["account"] = args.account
        result = client.call("POST", url, "/orders", body)
        if args.json:
            client.emit_json(result)
        else:
            print(client.format_order(result["order"]))
            if result["fills"]:
                print(client.format_fills(result["fills"]))
        return 0
    if args.command == "cancel":
        result = client.call("DELETE", url, f"/orders/{args.id}")
        if args.json:
            client.emit_json(result)
        else:
            c = result["cancel"]
            print(f"{c['id']} cancels {c['target']}: {c['status']}, removed {c['removed']}")
        return 0
    if args.command == "order-status":
        result = client.call("GET", url, f"/orders/{args.id}")
        client.emit_json(result) if args.json else print(client.format_order(result))
        return 0
    if args.command == "book":
        path = "/book" + (f"?depth={args.depth}" if args.depth else "")
        while True:
            result = client.call("GET", url, path)
            if args.json:
                client.emit_json(result)
            else:
                if args.watch:
                    sys.stdout.write("\x1b[2J\x1b[H")  # clear screen, cursor home
                    print(f"{url}  {time.strftime('%H:%M:%S')}  (Ctrl-C to stop)")
                print(client.format_book(result))
            if not args.watch:
                return 0
            sys.stdout.flush()
            time.sleep(1.0)
    if args.command == "fills":
        result = client.call("GET", url, "/fills")
        client.emit_json(result) if args.json else print(client.format_fills(result["fills"]))
        return 0
    if args.command == "events":
        result = client.call("GET", url, "/events")
        if args.json:
            client.emit_json(result)
        else:
            for e in result["events"]:
                what = (f"{e['side']} {e['qty']}@{e['price'] or 'market'} {e['type']}"
                        if e["kind"] == "order" else f"cancel {e['target']}")
                print(f"{e['clock']:>20}  {e['id']:<20} {what}")
        return 0
    if args.command == "status":
        result = client.call("GET", url, "/status")
        client.emit_json(result) if args.json else print(client.format_status(result))
        return 0
    if args.command == "evict":
        result = client.call("POST", url, "/evict", {"replica": args.replica,
                                                     "force": args.force}, timeout=60)
        if args.json:
            client.emit_json(result)
        else:
            e = result["evict"]
            print(f"{e['id']} evicts {e['target']}: its events after seq {e['last_seq']} "
                  "are rejected everywhere")
        return 0
    raise CliError(f"unknown command {args.command}", 2)


def run_node(args: argparse.Namespace) -> int:
    import trio

    from ..gcpolicy import tune
    from ..server import main_node
    from ..service import NodeConfig, normalize_url

    logs.setup(args.log_level)
    for url in args.peer + ([args.registry] if args.registry else []):
        try:
            normalize_url(url)
        except ValueError as exc:
            raise CliError(str(exc), 2) from None
    tune()
    config = NodeConfig(host=args.listen[0], port=args.listen[1], peers=args.peer,
                        registry_url=args.registry and normalize_url(args.registry),
                        book=args.book, replica_id=args.id, pull_interval_s=args.pull_interval,
                        registry_ttl_s=args.registry_ttl,
                        announce_interval_s=args.registry_ttl / 3,
                        rpc_host=args.rpc_listen[0], rpc_port=args.rpc_listen[1])

    def announce(node) -> None:
        # One line on stdout for scripts (devnet, tests) to learn the URL from.
        print(f"crdtbook node {node.id} listening on {node.url}", flush=True)

    try:
        return trio.run(main_node, config, announce)
    except (OSError, BaseExceptionGroup) as exc:
        raise CliError(f"cannot serve on {args.listen[0]}:{args.listen[1]}: "
                       f"{_os_error(exc)}") from None


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
