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
  the delta to send along with the new event's view (``place_many`` gives
  every ``Placed`` of a batch the same one delta: the whole batch).

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

# tuple.__new__ builds a NamedTuple without its Python-level __new__: views are
# made for every order placed, so the hot ones skip that frame.
_new = tuple.__new__


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


def order_view(event: Order, outcome: Resting | None, dot: Dot | None = None) -> OrderView:
    """The order's view; ``dot`` is its Dot if the caller made it already."""
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
    if dot is None:
        dot = _new(Dot, (event.replica, event.seq))
    return _new(OrderView, (dot, event.clock, event.side, event.type, event.price, event.qty,
                            filled, resting, cancelled, status, event.account, reason))


def taker_fills(fills: list, start: int, taker: Resting, dot: Dot) -> list[Fill]:
    """The fills ``taker`` took, as views: ``fills[start:]`` while they are its own.

    A taker's fills are contiguous in the engine's list, from its ``fills_start``.
    """
    out = []
    side = taker.event.side
    for i in range(start, len(fills)):
        fill = fills[i]
        if fill[0] is not taker:
            break
        maker = fill[1].event
        out.append(_new(Fill, (dot, _new(Dot, (maker.replica, maker.seq)), fill[2], fill[3],
                               side)))
    return out


def cancel_view(event: Cancel, outcome: CancelOutcome | None,
                dot: Dot | None = None) -> CancelView:
    if dot is None:
        dot = _new(Dot, (event.replica, event.seq))
    target = _new(Dot, (event.target_replica, event.target_seq))
    if outcome is None:
        return CancelView(dot, event.clock, target, "pending", 0, None)
    return CancelView(dot, event.clock, target, outcome.status, outcome.removed, outcome.reason)


__all__ = [
    "Book", "CancelView", "Cancelled", "Fill", "OrderView", "Placed", "cancel_view",
    "fill_views", "order_view", "taker_fills",
]
