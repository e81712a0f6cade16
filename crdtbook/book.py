"""BookSide: the resting orders of one side, by price level, FIFO within a level.

Theory of operation
-------------------
``prices`` is a sorted list of the prices that have resting orders; ``levels``
maps each such price to a deque of ``Resting`` records in position order
(earliest first). The best bid is the highest price, the best ask the lowest.
A level exists exactly while it holds at least one order: whoever empties a
level removes its price, whoever refills one adds it back.

``Resting`` is the engine's mutable record of one order's outcome (it is also
kept for orders that never rested, to answer status queries).
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from sortedcontainers import SortedList


class Resting:
    """Mutable outcome of one order: what rests, what filled, why rejected
    (``reason``) or why a leave or evict removed its remainder (``cancel_reason``)."""

    __slots__ = ("event", "remaining", "filled", "reason", "cancel_reason", "fills_start")

    def __init__(self, event, fills_start: int) -> None:
        self.event = event
        self.remaining = 0  # quantity resting on the book now
        self.filled = 0
        self.reason: str | None = None  # set if the order was rejected
        self.cancel_reason: str | None = None  # set while a leave or evict cancels it
        self.fills_start = fills_start  # index of its first fill as taker (for undo)


class Level(NamedTuple):
    price: int
    qty: int
    orders: int


class BookSide:
    __slots__ = ("is_bid", "prices", "levels", "best")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.prices: SortedList = SortedList()
        self.levels: dict[int, deque[Resting]] = {}
        self.best: int | None = None

    def __len__(self) -> int:
        return len(self.prices)

    def append(self, price: int, order: Resting) -> None:
        level = self.levels.get(price)
        if level is None:
            self._open(price, order)
        else:
            level.append(order)

    def _open(self, price: int, order: Resting) -> None:
        self.levels[price] = deque((order,))
        self.prices.add(price)
        best = self.best
        if best is None or (price > best if self.is_bid else price < best):
            self.best = price

    def pop_tail(self, price: int) -> None:
        level = self.levels[price]
        level.pop()
        if not level:
            self._drop(price)

    def push_head(self, price: int, order: Resting) -> None:
        level = self.levels.get(price)
        if level is None:
            self._open(price, order)
        else:
            level.appendleft(order)

    def take(self, price: int, order: Resting) -> int:
        """Remove ``order`` from its level; return its index there (for undo)."""
        level = self.levels[price]
        index = level.index(order)
        del level[index]
        if not level:
            self._drop(price)
        return index

    def put_back(self, price: int, order: Resting, index: int) -> None:
        level = self.levels.get(price)
        if level is None:
            self._open(price, order)
        else:
            level.insert(index, order)

    def _drop(self, price: int) -> None:
        del self.levels[price]
        prices = self.prices
        prices.remove(price)
        if price == self.best:
            self.best = (prices[-1] if self.is_bid else prices[0]) if prices else None

    def drop_best(self) -> None:
        """Remove the best level, which the matcher has just emptied."""
        self._drop(self.best)

    def depth(self, limit: int | None = None) -> list[Level]:
        """Aggregated levels, best first."""
        prices = reversed(self.prices) if self.is_bid else iter(self.prices)
        out = []
        for price in prices:
            if limit is not None and len(out) >= limit:
                break
            level = self.levels[price]
            out.append(Level(price, sum(o.remaining for o in level), len(level)))
        return out
