"""JSON shapes of the client API (amounts as decimal strings, ids as "replica:seq")."""

from __future__ import annotations

from crdtbook.amount import format_amount
from crdtbook.book import Level
from crdtbook.events import CANCEL, MARKET, ORDER, Cancel, Member, Order
from crdtbook.replica import CancelView, Fill, OrderView, Replica

from ..service import iso_time
from ..store.sqlite import StoredFill


def order_json(view: OrderView, final: bool = False) -> dict:
    return {
        "id": str(view.dot),
        "replica": view.dot.replica,
        "seq": view.dot.seq,
        "clock": view.clock,
        "side": view.side,
        "type": view.type,
        "price": None if view.type == MARKET else format_amount(view.price),
        "qty": format_amount(view.qty),
        "filled": _amount(view.filled),
        "resting": _amount(view.resting),
        "cancelled": _amount(view.cancelled),
        "status": view.status,
        "reason": view.reason,
        "final": final,
        "account": view.account,
        "time": iso_time(view.clock),
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


def fill_json(fill: Fill, final: bool, clock: int | None = None) -> dict:
    """A fill as an order's answer shows it (``clock``: its taker's, if known)."""
    return {
        "id": fill.id,
        "taker": str(fill.taker),
        "maker": str(fill.maker),
        "price": format_amount(fill.price),
        "qty": format_amount(fill.qty),
        "taker_side": fill.taker_side,
        "final": final,
        **({"time": iso_time(clock)} if clock else {}),
    }


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
