"""How the CLI shows the API's answers to a person: tables, times, counts, outcomes.

Theory of operation
-------------------
Every function here takes the JSON a node answered (as ``--json`` prints
it) and returns a rich renderable (a ``Table``, a ``Text``, a ``Group``) or
plain text; printing, colour and terminal width are the console's business
(node/cli/output.py). The functions are plain and stateless so that anything
that shows a book or a tape (``book --watch``, ``trades --follow``) can
call them on each update.

Rules this module keeps
-----------------------
* Times shown to a person are wall-clock **UTC**, to the millisecond:
  ``2026-11-28 05:19:05.123`` (column headers say ``(UTC)``, lines end in
  ``UTC``). A cluster spans machines and the node's logs are in UTC too, so
  one zone everywhere; raw clocks appear only in ``--json``.
* Columns are never padded by hand: rich tables size them. Values that came
  from a node or a user are ``Text`` (never parsed as markup).
* Colour is style only, dropped by the console when output is not a
  terminal: buys green, sells red, provisional (not yet final) dim.
* Counts agree with their nouns (``1 event``, ``2 events``).
"""

from __future__ import annotations

import datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from crdtbook.clock import LOGICAL_BITS
from crdtbook.keys import short

BUY, SELL, PROVISIONAL, WARN, BAD = "green", "red", "dim", "yellow", "bold red"
HEALTH = {"ok": BUY, "self": "", "silent": WARN, "unreachable": SELL, "convicted": BAD}
HELD_BACK_MS = 5_000  # past this, status names the member holding finality back
PLURALS = {"replica": "replicas", "fill": "fills", "order": "orders", "event": "events",
           "peer": "peers", "member": "members", "node": "nodes", "account": "accounts"}


# -- words and times -------------------------------------------------------------
def plural(count: int, noun: str) -> str:
    """``1 event``, ``2 events``."""
    return f"{count} {noun if count == 1 else PLURALS.get(noun, noun + 's')}"


def human_time(iso: str | None) -> str:
    """An API time, ``2026-11-28T05:19:05.123Z``, as ``2026-11-28 05:19:05.123`` (UTC)."""
    return iso.replace("T", " ").removesuffix("Z") if iso else ""


def clock_time(clock: int | None) -> str:
    """The wall-clock part of a hybrid clock, as ``2026-11-28 05:19:05.123`` (UTC)."""
    if not clock:
        return ""
    ms = clock >> LOGICAL_BITS
    second = datetime.datetime.fromtimestamp(ms // 1000, tz=datetime.UTC)
    return f"{second:%Y-%m-%d %H:%M:%S}.{ms % 1000:03d}"


def ago(seconds: float | None) -> str:
    """``0.3 s ago``, ``16 s ago``, ``4 min ago``, ``3 h ago``, ``2 days ago``."""
    if seconds is None:
        return "never"
    if seconds < 10:
        return f"{seconds:.1f} s ago"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def short_id(event_id: str) -> str:
    """An order or event id, ``replica:seq``, with the replica's short prefix."""
    replica, sep, seq = event_id.rpartition(":")
    return f"{short(replica)}:{seq}" if sep else short(event_id)


def side(text: str) -> Text:
    return Text(text, style=BUY if text == "buy" else SELL if text == "sell" else "")


def table(*headers: str, right: tuple[str, ...] = ()) -> Table:
    """A borderless table: a bold header line, columns two spaces apart. On a
    narrow terminal cells wrap between words (a time: date above clock)."""
    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold",
                 padding=(0, 2, 0, 0), collapse_padding=True)
    for header in headers:
        grid.add_column(header, justify="right" if header in right else "left",
                        min_width=len("05:19:05.123") if "(UTC)" in header else None)
    return grid


def _cells(*values: object) -> list[Text]:
    return [v if isinstance(v, Text) else Text("" if v is None else str(v)) for v in values]


# -- the book ----------------------------------------------------------------------
def book_table(book: dict) -> RenderableType:
    """Both sides, best prices on the first row: bids green on the left, asks red."""
    bids, asks = book["bids"], book["asks"]
    if not bids and not asks:
        return Text("(empty book)")
    headers = ("ORDERS", "BID QTY", "BID", "ASK", "ASK QTY", "ORDERS")
    grid = table(*headers, right=headers)
    for i in range(max(len(bids), len(asks))):
        bid = bids[i] if i < len(bids) else None
        ask = asks[i] if i < len(asks) else None
        row = _cells(bid and bid["orders"], bid and bid["qty"], bid and bid["price"],
                     ask and ask["price"], ask and ask["qty"], ask and ask["orders"])
        for cell in row[:3]:
            cell.stylize(BUY)
        for cell in row[3:]:
            cell.stylize(SELL)
        grid.add_row(*row)
    return grid


def book_footer(book: dict) -> Text:
    total = book.get("events_total", book["events"])
    return Text(f"{plural(total, 'event')}, digest {book['digest'][:16]}", style="dim")


def book_view(book: dict) -> Group:
    return Group(book_table(book), book_footer(book))


# -- fills, orders, events -----------------------------------------------------------
def fills_table(fills: list[dict]) -> RenderableType:
    """Fills in replay order; provisional ones dim and starred, with a note."""
    if not fills:
        return Text("(no fills)")
    accounts = any("taker_account" in f for f in fills)
    headers = ["TIME (UTC)", "SIDE", "QTY", "PRICE", "TAKER", "MAKER", "STATE"]
    if accounts:
        headers[5:5] = ["TAKER ACCOUNT"]
        headers[7:7] = ["MAKER ACCOUNT"]
    grid = table(*headers, right=("QTY", "PRICE"))
    for f in fills:
        state = "final" if f["final"] else "provisional*"
        values = [human_time(f.get("time")), side(f["taker_side"]), f["qty"], f["price"],
                  short_id(f["taker"]), short_id(f["maker"]), state]
        if accounts:
            values[5:5] = [f.get("taker_account")]
            values[7:7] = [f.get("maker_account")]
        grid.add_row(*_cells(*values), style=None if f["final"] else PROVISIONAL)
    provisional = sum(1 for f in fills if not f["final"])
    if not provisional:
        return grid
    note = Text(f"* {provisional} provisional: may still change if an earlier event "
                "arrives", style=PROVISIONAL)
    return Group(grid, note)


def what(order: dict) -> str:
    """``sell 3@12``, ``buy 1@12 ioc``, ``buy 5 market``."""
    if order.get("price") is None:
        return f"{order['side']} {order['qty']} market"
    kind = "" if order.get("type", "limit") == "limit" else f" {order['type']}"
    return f"{order['side']} {order['qty']}@{order['price']}{kind}"


def order_outcome(order: dict) -> str:
    """What became of an order, in words that say what traded.

    A market order that filled 4 of 5 was ``cancelled`` for the engine (its
    rest was dropped), which reads as if nothing traded: here it is
    ``filled 4 of 5; 1 not filled (market orders do not rest)``.
    """
    status, qty, filled = order["status"], order["qty"], order.get("filled") or "0"
    resting, kind = order.get("resting") or "0", order.get("type", "limit")
    reason = order.get("reason")
    some = filled != "0"
    if status == "pending":
        return "pending: not matched yet"
    if status == "open":
        return f"open: filled {filled} of {qty}, {resting} resting" if some \
            else f"open: {qty} resting"
    if status == "filled":
        return f"filled {qty} of {qty}"
    if status == "rejected":
        return f"rejected: {reason}" if reason else "rejected"
    gone = order.get("cancelled") or "?"
    if status == "cancelled" and reason is None and kind in ("market", "ioc"):
        why = f"({kind} orders do not rest)"
        return f"filled {filled} of {qty}; {gone} not filled {why}" if some \
            else f"not filled: nothing to match {why}"
    because = f" ({reason})" if reason else ""
    if some:
        return f"cancelled{because}: filled {filled} of {qty}, {gone} cancelled"
    return f"cancelled{because}: nothing filled"


def order_line(order: dict) -> Text:
    """One order, its whole id first (what `cancel` and `order-status` take)."""
    line = Text(order["id"])
    line.append("  ")
    line.append(what(order), style=side(order["side"]).style)
    if order.get("account"):
        line.append(f"  account {order['account']}")
    line.append(f"  {order_outcome(order)}")
    if provisional(order):
        line.append("  (provisional)", style=PROVISIONAL)
    return line


def provisional(order: dict) -> bool:
    """An outcome that may still change: done here, but not final yet (an open
    order is not final by nature: that is no news)."""
    return order.get("final") is False and order["status"] not in ("open", "pending")


def orders_table(orders: list[dict]) -> RenderableType:
    if not orders:
        return Text("(no orders)")
    grid = table("TIME (UTC)", "ID", "ACCOUNT", "ORDER", "STATE")
    for o in orders:
        grid.add_row(*_cells(human_time(o.get("time")), short_id(o["id"]), o.get("account"),
                             Text(what(o), style=side(o["side"]).style), order_outcome(o)),
                     style=PROVISIONAL if provisional(o) else None)
    return grid


def event_what(event: dict) -> Text:
    if event["kind"] == "order":
        return Text(what(event), style=side(event["side"]).style)
    if event["kind"] == "cancel":
        return Text(f"cancel {short_id(event['target'])}")
    return Text(f"{event['action']} {short(event['target'])}")


def events_table(events: list[dict]) -> RenderableType:
    if not events:
        return Text("(no events)")
    grid = table("TIME (UTC)", "ID", "EVENT", "ACCOUNT")
    for e in events:
        grid.add_row(*_cells(human_time(e.get("time")), short_id(e["id"]), event_what(e),
                             e.get("account")))
    return grid


def cancel_line(cancel: dict) -> Text:
    status, target = cancel["status"], cancel["target"]
    if status == "cancelled":
        return Text(f"{target}: cancelled, {cancel['removed']} removed from the book "
                    f"(cancel {cancel['id']})")
    if status == "noop":
        return Text(f"{target}: nothing left to cancel (filled or cancelled already; "
                    f"cancel {cancel['id']})")
    if status == "rejected":
        return Text(f"{target}: cancel {cancel['id']} rejected: {cancel.get('reason')}")
    return Text(f"{target}: cancel {cancel['id']} {status}")


def accounts_table(accounts: list[dict]) -> RenderableType:
    if not accounts:
        return Text("(no accounts)")
    grid = table("ACCOUNT", "CREATED (UTC)", "REVOKED (UTC)")
    for a in accounts:
        grid.add_row(*_cells(a["account"], human_time(a["created"]),
                             human_time(a["revoked"]) or "live"))
    return grid


# -- status ----------------------------------------------------------------------------
def status_view(status: dict) -> Group:
    """Like ``consul members``: the node in a few lines, then one line per member
    with its health and when it was last heard from, and who holds finality back."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()

    def fact(name: str, *values: str | Text) -> None:
        for i, value in enumerate(values):
            facts.add_row(name if i == 0 else "", value if isinstance(value, Text)
                          else Text(value))

    fact("replica", f"{short(status['replica'])} (this node)  {status['url']}")
    fact("book", status["book"])
    fact("data", status.get("data_dir") or "(ephemeral: nothing kept)")
    total = status.get("events_total", status["events"])
    fact("events", f"{total} in all, {status['events']} in memory; digest "
                   f"{status['digest'][:16]}")
    fact("final", *final_lines(status))
    rpc = f"; PeerRPC on {status['rpc']}" if status.get("rpc") else ""
    fact("registry", f"{status.get('registry', '?')}{rpc}")
    for flag in problems(status):
        fact(*flag)
    parts: list[RenderableType] = [facts, Text(""), members_table(status)]
    others = [p for p in status["peers"] if p.get("replica") not in status.get("members", [])]
    if others:
        parts += [Text(""), peers_table(others)]
    return Group(*parts)


def final_lines(status: dict) -> list[str | Text]:
    """The final frontier as a time, and who holds it back (with what to do)."""
    final = status.get("final_clock")
    if not final:
        return ["not known yet: waiting to hear from every member"]
    lines: list[str | Text] = []
    holder = status.get("held_back_by")
    behind = holder.get("behind_ms", 0) if holder else 0
    when = f"up to {clock_time(final)} UTC"
    lines.append(f"{when} ({ago(behind / 1000)})" if holder else when)
    if holder and behind > HELD_BACK_MS:
        lines.append(Text(f"held back by {short(holder['replica'])}: nothing heard from it "
                          f"since {human_time(holder['since'])} UTC", style=WARN))
        lines.append(f"if it is gone for good: crdtbook evict {holder['replica']}")
    return lines


def problems(status: dict) -> list[tuple[str, str | Text]]:
    flags: list[tuple[str, str | Text]] = []
    if status.get("retired"):
        flags.append(("RETIRED", Text(
            f"this replica {status['retired']} the cluster: it creates no more events "
            "(restart with --rejoin-as-new to join as a new replica)", style=BAD)))
    if (status.get("store") or {}).get("failed"):
        flags.append(("STORE", Text(f"failed: {status['store']['failed']}", style=BAD)))
    if status.get("conflict"):
        flags.append(("CONFLICT", Text(str(status["conflict"]), style=BAD)))
    return flags


def members_table(status: dict) -> RenderableType:
    members = status.get("member_health")
    if members is None:  # a node older than this CLI: ids only
        members = [{"replica": r, "health": "self" if r == status["replica"] else "?"}
                   for r in status.get("members", [])]
    if not members:
        return Text("(no members: this node has not joined a cluster yet)")
    holder = status.get("held_back_by") or {}
    stuck = holder.get("behind_ms", 0) > HELD_BACK_MS
    rows = []
    for m in members:
        health = m.get("health", "?")
        heard = "" if m.get("self") or health == "self" else (
            f"{human_time(m.get('last_heard'))} ({ago(m.get('last_heard_s'))})"
            if m.get("last_heard") else "never")
        notes = []
        if stuck and m.get("holds_back_final"):
            notes.append(Text("holds finality back", style=WARN))
        if m.get("error"):
            notes.append(Text(str(m["error"])))
        rows.append(_cells(short(m["replica"]), Text(health, style=HEALTH.get(health, "")),
                           heard, m.get("url") or "(relayed)", Text("; ").join(notes)))
    noted = any(row[-1].plain for row in rows)
    grid = table("MEMBER", "HEALTH", "LAST HEARD (UTC)", "ADDRESS", *(["NOTE"] if noted else []))
    for row in rows:
        grid.add_row(*(row if noted else row[:-1]))
    return grid


def peers_table(peers: list[dict]) -> RenderableType:
    """Peers this node calls that are not members (yet): joining, or not answering."""
    grid = table("OTHER PEER", "REPLICA", "LAST ANSWER", "NOTE")
    for p in peers:
        note = ""
        if p.get("failing_s") is not None:
            note = Text(f"unreachable for {p['failing_s']:.0f} s: {p.get('error') or '?'}",
                        style=SELL)
        grid.add_row(*_cells(p["url"], short(p["replica"]) if p.get("replica") else "?",
                             ago(p.get("last_seen_s")), note))
    return grid
