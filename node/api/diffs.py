"""What changed on a replica since the last look: book levels, trades, an account's orders.

Theory of operation
-------------------
The stream hub (streams.py) publishes each channel as a snapshot followed by
differences. The differences are computed here, once per publish, from a
replica and the state this module kept at the previous publish; nothing here
sends, waits or reads a clock, so each piece is tested on a bare ``Replica``.

* ``book_levels`` / ``level_changes``: a side's top levels as ``(price, qty)``
  integers; the changes between two such lists are the levels whose quantity
  differs, and ``0`` for levels that left (emptied, or pushed below the
  depth). Applying the changes to the old list, keeping the best ``depth``,
  gives the new one.

* ``Tape``: the trades a stream has shown, by fill number. Fills are in taker
  position order and only a late event that sorts before some of them
  changes them (the engine rewinds and replays). Normally fills are only
  appended, which ``Tape.update`` sees in O(new fills): the last fill it
  showed is still the very same tuple in the engine's list (a rewind
  truncates the list and builds new tuples). Otherwise it compares fill by
  fill from the first provisional one, and from the first difference on
  retracts what it showed and shows what is there now. Final fills are a
  prefix (``Replica.final_fill_count``); each is named final exactly once,
  and a final fill never changes, so it is never retracted.

* ``OrderWatch``: the last view sent of each of an account's orders that may
  still change. Which orders to look at again is decided from what moved:
  new events, new fills, a rewind (every watched order), the frontier
  (orders settled but not final yet), and orders waiting on a gap (they are
  applied when the gap fills, by events of another order). New events are
  new in the set, not yet in the engine: a cancel (or leave, evict) that
  arrives ahead of a gap (or was waiting already when the watch was made) is
  kept until its origin's contiguous seq reaches it, and only then is its
  target looked at again.

Rules this module keeps: a diff is a pure function of the replica and the
kept state; keys compared are plain tuples, never objects whose identity a
rewind changes (except the one identity check of the fast path, which only
ever chooses the slow path).
"""

from __future__ import annotations

from bisect import bisect_right, insort
from operator import attrgetter
from typing import NamedTuple

from crdtbook.amount import format_amount
from crdtbook.events import CANCEL, EVICT, LEAVE, MEMBER, ORDER
from crdtbook.replica import Replica

from ..service import stored_fill
from . import views

Levels = list[tuple[int, int]]
_seq = attrgetter("seq")
SNAPSHOT_TRADES = 100  # trades in a trades snapshot, at most


# -- book ----------------------------------------------------------------------
def book_levels(replica: Replica, depth: int) -> tuple[Levels, Levels]:
    book = replica.book(depth)
    return [(lv.price, lv.qty) for lv in book.bids], [(lv.price, lv.qty) for lv in book.asks]


def level_changes(old: Levels, new: Levels, is_bid: bool) -> Levels:
    """Levels whose quantity changed, ``0`` for those gone; best first."""
    if old == new:
        return []
    before, after = dict(old), dict(new)
    changes = [(p, q) for p, q in new if before.get(p) != q]
    changes += [(p, 0) for p, _ in old if p not in after]
    changes.sort(reverse=is_bid)
    return changes


def levels_json(levels: Levels) -> list[list[str]]:
    return [[_amount(p), _amount(q)] for p, q in levels]


def apply_levels(levels: dict[str, str], changes: list[list[str]]) -> None:
    """A client's view of one side (price -> qty, decimal strings) after an update."""
    for price, qty in changes:
        if qty == "0":
            levels.pop(price, None)
        else:
            levels[price] = qty


def _amount(units: int) -> str:
    return format_amount(units) if units else "0"


# -- trades --------------------------------------------------------------------
def fill_key(raw) -> tuple:
    taker, maker, price, qty = raw
    t, m = taker.event, maker.event
    return (t.replica, t.seq, m.replica, m.seq, price, qty)


class Shown(NamedTuple):
    raw: tuple  # the engine's (taker, maker, price, qty) tuple when it was shown
    key: tuple
    json: dict


class TapeChange(NamedTuple):
    retracted: list[str]  # fill ids, in fill order
    trades: list[dict]  # FILL json, in fill order
    final: list[str]  # fill ids now final, in fill order
    final_clock: int
    lost: bool  # fills left memory unseen: the stream cannot continue (reset)


class Tape:
    """The trades shown on a stream: fills ``start`` .. ``start + len(shown)``."""

    def __init__(self, replica: Replica) -> None:
        engine = replica.engine
        base, fills = engine.fills_base, engine.fills
        final = replica.final_fill_count()
        end = base + len(fills)
        self.start = max(base, min(final, end - SNAPSHOT_TRADES))
        self.shown = [self._shown(i, fills[i - base]) for i in range(self.start, end)]
        self.final = final  # fills before this number are final (and shown as such)

    @property
    def count(self) -> int:
        return self.start + len(self.shown)

    def snapshot(self) -> list[dict]:
        """The latest trades shown, oldest first, with their finality."""
        first = max(self.start, self.count - SNAPSHOT_TRADES)
        out = []
        for index in range(first, self.count):
            fill = self.shown[index - self.start].json
            out.append(dict(fill, final=True) if index < self.final else fill)
        return out

    def update(self, replica: Replica) -> TapeChange:
        engine = replica.engine
        base, fills = engine.fills_base, engine.fills
        end = base + len(fills)
        count = self.count
        if count < base:  # fills were compacted before they were shown
            return TapeChange([], [], [], replica.frontier(), True)
        first = count  # the first fill number that differs: none, by default
        if count > base and count > self.start:
            last = count - 1
            if not (last < end and fills[last - base] is self.shown[last - self.start].raw):
                first = self._first_difference(fills, base, end)
        retracted: list[str] = []
        if first < count:
            retracted = [s.json["id"] for s in self.shown[first - self.start:]]
            del self.shown[first - self.start:]
        trades = []
        for index in range(max(first, base), end):
            shown = self._shown(index, fills[index - base])
            self.shown.append(shown)
            trades.append(shown.json)
        final = replica.final_fill_count()
        newly = []
        if final > self.final:
            for index in range(max(self.final, self.start), min(final, self.count)):
                newly.append(self.shown[index - self.start].json["id"])
            self.final = final
        self._trim()
        return TapeChange(retracted, trades, newly, replica.frontier(), False)

    def _first_difference(self, fills, base: int, end: int) -> int:
        """The first fill number at which what was shown and what the engine holds
        differ (final fills never do, so the search starts after them)."""
        index = max(self.final, base, self.start)
        stop = min(self.count, end)
        while index < stop:
            if self.shown[index - self.start].key != fill_key(fills[index - base]):
                return index
            index += 1
        return stop

    def _trim(self) -> None:
        """Keep every fill that may still change, and the latest for a snapshot."""
        keep_from = min(self.final, self.count - SNAPSHOT_TRADES)
        if keep_from > self.start:
            del self.shown[:keep_from - self.start]
            self.start = keep_from

    @staticmethod
    def _shown(index: int, raw) -> Shown:
        return Shown(raw, fill_key(raw), views.stored_fill_json(stored_fill(index, raw), False))


# -- an account's orders ---------------------------------------------------------
class OrderWatch:
    """An account's orders that may still change, with the last view sent of each."""

    def __init__(self, replica: Replica, account: str, origin: str | None = None) -> None:
        # ``origin``: only the orders this replica placed. Accounts are a node's own
        # (its tokens): the same name at another node is someone else, whose orders
        # this account can neither place nor cancel. None: every replica's.
        self.origin = origin
        self.account = account
        self.sent: dict[tuple[str, int], dict] = {}
        self.settled: set[tuple[str, int]] = set()  # not open, not final yet
        self.pending: set[tuple[str, int]] = set()  # waiting on a gap: applied any time
        # Cancels and leaves/evicts that arrived ahead of a gap, by origin, in seq
        # order: they take effect when the gap fills, by other events (see _ready).
        self.waiting: dict[str, list] = {}
        context, store = replica.state.context, replica.state.store
        for held in sorted(context.cloud):  # those that arrived before this watch
            for seq in sorted(context.cloud[held]):
                event = store.get(held, {}).get(seq)
                if event is not None:
                    self._wait(event)
        self.replayed = replica.engine.replayed
        self.frontier = replica.frontier()
        snapshot = []
        for view in replica.orders():
            if view.account != account or replica.order_final(view) \
                    or (origin is not None and view.dot.replica != origin):
                continue
            shown = views.order_json(view, False)
            self._keep(view, shown)
            if view.status in ("open", "pending"):
                snapshot.append(shown)
        self.snapshot = snapshot  # the open orders, for the subscriber

    def _keep(self, view, shown: dict) -> None:
        key = (view.dot.replica, view.dot.seq)
        self.pending.discard(key)
        self.settled.discard(key)
        if shown["final"]:
            self.sent.pop(key, None)
            return
        self.sent[key] = shown
        if view.status == "pending":
            self.pending.add(key)
        elif view.status != "open":
            self.settled.add(key)

    def _wait(self, event) -> None:
        """Keep a cancel or leave/evict that the engine has not applied yet: an event
        ahead of a gap enters the set (and ``events``) before it takes effect."""
        if event.kind == CANCEL:
            # A cancel targets an order of its own replica: with ``origin``, no
            # other replica's cancel can touch a watched order.
            if self.origin not in (None, event.replica):
                return
        elif event.kind != MEMBER or event.action not in (LEAVE, EVICT):
            return
        insort(self.waiting.setdefault(event.replica, []), event, key=_seq)

    def _ready(self, top: dict, look: set) -> bool:
        """Release the waiting events whose gap has filled: a cancel's target is
        looked at again; True if a leave or evict took effect (any order may differ)."""
        everything = False
        for origin in sorted(self.waiting):
            held = self.waiting[origin]  # in seq order: a check of the first will do
            applied = top.get(origin, 0)
            if held[0].seq > applied:
                continue
            cut = bisect_right(held, applied, key=_seq)
            for event in held[:cut]:
                if event.kind == CANCEL:
                    look.add((event.target_replica, event.target_seq))
                else:
                    everything = True
            if cut < len(held):
                del held[:cut]
            else:
                del self.waiting[origin]
        return everything

    def update(self, replica: Replica, events: list, fills: list) -> list[dict]:
        """The new views of orders that changed, given the events new since the last
        update and the fills (engine tuples) new since then."""
        look: set[tuple[str, int]] = set()
        new: set[tuple[str, int]] = set()  # the account's orders new here
        engine = replica.engine
        everything = engine.replayed != self.replayed  # a rewind: any order may differ
        self.replayed = engine.replayed
        top = replica.state.context.vv
        for event in events:
            kind = event.kind
            if kind == ORDER:
                if event.account == self.account and self.origin in (None, event.replica):
                    new.add((event.replica, event.seq))
            elif event.seq > top.get(event.replica, 0):
                self._wait(event)
            elif kind == CANCEL:
                look.add((event.target_replica, event.target_seq))
            elif kind == MEMBER and event.action in (LEAVE, EVICT):
                everything = True
        if self.waiting and self._ready(top, look):
            everything = True
        for taker, maker, _, _ in fills:
            look.add((taker.event.replica, taker.event.seq))
            look.add((maker.event.replica, maker.event.seq))
        frontier = replica.frontier()
        if frontier != self.frontier:
            self.frontier = frontier
            look.update(self.settled)
        look.update(self.pending)
        if everything:
            look.update(self.sent)
        look = {key for key in look if key in self.sent} | new  # the rest is final, or not ours
        changed = []
        for key in sorted(look):
            view = replica.order(key)
            if view is None:  # compacted away: it was final, and its final view went out
                self.sent.pop(key, None)
                self.settled.discard(key)
                self.pending.discard(key)
                continue
            if view.account != self.account:
                continue
            shown = views.order_json(view, replica.order_final(view))
            if self.sent.get(key) != shown:
                changed.append(shown)
            self._keep(view, shown)
        changed.sort(key=lambda o: (o["clock"], o["replica"], o["seq"]))
        return changed
