"""``crdtbook book --watch`` and ``crdtbook trades [--follow]``: the CLI on /ws.

Theory of operation
-------------------
``follow`` keeps one subscription alive for as long as the user wants it:
it connects (trio-websocket), subscribes, and hands each channel message to
a handler. A gap in ``seq`` or a ``reset`` from the node means something was
missed: it subscribes again (the new snapshot replaces what was held) and
says so on stderr. When the node goes away it reconnects with a growing
backoff (``BACKOFF_S`` .. ``MAX_BACKOFF_S``), with one status line on stderr
saying what it is doing.

The renderers (``render_book``, ``render_trade``, ...) are plain functions
of the data, returning text, so another presentation can replace them.
``--json`` prints every message from the node as it came, one per line.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import trio
from rich.console import Group
from rich.text import Text
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from crdtbook.amount import parse_amount

from . import render, wsclient  # noqa: F401  (wsclient: a trio-websocket fix)
from .client import CliError
from .output import Output

BACKOFF_S = 0.5
MAX_BACKOFF_S = 5.0
ANSWER_S = 10.0  # a subscribe must be answered within this
MAX_MESSAGE = 8 * 1024 * 1024  # a book snapshot at depth 1000 is far smaller


class _Ids:
    count = 0  # subscribe commands sent, for their ids


class Gap(Exception):
    """The stream missed something: subscribe again."""


def ws_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return ("wss://" if scheme == "https" else "ws://") + rest + "/ws"


def say(text: str) -> None:
    print(f"crdtbook: {text}", file=sys.stderr, flush=True)


# -- renderers (plain functions of the data: easy to swap) -----------------------
def render_book(url: str, bids: list[list[str]], asks: list[list[str]]) -> Group:
    """The level-2 book as the stream has it: price and total quantity per level."""
    title = Text(f"{url}  {time.strftime('%H:%M:%S', time.gmtime())} UTC  live "
                 "(Ctrl-C to stop)", style="dim")
    if not bids and not asks:
        return Group(title, Text("(empty book)"))
    headers = ("BID QTY", "BID", "ASK", "ASK QTY")
    grid = render.table(*headers, right=headers)
    for i in range(max(len(bids), len(asks))):
        bid = bids[i] if i < len(bids) else ["", ""]
        ask = asks[i] if i < len(asks) else ["", ""]
        grid.add_row(Text(bid[1], style=render.BUY), Text(bid[0], style=render.BUY),
                     Text(ask[0], style=render.SELL), Text(ask[1], style=render.SELL))
    return Group(title, grid)


def render_trade(trade: dict) -> Text:
    final = bool(trade.get("final"))
    line = Text(f"{render.human_time(trade.get('time'))}  ")
    line.append_text(render.side(trade["taker_side"]))
    line.append(f" {trade['qty']} @ {trade['price']}  taker {render.short_id(trade['taker'])}"
                f" maker {render.short_id(trade['maker'])}  #{trade['index']}  "
                f"{'final' if final else 'provisional'}")
    if not final:
        line.stylize(render.PROVISIONAL)
    return line


def render_final(ids: list[str]) -> Text:
    return Text("\n".join(f"final      {_short_fill(i)}" for i in ids))


def render_retract(ids: list[str]) -> Text:
    return Text("\n".join(f"RETRACTED  {_short_fill(i)} (a late order sorted before it)"
                           for i in ids), style="bold")


def _short_fill(fill_id: str) -> str:
    taker, _, maker = fill_id.partition("/")
    return f"{render.short_id(taker)}/{render.short_id(maker)}"


# -- the book ---------------------------------------------------------------------
class BookState:
    def __init__(self, snapshot: dict) -> None:
        self.depth = snapshot["depth"]
        self.bids = dict(snapshot["bids"])
        self.asks = dict(snapshot["asks"])

    def apply(self, update: dict) -> None:
        for side, levels in ((self.bids, update["bids"]), (self.asks, update["asks"])):
            for price, qty in levels:
                if qty == "0":
                    side.pop(price, None)
                else:
                    side[price] = qty

    def levels(self) -> tuple[list[list[str]], list[list[str]]]:
        def best(side: dict, is_bid: bool) -> list[list[str]]:
            rows = sorted(side.items(), key=lambda kv: parse_amount(kv[0]), reverse=is_bid)
            return [list(row) for row in rows[:self.depth]]
        return best(self.bids, True), best(self.asks, False)


def watch_book(url: str, depth: int | None, as_json: bool, out: Output) -> int:
    state: dict[str, BookState] = {}

    def on_message(message: dict) -> None:
        if message["type"] == "snapshot":
            state["book"] = BookState(message)
        else:
            state["book"].apply(message)
        if not as_json:
            bids, asks = state["book"].levels()
            out.clear()
            out.show(render_book(url, bids, asks))
            out.stream.flush()

    command = {"channel": "book"}
    if depth:
        command["depth"] = min(depth, 1000)
    return trio.run(follow, url, command, on_message, as_json, True)


# -- trades -------------------------------------------------------------------------
def trades(url: str, keep_following: bool, as_json: bool, out: Output) -> int:
    shown: set[str] = set()

    def on_message(message: dict) -> None:
        if as_json:
            return
        kind = message["type"]
        if kind == "snapshot":
            for trade in message["trades"]:
                if trade["id"] not in shown:
                    out.show(render_trade(trade))
                shown.add(trade["id"])
        elif kind == "trade":
            shown.add(message["trade"]["id"])
            out.show(render_trade(message["trade"]))
        elif kind == "final":
            out.show(render_final(message["ids"]))
        elif kind == "retract":
            out.show(render_retract(message["ids"]))
        sys.stdout.flush()

    return trio.run(follow, url, {"channel": "trades"}, on_message, as_json, keep_following)


# -- the loop -----------------------------------------------------------------------
async def follow(url: str, command: dict, on_message: Callable[[dict], None], as_json: bool,
                 keep_following: bool) -> int:
    """Subscribe and hand every channel message to ``on_message``, resubscribing on a
    gap or reset and reconnecting when the node goes away (until Ctrl-C). With
    ``keep_following`` false: the snapshot only, then return."""
    backoff = BACKOFF_S
    connected_once = False
    while True:
        try:
            async with open_websocket_url(ws_url(url), max_message_size=MAX_MESSAGE,
                                          connect_timeout=ANSWER_S) as ws:
                if connected_once:
                    say(f"reconnected to {url}")
                connected_once = True
                backoff = BACKOFF_S
                while True:
                    try:
                        await _subscription(ws, command, on_message, as_json, keep_following)
                        return 0
                    except Gap as gap:
                        say(f"{gap}; subscribing again")
        except (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError) as exc:
            if not keep_following:
                raise CliError(f"cannot stream from {url}: {_why(exc)}") from None
            say(f"lost {url} ({_why(exc)}); reconnecting in {backoff:g}s (Ctrl-C to stop)")
            await trio.sleep(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)


async def _subscription(ws, command: dict, on_message, as_json: bool,
                        keep_following: bool) -> None:
    _Ids.count += 1
    ident = f"cli-{_Ids.count}"
    await ws.send_message(json.dumps({"op": "subscribe", "id": ident, **command}))
    answered = False
    seq = None
    with trio.fail_after(ANSWER_S):  # the answer, then the snapshot (messages of an
        while seq is None:           # earlier subscription may come first: skipped)
            message = json.loads(await ws.get_message())
            if as_json:
                print(json.dumps(message, separators=(",", ":")), flush=True)
            if message.get("type") == "answer" and message.get("id") == ident:
                if not message.get("ok"):
                    raise CliError(f"the node refused the subscription "
                                   f"({message.get('status')}): "
                                   f"{str(message.get('detail'))[:300]}")
                answered = True
            elif answered and message.get("channel") == command["channel"]:
                seq = message["seq"]
                on_message(message)
    if not keep_following:
        return
    while True:
        message = json.loads(await ws.get_message())
        if as_json:
            print(json.dumps(message, separators=(",", ":")), flush=True)
        if message.get("channel") != command["channel"]:
            continue
        if message.get("type") == "reset":
            raise Gap(f"the node reset the {command['channel']} stream "
                      f"({message.get('reason')})")
        if message.get("seq") != seq + 1:
            raise Gap(f"the {command['channel']} stream skipped from {seq} to "
                      f"{message.get('seq')}")
        seq = message["seq"]
        on_message(message)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        return f"connection closed ({exc.reason.code})"
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    return str(exc) or type(exc).__name__
