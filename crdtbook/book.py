"""BookSide: the resting orders of one side, by price level, FIFO within a level.

Theory of operation
-------------------
``prices`` is a sorted list of the prices that have resting orders; ``levels``
maps each such price to a deque of ``Resting`` records in position order
(earliest first). The best bid is the highest price, the best ask the lowest.
A level exists exactly while it holds at least one order: whoever empties a
level removes its price, whoever refills one adds it back.

``prices`` is a plain list kept sorted with ``bisect`` while a side has up
to ``FLAT_LEVELS`` levels: opening or closing a level is one C-level search
and a short memmove, several times cheaper than ``SortedList`` there. Past
that the memmove grows with the book, so the side switches to a
``SortedList`` (logarithmic), and back once it has shrunk to half. Both
index, iterate and reverse alike, so readers never ask which one it is.

``Resting`` is the engine's mutable record of one order's outcome (it is also
kept for orders that never rested, to answer status queries).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from typing import NamedTuple

from sortedcontainers import SortedList


class Resting:
    """Mutable outcome of one order: what rests, what filled, why rejected
    (``reason``) or why a leave or evict removed its remainder (``cancel_reason``).

    No ``__init__``: the engine makes one per order as ``Resting()`` and sets
    every slot itself (a class call that runs a Python ``__init__`` cost it
    more than that); anyone else makes one with ``Resting.of``.
    """

    __slots__ = ("event", "remaining", "filled", "reason", "cancel_reason", "fills_start")

    @staticmethod
    def of(event, fills_start: int) -> Resting:
        record = Resting()
        record.event = event
        record.remaining = 0  # quantity resting on the book now
        record.filled = 0
        record.reason = None  # set if the order was rejected
        record.cancel_reason = None  # set while a leave or evict cancels it
        record.fills_start = fills_start  # index of its first fill as taker (for undo)
        return record


class Level(NamedTuple):
    price: int
    qty: int
    orders: int


# Levels per side kept in a plain sorted list; above this a SortedList (see the
# module doc). Measured: 0.5 vs 0.9 us per open/close at 1,000 levels, but 13 us
# vs 1.3 us at 100,000.
FLAT_LEVELS = 4096


class BookSide:
    __slots__ = ("is_bid", "prices", "levels", "best", "_tree")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.prices: list[int] | SortedList = []
        self._tree = False  # prices is a SortedList (a deep book)
        self.levels: dict[int, deque[Resting]] = {}
        self.best: int | None = None

    def __len__(self) -> int:
        return len(self.prices)

    def append(self, price: int, order: Resting) -> None:
        level = self.levels.get(price)
        if level is None:
            self.open(price, order)
        else:
            level.append(order)

    def open(self, price: int, order: Resting) -> None:
        """Start the level at ``price`` (it holds nothing now) with ``order``."""
        self.levels[price] = deque((order,))
        prices = self.prices
        if self._tree:
            prices.add(price)
        else:
            insort(prices, price)
            if len(prices) > FLAT_LEVELS:
                self.prices, self._tree = SortedList(prices), True
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
            self.open(price, order)
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
            self.open(price, order)
        else:
            level.insert(index, order)

    def _drop(self, price: int) -> None:
        del self.levels[price]
        prices = self.prices
        if not self._tree:
            del prices[bisect_left(prices, price)]
        else:
            prices.remove(price)
            if len(prices) <= FLAT_LEVELS // 2:
                self.prices, self._tree = list(prices), False
        if price == self.best:
            self.best = (prices[-1] if self.is_bid else prices[0]) if prices else None

    def drop_best(self) -> None:
        """Remove the best level, which the matcher has just emptied.

        The best price is at an end of ``prices``: popped, not searched for.
        """
        del self.levels[self.best]
        prices = self.prices
        if self.is_bid:
            prices.pop()
            self.best = prices[-1] if prices else None
        else:
            prices.pop(0)
            self.best = prices[0] if prices else None
        if self._tree and len(prices) <= FLAT_LEVELS // 2:
            self.prices, self._tree = list(prices), False

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
