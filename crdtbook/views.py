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
from .context import CausalContext
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


class EventsDelta:
    """The delta of a run of one replica's new events (consecutive seqs, in
    order), built on first use and then kept; shared by a batch's results."""

    __slots__ = ("events", "built")

    def __init__(self, events: list) -> None:
        self.events = events
        self.built: AWORSet | None = None

    def get(self) -> AWORSet:
        if self.built is None:
            self.built = delta_of(self.events)
        return self.built


class _Result:
    """A local event's result: its delta (made on first use: a node that stores
    and seals the new events itself never asks for it) and its view(s).

    ``_delta`` holds the delta, or what makes it: the one new event, or an
    ``EventsDelta`` a batch shares. Held bare, the event costs no object of
    its own, which the garbage collector would have to visit.

    Reads as the NamedTuple it was: attributes, unpacking, ==."""

    __slots__ = ("_delta",)
    _fields: tuple[str, ...] = ()

    @property
    def delta(self) -> AWORSet:
        delta = self._delta
        if type(delta) is EventsDelta:
            return delta.get()
        if type(delta) is not AWORSet:  # the one new event: its delta, made now and kept
            delta = self._delta = delta_of([delta])
        return delta

    def __iter__(self):
        return (getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return tuple(self) == tuple(other)

    __hash__ = None  # mutable-looking (the delta is made lazily): not a dict key

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({shown})"


class Placed(_Result):
    """What ``place`` returns; ``place_many`` gives each order of a batch one,
    all sharing the batch's one delta (the same object)."""

    __slots__ = ("order", "fills")
    _fields = ("delta", "order", "fills")

    def __init__(self, delta: AWORSet | EventsDelta | Order, order: OrderView,
                 fills: list[Fill]) -> None:
        self._delta = delta
        self.order = order
        self.fills = fills


class Cancelled(_Result):
    __slots__ = ("cancel",)
    _fields = ("delta", "cancel")

    def __init__(self, delta: AWORSet | EventsDelta | Cancel, cancel: CancelView) -> None:
        self._delta = delta
        self.cancel = cancel


def delta_of(events: list) -> AWORSet:
    """The delta of a run of one replica's events (consecutive seqs, in order).

    The same as ``AWORSet.from_entries`` of them, built directly: the store
    holds the events; the context covers exactly their dots (a version vector
    if they start at seq 1, else a cloud of their seqs).
    """
    replica = events[0].replica
    first, last = events[0].seq, events[-1].seq
    context = CausalContext()
    if first == 1:
        context.vv[replica] = last
    else:
        context.cloud[replica] = set(range(first, last + 1))
    delta = AWORSet()
    delta.store[replica] = {event.seq: event for event in events}
    delta.context = context
    return delta


def fill_views(fills: Iterable[tuple[Resting, Resting, int, int]]) -> list[Fill]:
    return [
        Fill(taker.event.dot, maker.event.dot, price, qty, taker.event.side)
        for taker, maker, price, qty in fills
    ]


def order_view(event: Order, outcome: Resting | None, dot: Dot | None = None) -> OrderView:
    """The order's view; ``dot`` is its Dot if the caller made it already."""
    # One unpacking: an event is a tuple subclass, whose fields cost a call each.
    clock, replica, seq, _, side, type_, price, qty, account = event
    if outcome is None:
        filled = resting = cancelled = 0
        status, reason = "pending", None
    else:
        filled, resting, reason = outcome.filled, outcome.remaining, outcome.reason
        cancelled = qty - filled - resting
        if reason is not None:
            status = "rejected"
        elif resting:
            status = "open"
        elif filled == qty:
            status = "filled"
        else:
            status = "cancelled"
            reason = outcome.cancel_reason  # set if a leave or evict removed it
    if dot is None:
        dot = _new(Dot, (replica, seq))
    return _new(OrderView, (dot, clock, side, type_, price, qty, filled, resting, cancelled,
                            status, account, reason))


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
    "Book", "CancelView", "Cancelled", "EventsDelta", "Fill", "OrderView", "Placed", "cancel_view",
    "delta_of",
    "fill_views", "order_view", "taker_fills",
]
