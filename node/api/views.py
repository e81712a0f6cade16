"""JSON shapes of the client API (amounts as decimal strings, ids as "replica:seq")."""

from __future__ import annotations

from crdtbook.amount import format_amount
from crdtbook.book import Level
from crdtbook.events import CANCEL, MARKET, ORDER, Cancel, Member, Order
from crdtbook.replica import CancelView, Fill, OrderView, Replica

from ..service import iso_time
from ..store.sqlite import StoredFill


def order_json(view: OrderView, final: bool = False, time: str | None = None) -> dict:
    """``time``: ``iso_time(view.clock)`` if the caller has it already."""
    # unpacked once, not read field by field: every order placed is answered here
    (dot, clock, side, kind, price, qty, filled, resting, cancelled, status, account,
     reason) = view
    replica, seq = dot
    known = _AMOUNT_TEXTS.get  # amount_text's hit without its frame
    return {
        "id": f"{replica}:{seq}",  # str(dot)
        "replica": replica,
        "seq": seq,
        "clock": clock,
        "side": side,
        "type": kind,
        "price": None if kind == MARKET else (known(price) or amount_text(price)),
        "qty": known(qty) or amount_text(qty),
        "filled": known(filled) or amount_text(filled),
        "resting": known(resting) or amount_text(resting),
        "cancelled": known(cancelled) or amount_text(cancelled),
        "status": status,
        "reason": reason,
        "final": final,
        "account": account,
        "time": time or iso_time(clock),
    }


def stored_fill_json(fill: StoredFill, final: bool) -> dict:
    """A fill as the history pages show it (store or memory alike)."""
    taker, maker = ":".join(map(str, fill.taker)), ":".join(map(str, fill.maker))
    return {
        "id": f"{taker}/{maker}",
        "index": fill.index,
        "taker": taker,
        "maker": maker,
        "price": format_amount(fill.price),
        "qty": format_amount(fill.qty),
        "taker_side": fill.taker_side,
        "taker_account": fill.taker_account,
        "maker_account": fill.maker_account,
        "clock": fill.clock,
        "time": iso_time(fill.clock),
        "final": final,
    }


def fill_json(fill: Fill, final: bool, clock: int | None = None,
              time: str | None = None) -> dict:
    """A fill as an order's answer shows it (``clock``: its taker's, if known;
    ``time``: its ``iso_time`` if the caller has it already)."""
    taker, maker = str(fill.taker), str(fill.maker)
    known = _AMOUNT_TEXTS.get  # as in order_json
    shown = {
        "id": f"{taker}/{maker}",  # Fill.id, without making the two strings again
        "taker": taker,
        "maker": maker,
        "price": known(fill.price) or amount_text(fill.price),
        "qty": known(fill.qty) or amount_text(fill.qty),
        "taker_side": fill.taker_side,
        "final": final,
    }
    if clock:
        shown["time"] = time or iso_time(clock)
    return shown


def cancel_json(view: CancelView) -> dict:
    return {
        "id": str(view.dot),
        "kind": "cancel",
        "replica": view.dot.replica,
        "seq": view.dot.seq,
        "clock": view.clock,
        "target": str(view.target),
        "status": view.status,
        "removed": _amount(view.removed),
        "reason": view.reason,
    }


def event_json(event: Order | Cancel | Member) -> dict:
    out = {
        "id": f"{event.replica}:{event.seq}",
        "kind": event.kind,
        "clock": event.clock,
        "time": iso_time(event.clock),
        "replica": event.replica,
        "seq": event.seq,
    }
    if event.kind == ORDER:
        out.update(
            side=event.side,
            type=event.type,
            price=None if event.type == MARKET else format_amount(event.price),
            qty=format_amount(event.qty),
            account=event.account,
        )
    elif event.kind == CANCEL:
        out["target"] = f"{event.target_replica}:{event.target_seq}"
    else:
        out.update(action=event.action, target=event.target, last_seq=event.last_seq)
    return out


def levels_json(levels: list[Level]) -> list[dict]:
    return [
        {"price": format_amount(level.price), "qty": format_amount(level.qty),
         "orders": level.orders}
        for level in levels
    ]


def book_json(replica: Replica, depth: int | None) -> dict:
    book = replica.book(depth)
    return {
        "bids": levels_json(book.bids),
        "asks": levels_json(book.asks),
        "digest": replica.digest(),
        "events": replica.event_count(),
        "events_total": replica.events_total(),
        "final_clock": replica.frontier(),
    }


def _amount(units: int) -> str:
    return format_amount(units) if units else "0"


_AMOUNT_TEXTS: dict[int, str] = {}  # units -> format_amount(units), bounded
_AMOUNT_TEXTS_MAX = 4096


def amount_text(units: int) -> str:
    """``format_amount(units)``, remembered: an answer shows each order's price,
    size and fills, and a book's orders repeat a few prices and sizes (the
    formatting was a quarter of building an order's answer)."""
    text = _AMOUNT_TEXTS.get(units)
    if text is None:
        text = format_amount(units)
        if len(_AMOUNT_TEXTS) >= _AMOUNT_TEXTS_MAX:
            _AMOUNT_TEXTS.clear()
        _AMOUNT_TEXTS[units] = text
    return text
