"""The ``crdtbook`` command: what each subcommand does.

    crdtbook [--node URL] [--json] [--no-color] COMMAND ...   (global options go anywhere)
    crdtbook node [--listen HOST:PORT] [--peer URL ...] [--data-dir DIR | --ephemeral] ...
    crdtbook order buy|sell QTY@PRICE [--type T] [--account A] [--ack replicated] [--token T]
    crdtbook cancel ID | order-status ID | leave | evict REPLICA   [--admin-token T]
    crdtbook admin-token [--data-dir DIR]
    crdtbook account add NAME | list | revoke NAME   [--admin-token T]
    crdtbook join-token [--rotate] [--data-dir DIR]
    crdtbook book [--depth N] [--watch] | trades [--follow] | status
    crdtbook fills [--account A] | orders [--account A] [--open] | events   [--limit N | --all]
    crdtbook registry [--listen HOST:PORT]
    crdtbook devnet [-n 3] [--demo] [--data-dir DIR]

The grammar, help and usage hints are in parser.py, the tables and wording
in render.py, where output goes (colour, pipes) in output.py. Client
commands talk to ``--node`` (default ``$CRDTBOOK_NODE``, else
http://127.0.0.1:8700); every read command takes ``--json`` for scripts.
Errors are one line on stderr (and, for common slips, indented lines saying
what to type instead) and a non-zero exit: 1 for a refused request or an
unreachable node, 2 for a usage error, 3 when ``crdtbook node`` cannot use its
data directory or is not admitted; never a traceback.

``leave``, ``evict`` and ``account`` act as the node's operator and send its
admin token: ``--admin-token``, else ``$CRDTBOOK_ADMIN_TOKEN``, else the
``admin-token`` file of the node's data directory when the CLI runs on the
node's machine (``--data-dir``, by default the directory ``crdtbook node``
would pick for that port: ./crdtbook-data/<book>-<port>). Every other
client command sends an account's token: ``--token``, else
``$CRDTBOOK_TOKEN``, else the default account's, from ``account-token`` in
that same data directory (if there is one; public reads need none).
"""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import quote, urlencode, urlsplit

from crdtbook.amount import AmountError, parse_amount
from crdtbook.dot import DotError, check_replica, parse_dot

from .. import logs
from . import client, render
from .client import CliError
from .output import Output, crdtbook_command, quiet_broken_pipe
from .parser import UsageError, join_token, parse

SWITCH_INTERVAL_S = 0.001  # a node's sys.setswitchinterval (see run_node)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse(argv)
    except UsageError as exc:
        return complain(exc.prog, exc)
    if args.command is None:
        from .parser import build_parser

        build_parser().print_help()
        return 0
    prog = f"crdtbook {args.command}"
    try:
        code = run(args)
        sys.stdout.flush()  # a reader gone away shows here, not at exit
        return code
    except BrokenPipeError:
        return quiet_broken_pipe()
    except CliError as exc:
        return complain(getattr(exc, "prog", prog), exc)
    except (KeyError, TypeError, AttributeError, IndexError):
        if args.command in ("node", "registry", "devnet"):
            raise  # a bug in this program, not an answer from elsewhere
        print(f"{prog}: unexpected answer: is {client.node_url(args.node)} a crdtbook node?",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def complain(prog: str, exc: CliError) -> int:
    """One line for the error, then one indented line per hint."""
    lines = [f"{prog}: {exc}", *(f"  {hint}" for hint in getattr(exc, "hints", []))]
    print("\n".join(lines), file=sys.stderr)
    return exc.code


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
    out = Output(no_color=args.no_color)
    commands = {"order": cmd_order, "cancel": cmd_cancel, "order-status": cmd_order_status,
                "book": cmd_book, "trades": cmd_trades, "fills": cmd_fills, "orders": cmd_orders,
                "events": cmd_events, "leave": cmd_leave, "status": cmd_status,
                "account": run_account, "evict": cmd_evict}
    return commands[args.command](args, url, out)


# -- trading ---------------------------------------------------------------------
def cmd_order(args: argparse.Namespace, url: str, out: Output) -> int:
    qty, price = parse_amount_arg(args.side, args.amount, args.type)
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
        out.json(result)
        return 0
    out.show(render.order_line(result["order"]))
    if result.get("replicated") is False:
        out.line(f"not yet held by a peer after {args.timeout:g}s (ack={args.ack}); the "
                 "order stands and is durable here")
    if result["fills"]:
        out.show(render.fills_table(result["fills"]))
    return 0


def cmd_cancel(args: argparse.Namespace, url: str, out: Output) -> int:
    order_id = check_order_id(args.id, "cancel", url)
    result = client.call("DELETE", url, f"/orders/{order_id}", token=account_token(args, url))
    out.json(result) if args.json else out.show(render.cancel_line(result["cancel"]))
    return 0


def cmd_order_status(args: argparse.Namespace, url: str, out: Output) -> int:
    order_id = check_order_id(args.id, "order-status", url)
    result = client.call("GET", url, f"/orders/{order_id}", token=account_token(args, url))
    out.json(result) if args.json else out.show(render.order_line(result))
    return 0


def parse_amount_arg(side: str, text: str, kind: str) -> tuple[str, str | None]:
    """``QTY@PRICE`` (or a bare ``QTY`` for a market order), checked here so that a
    slip is a usage error with the right spelling, not a refusal from the node."""
    qty, sep, price = text.partition("@")
    prog = "crdtbook order"
    if kind == "market":
        if sep:
            raise UsageError("a market order takes no price: write just QTY",
                             f"try: crdtbook order {side} {qty} --type market", prog=prog)
        check_amount(qty, "quantity")
        return qty, None
    if not sep and qty:
        check_amount(qty, "quantity")
        raise UsageError(
            f"{text!r} has no price: a {kind} order is QTY@PRICE",
            f"at a price:          crdtbook order {side} {qty}@PRICE"
            + ("" if kind == "limit" else f" --type {kind}"),
            f"at the best prices:  crdtbook order {side} {qty} --type market", prog=prog)
    if not qty or not price:
        raise UsageError(f"{text!r}: write QTY@PRICE", f"try: crdtbook order {side} 3@12",
                         prog=prog)
    check_amount(qty, "quantity")
    check_amount(price, "price")
    return qty, price


def check_amount(text: str, what: str) -> None:
    try:
        parse_amount(text, what)
    except AmountError as exc:
        raise UsageError(str(exc), "amounts are plain positive decimals: 3, 0.5, 12.25",
                         prog="crdtbook order") from None


def check_order_id(text: str, command: str, url: str) -> str:
    """A whole order id, ``replica:seq``, or a UsageError saying what to type."""
    prog = f"crdtbook {command}"
    try:
        dot = parse_dot(text)
    except DotError:
        raise UsageError(f"{text[:80]!r} is not an order id",
                         "an order id is REPLICA:SEQ, as `crdtbook order` prints it (whole "
                         "ids are in `crdtbook orders --json`)", prog=prog) from None
    whole = whole_replica(dot.replica, url)
    if whole is not None:
        raise UsageError(f"{text} is a shortened id (tables show 10 characters)",
                         f"the whole id: crdtbook {command} {whole}:{dot.seq}", prog=prog)
    return str(dot)


def whole_replica(prefix: str, url: str) -> str | None:
    """The one member id that ``prefix`` shortens (None: it is not a shortened id,
    or the node cannot tell)."""
    if len(prefix) >= 32:
        return None
    try:
        members = client.call("GET", url, "/status").get("members", [])
    except CliError:
        return None  # the command itself will say what is wrong with the node
    found = [m for m in members if isinstance(m, str) and m.startswith(prefix) and m != prefix]
    return found[0] if len(found) == 1 else None


# -- market data -----------------------------------------------------------------------
def cmd_book(args: argparse.Namespace, url: str, out: Output) -> int:
    if args.watch:
        from .stream import watch_book

        return watch_book(url, args.depth, args.json, out)
    result = client.call("GET", url, "/book" + (f"?depth={args.depth}" if args.depth else ""))
    out.json(result) if args.json else out.show(render.book_view(result))
    return 0


def cmd_trades(args: argparse.Namespace, url: str, out: Output) -> int:
    from .stream import trades

    return trades(url, args.follow, args.json, out)


def cmd_fills(args: argparse.Namespace, url: str, out: Output) -> int:
    query = {"account": args.account} if args.account else {}
    fills = pages(url, "/fills", "fills", args, query,
                  account_token(args, url) if args.account else None)
    out.json(fills) if args.json else out.show(render.fills_table(fills))
    return 0


def cmd_orders(args: argparse.Namespace, url: str, out: Output) -> int:
    query = {"account": args.account} if args.account else {}
    if args.open:
        query["status"] = "open"
    orders = pages(url, "/orders", "orders", args, query, account_token(args, url))
    out.json(orders) if args.json else out.show(render.orders_table(orders))
    return 0


def cmd_events(args: argparse.Namespace, url: str, out: Output) -> int:
    events = pages(url, "/events", "events", args, {})
    out.json(events) if args.json else out.show(render.events_table(events))
    return 0


def cmd_status(args: argparse.Namespace, url: str, out: Output) -> int:
    result = client.call("GET", url, "/status")
    out.json(result) if args.json else out.show(render.status_view(result))
    return 0


def pages(url: str, path: str, key: str, args: argparse.Namespace, query: dict,
          token: str | None = None) -> list:
    """Items of a paged history route: ``--limit`` of them, or every page with ``--all``
    (saying how many so far on stderr, as it goes)."""
    items: list = []
    after = None
    said = False  # a progress line is on stderr
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
            if said:
                print(file=sys.stderr)  # end the progress line
            return items
        if args.all:
            print(f"\r{len(items)} {key} ...", end="", file=sys.stderr, flush=True)
            said = True


# -- the operator --------------------------------------------------------------------------
def cmd_leave(args: argparse.Namespace, url: str, out: Output) -> int:
    result = client.call("POST", url, "/leave", timeout=30, admin_token=admin_token(args, url))
    if args.json:
        out.json(result)
        return 0
    e = result["leave"]
    held = "held by a peer" if result["replicated"] else "not yet confirmed by a peer"
    out.line(f"{e['id']}: replica {e['replica']} left the cluster ({held}); its resting "
             "orders are cancelled on every node; the node is stopping")
    return 0


def cmd_evict(args: argparse.Namespace, url: str, out: Output) -> int:
    try:
        check_replica(args.replica)
    except DotError as exc:
        raise UsageError(str(exc), "`crdtbook status` names each member; evict takes the "
                         "whole id", prog="crdtbook evict") from None
    whole = whole_replica(args.replica, url)
    if whole is not None:
        raise UsageError(f"{args.replica} is a shortened id (tables show 10 characters)",
                         f"the whole id: crdtbook evict {whole}", prog="crdtbook evict")
    result = client.call("POST", url, "/evict", {"replica": args.replica, "force": args.force},
                         timeout=60, admin_token=admin_token(args, url))
    if args.json:
        out.json(result)
        return 0
    e = result["evict"]
    out.line(f"{e['id']} evicts {e['target']}: its events after seq {e['last_seq']} are "
             "rejected everywhere, its resting orders cancelled")
    return 0


def default_data_dir(args: argparse.Namespace, url: str) -> str:
    """``--data-dir``, or the one ``crdtbook node`` picks for the port of ``url``."""
    if args.data_dir:
        return args.data_dir
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UsageError(f"{url!r} is not a node URL", "a node URL looks like "
                         "http://127.0.0.1:8700", prog=f"crdtbook {args.command}") from None
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


def run_account(args: argparse.Namespace, url: str, out: Output) -> int:
    if (args.name is None) != (args.action == "list"):
        raise UsageError(f"`account {args.action}` takes {'no' if args.action == 'list' else 'a'}"
                         " NAME", "try: crdtbook account add alice | list | revoke alice",
                         prog="crdtbook account")
    token = admin_token(args, url)
    if args.action == "add":
        result = client.call("POST", url, "/accounts", {"account": args.name},
                             admin_token=token)
        if args.json:
            out.json(result)
        else:
            out.line(result["token"])
            print(f"account {result['account']} made; its token is shown this once (the "
                  "node keeps only its hash)", file=sys.stderr)
        return 0
    if args.action == "revoke":
        result = client.call("DELETE", url, f"/accounts/{quote(args.name, safe='')}",
                             admin_token=token)
        out.json(result) if args.json else out.line(
            f"account {result['account']} revoked: its token no longer works")
        return 0
    result = client.call("GET", url, "/accounts", admin_token=token)
    out.json(result) if args.json else out.show(render.accounts_table(result["accounts"]))
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
        Output().json({"join_token": None if is_open else token, "open": is_open,
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
              f"reaches a member is admitted: {crdtbook_command()} node --peer {node.url}",
              file=sys.stderr, flush=True)
    else:
        print(f"crdtbook node {node.id}: founded a cluster; join token: {token}\n"
              f"  to add a node: {crdtbook_command()} node --peer {node.url} --join-token "
              f"{token}",
              file=sys.stderr, flush=True)


def run_node(args: argparse.Namespace) -> int:
    import trio

    from ..gcpolicy import tune
    from ..server import main_node
    from ..service import Node, NodeConfig, ProtectedMode, normalize_url
    from ..signals import ignore_stop_signals
    from ..store.datadir import Retired
    from ..store.sqlite import StoreError

    logs.setup(args.log_level)
    for url in args.peer + ([args.registry] if args.registry else []):
        try:
            normalize_url(url)
        except ValueError as exc:
            raise UsageError(str(exc), "a peer URL looks like http://127.0.0.1:8700",
                             prog="crdtbook node") from None
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
    # A commit's fsync runs on a worker thread; once it is done, the thread waits for
    # the interpreter while the event loop runs Python, up to the switch interval
    # (CPython's default 5 ms) before the loop is made to give it up: under load
    # every commit's answers and pushes came up to that much later. 1 ms:
    # docs/performance.md, "The durable cluster, tenth pass".
    sys.setswitchinterval(SWITCH_INTERVAL_S)
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
                        rate_limit=args.rate_limit, rate_burst=args.rate_burst,
                        peer_stream=args.peer_stream)
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

    ignore_stop_signals()  # until the node's signal receiver takes them (see server.py)
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
    from ..signals import ignore_stop_signals

    logs.setup(args.log_level)
    ignore_stop_signals()

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
