"""Views: what a replica shows of its events and their outcomes.

Theory of operation
-------------------
The engine keeps mutable outcome records (``Resting``, ``CancelOutcome``)
that change as later or late events are matched. Callers never see those:
they get immutable NamedTuples built from an event and its outcome at the
moment of the call, so a view handed out stays what it was.

* ``Fill``: one trade, taker against maker at the maker's price;
* ``OrderView`` / ``CancelView``: an event with its status so far;
* ``Book``: the price levels on each side, best first;
* ``Placed`` / ``Cancelled``: what a local ``place`` / ``cancel`` returns,
  the delta to send along with the new event's view.

Rules this module keeps
-----------------------
* Pure functions of their arguments: no replica, no engine state read.
* An event with no outcome yet (waiting on a gap) is ``pending``, never
  guessed at.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from .aworset import AWORSet
from .book import Level, Resting
from .dot import Dot
from .engine import CancelOutcome
from .events import Cancel, Order


class Fill(NamedTuple):
    taker: Dot
    maker: Dot
    price: int
    qty: int
    taker_side: str

    @property
    def id(self) -> str:
        return f"{self.taker}/{self.maker}"


class OrderView(NamedTuple):
    dot: Dot
    clock: int
    side: str
    type: str
    price: int  # 0 for market orders
    qty: int
    filled: int
    resting: int
    cancelled: int  # removed by a cancel, leave or evict, dropped (ioc/market/fok) or rejected
    status: str  # open | filled | cancelled | rejected | pending
    account: str
    reason: str | None


class CancelView(NamedTuple):
    dot: Dot
    clock: int
    target: Dot
    status: str  # cancelled | noop | rejected | pending
    removed: int
    reason: str | None


class Book(NamedTuple):
    bids: list[Level]  # best first
    asks: list[Level]  # best first


class Placed(NamedTuple):
    delta: AWORSet
    order: OrderView
    fills: list[Fill]


class Cancelled(NamedTuple):
    delta: AWORSet
    cancel: CancelView


def fill_views(fills: Iterable[tuple[Resting, Resting, int, int]]) -> list[Fill]:
    return [
        Fill(taker.event.dot, maker.event.dot, price, qty, taker.event.side)
        for taker, maker, price, qty in fills
    ]


def order_view(event: Order, outcome: Resting | None) -> OrderView:
    if outcome is None:
        filled = resting = cancelled = 0
        status, reason = "pending", None
    else:
        filled, resting, reason = outcome.filled, outcome.remaining, outcome.reason
        cancelled = event.qty - filled - resting
        if reason is not None:
            status = "rejected"
        elif resting:
            status = "open"
        elif filled == event.qty:
            status = "filled"
        else:
            status = "cancelled"
            reason = outcome.cancel_reason  # set if a leave or evict removed it
    return OrderView(event.dot, event.clock, event.side, event.type, event.price,
                     event.qty, filled, resting, cancelled, status, event.account, reason)


def cancel_view(event: Cancel, outcome: CancelOutcome | None) -> CancelView:
    if outcome is None:
        return CancelView(event.dot, event.clock, event.target, "pending", 0, None)
    return CancelView(event.dot, event.clock, event.target, outcome.status,
                      outcome.removed, outcome.reason)


__all__ = [
    "Book", "CancelView", "Cancelled", "Fill", "OrderView", "Placed", "cancel_view",
    "fill_views", "order_view",
]
